"""Capacity benchmarks (#18): the admin capacity page, its history chart and the exports over
HTTP through gunicorn (production settings, 2 workers) with a backfilled history; a tenant's
spend page, its energy chart and the spend exports (two price lists over the year); the queries
of the pages; the history's writes per sync; the forecast's error on a simulated trend.

    createdb capbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/capbench .venv/bin/python bench/bench_capacity.py

PostgreSQL only (the backfill is one INSERT ... SELECT generate_series per table). Sizes:
``--models 20 --clusters 10 --tenants 500`` (the issue's) with 90 days of hourly rollups (their
retention) and 365 days of daily ones, tenants' daily usage for 365 days and hourly energy for
30; ``--quick`` is a smaller check of the script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from django_env import setup_production_django  # noqa: E402
from http_timing import gunicorn, percentile, session, session_cookie, time_pages  # noqa: E402
from results import figure, record  # noqa: E402

RESULTS_MD = ROOT / "bench" / "results" / "capacity.md"
RUNS = 100


def seed(models: int, clusters: int, tenants: int) -> dict[str, int]:
    """Clusters with their model totals, tenants, and the history the rollup task would have
    written: hourly for 90 days, daily for 365, and tenants' daily GPU-hours (2 models each)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from gpus.capacity.models import CapacityRollup, GpuPrice, PriceList, TenantUsage
    from gpus.catalog.models import GpuModel
    from gpus.inventory.models import Cluster, GpuWorkload, ModelInventory, TenantAllocation
    from gpus.provisioning.models import GpuQuota
    from gpus.tenancy.models import Membership, Tenant
    from gpus.utilization.models import GroupRollup

    CapacityRollup.objects.all().delete()
    TenantUsage.objects.all().delete()
    GroupRollup.objects.filter(scope="tenant").delete()
    known = list(GpuModel.objects.order_by("pk"))
    for i in range(len(known), models):
        known.append(
            GpuModel.objects.create(
                resource_name=f"nvidia.com/BENCH_{i:02d}", display_name=f"Bench GPU {i:02d}"
            )
        )
    known = known[:models]
    cl = [Cluster.objects.get_or_create(name=f"bench-{c:02d}")[0] for c in range(clusters)]
    Cluster.objects.filter(pk__in=[c.pk for c in cl]).update(last_synced_at=timezone.now())
    ModelInventory.objects.filter(cluster__in=cl).delete()
    ModelInventory.objects.bulk_create(
        ModelInventory(
            cluster=c, gpu_model=m, installed=800, allocated=500 + 7 * i, free=300 - 7 * i
        )
        for c in cl
        for i, m in enumerate(known)
    )
    Tenant.objects.bulk_create(
        [Tenant(namespace=f"tenant-b{t:03d}", display_name=f"B{t}") for t in range(tenants)],
        ignore_conflicts=True,
    )
    bench_tenants = list(
        Tenant.objects.filter(namespace__startswith="tenant-b")
        .order_by("pk")
        .values_list("pk", "namespace")
    )
    tenant_ids = [pk for pk, _ns in bench_tenants]
    namespaces = [ns for _pk, ns in bench_tenants]
    GpuQuota.objects.filter(tenant_id__in=tenant_ids).delete()
    GpuQuota.objects.bulk_create(
        GpuQuota(tenant_id=t, gpu_model=known[i % models], limit=8)
        for i, t in enumerate(tenant_ids)
    )
    model_ids = [m.pk for m in known]
    cluster_ids = [c.pk for c in cl]
    now = timezone.now()
    with connection.cursor() as cur:
        for bucket, step, span in (("1h", "1 hour", "90 days"), ("1d", "1 day", "365 days")):
            cur.execute(
                """
                INSERT INTO capacity_capacityrollup
                  (bucket, ts, cluster_id, gpu_model_id, samples, installed, allocated,
                   allocated_max, free, free_min, unavailable, queued_max, refused)
                SELECT %s, ts, c, m, 120, 800, a, a::int, 800 - a, (800 - a)::int, 4,
                       (a > 700)::int * 8, 0
                FROM unnest(%s::bigint[]) c, unnest(%s::bigint[]) m,
                     generate_series(date_trunc('hour', %s::timestamptz) - %s::interval,
                                     %s::timestamptz, %s::interval) ts,
                     LATERAL (SELECT 400 + 300 * extract(epoch from ts - (%s::timestamptz
                              - interval '365 days')) / (365 * 86400) + (random() * 20) a) x
                """,
                [bucket, cluster_ids, model_ids, now, span, now, step, now],
            )
        cur.execute(
            """
            INSERT INTO capacity_tenantusage
              (bucket, ts, cluster_id, tenant_id, gpu_model_id, gpus_max, gpu_hours,
               vcpu_hours, memory_gib_hours, disk_gib_hours)
            SELECT '1d', ts, (%s::bigint[])[1 + t %% cardinality(%s::bigint[])], t,
                   (%s::bigint[])[1 + (t + k) %% cardinality(%s::bigint[])], 4, g, 8 * g,
                   32 * g, 100 * g
            FROM unnest(%s::bigint[]) t, generate_series(0, 1) k,
                 generate_series(date_trunc('day', %s::timestamptz) - interval '365 days',
                                 %s::timestamptz, interval '1 day') ts,
                 LATERAL (SELECT 24 * 4 * random() + 0 * k g) x
            """,
            [cluster_ids, cluster_ids, model_ids, model_ids, tenant_ids, now, now],
        )
        # Each tenant's hourly energy for 30 days (the tenant scope of the utilization rollups).
        cur.execute(
            """
            INSERT INTO utilization_grouprollup
              (bucket, scope, key, ts, epoch, gpus, allocated, busy, energy_wh, gpu_hours)
            SELECT '1h', 'tenant', n, ts, extract(epoch from ts)::bigint, 8, 8, 4,
                   8 * 300 * random(), 8
            FROM unnest(%s::text[]) n,
                 generate_series(date_trunc('hour', %s::timestamptz) - interval '30 days',
                                 %s::timestamptz, interval '1 hour') ts
            ON CONFLICT DO NOTHING
            """,
            [namespaces, now, now],
        )
        cur.execute("ANALYZE")
    # Two price lists over the year (spend prices each day with the one in force), and what
    # each tenant holds now (a node group of 2 workers: the month's forecast).
    GpuPrice.objects.all().delete()
    PriceList.objects.all().delete()
    today = now.date()
    for days_ago, factor in ((400, 1), (100, 2)):
        pl = PriceList.objects.create(
            valid_from=today - dt.timedelta(days=days_ago),
            currency="CHF",
            vcpu_hour=Decimal("0.01") * factor,
            memory_gib_hour=Decimal("0.004") * factor,
            disk_gib_month=Decimal("0.1") * factor,
            set_by="bench",
        )
        GpuPrice.objects.bulk_create(
            GpuPrice(price_list=pl, gpu_model=m, hour=Decimal("1.5") * factor) for m in known
        )
    GpuWorkload.objects.filter(cluster__in=cl).delete()
    TenantAllocation.objects.filter(cluster__in=cl).delete()
    TenantAllocation.objects.bulk_create(
        TenantAllocation(
            cluster=cl[i % clusters], namespace=ns, tenant_id=t, gpu_model=known[i % models],
            allocated=2,
        )
        for i, (t, ns) in enumerate(zip(tenant_ids, namespaces, strict=True))
    )  # fmt: skip
    GpuWorkload.objects.bulk_create(
        GpuWorkload(
            cluster=cl[i % clusters], tenant_id=t, kind="node_group", app_kind="Kubernetes",
            name="ml", node_group="gpu", gpu_model=known[i % models], gpus_per_instance=1,
            instances=2, max_instances=2, gpus_held=2, state="running",
            group_spec={"instance_type": "u1.2xlarge", "disk": "100Gi"},
        )
        for i, t in enumerate(tenant_ids)
    )  # fmt: skip
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    member, _ = get_user_model().objects.get_or_create(username="bench-tenant")
    Membership.objects.get_or_create(
        user=member, tenant=Tenant.objects.get(namespace="tenant-b000")
    )
    return {
        "hourly": CapacityRollup.objects.filter(bucket="1h").count(),
        "daily": CapacityRollup.objects.filter(bucket="1d").count(),
        "tenant_days": TenantUsage.objects.count(),
        "energy_hours": GroupRollup.objects.filter(scope="tenant").count(),
        "user": user.pk,
        "member": member.pk,
    }


