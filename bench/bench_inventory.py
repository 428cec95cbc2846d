"""Inventory benchmarks (issue 3): sync wall time and peak RSS on the scale fleet, and the pages'
server time and SQL query count at 1,000 and 100,000 GPUs, side by side with the anchor: a live
paged LIST of the nodes from devcluster's API (what a dashboard reading Kubernetes per request pays).

    .venv/bin/python bench/bench_inventory.py            # both sizes, SQLite unless DATABASE_URL is set
    DATABASE_URL=postgres://... .venv/bin/python bench/bench_inventory.py --sizes 100000

Writes bench/results/inventory-<database>.md (sqlite or postgresql).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS_DIR = ROOT / "bench" / "results"
REQUESTS = 30
ANCHOR_RUNS = 3


def setup_django(var_dir: Path) -> None:
    # Production settings (DEBUG off), minus the HTTPS redirect the in-process client can't follow.
    os.environ.update(
        DEBUG="false",
        SECRET_KEY="bench-only-secret-key-not-used-anywhere-else-0123456789",
        SECURE_SSL_REDIRECT="false",
        ALLOWED_HOSTS="testserver",
        VAR_DIR=str(var_dir),
        STATIC_ROOT=str(var_dir / "static"),
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hikube_portal.settings")
    import django

    django.setup()


def fleet_file(directory: Path, gpus: int) -> str:
    """A fleet of `gpus` / 8 nodes, the scale fleet's model mix; "scale" itself for 100,000."""
    if gpus == 100_000:
        return "scale"
    models = (
        ["nvidia.com/AD102GL_L40S"] * 5
        + ["nvidia.com/GA100_A100_PCIE_80GB"] * 3
        + ["nvidia.com/H100_94GB"] * 2
    )
    lines = ["nodes:"]
    for i in range(gpus // 8):
        lines.append(f"  - {{name: gpu-node-{i:05d}, model: {models[i % 10]}, gpus: 8}}")
    lines.append("tenants: [tenant-root, tenant-acme, tenant-globex]")
    path = directory / f"fleet-{gpus}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def run_sync_subprocess(cluster_id: int, var_dir: Path) -> dict[str, float]:
    """The sync in a fresh process, so its peak RSS is its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--sync-only", str(cluster_id), "--var-dir", str(var_dir)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=900,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def sync_only(cluster_id: int) -> None:
    import resource

    from gpus.inventory import sync_cluster

    started = time.perf_counter()
    sync_cluster(cluster_id)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


def time_page(client, url: str) -> dict[str, float]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    timings = []
    queries = 0
    for _ in range(REQUESTS):
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(ctx.captured_queries)
    return {"p50": statistics.median(timings), "p95": percentile(timings, 95), "queries": queries}


def anchor_list_ms(cluster) -> float:
    """A live paged LIST of every node (limit 500), as a Kubernetes-reading dashboard does."""
    from gpus.inventory import gateway_for

    runs = []
    for _ in range(ANCHOR_RUNS):
        gateway = gateway_for(cluster)
        started = time.perf_counter()
        count = sum(1 for _ in gateway.iter_nodes(page_size=500))
        runs.append((time.perf_counter() - started) * 1000)
        gateway.close()
    assert count > 0
    return statistics.median(runs)


def bench_size(gpus: int, workdir: Path, var_dir: Path) -> dict[str, object]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from devcluster.testing import run_devcluster
    from gpus.models import Cluster, Node

    with run_devcluster(workdir / f"dc-{gpus}", fleet=fleet_file(workdir, gpus), speed=50.0) as dc:
        cluster, _ = Cluster.objects.update_or_create(
            name=f"bench-{gpus}", defaults={"kubeconfig": str(dc.kubeconfig), "context": "admin"}
        )
        Cluster.objects.exclude(pk=cluster.pk).delete()
        sync = run_sync_subprocess(cluster.pk, var_dir)
        nodes = Node.objects.filter(cluster=cluster).count()
        admin, _ = get_user_model().objects.get_or_create(
            username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
        )
        client = Client()
        client.force_login(admin)
        last_page = -(-nodes // 50)
        pages = {
            "overview": time_page(client, reverse("gpus:inventory")),
            "nodes, first page": time_page(client, reverse("gpus:nodes")),
            "nodes, last page": time_page(client, reverse("gpus:nodes") + f"?page={last_page}"),
        }
        anchor = anchor_list_ms(cluster)
    return {"gpus": gpus, "nodes": nodes, "sync": sync, "pages": pages, "anchor_ms": anchor}


def report(results: list[dict], engine: str, command: str) -> str:
    lines = [
        "# Inventory benchmarks",
        "",
        f"Command: `{command}`. Database: {engine}. Machine: {os.cpu_count()} cores, shared and noisy;",
        f"each page timed over {REQUESTS} requests in-process (Django test client, server time only),",
        f"the anchor (a live paged LIST of all nodes from devcluster, limit 500) over {ANCHOR_RUNS} runs,",
        "in the same run.",
        "",
        "| GPUs | nodes | sync wall (s) | sync peak RSS (MB) |",
        "|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['gpus']:,} | {r['nodes']:,} | {r['sync']['seconds']:.1f} | {r['sync']['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "Targets: sync <= 60 s and <= 500 MB at 100,000 GPUs.",
        "",
        "| GPUs | page | p50 (ms) | p95 (ms) | SQL queries | anchor LIST (ms) | anchor / p50 |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for name, page in r["pages"].items():
            lines.append(
                f"| {r['gpus']:,} | {name} | {page['p50']:.1f} | {page['p95']:.1f} | {page['queries']} "
                f"| {r['anchor_ms']:.0f} | {r['anchor_ms'] / page['p50']:.1f}x |"
            )
    lines += [
        "",
        "Targets: p95 <= 150 ms and <= 10 queries, the same at 1,000 and 100,000 GPUs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--sync-only", type=int)
    parser.add_argument("--var-dir")
    args = parser.parse_args()
    if args.sync_only is not None:
        setup_django(Path(args.var_dir))
        sync_only(args.sync_only)
        return
    with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
        workdir = Path(tmp)
        var_dir = workdir / "var"
        var_dir.mkdir()
        setup_django(var_dir)
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        call_command("collectstatic", "--noinput", verbosity=0)
        results = [bench_size(int(s), workdir, var_dir) for s in args.sizes.split(",")]
        engine = connection.vendor
        command = "make bench" if engine == "sqlite" else "DATABASE_URL=postgres://... make bench"
        text = report(results, engine, f"{command} (bench/bench_inventory.py)")
    print(text)
    (RESULTS_DIR / f"inventory-{engine}.md").write_text(text)


if __name__ == "__main__":
    main()
