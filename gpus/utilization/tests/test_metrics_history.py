"""Query-API mode, one GPU: its history stays in a real Prometheus / VictoriaMetrics (loaded
with 30 days of one GPU), a task reads it into Django's cache (Redis in CI) with <= 2,000 points
a line, and the pages read only the cache: htmx polls until it is there (286 stops it)."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.urls import reverse

from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.utilization import tasks
from gpus.utilization.metrics import history
from gpus.utilization.models import GpuDevice, GpuRollup, GroupRollup, MetricSource
from gpus.web import queue

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.timeout(300)]


@pytest.fixture(params=["prometheus", "victoriametrics"])
def device(request, metric_history, acme) -> GpuDevice:
    """The GPU whose 30 days the real Prometheus or VictoriaMetrics (metric_history) hold."""
    cluster = Cluster.objects.create(name="prod")
    url = getattr(metric_history, request.param)
    MetricSource.objects.create(cluster=cluster, kind="prometheus", url=url)
    # A tenant sees a GPU through the inventory's allocation to its workload (#20 item 1).
    workload = GpuWorkload.objects.create(
        cluster=cluster,
        tenant=acme,
        kind=WorkloadKind.NODE_GROUP,
        app_kind="Kubernetes",
        name="ml",
        node_group="gpu",
        gpus_per_instance=1,
        gpus_held=1,
    )
    return GpuDevice.objects.create(
        workload=workload,
        uuid=metric_history.uuid,
        cluster=cluster,
        tenant=acme,
        model_name="NVIDIA L40S",
        hostname="node-a",
        index=0,
        kube_cluster="kubernetes-ml",
    )


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    """What the views hand to the broker (the worker's part is run by the test)."""
    calls: list[tuple] = []

    def enqueue(task_name: str, *args: object) -> None:
        assert task_name == "utilization.read_gpu_history"
        calls.append(args)

    monkeypatch.setattr(queue, "enqueue", enqueue)
    return calls


def _forget(device: GpuDevice, range_query: str, tenant: str = "") -> None:
    key = history.cache_key(device.uuid, range_query, tenant)
    cache.delete_many([key, f"{key}:lock"])


@pytest.mark.parametrize("range_key", ["30d", "1h"])
def test_task_fills_cache_and_page_reads_it(admin_client_, device, enqueued, range_key) -> None:
    _forget(device, f"range={range_key}")
    page = admin_client_.get(reverse("gpus:util_gpu", args=[device.uuid]), {"range": range_key})
    url = reverse("gpus:util_gpu_history", args=[device.uuid])
    assert page.status_code == 200 and url in page.content.decode()
    assert 'hx-trigger="load, every 2s"' in page.content.decode()
    # Not read yet: "loading", polling goes on, one read enqueued however many ask.
    for _ in range(3):
        r = admin_client_.get(url, {"range": range_key})
        assert r.status_code == 200 and "Reading this GPU" in r.content.decode()
    assert len(enqueued) == 1
    device_id, start, end, key, tenant = enqueued[0]
    assert (device_id, tenant) == (device.pk, "") and end - start > 3000
    out = tasks.read_gpu_history(device_id, start, end, key, tenant)
    assert out["error"] == "" and 0 < out["points"] <= 2000
    found = cache.get(key)
    util = [v for v in found["lines"]["util"] if v is not None]
    assert len(found["ts"]) <= 2000 and all(len(v) <= 2000 for v in found["lines"].values())
    assert len(util) > (1000 if range_key == "30d" else 200)  # the data, not a sparse axis
    assert any(v is not None for v in found["lines"]["power"])
    # Filled: the chart, and 286 stops htmx's polling.
    r = admin_client_.get(url, {"range": range_key})
    assert r.status_code == 286 and 'id="chart-gpu"' in r.content.decode()
    chart = admin_client_.get(
        reverse("gpus:util_chart", args=["gpu"]), {"range": range_key, "uuid": device.uuid}
    ).json()
    assert 0 < chart["points"] <= 2000 and chart["figure"]["data"]
    _forget(device, f"range={range_key}")


def test_views_never_call_the_source(admin_client_, device, enqueued) -> None:
    _forget(device, "range=6h")
    url = reverse("gpus:util_gpu_history", args=[device.uuid])
    admin_client_.get(url, {"range": "6h"})
    tasks.read_gpu_history(*enqueued[0])
    # The source goes away: pages still answer from the cache.
    MetricSource.objects.filter(cluster=device.cluster).update(url="http://127.0.0.1:9")
    r = admin_client_.get(url, {"range": "6h"})
    assert r.status_code == 286 and 'id="chart-gpu"' in r.content.decode()
    chart = admin_client_.get(
        reverse("gpus:util_chart", args=["gpu"]), {"range": "6h", "uuid": device.uuid}
    ).json()
    assert chart["points"] > 0
    # Expired: "loading" and one enqueued read, no call from the request; the read fails and
    # the page says so in plain words (and stops polling), not a 500.
    _forget(device, "range=6h")
    r = admin_client_.get(url, {"range": "6h"})
    assert r.status_code == 200 and "Reading this GPU" in r.content.decode()
    chart = admin_client_.get(
        reverse("gpus:util_chart", args=["gpu"]), {"range": "6h", "uuid": device.uuid}
    ).json()
    assert "loading" in chart
    assert len(enqueued) == 2
    out = tasks.read_gpu_history(*enqueued[1])
    assert "127.0.0.1:9" in out["error"]
    r = admin_client_.get(url, {"range": "6h"})
    assert r.status_code == 286
    assert "The metrics source could not be read" in r.content.decode()
    _forget(device, "range=6h")


def test_broker_down_is_said_not_a_500(admin_client_, device, monkeypatch) -> None:
    from kombu.exceptions import OperationalError

    def down(task_name: str, *args: object) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    monkeypatch.setattr(queue, "enqueue", down)
    _forget(device, "range=7d")
    url = reverse("gpus:util_gpu_history", args=[device.uuid])
    assert admin_client_.get(url, {"range": "7d"}).status_code == 200
    r = admin_client_.get(url, {"range": "7d"})
    assert r.status_code == 286 and "task queue unreachable" in r.content.decode()
    _forget(device, "range=7d")


def test_tenants_see_only_their_gpu(alice_client, bob_client, device, enqueued) -> None:
    mine = reverse("gpus:util_tenant_gpu_history", args=["tenant-acme", device.uuid])
    theirs = reverse("gpus:util_tenant_gpu_history", args=["tenant-globex", device.uuid])
    page = reverse("gpus:util_tenant_gpu", args=["tenant-acme", device.uuid])
    assert bob_client.get(mine).status_code == 404
    assert bob_client.get(theirs).status_code == 404
    assert bob_client.get(page).status_code == 404
    assert bob_client.get(reverse("gpus:util_gpu_history", args=[device.uuid])).status_code == 404
    assert not enqueued
    _forget(device, "range=24h", "tenant-acme")
    assert alice_client.get(mine).status_code == 200
    assert enqueued and enqueued[0][4] == "tenant-acme"
    out = tasks.read_gpu_history(*enqueued[0])
    assert out["points"] > 0 and not out["error"]
    r = alice_client.get(mine)
    assert r.status_code == 286 and "&amp;tenant=tenant-acme" in r.content.decode()
    _forget(device, "range=24h", "tenant-acme")


def test_query_api_rollups_keep_groups_not_per_gpu(device) -> None:
    """Query-API rows count in the group rollups (fleet, cluster, model, tenant, node, workload)
    that every page reads; no per-GPU history is stored, only the incidents (XID, throttle)."""
    import datetime as dt

    from gpus.utilization.rollup import rollup_bucket
    from gpus.utilization.selectors import TimeRange, energy, health, heatmap, workload_series

    hour = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
    for k in range(12):
        start = hour + dt.timedelta(minutes=5 * k)
        xid = 79 if k == 3 else None  # one incident
        rows = [
            (device.pk, start + dt.timedelta(seconds=s), device.tenant_id, None, True,
             50.0, 50.0, None, 1000.0, 48000.0, 200.0, 60.0, 2000.0, xid, 0x1)
            for s in (0, 60, 120, 180, 240)
        ]  # fmt: skip
        rollup_bucket(start, rows)
    # The incident's bucket only, without utilization or energy (and its hour).
    (event,) = GpuRollup.objects.filter(bucket="5m")
    assert event.xid_last == 79 and event.util_avg is None and event.energy_wh is None
    five = GroupRollup.objects.filter(bucket="5m", ts=hour)
    assert {(g.scope, g.key) for g in five} == {
        ("fleet", ""),
        ("cluster", "prod"),
        ("model", "NVIDIA L40S"),
        ("tenant", "tenant-acme"),
        ("node", "node-a"),
        ("workload", "tenant-acme|kubernetes-ml"),
    }
    fleet = GroupRollup.objects.get(bucket="1h", scope="fleet", ts=hour)
    assert fleet.gpus == 1 and fleet.util_avg == pytest.approx(50.0)
    assert fleet.gpu_hours == pytest.approx(1.0)
    assert fleet.energy_wh == pytest.approx(200.0)  # 200 W for an hour
    # The workload's row keeps what right-sizing reads: busy % and memory peak (MiB).
    vm = GroupRollup.objects.get(bucket="1h", scope="workload", ts=hour)
    assert vm.busy_avg == pytest.approx(50.0) and vm.mem_used_max == 1000.0
    # The pages that used per-GPU rows read the groups (and the incidents).
    tr = TimeRange(hour, hour + dt.timedelta(hours=1), "custom")
    nodes, _, z, _more = heatmap(tr)
    assert nodes == ["node-a"] and z[0][0] == pytest.approx(50.0)
    (node,) = energy(tr, "node")["rows"]
    assert node["key"] == "node-a" and node["kwh"] == pytest.approx(0.2)
    assert node["power"] == pytest.approx(200.0)
    assert node["share"] == pytest.approx(200 / 350 * 100)  # L40S: 350 W board
    series = workload_series(device.tenant, tr)
    assert list(series) == ["kubernetes-ml"] and series["kubernetes-ml"].lines["util"][0] == 50.0
    # The collector's pass that read XID 79 recorded the incident (query-API mode too).
    from gpus.utilization.collector import store
    from gpus.utilization.metrics.parse import Reading

    at = (hour + dt.timedelta(minutes=15)).timestamp()
    store([Reading(device.uuid, at, {"xid": 79.0}, tenant="tenant-acme")], None, False)
    (incident,) = health(tr)["rows"]
    assert incident["device"] == device and incident["xids"] == [79]
    # 5-minute node and workload rows go with the raw samples (48 h); the others stay 30 days.
    from gpus.utilization.rollup import apply_retention

    assert apply_retention(hour + dt.timedelta(hours=50))["5m_node_workload"] == 24
    left = set(GroupRollup.objects.filter(bucket="5m").values_list("scope", flat=True))
    assert left == {"fleet", "cluster", "model", "tenant"}
    assert GroupRollup.objects.filter(bucket="1h", scope="node").count() == 1
