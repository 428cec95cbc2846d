"""Utilization benchmarks (issue 12).

1. 30-day fleet chart for 1,000 GPUs: the portal's chart JSON (server time p95, points per line,
   gzipped payload), read from its rollups; beside it, in the same run, the anchor: the same
   chart from a real Prometheus loaded with the same 30 days (devcluster's series +
   `promtool tsdb create-blocks-from openmetrics`) by `query_range` plus building the Plotly
   figure, and the same from a real VictoriaMetrics (`/api/v1/import/prometheus`).
2. Collection: one direct scrape pass (HTTP SD, concurrent scrapes, prometheus_client's parser,
   bulk store) over 10,000 GPUs served by devcluster's exporter renderer in another process.
3. Query-API mode at 100,000 GPUs: one collection pass reading the latest values of 100,000
   GPUs from VictoriaMetrics and storing devices and owners (no per-GPU samples).

    .venv/bin/python bench/bench_utilization.py [--quick]

SQLite under a temporary VAR_DIR unless DATABASE_URL is set. Writes `utilization.*` figures to
bench/results.json and bench/results/utilization.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.django_env import setup_production_django  # noqa: E402
from bench.results import figure, record  # noqa: E402
from devcluster import metrics as dcgm  # noqa: E402
from devcluster.fleet import MODELS  # noqa: E402

RESULTS_MD = ROOT / "bench" / "results" / "utilization.md"
MODEL_MIX = [MODELS[k] for k in MODELS for _ in range({0: 5, 1: 3, 2: 2}[list(MODELS).index(k)])]
PROFILES = ("training", "inference", "idle", "training", "hot", "free", "inference", "training")


def setup_django(var_dir: Path) -> None:
    setup_production_django(var_dir)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def fleet_gpus(n: int, seed: int = 1, per_cluster: int = 80) -> list[dcgm.Gpu]:
    """n GPUs on n/8 host nodes, grouped in tenant clusters of `per_cluster` GPUs."""
    out = []
    for i in range(n):
        node, slot = divmod(i, 8)
        cluster = i // per_cluster
        model = MODEL_MIX[node % len(MODEL_MIX)]
        profile = PROFILES[i % len(PROFILES)]
        pod = None if profile == "free" else ("ml", "trainer", f"train-{i}")
        extra = (
            ("cluster", f"kubernetes-c{cluster:04d}"),
            ("tenant", f"tenant-t{cluster % 50:02d}"),
        )
        out.append(
            dcgm.Gpu(
                dcgm.physical_uuid(seed, f"gpu-node-{node:05d}", slot),
                slot,
                f"kubernetes-c{cluster:04d}-gpu-aaaaa-{node:05d}",
                model,
                profile,
                pod,
                extra,
            )
        )
    return out


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


# --- 1. the 30-day fleet chart ------------------------------------------------------------------


def util_matrix(gpus: list[dcgm.Gpu], times: np.ndarray) -> np.ndarray:
    out = np.empty((len(gpus), len(times)))
    for i, g in enumerate(gpus):
        for j, t in enumerate(times):
            out[i, j] = dcgm.sample(g, float(t), 1)["DCGM_FI_DEV_GPU_UTIL"]
    return out


def write_files(gpus, times, util, om_path: Path, vm_path: Path) -> None:
    """The same samples as OpenMetrics (promtool, seconds) and Prometheus text (VM, ms)."""
    name = "DCGM_FI_DEV_GPU_UTIL"
    with open(om_path, "w") as om, open(vm_path, "w") as vm:
        om.write(f"# HELP {name} GPU utilization (in %).\n# TYPE {name} gauge\n")
        for i, g in enumerate(gpus):
            lab = dcgm.labels(g)
            row = util[i]
            om.write(
                "".join(
                    f"{name}{{{lab}}} {int(v)} {int(t)}\n" for v, t in zip(row, times, strict=True)
                )
            )
            vm.write(
                "".join(
                    f"{name}{{{lab}}} {int(v)} {int(t) * 1000}\n"
                    for v, t in zip(row, times, strict=True)
                )
            )
        om.write("# EOF\n")


def load_portal_rollups(gpus, times, util, end: float) -> None:
    """5-minute model rollups for 30 days, from the same samples (each bucket takes the
    nearest sample's statistics across the model's GPUs), and the hourly rows the rollup task
    writes from them as each hour closes (its own code: hourly_groups_from_5m)."""
    import datetime as dt

    from gpus.utilization.models import GroupRollup
    from gpus.utilization.rollup import _upsert_group, hourly_groups_from_5m

    GroupRollup.objects.all().delete()
    models = sorted({g.model.model_name for g in gpus})
    rows = []
    buckets = np.arange(end - 30 * 86400, end + 1, 300)
    nearest = np.clip(np.searchsorted(times, buckets), 0, len(times) - 1)
    for m in models:
        idx = [i for i, g in enumerate(gpus) if g.model.model_name == m]
        sub = util[idx]
        avg, lo, hi = (
            sub.mean(axis=0),
            np.percentile(sub, 5, axis=0),
            np.percentile(sub, 95, axis=0),
        )
        for b, k in zip(buckets, nearest, strict=True):
            rows.append(
                GroupRollup(
                    bucket="5m",
                    scope="model",
                    key=m,
                    ts=dt.datetime.fromtimestamp(float(b), tz=dt.UTC),
                    epoch=int(b),
                    gpus=len(idx),
                    util_avg=float(avg[k]),
                    util_p05=float(lo[k]),
                    util_p95=float(hi[k]),
                )
            )
    GroupRollup.objects.bulk_create(rows, batch_size=5000)
    hour = buckets[0] - buckets[0] % 3600
    while hour + 3600 <= end:
        _upsert_group(hourly_groups_from_5m(dt.datetime.fromtimestamp(float(hour), tz=dt.UTC)))
        hour += 3600


def _portal_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="bench-ops", defaults={"is_staff": True}
    )
    client = Client()
    client.force_login(user)
    return client


def portal_once(client) -> tuple[float, bytes, bytes]:
    """One 30-day chart as a browser asks for it (gzip accepted): ms, wire bytes, JSON."""
    t0 = time.perf_counter()
    resp = client.get("/utilization/charts/fleet/?range=30d", headers={"accept-encoding": "gzip"})
    ms = (time.perf_counter() - t0) * 1000
    assert resp.status_code == 200, resp.status_code
    wire = resp.content
    body = gzip.decompress(wire) if resp.get("Content-Encoding") == "gzip" else wire
    return ms, wire, body


ANCHOR_QUERIES = {
    "avg": "avg by (modelName) (DCGM_FI_DEV_GPU_UTIL)",
    "p05": "quantile by (modelName) (0.05, DCGM_FI_DEV_GPU_UTIL)",
    "p95": "quantile by (modelName) (0.95, DCGM_FI_DEV_GPU_UTIL)",
}


# The anchor asks for the resolution the portal sends past 7 days (hourly): the same figure.
ANCHOR_STEP = 3600.0


def anchor_once(src, start: float, end: float) -> tuple[float, int]:
    """What a page reading the TSDB per request pays: three query_range calls and the same
    figure (same code, same JSON, same hourly resolution)."""
    from gpus.utilization import charts

    t0 = time.perf_counter()
    per: dict[str, dict] = {}
    for key, promql in ANCHOR_QUERIES.items():
        for labels, pts in src.query_range(promql, start, end, ANCHOR_STEP):
            s = per.setdefault(labels.get("modelName", ""), {})
            s["ts"] = [p[0] for p in pts]
            s[key] = [p[1] for p in pts]
    series = {m: charts.Series(s["ts"], {k: s[k] for k in ANCHOR_QUERIES}) for m, s in per.items()}
    fig = charts.fleet_by_model(series, "Fleet utilization by model", "mean", "p5-p95")
    charts.to_json(fig)
    return (time.perf_counter() - t0) * 1000, charts.points_per_line(fig)


def interleaved(client, src, start: float, end: float, runs: int) -> dict:
    """Portal and anchor in one loop, alternating which goes first: both see the same machine."""
    portal_ms, anchor_ms, loads = [], [], []
    wire = body = b""
    points = 0
    for i in range(runs):
        loads.append(os.getloadavg()[0])
        if i % 2:
            a, points = anchor_once(src, start, end)
            p, wire, body = portal_once(client)
        else:
            p, wire, body = portal_once(client)
            a, points = anchor_once(src, start, end)
        portal_ms.append(p)
        anchor_ms.append(a)
    doc = json.loads(body)
    return {
        "portal_p50": statistics.median(portal_ms),
        "portal_p95": p95(portal_ms),
        "anchor_p50": statistics.median(anchor_ms),
        "anchor_p95": p95(anchor_ms),
        "anchor_points": points,
        "speedup": statistics.median(anchor_ms) / statistics.median(portal_ms),
        "wire_kb": len(wire) / 1024,
        "json_kb": len(body) / 1024,
        "points": doc["points"],
        "traces": len(doc["figure"]["data"]),
        "load": (min(loads), max(loads)),
        "runs": runs,
    }


def bench_chart(
    work: Path, n_gpus: int, step: int, runs: int, prometheus: bool = True
) -> tuple[list, list[str]]:
    from gpus.utilization.metrics.sources import Http, PrometheusSource
    from gpus.utilization.tests.tsdb import run_prometheus, run_victoria_metrics

    end = float(int(time.time()) // 300 * 300)
    start = end - 30 * 86400
    gpus = fleet_gpus(n_gpus)
    times = np.arange(start, end + 1, step)
    t0 = time.perf_counter()
    util = util_matrix(gpus, times)
    om, vmf = work / "dcgm.om", work / "dcgm.prom"
    write_files(gpus, times, util, om, vmf)
    gen_s = time.perf_counter() - t0
    load_portal_rollups(gpus, times, util, end)
    client = _portal_client()
    portal_once(client)  # warm: the first request loads the URLconf and translations
    prom = None
    if prometheus:
        tsdb = work / "tsdb"
        t0 = time.perf_counter()
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(tsdb)],
            check=True,
            capture_output=True,
        )
        promtool_s = time.perf_counter() - t0
        with run_prometheus(work / "prom", tsdb=work / "tsdb") as url:
            src = PrometheusSource(url, Http(timeout=300))
            prom = interleaved(client, src, start, end, max(3, runs // 10))
    with run_victoria_metrics(work / "vm") as url:
        t0 = time.perf_counter()
        with open(vmf, "rb") as fh:
            req = urllib.request.Request(  # noqa: S310 - the local VictoriaMetrics
                f"{url}/api/v1/import/prometheus", data=fh, method="POST"
            )
            req.add_header("Content-Length", str(vmf.stat().st_size))
            urllib.request.urlopen(req, timeout=600).read()  # noqa: S310 - local
        urllib.request.urlopen(f"{url}/internal/force_flush", timeout=60).read()  # noqa: S310
        vm_import_s = time.perf_counter() - t0
        src = PrometheusSource(url, Http(timeout=120))
        anchor_once(src, start, end)  # warm VictoriaMetrics' caches as the portal's are
        vm = interleaved(client, src, start, end, runs)
    samples = len(gpus) * len(times)
    n = n_gpus
    load = f"load {vm['load'][0]:.2f}-{vm['load'][1]:.2f}"
    figs = [
        figure(
            f"utilization.chart_30d_p95_ms@{n}",
            round(vm["portal_p95"], 1),
            "ms",
            "<= 300",
            vm["portal_p95"] <= 300,
            p50=round(vm["portal_p50"], 1),
            load_average=load,
        ),
        figure(
            f"utilization.chart_30d_points_per_line@{n}",
            vm["points"],
            "points",
            "<= 2000",
            vm["points"] <= 2000,
        ),
        figure(
            f"utilization.chart_30d_wire_kb@{n}",
            round(vm["wire_kb"], 1),
            "KB",
            "< 100 (as sent: Content-Encoding gzip)",
            vm["wire_kb"] < 100,
        ),
        figure(
            f"utilization.chart_30d_victoriametrics_anchor_median_ms@{n}",
            round(vm["anchor_p50"], 1),
            "ms",
            "anchor (interleaved with the portal)",
            True,
            p95=round(vm["anchor_p95"], 1),
            load_average=load,
        ),
        figure(
            f"utilization.chart_30d_speedup_vs_victoriametrics@{n}",
            round(vm["speedup"], 1),
            "x",
            ">= 5 (medians, interleaved)",
            vm["speedup"] >= 5,
            load_average=load,
        ),
    ]
    notes = [
        f"- 30-day chart, {n} GPUs: {samples:,} samples of DCGM_FI_DEV_GPU_UTIL every {step} s "
        f"from devcluster's series ({gen_s:.0f} s to make), VictoriaMetrics import "
        f"{vm_import_s:.0f} s.",
        f"- portal, interleaved with VictoriaMetrics in one loop of {vm['runs']}: p50 "
        f"{vm['portal_p50']:.1f} ms, p95 {vm['portal_p95']:.1f} ms, {vm['points']} points/line, "
        f"{vm['traces']} traces, {vm['wire_kb']:.1f} KB on the wire (gzip; "
        f"{vm['json_kb']:.1f} KB of JSON); hourly model rollups past 7 days.",
        f"- VictoriaMetrics query_range x3 + the same figure: p50 {vm['anchor_p50']:.1f} ms, "
        f"p95 {vm['anchor_p95']:.1f} ms ({vm['anchor_points']} points/line): "
        f"{vm['speedup']:.1f}x the portal's median; {load} during the loop "
        f"({os.cpu_count()} cores).",
    ]
    if prom is not None:
        figs += [
            figure(
                f"utilization.chart_30d_prometheus_anchor_median_ms@{n}",
                round(prom["anchor_p50"], 1),
                "ms",
                "anchor (interleaved with the portal)",
                True,
            ),
            figure(
                f"utilization.chart_30d_speedup_vs_prometheus@{n}",
                round(prom["speedup"], 1),
                "x",
                ">= 5 (medians, interleaved)",
                prom["speedup"] >= 5,
            ),
        ]
        notes.append(
            f"- Prometheus (promtool {promtool_s:.0f} s): p50 {prom['anchor_p50']:.1f} ms "
            f"interleaved, {prom['speedup']:.1f}x ({prom['runs']} rounds)."
        )
    return figs, notes


# --- 2. a direct scrape pass over 10,000 GPUs ---------------------------------------------------


def exporter_process(port_q: multiprocessing.Queue, n: int, per: int) -> None:
    gpus = fleet_gpus(n, per_cluster=per)
    groups = [gpus[i : i + per] for i in range(0, n, per)]

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self) -> None:
            if self.path == "/targets":
                host = f"127.0.0.1:{self.server.server_address[1]}"
                body = json.dumps(
                    [
                        {
                            "targets": [host],
                            "labels": {
                                "__metrics_path__": f"/t/{i}/metrics",
                                "cluster": f"kubernetes-c{i:04d}",
                                "tenant": f"tenant-t{i % 50:02d}",
                            },
                        }
                        for i in range(len(groups))
                    ]
                ).encode()
            else:
                body = dcgm.render(groups[int(self.path.split("/")[2])], time.time(), 1).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    port_q.put(server.server_address[1])
    server.serve_forever()


def bench_direct(n: int) -> tuple[list, list[str]]:
    from gpus.inventory.models import Cluster
    from gpus.utilization.collector import collect_cluster
    from gpus.utilization.models import GpuDevice, GpuSample, MetricSource

    per = 80
    q: multiprocessing.Queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=exporter_process, args=(q, n, per), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=60)
        cluster, _ = Cluster.objects.get_or_create(name="bench-direct")
        MetricSource.objects.update_or_create(
            cluster=cluster,
            defaults={
                "kind": "direct",
                "sd_url": f"http://127.0.0.1:{port}/targets",
                "timeout_seconds": 30,
            },
        )
        passes = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = collect_cluster(cluster.pk)
            passes.append(time.perf_counter() - t0)
            assert result["gpus"] == n and result["errors"] == 0, result
        devices = GpuDevice.objects.filter(cluster=cluster).count()
        samples = GpuSample.objects.filter(device__cluster=cluster).count()
    finally:
        proc.terminate()
        proc.join(10)
    worst = max(passes)
    figs = [
        figure(
            f"utilization.direct_scrape_pass_s@{n}",
            round(worst, 2),
            "s",
            "<= 20 (period 60)",
            worst <= 20,
        )
    ]
    notes = [
        f"- direct scrape, {n} GPUs in {n // per} exporter targets: passes "
        + ", ".join(f"{p:.2f} s" for p in passes)
        + f" (first creates the devices); {devices} devices, {samples} samples stored."
    ]
    return figs, notes


# --- 3. query-API mode at 100,000 GPUs ----------------------------------------------------------


def bench_query_api(work: Path, n: int) -> tuple[list, list[str]]:
    from gpus.inventory.models import Cluster
    from gpus.utilization.collector import store
    from gpus.utilization.metrics.sources import Http, PrometheusSource
    from gpus.utilization.models import GpuDevice
    from gpus.utilization.tests.tsdb import run_victoria_metrics

    # Seed 2: GPUs of their own. With the direct scrape's seed the first 10,000 UUIDs were its
    # GPUs, whose samples (stored in direct mode) the rollup rightly kept per GPU.
    gpus = fleet_gpus(n, seed=2, per_cluster=800)
    now = time.time()
    path = work / "latest.prom"
    wanted = (
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_TEMP",
    )
    with open(path, "w") as fh:
        for g in gpus:
            lab = dcgm.labels(g)
            vals = dcgm.sample(g, now - 30, 1)
            fh.write("".join(f"{m}{{{lab}}} {vals[m]} {int((now - 30) * 1000)}\n" for m in wanted))
    with run_victoria_metrics(work / "vm100k") as url:
        with open(path, "rb") as fh:
            req = urllib.request.Request(  # noqa: S310 - the local VictoriaMetrics
                f"{url}/api/v1/import/prometheus", data=fh, method="POST"
            )
            req.add_header("Content-Length", str(path.stat().st_size))
            urllib.request.urlopen(req, timeout=600).read()  # noqa: S310 - local
        urllib.request.urlopen(f"{url}/internal/force_flush", timeout=60).read()  # noqa: S310
        time.sleep(2)
        cluster, _ = Cluster.objects.get_or_create(name="bench-query")
        src = PrometheusSource(url, Http(timeout=300))
        passes, read_s = [], []
        for _ in range(2):
            t0 = time.perf_counter()
            readings = src.collect(now)
            t1 = time.perf_counter()
            store(readings, cluster.pk, keep_samples=False)
            passes.append(time.perf_counter() - t0)
            read_s.append(t1 - t0)
        stored = GpuDevice.objects.filter(cluster=cluster).count()
    # One 5-minute rollup of the query-API readings (5 per GPU, as the rollup task reads a
    # bucket at a 60 s step): group rows only, no per-GPU row kept.
    import datetime as dt

    from django.db.models import F, Q

    from gpus.utilization.metrics.dcgm import THROTTLING
    from gpus.utilization.models import GpuRollup, GroupRollup
    from gpus.utilization.rollup import floor_ts, rollup_bucket, rows_from_readings

    bucket = floor_ts(dt.datetime.fromtimestamp(now, tz=dt.UTC), 300)
    base = rows_from_readings(readings, cluster.pk)
    rows = [(r[0], bucket + dt.timedelta(seconds=60 * k), *r[2:]) for k in range(5) for r in base]
    t0 = time.perf_counter()
    rollup_bucket(bucket, rows)
    rollup_s = time.perf_counter() - t0
    # Query-API mode keeps a per-GPU row only for an incident (an XID or a throttle that holds
    # the GPU back, for the health page): never history, so no row carries utilization.
    per_gpu = GpuRollup.objects.filter(device__cluster=cluster)
    per_gpu_rows = per_gpu.count()
    history_rows = per_gpu.filter(util_avg__isnull=False).count()
    held_back = per_gpu.annotate(held=F("throttle_any").bitand(THROTTLING))
    not_incident_rows = held_back.exclude(Q(xid_last__gt=0) | Q(held__gt=0)).count()
    group_rows = GroupRollup.objects.filter(ts=bucket).count()
    # The first pass creates the devices once; every later pass is the recurring cost.
    steady = max(passes[1:])
    figs = [
        figure(
            f"utilization.query_api_pass_s@{n}",
            round(steady, 1),
            "s",
            "<= 60 (period 60)",
            steady <= 60 and stored == n,
        ),
        figure(
            f"utilization.query_api_first_pass_s@{n}",
            round(passes[0], 1),
            "s",
            "<= 120 (once: creates the devices)",
            passes[0] <= 120,
        ),
        figure(
            f"utilization.query_api_rollup_5m_s@{n}",
            round(rollup_s, 1),
            "s",
            "<= 60 (period 60), per-GPU rows only for incidents (no utilization history)",
            rollup_s <= 60 and history_rows == 0 and not_incident_rows == 0,
        ),
    ]
    notes = [
        f"- query-API 5-minute rollup of {len(rows)} readings: {rollup_s:.1f} s, "
        f"{group_rows} group rows, {per_gpu_rows} per-GPU incident rows stored "
        f"({history_rows} with utilization, {not_incident_rows} without an incident).",
        f"- query-API mode, {n} GPUs x {len(wanted)} fields in VictoriaMetrics: passes "
        + ", ".join(f"{p:.1f} s (read {r:.1f} s)" for p, r in zip(passes, read_s, strict=True))
        + f"; {stored} devices stored, no per-GPU samples.",
    ]
    return figs, notes


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    p.add_argument("--chart-only", action="store_true", help="only the 30-day chart figures")
    p.add_argument(
        "--no-prometheus",
        action="store_true",
        help="skip the Prometheus anchor (promtool: minutes)",
    )
    args = p.parse_args()
    chart_gpus, direct_gpus, query_gpus, step, runs = (
        (100, 800, 5000, 3600, 10) if args.quick else (1000, 10_000, 100_000, 1800, 30)
    )
    with tempfile.TemporaryDirectory(prefix="hk-bench-util-") as tmp:
        work = Path(tmp)
        setup_django(work / "var")
        figs, notes = [], []
        parts = [lambda: bench_chart(work, chart_gpus, step, runs, not args.no_prometheus)]
        if not args.chart_only:
            parts += [
                lambda: bench_direct(direct_gpus),
                lambda: bench_query_api(work, query_gpus),
            ]
        for part in parts:
            f, n = part()
            figs += f
            notes += n
            for line in n:
                print(line, flush=True)
    if not args.quick:
        record(figs)
    from django.db import connection

    lines = [
        "# Utilization benchmarks",
        "",
        f"Database: {connection.vendor}. Machine: {os.cpu_count()} cores.",
        "",
        "| figure | value | unit | target | ok |",
        "|---|---|---|---|---|",
        *[
            f"| {f['name']} | {f['value']} | {f['unit']} | {f['target']} | {'ok' if f['ok'] else 'MISS'} |"
            for f in figs
        ],
        "",
        *notes,
        "",
    ]
    if not args.quick and not args.chart_only:
        RESULTS_MD.parent.mkdir(exist_ok=True)
        RESULTS_MD.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
