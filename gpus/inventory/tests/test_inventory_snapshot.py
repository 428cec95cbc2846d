"""The snapshot store: a FleetReading in, inventory rows out (no cluster needed here)."""

import pytest
from django.urls import reverse
from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState
from gpus.inventory.models import Cluster, GpuWorkload, ModelInventory, Node, TenantAllocation
from gpus.inventory.sync import store_snapshot
from gpus.kube.records import (
    FleetReading,
    GpuPod,
    NodeInfo,
    kubernetes_app_from_json,
    kubevirt_vm_from_json,
    vm_app_from_json,
    workload_monitor_from_json,
)
from gpus.kube.states import node_group_state, vm_state

pytestmark = pytest.mark.django_db

L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"


def node(name, gpus, ready=True, cordoned=False):
    return NodeInfo(
        name=name,
        labels={"kubernetes.io/hostname": name},
        allocatable={},
        capacity={},
        ready=ready,
        unschedulable=cordoned,
        taints=[],
        gpu_resources=gpus,
    )


def launcher(ns, vm, node_name, gpus, phase="Running"):
    return GpuPod(
        namespace=ns,
        name=f"virt-launcher-{vm}-abcde",
        node_name=node_name,
        phase=phase,
        gpus=gpus,
        labels={"vm.kubevirt.io/name": vm},
    )


def vm_app(ns, name, gpus, ready="True"):
    return vm_app_from_json(
        {
            "metadata": {"namespace": ns, "name": name},
            "spec": {"gpus": [{"name": g} for g in gpus], "runStrategy": "Always"},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": ready, "reason": "Succeeded", "message": ""}
                ]
            },
        },
        "VMInstance",
    )


def kubevirt(ns, name, printable, conditions=()):
    return kubevirt_vm_from_json(
        {
            "metadata": {"namespace": ns, "name": name},
            "status": {"printableStatus": printable, "conditions": list(conditions)},
        }
    )


@pytest.fixture
def cluster(db):
    return Cluster.objects.create(name="test")


def reading(**extra):
    base = dict(
        nodes=[
            node("gpu-l40s-1", {L40S: 4}),
            node("gpu-l40s-2", {L40S: 4}, cordoned=True),
            node("gpu-h100-1", {H100: 8}),
            node("gpu-h100-2", {H100: 8}, ready=False),
            node("gpu-new-1", {"nvidia.com/GB202_RTX_PRO_6000": 2}),
        ],
        pods=[
            launcher("tenant-acme", "vm-instance-ws", "gpu-l40s-1", {L40S: 1}),
            launcher("tenant-globex", "vm-instance-big", "gpu-h100-1", {H100: 2}),
            launcher("tenant-acme", "vm-instance-wait", "", {H100: 8}, phase="Pending"),
        ],
        vm_kind="VMInstance",
        disk_field="ephemeralStorage",
    )
    base.update(extra)
    return FleetReading(**base)


def test_totals_per_model(cluster, acme, globex):
    store_snapshot(cluster, reading(), timezone.now())
    l40s = ModelInventory.objects.get(gpu_model__resource_name=L40S)
    assert (l40s.installed, l40s.allocated, l40s.free, l40s.unavailable) == (8, 1, 3, 4)
    h100 = ModelInventory.objects.get(gpu_model__resource_name=H100)
    assert (h100.installed, h100.allocated, h100.free, h100.unavailable) == (16, 2, 6, 8)


def test_unknown_resource_name_becomes_an_unknown_model(cluster):
    store_snapshot(cluster, reading(), timezone.now())
    unknown = GpuModel.objects.get(resource_name="nvidia.com/GB202_RTX_PRO_6000")
    assert not unknown.is_known
    assert ModelInventory.objects.get(gpu_model=unknown).free == 2


def test_per_tenant_allocation_counts_only_scheduled_pods(cluster, acme, globex):
    store_snapshot(cluster, reading(), timezone.now())
    held = {
        (a.namespace, a.gpu_model.resource_name): a.allocated
        for a in TenantAllocation.objects.select_related("gpu_model")
    }
    assert held == {("tenant-acme", L40S): 1, ("tenant-globex", H100): 2}
    assert TenantAllocation.objects.get(namespace="tenant-acme").tenant == acme


def test_nodes_gone_from_the_cluster_disappear(cluster):
    store_snapshot(cluster, reading(), timezone.now())
    assert Node.objects.count() == 5
    store_snapshot(cluster, reading(nodes=[node("gpu-l40s-1", {L40S: 4})]), timezone.now())
    assert list(Node.objects.values_list("name", flat=True)) == ["gpu-l40s-1"]
    assert Node.objects.get().gpu_allocated == 1


