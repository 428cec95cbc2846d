"""The collector against devcluster's exporters, rollups, energy, the agent endpoint and
tenancy of the utilization pages (PostgreSQL/SQLite, devcluster over HTTP)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from devcluster import metrics as dcgm
from devcluster.fleet import MODELS
from devcluster.testing import run_devcluster
from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.inventory.sync import sync_cluster
from gpus.utilization import rollup
from gpus.utilization.agent import cloud_init_snippet, issue_token, revoke_tokens
from gpus.utilization.collector import collect_cluster, store
from gpus.utilization.metrics.parse import parse_exposition
from gpus.utilization.models import GpuDevice, GpuRollup, GpuSample, GroupRollup, MetricSource
from gpus.utilization.selectors import TimeRange, energy, health, silent_workloads

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
A100 = "nvidia.com/GA100_A100_PCIE_80GB"


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    with run_devcluster(tmp_path_factory.mktemp("dc"), fleet="demo", speed=50.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, globex):
    c = Cluster.objects.create(name="devcluster", kubeconfig=str(dc.kubeconfig), context="admin")
    MetricSource.objects.create(
        cluster=c, kind="direct", sd_url=f"{dc.url}/dcgm/targets?include=vms", timeout_seconds=5
    )
    deadline = time.monotonic() + 20
    while not GpuWorkload.objects.filter(name="ml", gpus_held=2).exists():
        sync_cluster(c.pk)
        assert time.monotonic() < deadline, "the demo fleet never settled"
        time.sleep(0.2)
    return c


@override_settings(METRICS_IDLE_THRESHOLD=1)
def test_collector_reads_devcluster_and_ties_gpus_to_their_owners(cluster, acme, globex) -> None:
    result = collect_cluster(cluster.pk)
    assert result["gpus"] == 5 and result["errors"] == 0
    ml = GpuDevice.objects.filter(kube_cluster="kubernetes-ml")
    assert ml.count() == 2 and {d.tenant for d in ml} == {acme}
    assert {d.workload.node_group for d in ml} == {"gpu"}
    assert all(d.gpu_model and d.gpu_model.resource_name == A100 for d in ml)
    # globex/serve: the second GPU is held by a notebook pod that does nothing: idle from now.
    serve = GpuDevice.objects.filter(kube_cluster="kubernetes-serve").order_by("index")
    assert serve[0].idle_since is None and serve[1].idle_since is not None
    assert serve[1].busy_metric == "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
    # globex's VM runs the simulated guest agent; acme's passthrough VM has no telemetry.
    agent = GpuDevice.objects.get(source="guest-agent")
    assert agent.workload.name == "inference" and agent.workload.kind == WorkloadKind.VM
    assert agent.busy_metric == "DCGM_FI_DEV_GPU_UTIL"
    silent = silent_workloads()
    assert [w.name for w in silent] == ["gpu-ws"]
    assert GpuSample.objects.count() == 5
    MetricSource.objects.filter(cluster=cluster).update(sd_url="http://127.0.0.1:9/nothing")
    with pytest.raises(Exception, match="9/nothing"):
        collect_cluster(cluster.pk)
    assert "9/nothing" in MetricSource.objects.get(cluster=cluster).last_error


def _steady_series(seed: int = 1) -> tuple[dcgm.Gpu, float]:
    gpu = dcgm.Gpu(
        dcgm.physical_uuid(seed, "gpu-a100-9", 0),
        0,
        "kubernetes-ml-gpu-aaaaa-bbbbb",
        MODELS[A100],
        "steady",
        ("ml", "trainer", "bench-0"),
        (("cluster", "kubernetes-ml"), ("tenant", "tenant-acme")),
    )
    watts = (MODELS[A100].idle_power_w + MODELS[A100].power_limit_w) / 2
    return gpu, watts


@override_settings(METRICS_COLLECT_SECONDS=60)
def test_energy_integrates_a_constant_power_series_and_rollups_keep_extremes(acme) -> None:
    gpu, watts = _steady_series()
    end = rollup.floor_ts(timezone.now(), 3600) - dt.timedelta(hours=1)
    start = end - dt.timedelta(hours=2)
    t = start.timestamp()
    while t < end.timestamp():
        store(parse_exposition(dcgm.render([gpu], t, 1), t), None)
        t += 60
    assert GpuSample.objects.count() == 120
    # A single-sample spike must survive in the 5-minute and hourly maxima.
    spike = GpuSample.objects.order_by("ts")[7]
    spike.util = 100.0
    spike.save()
    for b in rollup.pending_buckets(end + dt.timedelta(minutes=5)):
        rollup.rollup_bucket(b)
    hours = GpuRollup.objects.filter(bucket="1h").order_by("ts")
    assert [round(h.energy_wh, 6) for h in hours] == [round(watts, 6)] * 2  # P x 1 h each
    assert hours[0].util_max == 100.0 and hours[0].util_min == 50.0
    fleet = GroupRollup.objects.filter(bucket="5m", scope="fleet", gpus__gt=0)
    assert fleet.count() == 24
    total = sum(r.energy_wh for r in fleet)
    assert total == pytest.approx(2 * watts)
    tenant = GroupRollup.objects.get(bucket="1h", scope="tenant", key="tenant-acme", ts=start)
    assert tenant.gpu_hours == pytest.approx(1.0) and tenant.allocated == 1
    assert (
        GroupRollup.objects.get(bucket="1h", scope="model", ts=start).key == "NVIDIA A100 80GB PCIe"
    )
    # The energy page's figures: kWh over the range, and power as a share of the board's limit.
    (row,) = energy(TimeRange(start, end, "custom"), "model")["rows"]
    assert row["kwh"] == pytest.approx(2 * watts / 1000)
    assert row["share"] == pytest.approx(watts / 300 * 100)  # A100 80GB PCIe: 300 W board


def test_tenants_see_only_their_gpus(cluster, alice_client, bob_client, admin_client_) -> None:
    collect_cluster(cluster.pk)
    acme_gpu = GpuDevice.objects.filter(tenant__namespace="tenant-acme").first()
    globex_gpu = GpuDevice.objects.filter(tenant__namespace="tenant-globex").first()
    page = alice_client.get(reverse("gpus:util_tenant", args=["tenant-acme"]))
    assert page.status_code == 200
    body = page.content.decode()
    assert acme_gpu.uuid in body and globex_gpu.uuid not in body
    assert "No telemetry." in body  # gpu-ws, the passthrough VM
    url = reverse("gpus:util_tenant_gpu", args=["tenant-acme", acme_gpu.uuid])
    assert alice_client.get(url).status_code == 200
    # Another tenant's page, GPU, chart or CSV: 404, never 403.
    for path in (
        reverse("gpus:util_tenant", args=["tenant-acme"]),
        reverse("gpus:util_tenant_gpu", args=["tenant-globex", acme_gpu.uuid]),
        reverse("gpus:util_tenant_idle", args=["tenant-acme"]) + "?format=csv",
        reverse("gpus:util_chart", args=["tenant"]) + "?tenant=tenant-acme",
        reverse("gpus:util_chart", args=["gpu"]) + f"?tenant=tenant-globex&uuid={acme_gpu.uuid}",
        reverse("gpus:util_fleet"),
        reverse("gpus:util_gpu", args=[acme_gpu.uuid]),
        reverse("gpus:util_chart", args=["fleet"]),
    ):
        assert bob_client.get(path).status_code == 404, path
    for name in ("util_fleet", "util_heatmap", "util_idle", "util_health", "util_energy"):
        assert admin_client_.get(reverse(f"gpus:{name}") + "?range=7d").status_code == 200
    bad = admin_client_.get(reverse("gpus:util_fleet") + "?range=custom&start=nonsense")
    assert bad.status_code == 200 and "Enter a start date and time." in bad.content.decode()
    assert admin_client_.get(reverse("gpus:util_gpu", args=[globex_gpu.uuid])).status_code == 200
    # A custom range with no data is said to be empty (the query string survives the "+00:00").
    old = TimeRange(
        dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2020, 1, 2, tzinfo=dt.UTC), "custom"
    )
    empty = admin_client_.get(reverse("gpus:util_chart", args=["allocation"]) + "?" + old.query())
    assert empty.json() == {"empty": "No data in this range."}
    # The heatmap also says no rows follow, so its page hides "next" (charts.js).
    heat = admin_client_.get(reverse("gpus:util_chart", args=["heatmap"]) + "?" + old.query())
    assert heat.json() == {"empty": "No data in this range.", "more": False}
    chart = admin_client_.get(reverse("gpus:util_chart", args=["gpu"]) + f"?uuid={acme_gpu.uuid}")
    assert chart.status_code == 200 and chart.json()["points"] >= 1


# Threshold 1 %: only the notebook GPU (0 %) qualifies; training dips and inference pauses stay
# above it, so the test does not depend on the moment it runs.
@override_settings(METRICS_IDLE_MINUTES=0, METRICS_IDLE_THRESHOLD=1)
def test_idle_csv_for_ops_and_tenants(cluster, admin_client_, bob_client, alice_client) -> None:
    collect_cluster(cluster.pk)
    ops = admin_client_.get(reverse("gpus:util_idle") + "?format=csv")
    assert ops["Content-Type"].startswith("text/csv")
    lines = ops.getvalue().decode().strip().splitlines()
    assert lines[0].startswith("uuid,model,node,tenant,workload,idle_since,gpu_hours_idle")
    assert len(lines) == 2 and ",tenant-globex,serve/gpu," in lines[1]
    mine = bob_client.get(reverse("gpus:util_tenant_idle", args=["tenant-globex"]) + "?format=csv")
    assert mine.getvalue().decode().strip().splitlines()[1:] == lines[1:]
    theirs = alice_client.get(
        reverse("gpus:util_tenant_idle", args=["tenant-acme"]) + "?format=csv"
    )
    assert len(theirs.getvalue().decode().strip().splitlines()) == 1  # header only


@override_settings(METRICS_AGENT_MAX_BYTES=2048, METRICS_AGENT_MIN_INTERVAL=30)
def test_agent_endpoint(cluster, alice_client) -> None:
    vm = GpuWorkload.objects.get(name="gpu-ws")
    client = Client(enforce_csrf_checks=True)
    url = reverse("gpus:agent_ingest")
    line = (
        "GPU-11111111-2222-3333-4444-555555555555, 0, NVIDIA L40S, 37, 1200, 46068, 41, "
        "88.50, 350.00, 2520, 9001, 0x0000000000000004\n"
    )

    def post(token: str, body: str) -> int:
        return client.post(
            url, body, content_type="text/csv", HTTP_AUTHORIZATION=f"Bearer {token}"
        ).status_code

    assert post("hkga_wrong", line) == 401
    # The operator issues the token through the page (CSRF-protected form) and gets the snippet.
    page = alice_client.post(reverse("gpus:util_agent_token", args=["tenant-acme", vm.pk]))
    assert page.status_code == 200 and "hikube-gpu-agent.timer" in page.content.decode()
    token = issue_token(vm)  # a fresh one (revokes the page's) that the test knows
    assert post(token, line * 40) == 413  # over 2,048 bytes
    assert post(token, line) == 202
    d = GpuDevice.objects.get(uuid="GPU-11111111-2222-3333-4444-555555555555")
    assert d.workload == vm and d.tenant.namespace == "tenant-acme" and d.source == "guest-agent"
    s = GpuSample.objects.get(device=d)
    assert (s.util, s.power, s.throttle, s.mem_total) == (37, 88.5, 4, 46068)
    assert post(token, line) == 429  # rate-limited
    revoke_tokens(vm)
    assert post(token, line) == 401
    assert "TOKEN=abc" in cloud_init_snippet("abc", "https://portal.example/metrics/agent/")


@override_settings(METRICS_COLLECT_SECONDS=60)
def test_health_lists_xid_errors_and_decoded_throttling(acme, admin_client_) -> None:
    """devcluster's `faulty` profile raises XID 13 two minutes an hour; a guest agent reports the
    clock-event bitmask (the default exporter set has none)."""
    faulty = dcgm.Gpu(
        dcgm.physical_uuid(1, "gpu-a100-8", 0),
        0,
        "kubernetes-ml-gpu-aaaaa-ccccc",
        MODELS[A100],
        "faulty",
        ("ml", "trainer", "train-0"),
        (("cluster", "kubernetes-ml"), ("tenant", "tenant-acme")),
    )
    end = rollup.floor_ts(timezone.now(), 3600)
    start = end - dt.timedelta(hours=1)
    t = start.timestamp()
    while t < end.timestamp():
        store(parse_exposition(dcgm.render([faulty], t, 1), t), None)
        throttled = (
            'DCGM_FI_DEV_GPU_UTIL{UUID="GPU-hot",modelName="NVIDIA L40S",Hostname="vm1"} 90\n'
            'DCGM_FI_DEV_CLOCKS_EVENT_REASONS{UUID="GPU-hot",Hostname="vm1"} 192\n'  # 0x80|0x40
        )
        store(parse_exposition(throttled, t), None)
        t += 60
    for b in rollup.pending_buckets(end + dt.timedelta(minutes=5)):
        rollup.rollup_bucket(b)
    rows = {r["device"].uuid: r for r in health(TimeRange(start, end, "custom"))["rows"]}
    assert rows[faulty.uuid]["xids"] == [13] and not rows[faulty.uuid]["reasons"]
    assert rows["GPU-hot"]["reasons"] == ["thermal (hardware)", "power brake"]
    assert rows["GPU-hot"]["throttled_minutes"] == 60
    page = admin_client_.get(
        reverse("gpus:util_health") + "?" + TimeRange(start, end, "custom").query()
    )
    assert "XID 13" in page.content.decode() and "power brake" in page.content.decode()


@override_settings(METRICS_IDLE_MINUTES=60)
def test_the_idle_badge_agrees_with_the_idle_table(cluster, bob_client) -> None:
    """A GPU under the threshold for 5 minutes is not idle yet: the tenant page showed it an
    "idle" badge beside an idle table that said "No idle GPU right now"."""
    collect_cluster(cluster.pk)
    serve = GpuDevice.objects.filter(kube_cluster="kubernetes-serve").order_by("index")[1]
    url = reverse("gpus:util_tenant", args=["tenant-globex"])
    badge = '<span class="badge badge-warn">idle</span>'
    serve.idle_since = timezone.now() - dt.timedelta(minutes=5)
    serve.save(update_fields=["idle_since"])
    page = bob_client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "No idle GPU right now." in page and badge not in page
    serve.idle_since = timezone.now() - dt.timedelta(hours=2)
    serve.save(update_fields=["idle_since"])
    page = bob_client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "No idle GPU right now." not in page and page.count(badge) == 1


@override_settings(METRICS_IDLE_THRESHOLD=5.0, METRICS_IDLE_MINUTES=60)
def test_the_idle_threshold_reads_as_a_percentage_in_each_language(admin_client_) -> None:
    """ "below 5.0 % for 60 min" wrapped between the number and its sign; English writes 5%,
    French and German a non-breaking space before %."""
    url = reverse("gpus:util_fleet")
    english = admin_client_.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "(below 5% for 60 min)" in english
    french = admin_client_.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "sous 5\u00a0% pendant 60" in french
    idle = admin_client_.get(reverse("gpus:util_idle"), HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert "unter 5\u00a0% Aktivität" in idle


def test_one_gpu_chart_spans_the_range_asked_for(cluster, admin_client_) -> None:
    """Minutes of readings filled a "24 h" chart edge to edge, unlike every other chart."""
    collect_cluster(cluster.pk)
    device = GpuDevice.objects.filter(kube_cluster="kubernetes-ml").first()
    url = reverse("gpus:util_chart", args=["gpu"])
    doc = admin_client_.get(url, {"uuid": device.uuid, "range": "24h"}).json()
    start, end = (dt.datetime.fromisoformat(v) for v in doc["figure"]["layout"]["xaxis"]["range"])
    assert dt.timedelta(hours=23, minutes=59) < end - start <= dt.timedelta(hours=24)
