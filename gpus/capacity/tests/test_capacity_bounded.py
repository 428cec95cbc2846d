"""The admin capacity page costs the same whatever the fleet (#18, bench capacity.page_p95_ms):
the same number of queries with few and many servers, workloads and failed requests, and
(PostgreSQL plans) no query reads a row per server, workload or failed operation."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from gpus.capacity import history, selectors
from gpus.catalog.models import GpuModel
from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import (
    Cluster,
    GpuWorkload,
    ModelInventory,
    Node,
    NodeGpu,
    TenantAllocation,
)
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import GpuQuota, Operation
from gpus.testing import H100, L40S
from gpus.utilization.models import GpuDevice, GpuRollup

pytestmark = pytest.mark.django_db

BIG_TABLES = {
    "inventory_node",
    "inventory_nodegpu",
    "inventory_gpuworkload",
    "provisioning_operation",
    "capacity_capacitysample",
}


def make_fleet(n: int, tenant) -> Cluster:
    """n 8-GPU servers (the last has the most free), n workloads, n requests that failed
    unschedulable this week, and a sample per sync for 10 syncs (the last as the sync writes)."""
    h100 = GpuModel.objects.get(resource_name=H100)
    cluster = Cluster.objects.create(name=f"c{n}")
    nodes = Node.objects.bulk_create(
        Node(cluster=cluster, name=f"n{i:06d}", health="ok", gpu_model=h100) for i in range(n)
    )
    NodeGpu.objects.bulk_create(
        NodeGpu(node=node, gpu_model=h100, installed=8, allocated=8 - (i == n - 1), free=i == n - 1)
        for i, node in enumerate(nodes)
    )
    ModelInventory.objects.create(
        cluster=cluster, gpu_model=h100, installed=8 * n, allocated=8 * n - 1, free=1
    )
    GpuWorkload.objects.bulk_create(
        GpuWorkload(
            cluster=cluster,
            tenant=tenant,
            gpu_model=h100,
            kind=WorkloadKind.VM if i % 2 else WorkloadKind.NODE_GROUP,
            app_kind="VMInstance" if i % 2 else "Kubernetes",
            name=f"w{i:06d}",
            node_group="" if i % 2 else "gpu",
            gpus_held=1,
        )
        for i in range(n)
    )
    now = timezone.now()
    Operation.objects.bulk_create(
        Operation(
            cluster=cluster,
            tenant=tenant,
            actor_name="alice",
            kind="create",
            namespace=tenant.namespace,
            app_kind="VMInstance",
            name=f"f{i:06d}",
            gpu_model=h100,
            gpu_count=1,
            state=OperationState.FAILED,
            unschedulable_since=now - dt.timedelta(hours=3),
            finished_at=now - dt.timedelta(minutes=i + 1),
        )
        for i in range(n)
    )
    for k in range(10, 0, -1):
        history.record_samples(cluster.pk, now - dt.timedelta(minutes=10 * k))
    history.record_samples(cluster.pk, now)
    return cluster


def _page(client) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse("gpus:capacity"))
    assert response.status_code == 200
    return response, [q["sql"] for q in ctx.captured_queries]


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


def test_cards_read_the_latest_samples_with_a_fixed_number_of_queries(admin_client_, acme):
    """Held by VMs and node groups and the most free on one server come from each cluster's
    latest sample: right, and the same number of queries for 5 and 500 servers."""
    h100 = GpuModel.objects.get(resource_name=H100)
    make_fleet(5, acme)
    _page(admin_client_)  # the forecast and top tenants are cached from the first request on
    response, few = _page(admin_client_)
    card = {c.model_id: c for c in response.context["cards"]}[h100.pk]
    assert (card.allocated_vms, card.allocated_node_groups, card.free_max_one) >= (2, 3, 1)
    before = (card.allocated_vms, card.allocated_node_groups)
    make_fleet(500, acme)
    response, many = _page(admin_client_)
    card = {c.model_id: c for c in response.context["cards"]}[h100.pk]
    assert (card.allocated_vms - before[0], card.allocated_node_groups - before[1]) == (250, 250)
    assert card.free_max_one == 1
    assert len(many) == len(few)
    refused = response.context["refused"]
    assert len(refused) == 20 and refused[0]["who"] == "alice"


# PostgreSQL's plans: the first CI pass (PostgreSQL) runs it, the embedded pass (SQLite) not.
@pytest.mark.once
def test_page_reads_a_bounded_part_of_big_tables(admin_client_, acme):
    """PostgreSQL plans of every query behind the page on 3,000 servers, workloads and failed
    requests: none reads more than a few hundred rows of a server, workload, operation or
    sample table (the refused list from the partial index, the cards from the latest samples)."""
    assert connection.vendor == "postgresql"
    make_fleet(3000, acme)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    _page(admin_client_)
    _, queries = _page(admin_client_)
    checked = 0
    for sql in queries:
        if not sql.startswith("SELECT") or not any(t in sql for t in BIG_TABLES):
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
            (plan,) = cursor.fetchone()[0]
        checked += 1
        for table, read in _rows_read(plan["Plan"]).items():
            assert read <= 300, (table, read, sql[:300])
    assert checked >= 3


def test_busy_figures_come_from_the_samples_whatever_the_rollups(admin_client_, acme):
    """How busy the allocated GPUs are is written with each cluster's sample at its sync: the
    page reads no per-GPU utilization row, and its queries are the same with and without the
    5-minute rollups (they were one more with them); the clusters' means weigh their counts."""
    h100 = GpuModel.objects.get(resource_name=H100)
    first, second = make_fleet(5, acme), make_fleet(6, acme)
    _page(admin_client_)
    response, without = _page(admin_client_)
    card = {c.model_id: c for c in response.context["cards"]}[h100.pk]
    assert (card.reporting, card.busy_pct) == (0, None)
    now = timezone.now()
    for cluster, busy in ((first, [10.0]), (second, [40.0, 70.0, 100.0])):
        for i, b in enumerate(busy):
            device = GpuDevice.objects.create(
                uuid=f"GPU-{cluster.pk}-{i}", cluster=cluster, gpu_model=h100
            )
            GpuRollup.objects.create(
                bucket="5m", ts=now, device=device, allocated=True, busy_avg=b, samples=5
            )
        history.record_samples(cluster.pk, now + dt.timedelta(seconds=1))
    response, with_rollups = _page(admin_client_)
    card = {c.model_id: c for c in response.context["cards"]}[h100.pk]
    assert card.reporting == 4 and card.busy_pct == pytest.approx(55.0)
    assert len(with_rollups) == len(without)
    assert not any("utilization_gpurollup" in sql for sql in with_rollups)


def test_quota_pressure_sums_a_tenants_gpus_of_the_quotas_model_over_clusters(acme, globex):
    """A quota's held GPUs: the tenant's allocations of that model in every cluster, not its
    other models' nor another tenant's."""
    h100 = GpuModel.objects.get(resource_name=H100)
    l40s = GpuModel.objects.get(resource_name=L40S)
    a, b = Cluster.objects.create(name="qa"), Cluster.objects.create(name="qb")
    for cluster, tenant, model, n in (
        (a, acme, h100, 2),
        (b, acme, h100, 2),
        (a, acme, l40s, 5),
        (a, globex, l40s, 3),
    ):
        TenantAllocation.objects.create(
            cluster=cluster, namespace=tenant.namespace, tenant=tenant, gpu_model=model, allocated=n
        )
    GpuQuota.objects.create(tenant=acme, gpu_model=h100, limit=4)
    GpuQuota.objects.create(tenant=globex, gpu_model=h100, limit=4)
    GpuQuota.objects.create(tenant=globex, gpu_model=l40s, limit=10)
    rows = selectors.quota_pressure()
    assert [(r["tenant"], r["model"], r["held"], r["over"]) for r in rows] == [
        (acme, h100, 4, False)
    ]
