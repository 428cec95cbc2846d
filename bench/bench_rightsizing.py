"""Right-sizing benchmark (#18 item 6): the admin's fleet-wide page and a tenant's box on My
GPUs over HTTP through gunicorn (production settings, 2 workers), with a week of hourly per-GPU
rollups for 10,000 GPUs (the direct-scrape ceiling: past it the per-GPU history stays in the
query API and right-sizing has none); the fleet page's first load of the hour (its aggregate,
then kept in the cache until the next hour's rollups) measured apart, interleaved with the
cached loads.

    createdb rsbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rsbench .venv/bin/python bench/bench_rightsizing.py

PostgreSQL only (the rollups are one INSERT ... SELECT generate_series). ``--quick``: 500 GPUs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from django_env import setup_production_django  # noqa: E402
from http_timing import (  # noqa: E402
    gunicorn,
    percentile,
    session,
    session_cookie,
    time_pages,
    timed_get,
)
from results import figure, record  # noqa: E402

RESULTS_MD = ROOT / "bench" / "results" / "rightsizing.md"
RUNS = 60
GPUS_PER_WORKLOAD = 4
TENANTS = 500


def seed(gpus: int) -> dict[str, int]:
    """Tenants, their 4-GPU VMs (A100), one GPU device per GPU, 168 hourly rollups per GPU
    (busy and memory so some are idle, some fit an L40S, some are busy), a price list."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from gpus.capacity.models import GpuPrice, PriceList
    from gpus.catalog.models import GpuModel
    from gpus.inventory.choices import ResourceState, WorkloadKind
    from gpus.inventory.models import Cluster, GpuWorkload
    from gpus.tenancy.models import Membership, Tenant
    from gpus.utilization.models import GpuDevice, GpuRollup

    GpuRollup.objects.all().delete()
    GpuDevice.objects.all().delete()
    GpuWorkload.objects.all().delete()
    a100 = GpuModel.objects.get(resource_name="nvidia.com/GA100_A100_PCIE_80GB")
    l40s = GpuModel.objects.get(resource_name="nvidia.com/AD102GL_L40S")
    cluster, _ = Cluster.objects.get_or_create(name="bench-rs")
    Tenant.objects.bulk_create(
        [Tenant(namespace=f"tenant-r{t:03d}", display_name=f"R{t}") for t in range(TENANTS)],
        ignore_conflicts=True,
    )
    tenants = list(Tenant.objects.filter(namespace__startswith="tenant-r").order_by("pk"))
    workloads = GpuWorkload.objects.bulk_create(
        GpuWorkload(
            cluster=cluster,
            tenant=tenants[i % len(tenants)],
            kind=WorkloadKind.VM,
            app_kind="VMInstance",
            name=f"vm-{i:05d}",
            gpu_model=a100,
            gpu_resource=a100.resource_name,
            gpus_per_instance=GPUS_PER_WORKLOAD,
            gpus_held=GPUS_PER_WORKLOAD,
            state=ResourceState.RUNNING,
            last_seen_at=timezone.now(),
        )
        for i in range(gpus // GPUS_PER_WORKLOAD)
    )
    devices = GpuDevice.objects.bulk_create(
        GpuDevice(
            uuid=f"GPU-RS-{w.pk}-{g}",
            cluster=cluster,
            gpu_model=a100,
            tenant_id=w.tenant_id,
            workload=w,
        )
        for w in workloads
        for g in range(GPUS_PER_WORKLOAD)
    )
    end = timezone.now().replace(minute=0, second=0, microsecond=0)
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO utilization_gpurollup
              (bucket, ts, device_id, tenant_id, workload_id, samples, allocated, util_avg,
               busy_avg, mem_used_avg, mem_used_max, mem_total)
            SELECT '1h', ts, d.id, d.tenant_id, d.workload_id, 60, true, b, b, m * 0.8, m, 81920
            FROM utilization_gpudevice d,
                 generate_series(%s::timestamptz - interval '168 hours',
                                 %s::timestamptz - interval '1 hour', interval '1 hour') ts,
                 LATERAL (SELECT (d.workload_id %% 3) * 40 + 2 + random() * 5 b,
                                 8000 + (d.workload_id %% 5) * 15000 m) x
            WHERE d.uuid LIKE 'GPU-RS-%%'
            """,
            [end, end],
        )
        cur.execute("ANALYZE")
    GpuPrice.objects.all().delete()
    PriceList.objects.all().delete()
    pl = PriceList.objects.create(
        valid_from=end.date() - dt.timedelta(days=1),
        currency="CHF",
        vcpu_hour=Decimal("0.02"),
        memory_gib_hour=Decimal("0.005"),
        disk_gib_month=Decimal("0.1"),
        set_by="bench",
    )
    GpuPrice.objects.create(price_list=pl, gpu_model=a100, hour=Decimal("3.00"))
    GpuPrice.objects.create(price_list=pl, gpu_model=l40s, hour=Decimal("1.60"))
    User = get_user_model()
    admin, _ = User.objects.get_or_create(
        username="bench-rs-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    member, _ = User.objects.get_or_create(username="bench-rs-member")
    Membership.objects.get_or_create(user=member, tenant=tenants[0])
    return {
        "admin": admin.pk,
        "member": member.pk,
        "rollups": len(devices) * 168,
        "workloads": len(workloads),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpus", type=int, default=10000)
    args = ap.parse_args()
    if args.quick:
        args.gpus = 500
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("bench_rightsizing: set DATABASE_URL to a PostgreSQL database (skipped)")
        return 0
    with tempfile.TemporaryDirectory(prefix="hk-bench-rs-") as tmp:
        var = Path(tmp) / "var"
        var.mkdir()
        setup_production_django(var)
        from django.core.cache import cache
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        sizes = seed(args.gpus)
        cache.clear()
        admin_cookie = session_cookie(sizes["admin"])
        member_cookie = session_cookie(sizes["member"])
        admin, member = session(admin_cookie), session(member_cookie)
        pages = {
            "fleet": (admin, "/capacity/rightsizing/"),
            "tenant_box": (member, "/rightsizing/?tenant=tenant-r000"),
        }
        with gunicorn(workers=2) as base:
            cold: list[float] = []

            def first_load_of_the_hour(i: int) -> None:
                if i % 10 == 0:  # the hour's first load: the aggregate over the week
                    cache.clear()
                    cold.append(timed_get(admin, base + "/capacity/rightsizing/", timeout=120))

            times = time_pages(
                base, pages, RUNS, warmup=1, timeout=120, after_round=first_load_of_the_hour
            )
            times["fleet_cold"] = cold
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    size = (
        f"{args.gpus:,} GPUs in {sizes['workloads']:,} VMs of {TENANTS} tenants, "
        f"{sizes['rollups']:,} hourly rollups (a week)"
    )
    n = args.gpus
    figs = [
        figure(
            f"capacity.rightsizing_fleet_p95_ms@{n}",
            round(percentile(times["fleet"], 95), 1),
            "ms",
            "<= 150 over HTTP (gunicorn, 2 workers), the week's aggregate cached for the hour",
            percentile(times["fleet"], 95) <= 150,
            p50=round(percentile(times["fleet"], 50), 1),
            size=size,
            load=load,
        ),
        figure(
            f"capacity.rightsizing_fleet_first_load_ms@{n}",
            round(percentile(times["fleet_cold"], 50), 1),
            "ms",
            "<= 5000, once an hour (the week's aggregate over every GPU)",
            percentile(times["fleet_cold"], 50) <= 5000,
            max=round(max(times["fleet_cold"]), 1),
            runs=len(times["fleet_cold"]),
            size=size,
            load=load,
        ),
        figure(
            f"capacity.rightsizing_tenant_box_p95_ms@{n}",
            round(percentile(times["tenant_box"], 95), 1),
            "ms",
            "<= 150 over HTTP (gunicorn, 2 workers), the tenant's own rollups",
            percentile(times["tenant_box"], 95) <= 150,
            p50=round(percentile(times["tenant_box"], 50), 1),
            size=size,
            load=load,
        ),
    ]
    lines = [
        "# Right-sizing benchmarks",
        "",
        f"Data: {size}. Machine: {os.cpu_count()} cores, load average {load}.",
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
    if not args.quick:
        RESULTS_MD.write_text("\n".join(lines))
        record(figs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
