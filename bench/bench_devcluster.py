"""Benchmark devcluster with the `scale` fleet (12,500 nodes x 8 GPUs).

    .venv/bin/python bench/bench_devcluster.py [--vms 1000] [--speed 1000] \
        [--out bench/results/devcluster.md]

Measures: a full paged LIST of the nodes through the kubernetes client (limit 500) and through
kubectl (--chunk-size=500 -o name), devcluster's memory (VmHWM/VmRSS), and create-to-Running of
N one-GPU VMInstances. Prints a markdown table and writes it to the results file.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client, watch  # noqa: E402

from devcluster.testing import DevCluster  # noqa: E402

MODELS = ("nvidia.com/AD102GL_L40S", "nvidia.com/GA100_A100_PCIE_80GB", "nvidia.com/H100_94GB")


def mem_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(val.split()[0])
    return out


def list_nodes_client(core: client.CoreV1Api) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    names, token, pages = 0, None, 0
    while True:
        resp = core.list_node(limit=500, _continue=token)
        names += len(resp.items)
        pages += 1
        token = (
            resp.metadata.var_continue
            if hasattr(resp.metadata, "var_continue")
            else resp.metadata._continue
        )
        if not token:
            break
    return time.perf_counter() - t0, names, pages


def create_vms(
    dc: DevCluster, n: int, ns: str = "tenant-root", threads: int = 8
) -> dict[str, float]:
    custom = client.CustomObjectsApi(dc.api_client())
    running_at: dict[str, float] = {}
    created_at: dict[str, float] = {}
    start_rv = custom.list_namespaced_custom_object("kubevirt.io", "v1", ns, "virtualmachines")[
        "metadata"
    ]["resourceVersion"]
    done = threading.Event()

    def watcher() -> None:
        w = watch.Watch()
        wcustom = client.CustomObjectsApi(dc.api_client())
        for ev in w.stream(
            wcustom.list_namespaced_custom_object,
            "kubevirt.io",
            "v1",
            ns,
            "virtualmachines",
            resource_version=start_rv,
            timeout_seconds=600,
        ):
            obj = ev["raw_object"]
            name = obj["metadata"]["name"]
            if obj.get("status", {}).get("printableStatus") == "Running" and name not in running_at:
                running_at[name] = time.perf_counter()
                if len(running_at) >= n:
                    w.stop()
                    break
        done.set()

    th = threading.Thread(target=watcher, daemon=True)
    th.start()
    time.sleep(0.2)

    def create(i: int) -> None:
        name = f"bench-{i:04d}"
        body = {
            "apiVersion": "apps.cozystack.io/v1alpha1",
            "kind": "VMInstance",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"instanceType": "u1.2xlarge", "gpus": [{"name": MODELS[i % 3]}]},
        }
        api = client.CustomObjectsApi(dc.api_client())
        created_at[f"vm-instance-{name}"] = time.perf_counter()
        api.create_namespaced_custom_object(
            "apps.cozystack.io", "v1alpha1", ns, "vminstances", body
        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, range(n)))
    t_created = time.perf_counter() - t0
    done.wait(600)
    t_all = max(running_at.values()) - t0 if running_at else float("nan")
    lat = sorted(running_at[k] - created_at[k] for k in running_at if k in created_at)
    return {
        "created_s": t_created,
        "all_running_s": t_all,
        "running": len(running_at),
        "p50_s": statistics.median(lat) if lat else float("nan"),
        "p95_s": lat[int(len(lat) * 0.95) - 1] if lat else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--speed", type=float, default=1000.0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "devcluster.md"))
    args = ap.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        dc = DevCluster(tmp, fleet="scale", speed=args.speed, ready_timeout=900).start()
        try:
            rows.append(
                ("devcluster start to ready (scale fleet)", f"{time.perf_counter() - t0:.2f} s")
            )
            mem0 = mem_kib(dc.pid)
            rows.append(("RSS after start", f"{mem0['VmRSS'] / 1024:.0f} MiB"))
            core = client.CoreV1Api(dc.api_client())
            secs, count, pages = list_nodes_client(core)
            rows.append(
                (
                    f"client: paged LIST nodes (limit 500, {pages} pages, {count} nodes), cold",
                    f"{secs:.2f} s",
                )
            )
            secs, count, pages = list_nodes_client(core)
            rows.append(
                (
                    f"client: paged LIST nodes (limit 500, {pages} pages, {count} nodes), warm",
                    f"{secs:.2f} s",
                )
            )
            t1 = time.perf_counter()
            out = dc.kubectl(
                "get", "nodes", "--chunk-size=500", "-o", "name", timeout=300
            ).stdout.split()
            rows.append(
                (
                    f"kubectl get nodes --chunk-size=500 -o name ({len(out)} nodes)",
                    f"{time.perf_counter() - t1:.2f} s",
                )
            )
            t1 = time.perf_counter()
            table = dc.kubectl("get", "nodes", "--chunk-size=500", timeout=300).stdout.splitlines()
            rows.append(
                (
                    f"kubectl get nodes --chunk-size=500 (server-side Table, "
                    f"{len(table) - 1} rows)",
                    f"{time.perf_counter() - t1:.2f} s",
                )
            )
            assert count == 12500 and len(set(out)) == 12500, (count, len(out))
            res = create_vms(dc, args.vms)
            rows.append(
                (
                    f"create {args.vms} one-GPU VMInstances (8 client threads)",
                    f"{res['created_s']:.2f} s",
                )
            )
            rows.append(
                (
                    f"first create to all {int(res['running'])} KubeVirt VMs Running "
                    f"(speed {args.speed:g})",
                    f"{res['all_running_s']:.2f} s",
                )
            )
            rows.append(
                (
                    "per-VM create-to-Running p50 / p95",
                    f"{res['p50_s'] * 1000:.0f} ms / {res['p95_s'] * 1000:.0f} ms",
                )
            )
            mem1 = mem_kib(dc.pid)
            rows.append(
                (
                    "devcluster peak RSS (VmHWM), whole run",
                    f"{mem1['VmHWM'] / 1024:.0f} MiB (target <= 2048)",
                )
            )
            rows.append(("devcluster RSS at end (VmRSS)", f"{mem1['VmRSS'] / 1024:.0f} MiB"))
        finally:
            dc.stop()
    cmd = f".venv/bin/python bench/bench_devcluster.py --vms {args.vms} --speed {args.speed:g}"
    lines = [
        "# devcluster benchmark",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {os.cpu_count()} CPU, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| measure | value |",
        "|---|---|",
    ] + [f"| {k} | {v} |" for k, v in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