def page_queries() -> int:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-admin"))
    client.get("/capacity/")
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/capacity/").status_code == 200
    return len(ctx)


def spend_page_queries() -> tuple[int, int]:
    """The tenant spend page's queries for two tenants (the same: a fixed number)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-admin"))
    counts = []
    for ns in ("tenant-b000", "tenant-b001"):
        client.get(f"/tenants/{ns}/spend/")
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(f"/tenants/{ns}/spend/").status_code == 200
        counts.append(len(ctx))
    return counts[0], counts[1]


def history_writes(models: int, nodes: int, clusters: int = 1) -> tuple[int, float]:
    """One full pass's history over `clusters` clusters of `nodes` 8-GPU servers each, with
    the demo fleet's workloads in its proportions (8 per 11 servers, 12 of 88 GPUs held):
    rows written and the time of the pass (p50 of 5; each sync records its own cluster)."""
    from django.utils import timezone

    from gpus.capacity import history
    from gpus.catalog.models import GpuModel
    from gpus.inventory.choices import WorkloadKind
    from gpus.inventory.models import Cluster, GpuWorkload, ModelInventory, Node, NodeGpu
    from gpus.tenancy.models import Tenant

    known = list(GpuModel.objects.order_by("pk")[:models])
    tenant, _ = Tenant.objects.get_or_create(namespace="tenant-bench-writes")
    ids = []
    for c in range(clusters):
        cluster, _ = Cluster.objects.get_or_create(name=f"bench-writes-{c}")
        ids.append(cluster.pk)
        if Node.objects.filter(cluster=cluster).count() == nodes:
            continue
        Node.objects.filter(cluster=cluster).delete()
        GpuWorkload.objects.filter(cluster=cluster).delete()
        Node.objects.bulk_create(
            (
                Node(cluster=cluster, name=f"n{i:05d}", health="ready", gpu_installed=8)
                for i in range(nodes)
            ),
            batch_size=5000,
        )
        node_ids = Node.objects.filter(cluster=cluster).values_list("pk", flat=True)
        NodeGpu.objects.bulk_create(
            (
                NodeGpu(
                    node_id=n,
                    gpu_model=known[i % models],
                    installed=8,
                    allocated=i % 9,
                    free=8 - i % 9,
                )
                for i, n in enumerate(node_ids)
            ),
            batch_size=5000,
        )
        GpuWorkload.objects.bulk_create(
            (
                GpuWorkload(
                    cluster=cluster,
                    tenant=tenant,
                    kind=WorkloadKind.VM if i % 2 else WorkloadKind.NODE_GROUP,
                    app_kind="VMInstance" if i % 2 else "Kubernetes",
                    name=f"w{i:06d}",
                    gpu_model=known[i % models],
                    gpus_held=1 + i % 2,
                )
                for i in range(nodes * 8 // 11)
            ),
            batch_size=5000,
        )
        ModelInventory.objects.filter(cluster=cluster).delete()
        ModelInventory.objects.bulk_create(
            ModelInventory(cluster=cluster, gpu_model=m, installed=8 * nodes // models)
            for m in known
        )
    times, rows = [], 0
    for _ in range(5):
        now = timezone.now()
        t0 = time.perf_counter()
        rows = sum(history.record_samples(pk, now) for pk in ids)
        times.append((time.perf_counter() - t0) * 1000)
    return rows, percentile(times, 50)


def forecast_error() -> tuple[float, float]:
    """Allocation grows 5 GPUs a day with noise and spikes: |forecast - truth| / truth."""
    from gpus.capacity.forecast import days_to_exhaustion

    errors = []
    for s in range(20):
        rng = np.random.default_rng(s)
        t = np.arange(0, 14, 1 / 24)
        y = 200 + 5 * t + rng.normal(0, 4, t.size)
        y[rng.integers(0, t.size, 10)] += 40
        truth = (400 - (200 + 5 * t[-1])) / 5
        got = days_to_exhaustion(list(t), list(y), 400).days
        errors.append(abs(got - truth) / truth * 100)
    return float(np.mean(errors)), float(np.max(errors))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--tenants", type=int, default=500)
    ap.add_argument(
        "--no-record",
        action="store_true",
        help="print the figures only (e.g. measured at a load average above 4)",
    )
    args = ap.parse_args()
    if args.quick:
        args.models, args.clusters, args.tenants = 4, 2, 20
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("bench_capacity: set DATABASE_URL to a PostgreSQL database (skipped)")
        return 0
    with tempfile.TemporaryDirectory(prefix="hk-bench-cap-") as tmp:
        var = Path(tmp) / "var"
        var.mkdir()
        setup_production_django(var)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        sizes = seed(args.models, args.clusters, args.tenants)
        cookie = session_cookie(sizes["user"])
        tenant_cookie = session_cookie(sizes["member"])
        admin, member = session(cookie), session(tenant_cookie)
        pages = {
            "page": (admin, "/capacity/"),
            "chart_30d": (admin, "/capacity/chart/?range=30"),
            "chart_365d": (admin, "/capacity/chart/?range=365"),
            "export_history_csv": (admin, "/capacity/export/history.csv"),
            "export_gpu_hours_csv": (admin, "/capacity/export/gpu-hours.csv"),
            # A tenant member: its spend page (a year of daily usage priced by two lists), its
            # energy chart, its own spend CSV; the admins' spend export.
            "tenant_spend_page": (member, "/tenants/tenant-b000/spend/"),
            "tenant_energy_chart": (member, "/tenants/tenant-b000/spend/energy/"),
            "tenant_export_spend_csv": (member, "/tenants/tenant-b000/spend.csv"),
            "export_spend_csv": (admin, "/capacity/export/spend.csv"),
        }
        load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        with gunicorn(workers=2) as base:
            times = time_pages(base, pages, RUNS)
        timings = {name: (percentile(ms, 50), percentile(ms, 95)) for name, ms in times.items()}
        queries = page_queries()
        spend_queries = spend_page_queries()
        rows, write_ms = history_writes(args.models, 1250)
        # 1,000,000 GPUs: ten clusters of 12,500 8-GPU servers, a pass syncing each once.
        rows_1m, write_ms_1m = history_writes(
            args.models, 500 if args.quick else 12_500, clusters=10
        )
        mean_err, max_err = forecast_error()
    load = Path("/proc/loadavg").read_text().split()[:3]
    size = (
        f"{args.models} models, {args.clusters} clusters, {args.tenants} tenants; "
        f"{sizes['hourly']:,} hourly and {sizes['daily']:,} daily rollups, "
        f"{sizes['tenant_days']:,} tenant-days, {sizes['energy_hours']:,} tenant energy-hours"
    )
    figs = [
        figure(
            f"capacity.{name}_p95_ms",
            round(p95, 1),
            "ms",
            "<= 150 over HTTP (gunicorn, 2 workers, the pages interleaved)",
            p95 <= 150,
            p50=round(p50, 1),
            size=size,
            load_average=f"load {' '.join(load)} (before the requests: {load_before})",
        )
        for name, (p50, p95) in timings.items()
    ] + [
        figure("capacity.page_queries", queries, "queries", "fixed", True, size=size),
        figure(
            "capacity.tenant_spend_page_queries",
            spend_queries[0],
            "queries",
            "fixed (the same for two tenants)",
            spend_queries[0] == spend_queries[1],
            size=size,
        ),
        figure(
            "capacity.history_rows_per_sync",
            rows,
            "rows",
            "one per GPU model per cluster",
            rows == args.models,
        ),
        figure(
            "capacity.history_write_ms@10000",
            round(write_ms, 1),
            "ms",
            "one sync's samples, a cluster of 1,250 8-GPU servers",
            write_ms <= 1000,
        ),
        figure(
            "capacity.history_rows_per_pass@1000000",
            rows_1m,
            "rows",
            "one per GPU model per cluster: ten clusters of 100,000 GPUs",
            rows_1m == 10 * args.models,
        ),
        figure(
            "capacity.history_write_ms@1000000",
            round(write_ms_1m, 1),
            "ms",
            "<= 5000 for a pass over ten clusters of 12,500 8-GPU servers and 9,090 workloads each"
            " (p50 of 5)",
            write_ms_1m <= 5000,
        ),
        figure(
            "capacity.forecast_error_pct",
            round(mean_err, 2),
            "%",
            "<= 5 % of the true days to exhaustion (5 GPUs/day, noise and spikes, 20 runs)",
            max_err <= 5,
            max=round(max_err, 2),
        ),
    ]
    for f in figs:
        f["load"] = " ".join(load)
    lines = [
        "# Capacity benchmarks",
        "",
        f"Data: {size}. Machine: {os.cpu_count()} cores, load average {' '.join(load)} "
        f"(before the requests: {load_before}).",
        "",
        "| figure | value | unit | target | ok |",
        "|---|---|---|---|---|",
        *[
            f"| {f['name']} | {f['value']} | {f['unit']} | {f['target']} | "
            f"{'ok' if f['ok'] else 'MISS'} |"
            for f in figs
        ],
        "",
    ]
    print("\n".join(lines))
    if not args.quick and not args.no_record:
        record(figs)
        RESULTS_MD.parent.mkdir(exist_ok=True)
        RESULTS_MD.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
