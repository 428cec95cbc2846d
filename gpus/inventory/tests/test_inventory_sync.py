"""The sync as a whole on the configured database (PostgreSQL in CI's first pass): writes only what
changed, one sync per cluster, odd objects skipped and shown, tenant-only GPU names kept private,
failures recorded and backed off, and the task's retry and give-up branches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.exceptions import Retry
from django.urls import reverse
from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory import sync, tasks
from gpus.inventory.choices import ResourceState
from gpus.inventory.models import (
    Cluster,
    GpuWorkload,
    ModelInventory,
    Node,
    NodeGpu,
    SyncIssue,
    TenantAllocation,
)
from gpus.kube.budget import RetryBudgetSpent
from gpus.kube.errors import ForbiddenError, TransientError
from gpus.kube.records import (
    FleetReading,
    GpuPod,
    NodeInfo,
    kubernetes_app_from_json,
    vm_app_from_json,
)

pytestmark = pytest.mark.django_db

L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"
ODD_GPU = "nvidia.com/" + "X" * 140  # 150 characters, only in a tenant's spec


def node(name: str, gpus: dict[str, int], ready: bool = True, cordoned: bool = False) -> NodeInfo:
    return NodeInfo(
        name=name,
        labels={"kubernetes.io/hostname": name, "nvidia.com/gpu.present": "true"},
        allocatable={},
        capacity={},
        ready=ready,
        unschedulable=cordoned,
        taints=[{"key": "nvidia.com/gpu", "value": "", "effect": "NoSchedule"}],
        gpu_resources=gpus,
    )


def launcher(ns: str, vm: str, node_name: str, gpus: dict[str, int]) -> GpuPod:
    return GpuPod(
        ns,
        f"virt-launcher-{vm}-x7k2p",
        node_name,
        "Running",
        gpus,
        {
            "kubevirt.io": "virt-launcher",
            "vm.kubevirt.io/name": vm,
        },
    )


def vm(ns: str, name: str, gpus: list[str]):
    return vm_app_from_json(
        {
            "metadata": {"namespace": ns, "name": name},
            "spec": {"runStrategy": "Always", "gpus": [{"name": g} for g in gpus]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "X"}]},
        },
        "VMInstance",
    )


def k8s(ns: str, name: str, groups: dict):
    return kubernetes_app_from_json(
        {"metadata": {"namespace": ns, "name": name}, "spec": {"nodeGroups": groups}}
    )


def fleet(n: int = 40, **extra) -> FleetReading:
    reading = FleetReading(
        vm_kind="VMInstance",
        disk_field="ephemeralStorage",
        nodes=[node(f"gpu-{i:03d}", {L40S if i % 2 else H100: 8}) for i in range(n)],
        pods=[launcher("tenant-acme", "vm-instance-ws", "gpu-001", {L40S: 1})],
        vms=[vm("tenant-acme", "ws", [L40S])],
    )
    for key, value in extra.items():
        setattr(reading, key, value)
    return reading


@pytest.fixture
def cluster(db) -> Cluster:
    return Cluster.objects.create(name="c1")


def store(cluster: Cluster, reading: FleetReading) -> sync.Written:
    return sync.store_snapshot(cluster, reading, timezone.now())


# --- writes only what changed ---------------------------------------------------------


def test_an_unchanged_fleet_writes_no_row(cluster, acme):
    first = store(cluster, fleet())
    assert first.rows("node") == 40 and first.rows("nodegpu") == 40
    again = store(cluster, fleet())
    assert again.rows() == 0, again.tables
    cluster.refresh_from_db()
    assert cluster.last_sync_rows == 0 and cluster.last_synced_at is not None


def test_n_changed_nodes_write_about_n_rows(cluster, acme):
    store(cluster, fleet())
    changed = fleet()
    # Cordon three nodes: their node row and their GPU row change (free -> unavailable).
    for i in (2, 4, 6):
        changed.nodes[i] = node(f"gpu-{i:03d}", {H100: 8}, cordoned=True)
    written = store(cluster, changed)
    assert written.rows("node") == 3 and written.rows("nodegpu") == 3
    assert written.rows("modelinventory") == 1  # H100 totals
    assert Node.objects.filter(cluster=cluster, health="cordoned").count() == 3
    assert ModelInventory.objects.get(gpu_model__resource_name=H100).unavailable == 24


def test_a_label_or_taint_change_alone_rewrites_that_node(cluster):
    store(cluster, fleet(10))
    reading = fleet(10)
    relabelled = reading.nodes[3]
    reading.nodes[3] = NodeInfo(
        **{**relabelled.__dict__, "labels": {**relabelled.labels, "zone": "b"}, "taints": []}
    )
    written = store(cluster, reading)
    assert written.tables["node"] == [0, 1, 0] and written.rows("nodegpu") == 0
    stored = Node.objects.get(cluster=cluster, name="gpu-003")
    assert stored.labels["zone"] == "b" and stored.taints == []


def test_gone_nodes_are_deleted_and_new_ones_inserted(cluster):
    store(cluster, fleet(10))
    reading = fleet(10)
    reading.nodes = [*reading.nodes[:8], node("gpu-new", {L40S: 4})]
    written = store(cluster, reading)
    assert written.tables["node"] == [1, 0, 2]
    assert written.tables["nodegpu"] == [1, 0, 2]
    assert Node.objects.filter(cluster=cluster).count() == 9
    assert NodeGpu.objects.filter(node__cluster=cluster).count() == 9


def test_a_large_first_sync_stores_every_value(cluster):
    # Over COPY_FROM rows: PostgreSQL loads them with COPY; the values must come back the same.
    reading = fleet(sync.COPY_FROM + 10)
    written = store(cluster, reading)
    assert written.tables["node"] == [sync.COPY_FROM + 10, 0, 0]
    stored = Node.objects.get(cluster=cluster, name="gpu-007")
    assert stored.labels == {"kubernetes.io/hostname": "gpu-007", "nvidia.com/gpu.present": "true"}
    assert stored.taints == [{"key": "nvidia.com/gpu", "value": "", "effect": "NoSchedule"}]
    assert (stored.gpu_installed, stored.gpu_free, stored.health) == (8, 8, "ready")
    gpu = NodeGpu.objects.get(node=stored)
    assert (gpu.gpu_model.resource_name, gpu.installed) == (L40S, 8)
    assert store(cluster, fleet(sync.COPY_FROM + 10)).rows() == 0  # read back equal


# --- one sync per cluster; the newer snapshot wins ---------------------------------------


def test_one_sync_per_cluster_and_clusters_side_by_side(cluster):
    other = Cluster.objects.create(name="c2")
    token = sync.acquire_lease(cluster.pk)
    assert token
    assert sync.acquire_lease(cluster.pk) is None  # the same cluster: refused
    with pytest.raises(sync.SyncInProgress):
        sync.sync_cluster(cluster.pk)
    other_token = sync.acquire_lease(other.pk)  # another cluster: fine
    assert other_token
    sync.release_lease(cluster.pk, token)
    assert sync.acquire_lease(cluster.pk)


def test_a_crashed_syncs_lease_expires(cluster):
    assert sync.acquire_lease(cluster.pk)
    Cluster.objects.filter(pk=cluster.pk).update(
        sync_lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert sync.acquire_lease(cluster.pk)


def test_an_older_sync_finishing_late_stores_nothing(cluster):
    newer = timezone.now()
    older = newer - timedelta(seconds=5)
    sync.store_snapshot(cluster, fleet(4), newer)
    late = sync.store_snapshot(cluster, fleet(2), older)
    assert late.rows() == 0
    cluster.refresh_from_db()
    assert cluster.last_synced_at == newer
    assert Node.objects.filter(cluster=cluster).count() == 4


# --- one odd object never freezes the inventory -----------------------------------------


def test_values_too_long_are_skipped_recorded_and_shown_to_admins(
    cluster, acme, alice_client, admin_client_
):
    group_key = "g" * 80
    reading = fleet(
        vms=[vm("tenant-acme", "ws", [L40S]), vm("tenant-acme", "odd", [ODD_GPU + "Y" * 110])],
        kubernetes_apps=[
            k8s(
                "tenant-acme",
                "ml",
                {
                    group_key: {"minReplicas": 1, "gpus": [{"name": H100}]},
                    "gpu": {"minReplicas": 1, "gpus": [{"name": H100}]},
                },
            )
        ],
    )
    reading.nodes.append(node("n" * 300, {L40S: 8}))
    store(cluster, reading)
    # The rest of the fleet is stored...
    assert Node.objects.filter(cluster=cluster).count() == 40
    assert set(GpuWorkload.objects.values_list("name", "node_group")) == {("ws", ""), ("ml", "gpu")}
    # ...and each odd object is recorded once, with what is wrong.
    issues = {(i.kind, i.name[:5]): i.problem for i in SyncIssue.objects.filter(cluster=cluster)}
    assert set(issues) == {("Node", "nnnnn"), ("VMInstance", "odd"), ("Kubernetes", "ml/gg")}
    assert "node_group is 80 characters long; at most 63" in issues[("Kubernetes", "ml/gg")]
    assert "gpu_resource is 261 characters long" in issues[("VMInstance", "odd")]
    admin_html = admin_client_.get(reverse("gpus:inventory")).content.decode()
    assert "The last sync skipped 3 objects" in admin_html and "ml/ggggg" in admin_html
    assert "skipped" not in alice_client.get(reverse("gpus:inventory")).content.decode()
    # Fixed in the cluster: the issue goes with the next sync.
    store(cluster, fleet())
    assert not SyncIssue.objects.exists()


def test_an_unexpected_error_is_recorded_on_the_cluster(cluster, monkeypatch):
    class Gateway:
        def read_inventory(self):
            return fleet(3)

        def close(self):
            pass

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sync, "gateway_for", lambda *a, **k: Gateway())
    monkeypatch.setattr(sync, "_store_workloads", broken)
    with pytest.raises(RuntimeError):
        sync.sync_cluster(cluster.pk)
    cluster.refresh_from_db()
    assert cluster.last_error == "Unexpected error during the sync: RuntimeError: disk full"
    assert cluster.last_error_kind == "unexpected"
    assert cluster.consecutive_failures == 1 and cluster.next_sync_at is not None
    assert not Node.objects.exists()  # the half-written snapshot was rolled back
    assert cluster.sync_lease == ""  # and the lease released


# --- GPU names only a tenant's spec mentions -------------------------------------------


def test_tenant_only_gpu_names_stay_out_of_the_catalog_and_go_away(
    cluster, acme, globex, alice_client, bob_client
):
    # An unknown model a node serves is in the catalog; one only acme's VM names is not.
    served = "nvidia.com/GB202GL_RTX_PRO_6000"
    private = "nvidia.com/ACME_SECRET_PROTO"
    reading = fleet(vms=[vm("tenant-acme", "ws", [L40S]), vm("tenant-acme", "proto", [private])])
    reading.nodes.append(node("gpu-new", {served: 2}))
    # A row an older sync made for the private name is cleaned up.
    GpuModel.objects.create(resource_name=private, display_name="ACME_SECRET_PROTO", is_known=False)
    store(cluster, reading)
    assert GpuModel.objects.filter(resource_name=served, is_known=False).exists()
    assert not GpuModel.objects.filter(resource_name=private).exists()
    for client in (alice_client, bob_client):
        assert "ACME_SECRET_PROTO" not in client.get(reverse("gpus:catalog")).content.decode()
    proto = GpuWorkload.objects.get(name="proto")
    assert (proto.gpu_model, proto.gpu_resource) == (None, private)
    mine = alice_client.get(reverse("gpus:my_gpus", args=["tenant-acme"])).content.decode()
    assert private in mine
    # The node gone, its unknown model goes too.
    store(cluster, fleet())
    assert not GpuModel.objects.filter(resource_name=served).exists()


def test_clusters_without_gpus_are_kept_for_the_node_group_form(cluster, acme, alice_client):
    # "plain" has only the default md0 group: the snapshot knows it, counting no GPU.
    apps = [
        k8s("tenant-acme", "plain", {"md0": {"minReplicas": 2, "instanceType": "u1.medium"}}),
        k8s(
            "tenant-acme",
            "ml",
            {"md0": {"minReplicas": 2}, "gpu": {"minReplicas": 1, "gpus": [{"name": H100}]}},
        ),
    ]
    without = store(cluster, fleet())
    figures = list(ModelInventory.objects.values_list("gpu_model_id", "installed", "allocated"))
    store(cluster, fleet(kubernetes_apps=apps))
    groups = set(GpuWorkload.objects.filter(kind="node_group").values_list("name", "node_group"))
    assert groups == {("plain", "md0"), ("ml", "md0"), ("ml", "gpu")}
    md0 = GpuWorkload.objects.get(name="plain", node_group="md0")
    assert (md0.gpus_per_instance, md0.gpu_resource, md0.gpu_model, md0.instances) == (
        0,
        "",
        None,
        2,
    )
    assert md0.gpus_requested == 0
    assert (
        list(ModelInventory.objects.values_list("gpu_model_id", "installed", "allocated"))
        == figures
        and without.rows("modelinventory") > 0
    )
    assert store(cluster, fleet(kubernetes_apps=apps)).rows() == 0
    form = alice_client.get(reverse("gpus:node_group_new", args=["tenant-acme"]))
    assert form.status_code == 200
    choices = form.context["form"].fields["cluster_name"].choices
    assert [c for c, _ in choices] == ["", "ml", "plain"]
    mine = alice_client.get(reverse("gpus:my_gpus", args=["tenant-acme"])).content.decode()
    assert "No GPUs (2 workers)" in mine


def test_a_workload_the_portal_created_is_claimed_not_duplicated(cluster, acme):
    GpuWorkload.objects.create(
        cluster=cluster,
        tenant=acme,
        kind="vm",
        app_kind="VMInstance",
        name="ws",
        state=ResourceState.PENDING,
    )
    store(cluster, fleet())
    ws = GpuWorkload.objects.get(name="ws")
    assert ws.last_seen_at is not None and ws.gpus_held == 1
    assert TenantAllocation.objects.get().allocated == 1


# --- failures: reported at once, backed off, retried then given up ------------------------


def test_failure_backs_the_cluster_off_and_the_beat_skips_it(cluster, monkeypatch, settings):
    settings.INVENTORY_SYNC_SECONDS = 30
    settings.INVENTORY_SYNC_BACKOFF_MAX_SECONDS = 100
    now = timezone.now()
    for expected in (30, 60, 100):
        sync.record_failure(cluster, TransientError("HTTP 503", status=503), now)
        cluster.refresh_from_db()
        assert cluster.next_sync_at == now + timedelta(seconds=expected)
    assert cluster.unreachable_since == now and cluster.consecutive_failures == 3
    queued = []
    monkeypatch.setattr(tasks.sync_inventory, "delay", queued.append)
    healthy = Cluster.objects.create(name="c2")
    assert tasks.sync_all_inventories() == 1 and queued == [healthy.pk]


def test_first_failure_is_on_the_cluster_before_the_retries_end(cluster):
    sync.report_first_failure(cluster, TransientError("HTTP 503: down", status=503), timezone.now())
    cluster.refresh_from_db()
    assert cluster.last_error == "HTTP 503: down" and cluster.unreachable_since is not None
    assert cluster.last_error_kind == "server_error"
    busy = Cluster.objects.create(name="busy")
    sync.report_first_failure(busy, TransientError("HTTP 429", status=429), timezone.now())
    busy.refresh_from_db()
    assert busy.last_error == "HTTP 429" and busy.unreachable_since is None  # busy, not down
    assert busy.last_error_kind == "rate_limited"


def _failing_sync(exc):
    def failing(cluster_id):
        sync.record_failure(Cluster.objects.get(pk=cluster_id), exc, timezone.now())
        raise exc

    return failing


def test_task_retries_a_transient_failure_after_the_backoff(cluster, monkeypatch, settings):
    settings.INVENTORY_SYNC_TASK_RETRIES = 2
    spent = RetryBudgetSpent(TransientError("HTTP 500", status=500), failures=4)
    monkeypatch.setattr(sync, "sync_cluster", _failing_sync(spent))
    retried = {}

    def retry(exc=None, countdown=None, **kwargs):
        retried.update(exc=exc, countdown=countdown)
        return Retry(exc=exc, when=countdown)

    monkeypatch.setattr(tasks.sync_inventory, "retry", retry)
    tasks.sync_inventory.push_request(retries=0)
    try:
        with pytest.raises(Retry):
            tasks.sync_inventory.run(cluster.pk)
    finally:
        tasks.sync_inventory.pop_request()
    assert retried["exc"] is spent and retried["countdown"] == settings.INVENTORY_SYNC_SECONDS
    cluster.refresh_from_db()
    # The beat leaves the cluster to the pending retry.
    assert cluster.next_sync_at > timezone.now() + timedelta(seconds=retried["countdown"])


def test_task_gives_up_after_its_retries(cluster, monkeypatch, settings):
    settings.INVENTORY_SYNC_TASK_RETRIES = 2
    monkeypatch.setattr(
        sync, "sync_cluster", _failing_sync(TransientError("timed out", status=None))
    )
    monkeypatch.setattr(tasks.sync_inventory, "retry", lambda **kw: pytest.fail("retried"))
    tasks.sync_inventory.push_request(retries=2)
    try:
        result = tasks.sync_inventory.run(cluster.pk)
    finally:
        tasks.sync_inventory.pop_request()
    assert result == {"cluster": cluster.pk, "ok": False, "gave_up": True, "error": "timed out"}
    cluster.refresh_from_db()
    assert cluster.last_error == "timed out" and cluster.next_sync_at > timezone.now()


def test_task_does_not_retry_a_permanent_error(cluster, monkeypatch):
    monkeypatch.setattr(
        sync, "sync_cluster", _failing_sync(ForbiddenError("nodes is forbidden", status=403))
    )
    monkeypatch.setattr(tasks.sync_inventory, "retry", lambda **kw: pytest.fail("retried"))
    result = tasks.sync_inventory.run(cluster.pk)
    assert result["ok"] is False and "forbidden" in result["error"]


def test_task_skips_a_cluster_already_syncing(cluster):
    assert sync.acquire_lease(cluster.pk)
    assert tasks.sync_inventory.run(cluster.pk)["skipped"] is True