def test_vm_workloads_with_state_and_held_gpus(cluster, acme, globex):
    vms = [vm_app("tenant-acme", "ws", [L40S]), vm_app("tenant-globex", "big", [H100, H100])]
    kubevirt_vms = {
        ("tenant-acme", "vm-instance-ws"): kubevirt("tenant-acme", "vm-instance-ws", "Running"),
        ("tenant-globex", "vm-instance-big"): kubevirt(
            "tenant-globex", "vm-instance-big", "Starting"
        ),
    }
    store_snapshot(cluster, reading(vms=vms, kubevirt_vms=kubevirt_vms), timezone.now())
    ws = GpuWorkload.objects.get(name="ws")
    assert (ws.tenant, ws.state, ws.gpus_per_instance, ws.gpus_held) == (
        acme,
        ResourceState.RUNNING,
        1,
        1,
    )
    big = GpuWorkload.objects.get(name="big")
    assert (big.state, big.gpus_per_instance, big.gpus_held) == (ResourceState.STARTING, 2, 2)
    # Deleted in the cluster -> gone from the snapshot.
    store_snapshot(cluster, reading(vms=vms[:1], kubevirt_vms=kubevirt_vms), timezone.now())
    assert list(GpuWorkload.objects.values_list("name", flat=True)) == ["ws"]


def test_unschedulable_vm_shows_the_clusters_message():
    app = vm_app("tenant-acme", "wait", [H100])
    kubevirt_vm = kubevirt(
        "tenant-acme",
        "vm-instance-wait",
        "ErrorUnschedulable",
        [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/9 nodes are available: 9 Insufficient nvidia.com/H100_94GB.",
            }
        ],
    )
    got = vm_state(app, kubevirt_vm)
    assert got.state == ResourceState.UNSCHEDULABLE
    assert got.reason == "Unschedulable"
    assert "Insufficient nvidia.com/H100_94GB" in got.message


def test_unknown_printable_status_maps_to_unknown_not_a_crash():
    got = vm_state(vm_app("t", "x", [L40S]), kubevirt("t", "vm-instance-x", "Bogus"))
    assert got.state == ResourceState.UNKNOWN


def test_node_group_state_follows_the_workload_monitor():
    app = kubernetes_app_from_json(
        {
            "metadata": {"namespace": "tenant-acme", "name": "ml"},
            "spec": {"nodeGroups": {"gpu": {"minReplicas": 2, "gpus": [{"name": L40S}]}}},
        }
    )
    group = app.node_groups[0]

    def monitor(available):
        return workload_monitor_from_json(
            {
                "metadata": {"namespace": "tenant-acme", "name": "kubernetes-ml-gpu"},
                "spec": {"minReplicas": 2, "kind": "kubernetes", "type": "worker"},
                "status": {"availableReplicas": available, "operational": available >= 2},
            }
        )

    assert node_group_state(app, group, None).state == ResourceState.PROVISIONING
    got = node_group_state(app, group, monitor(1))
    assert (got.state, got.available, got.message) == (
        ResourceState.SCALING,
        1,
        "1 of 2 workers ready",
    )
    assert node_group_state(app, group, monitor(2)).state == ResourceState.RUNNING


def test_overview_pages_show_tenants_no_host_names(
    cluster, acme, globex, alice_client, admin_client_
):
    store_snapshot(cluster, reading(), timezone.now())
    Cluster.objects.filter(pk=cluster.pk).update(last_synced_at=timezone.now())
    tenant_html = alice_client.get(reverse("gpus:inventory")).content.decode()
    assert "gpu-l40s-1" not in tenant_html and "tenant-globex" not in tenant_html
    assert 'data-model="nvidia.com/AD102GL_L40S"' in tenant_html
    admin_html = admin_client_.get(reverse("gpus:inventory")).content.decode()
    assert "tenant-globex" in admin_html


def test_node_list_is_for_admins_only(cluster, alice_client, admin_client_):
    store_snapshot(cluster, reading(), timezone.now())
    assert alice_client.get(reverse("gpus:nodes")).status_code == 404
    html = admin_client_.get(reverse("gpus:nodes"), {"health": "cordoned"}).content.decode()
    assert "gpu-l40s-2" in html and "gpu-l40s-1" not in html
    html = admin_client_.get(
        reverse("gpus:nodes"), {"has_free": "yes", "sort": "-free"}
    ).content.decode()
    assert html.index("gpu-h100-1") < html.index("gpu-l40s-1")
    assert "gpu-h100-2" not in html  # not ready: nothing free


