"""Every utilization page costs the same whatever the fleet (issue 17.1): a fixed number of
queries and a bounded number of rows, measured at two fleet sizes; and what the pages say
(issue 20.19): allocated with telemetry and in the inventory, power-capped and hot GPUs on the
health page, host nodes on the heatmap."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload, ModelInventory, Node
from gpus.utilization import rollup
from gpus.utilization.models import Bucket, GpuDevice, GpuRollup, GroupRollup, Scope
from gpus.utilization.selectors import (
    COUNT_CAP,
    HEALTH_COUNT_CAP,
    PAGE_SIZE,
    TENANT_CHART_TOP,
    TimeRange,
    health,
)

pytestmark = pytest.mark.django_db

A100 = "NVIDIA A100 80GB PCIe"


def make_fleet(n: int, tenant, other=None) -> None:
    """n GPUs, one workload (a worker VM) per 4, half the workloads with telemetry; every GPU
    idle; 5-minute rollups of the last two hours per GPU (at the A100's 300 W cap, 88 °C) and
    per node and host node."""
    now = timezone.now()
    cluster = Cluster.objects.create(name=f"c{n}")
    workloads = GpuWorkload.objects.bulk_create(
        GpuWorkload(
            cluster=cluster,
            tenant=tenant if i % 2 == 0 or other is None else other,
            kind=WorkloadKind.NODE_GROUP,
            app_kind="Kubernetes",
            name=f"k{i:06d}",
            node_group="gpu",
            gpus_per_instance=4,
            gpus_held=4,
        )
        for i in range(n // 4)
    )
    devices = GpuDevice.objects.bulk_create(
        GpuDevice(
            uuid=f"GPU-{n}-{i:07d}",
            cluster=cluster,
            model_name=A100,
            hostname=f"worker-{i // 4:06d}",
            index=i % 4,
            source="dcgm-exporter",
            tenant=workloads[i // 4].tenant,
            workload=workloads[i // 4],
            last_seen_at=now if (i // 4) % 2 == 0 else None,
            idle_since=now - dt.timedelta(hours=2),
            busy_metric="DCGM_FI_DEV_GPU_UTIL",
        )
        for i in range(n)
    )
    Node.objects.bulk_create(
        Node(
            cluster=cluster,
            name=f"host-{h:05d}",
            health="ok",
            gpu_installed=8,
            gpu_allocated=8,
            holders=[{"workload": f"worker-{2 * h + k:06d}"} for k in (0, 1)],
        )
        for h in range(n // 8)
    )
    end = rollup.floor_ts(now, 300)
    buckets = [end - dt.timedelta(minutes=5 * k) for k in range(1, 25)]
    GpuRollup.objects.bulk_create(
        GpuRollup(
            bucket=Bucket.FIVE_MINUTES,
            ts=b,
            device=d,
            tenant_id=d.tenant_id,
            workload_id=d.workload_id,
            samples=5,
            allocated=True,
            util_avg=50,
            power_avg=290,
            power_max=299.5,
            temp_max=88,
            energy_wh=24,
        )
        for d in devices
        if d.last_seen_at
        for b in buckets[:2]
    )
    for b in buckets:
        rollup._upsert_group(rollup.group_rollups(Bucket.FIVE_MINUTES, b))
    model = GpuModel.objects.first()
    ModelInventory.objects.create(
        cluster=cluster, gpu_model=model, installed=n + 8, allocated=n, free=8
    )


PAGES = [
    ("gpus:util_fleet", [], ""),
    ("gpus:util_heatmap", [], "?by=host"),
    ("gpus:util_chart", ["heatmap"], "?by=host"),
    ("gpus:util_chart", ["heatmap"], "?by=node&offset=60"),
    ("gpus:util_chart", ["fleet"], "?range=7d"),
    ("gpus:util_chart", ["allocation"], ""),
    ("gpus:util_idle", [], ""),
    ("gpus:util_health", [], ""),
    ("gpus:util_energy", [], "?by=gpu"),
    ("gpus:util_energy", [], "?by=node"),
]


def _queries(client, url: str) -> tuple[int, bytes]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(ctx.captured_queries), response.content


@pytest.mark.parametrize(("name", "args", "query"), PAGES)
def test_ops_pages_cost_the_same_at_two_fleet_sizes(
    admin_client_, acme, globex, name, args, query
) -> None:
    url = reverse(name, args=args) + query
    make_fleet(640, acme, globex)  # more rows than a page everywhere
    small, small_body = _queries(admin_client_, url)
    make_fleet(3200, acme, globex)  # 5 times the GPUs
    large, large_body = _queries(admin_client_, url)
    assert large == small, (url, small, large)
    # Never a list of everything: a page of rows (and the two clusters' metric sources).
    if args == ["heatmap"]:
        assert len(json.loads(large_body)["figure"]["data"][0]["y"]) == 60
    elif not args:
        assert large_body.count(b"<tr") <= PAGE_SIZE + 4
        assert len(large_body) < 1.2 * len(small_body) + 2000


def test_tenant_pages_cost_the_same_at_two_fleet_sizes(alice_client, acme) -> None:
    urls = [
        reverse("gpus:util_tenant", args=["tenant-acme"]),
        reverse("gpus:util_tenant_idle", args=["tenant-acme"]),
        reverse("gpus:util_chart", args=["tenant"]) + "?tenant=tenant-acme",
    ]
    make_fleet(320, acme)
    small = [_queries(alice_client, u) for u in urls]
    make_fleet(1600, acme)
    large = [_queries(alice_client, u) for u in urls]
    for url, (qs, _), (ql, _body) in zip(urls, small, large, strict=True):
        assert ql == qs, (url, qs, ql)
    tenant_page = large[0][1].decode()
    assert tenant_page.count('class="card workload-card"') <= 21
    assert 'rel="next"' in tenant_page  # the other workloads are a page away


def test_tenant_page_costs_the_same_with_few_and_many_workloads(alice_client, acme) -> None:
    """The GPUs of the page's workloads are read in one query, not one per workload: 2
    workloads or a full page of 20 cost the same queries (issue 17.1)."""
    url = reverse("gpus:util_tenant", args=["tenant-acme"])
    make_fleet(8, acme)  # 2 workloads of 4 GPUs
    few, _ = _queries(alice_client, url)
    make_fleet(160, acme)  # 40 more
    many, body = _queries(alice_client, url)
    assert many == few, (few, many)
    page = body.decode()
    assert page.count('class="card workload-card"') == 20
    # The first workload (name order, then id) with its four GPUs.
    assert all(f"GPU-8-000000{i}" in page for i in range(4))


def test_energy_by_node_ranks_the_latest_bucket_and_sums_the_range() -> None:
    """Per node: the 50 largest consumers of the range's latest bucket, each with its energy
    over the whole range, and how many nodes that bucket holds (issue 17.1)."""
    from gpus.utilization.selectors import energy

    now = timezone.now()
    end = rollup.floor_ts(now, 300)
    rows = []
    # The latest bucket ranks node-59 first; the one before would rank node-00 first.
    for minutes, wh_of in ((5, lambda i: i), (10, lambda i: 1000 - 10 * i)):
        ts = end - dt.timedelta(minutes=minutes)
        rows += [
            GroupRollup(bucket=Bucket.FIVE_MINUTES, scope=Scope.NODE, key=f"node-{i:02d}", ts=ts,
                        epoch=int(ts.timestamp()), gpus=1, energy_wh=wh_of(i), power_sum=200,
                        power_limit_sum=300)
            for i in range(60)
        ]  # fmt: skip
    GroupRollup.objects.bulk_create(rows)
    found = energy(TimeRange(now - dt.timedelta(hours=1), now, "1h"), "node")
    # node-10..59 (the latest bucket's 50 largest), in order of their energy over the range.
    assert {r["key"] for r in found["rows"]} == {f"node-{i:02d}" for i in range(10, 60)}
    assert found["rows"][0]["key"] == "node-10" and found["count"] == 60
    assert found["rows"][0]["kwh"] == pytest.approx((10 + 1000 - 100) / 1000)


def test_fleet_says_allocated_with_telemetry_and_in_the_inventory(admin_client_, acme) -> None:
    make_fleet(40, acme)
    body = admin_client_.get(reverse("gpus:util_fleet")).content.decode()
    # 20 of the 40 allocated GPUs report: both figures, and how many lack telemetry.
    assert "allocated: 20 with telemetry, 40 in the inventory (of 48 installed)" in body
    assert "20 without telemetry" in body


def test_health_flags_a_gpu_at_its_power_cap_and_hot(acme) -> None:
    make_fleet(8, acme)
    now = timezone.now()
    found = health(TimeRange(now - dt.timedelta(hours=1), now, "1h"))
    assert found["count"] == 4  # the GPUs with telemetry
    row = found["rows"][0]
    assert row["capped_minutes"] == 10 and row["hot_minutes"] == 10
    assert row["power_limit"] == 300 and row["peak_temp"] == 88
    # Below the cap and cooler: not flagged.
    GpuRollup.objects.update(power_max=250, temp_max=70)
    assert health(TimeRange(now - dt.timedelta(hours=1), now, "1h"))["count"] == 0


def test_heatmap_by_host_node(admin_client_, acme) -> None:
    make_fleet(16, acme)
    assert GroupRollup.objects.filter(scope=Scope.HOST).values("key").distinct().count() == 2
    data = json.loads(
        admin_client_.get(reverse("gpus:util_chart", args=["heatmap"]) + "?by=host").content
    )
    assert sorted(data["figure"]["data"][0]["y"]) == ["host-00000", "host-00001"]


BIG_TABLES = {
    "utilization_gpudevice",
    "utilization_gpurollup",
    "utilization_grouprollup",
    "utilization_xidevent",
}


def _rows_read(node: dict) -> dict[str, float]:
    """Rows each big table's scans read (kept plus discarded by a filter), over every loop."""
    out: dict[str, float] = {}
    table = node.get("Relation Name")
    if table in BIG_TABLES:
        read = (
            node["Actual Rows"]
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        )
        out[table] = read * node["Actual Loops"]
    for child in node.get("Plans", []):
        for t, n in _rows_read(child).items():
            out[t] = out.get(t, 0) + n
    return out


def _plans(client, url: str) -> list[tuple[str, dict]]:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    out = []
    for q in ctx.captured_queries:
        sql = q["sql"]
        if sql.startswith("SELECT") and "utilization_" in sql:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
                (plan,) = cursor.fetchone()[0]
            out.append((sql, plan["Plan"]))
    return out


# PostgreSQL's plans: the first CI pass (PostgreSQL) runs it, the embedded pass (SQLite) not.
@pytest.mark.once
def test_health_idle_and_tenant_chart_read_a_bounded_part_of_big_tables(
    admin_client_, alice_client, acme, globex
) -> None:
    """PostgreSQL plans of every utilization query behind the health and idle pages and the
    tenant chart, on a fleet of 12,000 GPUs (half flagged at their power cap, every one idle):
    no query reads more than a bounded number of rows of a big table, whatever its size;
    the tenant chart reads its workloads' rollups by key prefix from an index (issue 17.1)."""
    assert connection.vendor == "postgresql"
    make_fleet(12000, acme, globex)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    sizes = {
        "utilization_gpudevice": GpuDevice.objects.count(),
        "utilization_gpurollup": GpuRollup.objects.count(),
    }
    assert sizes == {"utilization_gpudevice": 12000, "utilization_gpurollup": 12000}
    # The page walks GPUs until 51 are flagged; the capped count until 1,001 are: about
    # 2 x 1,001 GPUs and their probes here, never the 12,000.
    bound = 2 * (COUNT_CAP + 1) + 4 * PAGE_SIZE
    for url in (reverse("gpus:util_health"), reverse("gpus:util_idle")):
        plans = _plans(admin_client_, url)
        assert plans, url
        for sql, plan in plans:
            for table, read in _rows_read(plan).items():
                assert read <= bound, (url, table, read, sql[:300])
    # The tenant chart: its top lines, the ranking and the tenant's own rows, each from an
    # index; the ranking reads acme's workload rows of one bucket, the lines TENANT_CHART_TOP
    # workloads' rows: never every bucket of every workload of the tenant.
    chart = reverse("gpus:util_chart", args=["tenant"]) + "?tenant=tenant-acme"
    plans = _plans(alice_client, chart)
    assert len(plans) == 3, [sql[:200] for sql, _ in plans]
    acme_rows = GroupRollup.objects.filter(
        scope=Scope.WORKLOAD, key__startswith="tenant-acme|"
    ).count()
    acme_workloads = GpuWorkload.objects.filter(tenant=acme).count()
    bound = acme_workloads + 24 * (TENANT_CHART_TOP + 1)
    assert acme_rows > bound  # the tenant's rows: more than any query may read
    for sql, plan in plans:
        text = json.dumps(plan)
        assert '"Seq Scan"' not in text, (sql[:300], text)
        read = _rows_read(plan).get("utilization_grouprollup", 0)
        assert read <= bound, (read, sql[:300])
    ranking = next(plan for sql, plan in plans if '"busy" DESC' in sql)
    assert "grouprollup_epoch_key_idx" in json.dumps(ranking)


def test_health_pages_through_every_flagged_gpu(admin_client_, acme) -> None:
    """The health page is a keyset page of flagged GPUs in first-seen order with a next link;
    the next page holds the following ones; the count stays the total, up to its cap (17.1)."""
    make_fleet(240, acme)  # 120 GPUs report, each at its cap and hot
    url = reverse("gpus:util_health")
    first = admin_client_.get(url).content.decode()
    # The count stops at HEALTH_COUNT_CAP (its cost grows with the GPUs it counts).
    assert f"{HEALTH_COUNT_CAP}+ GPUs flagged, listed in the order the portal first saw" in first
    assert first.count('<code class="small">GPU-240-') == PAGE_SIZE
    cursor = first.split('rel="next"')[0].rsplit("after=", 1)[1].split('"')[0]
    second = admin_client_.get(url + "?after=" + cursor).content.decode()
    shown_first = set(re.findall(r'<code class="small">(GPU-240-\d+)</code>', first))
    shown_second = set(re.findall(r'<code class="small">(GPU-240-\d+)</code>', second))
    assert len(shown_second) == PAGE_SIZE and not shown_first & shown_second


def test_health_costs_the_same_with_an_empty_and_a_full_page(admin_client_, acme) -> None:
    """The health page's queries do not depend on what the page holds: no GPU flagged (the
    1,000-GPU bench fleet) or a full page and a count (issue 17.1: 5 against 8 queries)."""
    url = reverse("gpus:util_health")
    make_fleet(40, acme)
    GpuRollup.objects.update(power_max=100, temp_max=40)  # nothing flagged
    empty, body = _queries(admin_client_, url)
    assert "No XID error, no throttling" in body.decode()
    make_fleet(400, acme)  # 200 more GPUs at their cap and hot
    full, body = _queries(admin_client_, url)
    assert full == empty, (empty, full)
    assert body.decode().count('<code class="small">GPU-400-') == PAGE_SIZE


def _tenant_fleet(workloads: int, tenant) -> None:
    """`workloads` node groups of 4 GPUs with telemetry, workload k busy at k % 100."""
    make_fleet(4 * workloads, tenant)
    for key in (
        GroupRollup.objects.filter(scope=Scope.WORKLOAD).values_list("key", flat=True).distinct()
    ):
        k = int(key.split("|k")[1].split("/")[0])
        GroupRollup.objects.filter(scope=Scope.WORKLOAD, key=key).update(busy=k % 100)


def test_tenant_chart_draws_the_busiest_workloads_and_the_others_as_one_line(
    alice_client, acme
) -> None:
    """Past TENANT_CHART_TOP workloads the chart draws the busiest ones and one line for all
    the others, and says so; 24 workloads or 120 cost the same queries and lines (17.1)."""
    url = reverse("gpus:util_chart", args=["tenant"]) + "?tenant=tenant-acme&range=1h"
    _tenant_fleet(48, acme)  # 24 workloads with telemetry (every other one)
    few, body = _queries(alice_client, url)
    data = json.loads(body)
    names = [t["name"] for t in data["figure"]["data"]]
    assert len(names) == TENANT_CHART_TOP + 1 and names[-1] == "all the others"
    assert "busiest VMs and node groups now" in data["figure"]["layout"]["title"]["text"]
    GroupRollup.objects.all().delete()
    _tenant_fleet(240, acme)  # 120 with telemetry
    many, body = _queries(alice_client, url)
    assert many == few, (few, many)
    data = json.loads(body)
    names = [t["name"] for t in data["figure"]["data"]]
    assert len(names) == TENANT_CHART_TOP + 1
    # The busiest now: busy 98, 96, ... (even workload numbers hold the telemetry).
    assert "k000098/gpu" in names and "k000000/gpu" not in names[:-1]
    # The others' mean: every workload's utilization is 50 %, so theirs is too.
    others = [v for v in data["figure"]["data"][-1]["y"] if v is not None]
    assert others and all(v == pytest.approx(50, abs=0.1) for v in others)