def test_catalog_cards_show_live_free_counts(cluster, alice_client):
    store_snapshot(cluster, reading(), timezone.now())
    Cluster.objects.filter(pk=cluster.pk).update(last_synced_at=timezone.now())
    html = alice_client.get(reverse("gpus:catalog")).content.decode()
    assert "<strong>3</strong> free now" in html  # L40S
    assert "<strong>6</strong> free now" in html  # H100


def test_cross_tenant_my_gpus_is_404(alice_client, globex):
    assert alice_client.get(reverse("gpus:my_gpus", args=["tenant-globex"])).status_code == 404
    assert alice_client.get(reverse("gpus:my_gpus", args=["tenant-acme"])).status_code == 200


def _queued_syncs() -> list[list]:
    """Take the sync tasks off the configured broker (Redis in CI, the filesystem embedded)."""
    from hikube_portal.celery import app

    found = []
    with app.connection_for_read() as conn, conn.SimpleQueue("celery", no_ack=True) as queue:
        while True:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                return found
            if message.headers.get("task") == "inventory.sync_inventory":
                found.append(message.decode()[0])


def test_sync_button_is_for_admins_only_and_queues_a_task(
    alice_client, admin_client_, cluster, django_capture_on_commit_callbacks
):
    _queued_syncs()  # start from an empty queue
    assert alice_client.post(reverse("gpus:inventory_sync")).status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("gpus:inventory_sync"))
    assert response.status_code == 302 and response.url == reverse("gpus:inventory")
    assert _queued_syncs() == [[cluster.pk]]


def test_node_filters_reject_bad_values_without_a_500(cluster, admin_client_):
    store_snapshot(cluster, reading(), timezone.now())
    response = admin_client_.get(reverse("gpus:nodes"), {"health": "bogus", "gpu_model": "x"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()


def test_node_list_last_page_and_search(cluster, admin_client_):
    nodes = [node(f"gpu-l40s-{i:03d}", {L40S: 4}) for i in range(120)]
    store_snapshot(cluster, reading(nodes=nodes, pods=[]), timezone.now())
    html = admin_client_.get(reverse("gpus:nodes"), {"page": "last"}).content.decode()
    # The last 50 rows, by keyset (no page numbers: counting pages would scan the table).
    assert "gpu-l40s-119" in html and "gpu-l40s-070" in html and "gpu-l40s-069" not in html
    html = admin_client_.get(reverse("gpus:nodes"), {"q": "l40s-07"}).content.decode()
    assert "10 nodes" in html


def _listed(client, model: GpuModel, sort: str, page: str = "") -> set[str]:
    query = {"gpu_model": model.pk, "sort": sort, **({"page": page} if page else {})}
    html = client.get(reverse("gpus:nodes"), query).content.decode()
    return {n.name for n in Node.objects.all() if f">{n.name}<" in html}


@pytest.mark.parametrize("sort", ["name", "-free", "cluster", "health", "-installed"])
def test_node_list_by_model_is_exact_for_nodes_serving_several(cluster, admin_client_, sort):
    nodes = [
        node("gpu-l40s-1", {L40S: 4}),
        node("gpu-h100-1", {H100: 8}),
        node("gpu-mixed-1", {L40S: 2, H100: 2}),  # serves both: in both lists
        node("cpu-1", {}),
    ]
    store_snapshot(cluster, reading(nodes=nodes, pods=[]), timezone.now())
    stored = dict(Node.objects.values_list("name", "gpu_model__resource_name"))
    # The one model a node serves is on its row; none for a node with several or none.
    assert stored == {"gpu-l40s-1": L40S, "gpu-h100-1": H100, "gpu-mixed-1": None, "cpu-1": None}
    assert dict(ModelInventory.objects.values_list("gpu_model__resource_name", "mixed_nodes")) == {
        L40S: 1,
        H100: 1,
    }
    l40s, h100 = GpuModel.objects.get(resource_name=L40S), GpuModel.objects.get(resource_name=H100)
    assert _listed(admin_client_, l40s, sort) == {"gpu-l40s-1", "gpu-mixed-1"}
    assert _listed(admin_client_, h100, sort, "last") == {"gpu-h100-1", "gpu-mixed-1"}
    # The mixed node gone: the lists read Node.gpu_model alone, and stay exact.
    store_snapshot(cluster, reading(nodes=nodes[:2] + nodes[3:], pods=[]), timezone.now())
    assert set(ModelInventory.objects.values_list("mixed_nodes", flat=True)) == {0}
    assert _listed(admin_client_, l40s, sort) == {"gpu-l40s-1"}
    assert _listed(admin_client_, h100, sort, "last") == {"gpu-h100-1"}
