"""Inventory sync against devcluster over HTTP, with the real kubernetes client."""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import reverse

from devcluster.testing import run_devcluster
from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import (
    Cluster,
    GpuWorkload,
    ModelInventory,
    Node,
    SyncIssue,
    TenantAllocation,
)
from gpus.inventory.sync import sync_cluster
from gpus.kube.errors import KubeError

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

L40S = "nvidia.com/AD102GL_L40S"
A100 = "nvidia.com/GA100_A100_PCIE_80GB"
H100 = "nvidia.com/H100_94GB"


@pytest.fixture
def dc(tmp_path):
    with run_devcluster(tmp_path / "dc", fleet="demo", speed=50.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc):
    return Cluster.objects.create(name="devcluster", kubeconfig=str(dc.kubeconfig), context="admin")


def totals(resource: str) -> tuple[int, int, int, int]:
    row = ModelInventory.objects.get(gpu_model__resource_name=resource)
    return row.installed, row.allocated, row.free, row.unavailable


def sync_until(cluster: Cluster, check, timeout: float = 20.0) -> None:
    """Sync until the snapshot satisfies `check` (devcluster schedules in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        sync_cluster(cluster.pk)
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("the snapshot never reached the expected state")
        time.sleep(0.2)


def demo_settled() -> bool:
    # acme: gpu-ws (1 L40S) + ml/gpu (2 workers x 1 A100);
    # globex: inference (1 L40S) + serve/gpu (1 worker x 2 L40S).
    return (
        ModelInventory.objects.filter(gpu_model__resource_name=L40S, allocated=4).exists()
        and ModelInventory.objects.filter(gpu_model__resource_name=A100, allocated=2).exists()
    )


def test_demo_fleet_totals(cluster, acme, globex):
    sync_until(cluster, demo_settled)
    # 4 L40S nodes x 4 (one cordoned), 3 A100 nodes x 4 (one NotReady), 2 H100 nodes x 8.
    assert totals(L40S) == (16, 4, 8, 4)
    assert totals(A100) == (12, 2, 6, 4)
    assert totals(H100) == (16, 0, 16, 0)
    assert Node.objects.filter(cluster=cluster).count() == 9
    held = {
        (a.namespace, a.gpu_model.resource_name): a.allocated
        for a in TenantAllocation.objects.select_related("gpu_model")
    }
    assert held == {("tenant-acme", L40S): 1, ("tenant-acme", A100): 2, ("tenant-globex", L40S): 3}
    cluster.refresh_from_db()
    assert cluster.vm_kind == "VMInstance" and cluster.node_group_disk_field == "ephemeralStorage"
    assert cluster.last_synced_at is not None and cluster.unreachable_since is None


def test_workloads_created_outside_the_portal_show_up(cluster, acme, globex, alice_client):
    sync_until(cluster, demo_settled)
    ws = GpuWorkload.objects.get(tenant=acme, name="gpu-ws")
    assert (ws.kind, ws.gpu_model.resource_name, ws.gpus_held, ws.state) == (
        WorkloadKind.VM,
        L40S,
        1,
        ResourceState.RUNNING,
    )
    group = GpuWorkload.objects.get(tenant=acme, name="ml", node_group="gpu")
    assert (group.gpu_model.resource_name, group.gpus_per_instance, group.gpus_held) == (A100, 1, 2)
    html = alice_client.get(reverse("gpus:my_gpus", args=["tenant-acme"])).content.decode()
    assert "gpu-ws" in html and "ml" in html
    assert "inference" not in html  # globex's VM


def test_allocation_follows_a_vm_created_in_the_cluster(dc, cluster, acme, globex):
    sync_until(cluster, demo_settled)
    dc.kubectl("apply", "-f", "-", input=VM_YAML)
    sync_until(
        cluster,
        lambda: (
            totals(H100)[1] == 2
            and GpuWorkload.objects.filter(name="big", state=ResourceState.RUNNING).exists()
        ),
    )
    assert totals(H100) == (16, 2, 14, 0)
    dc.kubectl("delete", "vminstance", "big", "-n", "tenant-acme", "--wait=false")
    # Cozystack deletes like Helm uninstalls: the VM is Terminating and keeps its GPUs until
    # its launcher pod is gone, then the app disappears.
    sync_until(
        cluster,
        lambda: totals(H100)[1] == 0 and not GpuWorkload.objects.filter(name="big").exists(),
    )


def test_injected_429s_and_500s_are_retried_and_the_sync_completes(dc, cluster, acme, globex):
    dc.set_faults(
        {
            "rules": [
                {
                    "verb": "list",
                    "resource": "nodes",
                    "error_429": 1.0,
                    "retry_after": 1,
                    "times": 1,
                },
                {"verb": "list", "resource": "pods", "error_500": 1.0, "times": 2},
            ]
        }
    )
    sync_cluster(cluster.pk)
    assert dc.get_faults()["injected"] == 3
    cluster.refresh_from_db()
    assert cluster.last_error == "" and cluster.last_synced_at is not None
    assert totals(H100)[0] == 16


def test_an_unreachable_cluster_keeps_the_last_snapshot_and_says_so(
    dc, cluster, acme, globex, alice_client
):
    sync_until(cluster, demo_settled)
    dc.set_faults({"rules": [{"verb": "*", "resource": "*", "error_503": 1.0, "retry_after": 0}]})
    with pytest.raises(KubeError):
        sync_cluster(cluster.pk)
    # One retry budget for the whole sync, not retries per page times task retries.
    assert dc.get_faults()["injected"] == settings.INVENTORY_SYNC_RETRY_BUDGET + 1
    cluster.refresh_from_db()
    assert cluster.consecutive_failures == 1 and cluster.next_sync_at is not None
    assert cluster.unreachable_since is not None
    assert "503" in cluster.last_error or "unavailable" in cluster.last_error.lower()
    assert totals(L40S) == (16, 4, 8, 4)  # the previous snapshot stays
    html = alice_client.get(reverse("gpus:inventory")).content.decode()
    assert "is unreachable since" in html and "Showing the data as of" in html
    dc.clear_faults()
    sync_cluster(cluster.pk)
    cluster.refresh_from_db()
    assert cluster.unreachable_since is None and cluster.last_error == ""


def test_tenant_pages_show_no_host_names(cluster, acme, globex, alice_client):
    sync_until(cluster, demo_settled)
    node_names = list(Node.objects.values_list("name", flat=True))
    assert node_names
    for url in (
        reverse("gpus:inventory"),
        reverse("gpus:inventory_summary"),
        reverse("gpus:my_gpus", args=["tenant-acme"]),
        reverse("gpus:catalog"),
    ):
        html = alice_client.get(url).content.decode()
        leaked = [name for name in node_names if name in html]
        assert not leaked, f"{url} shows host names {leaked}"
        assert "tenant-globex" not in html


def test_cross_tenant_urls_are_404(cluster, acme, globex, alice_client, bob_client):
    sync_until(cluster, demo_settled)
    assert alice_client.get(reverse("gpus:my_gpus", args=["tenant-globex"])).status_code == 404
    assert bob_client.get(reverse("gpus:my_gpus", args=["tenant-acme"])).status_code == 404
    assert alice_client.get(reverse("gpus:nodes")).status_code == 404


def test_unknown_resource_names_appear_as_unknown_models(tmp_path, acme):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "nodes:\n"
        "  - {name: gpu-new-1, model: nvidia.com/GB202GL_RTX_PRO_6000, gpus: 4}\n"
        "  - {name: gpu-l40s-1, model: nvidia.com/AD102GL_L40S, gpus: 4}\n"
        "tenants: [tenant-acme]\n"
    )
    with run_devcluster(tmp_path / "dc", fleet=str(fleet), speed=50.0) as dc:
        cluster = Cluster.objects.create(name="c2", kubeconfig=str(dc.kubeconfig), context="admin")
        sync_cluster(cluster.pk)
    unknown = GpuModel.objects.get(resource_name="nvidia.com/GB202GL_RTX_PRO_6000")
    assert not unknown.is_known
    assert totals("nvidia.com/GB202GL_RTX_PRO_6000") == (4, 0, 4, 0)


def test_an_unhealthy_gpu_stays_installed_and_shows_unavailable(tmp_path, acme, client):
    """Issue 16 item 8: "installed" is the node's capacity; a GPU its device plugin reports
    unhealthy (capacity 4, allocatable 3) is unavailable, not gone."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "nodes:\n"
        "  - {prefix: gpu-l40s, count: 2, model: nvidia.com/AD102GL_L40S, gpus: 4,"
        " unhealthy: {1: 1}}\n"
        "tenants: [tenant-acme]\n"
    )
    with run_devcluster(tmp_path / "dc", fleet=str(fleet), speed=50.0) as dc:
        shown = dc.kubectl(
            "get",
            "node",
            "gpu-l40s-1",
            "-o",
            "jsonpath={.status.capacity.nvidia\\.com/AD102GL_L40S}/"
            "{.status.allocatable.nvidia\\.com/AD102GL_L40S}",
        ).stdout
        assert shown == "4/3"
        cluster = Cluster.objects.create(name="c3", kubeconfig=str(dc.kubeconfig), context="admin")
        sync_cluster(cluster.pk)
    assert totals(L40S) == (8, 0, 7, 1)
    node = Node.objects.get(name="gpu-l40s-1")
    assert (node.gpu_installed, node.gpu_free) == (4, 3)
    gpu = node.gpus.get()
    assert (gpu.installed, gpu.free, gpu.unavailable) == (4, 3, 1)
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "x")
    client.force_login(admin)
    page = client.get(reverse("gpus:node", args=[node.pk])).content.decode()
    cells = re.findall(r'<td class="num"[^>]*>(\d+)</td>', page.split('id="node-gpus"')[1])
    assert cells[:4] == ["4", "0", "3", "1"]


def test_the_charts_md0_is_shown_as_non_gpu_workers(dc, cluster, acme, globex, bob_client):
    """Issue 16 item 8: v1.1 merges values.yaml's md0 into every cluster's groups, so globex's
    `serve` (whose spec names only `gpu`) runs md0 workers too: the portal shows the group and
    counts its workers as workers without GPUs, never as GPUs."""
    spec = dc.kubectl(
        "--context", "tenant-globex", "get", "kuberneteses", "serve", "-o", "json"
    ).stdout
    assert "md0" not in json.loads(spec)["spec"]["nodeGroups"]
    monitor = json.loads(
        dc.kubectl("-n", "tenant-globex", "get", "workloadmonitors", "kubernetes-serve-md0",
                   "-o", "json").stdout
    )  # fmt: skip
    sync_cluster(cluster.pk)
    md0 = GpuWorkload.objects.get(tenant=globex, name="serve", node_group="md0")
    assert (md0.gpus_per_instance, md0.gpu_model, md0.gpus_held) == (0, None, 0)
    assert md0.instances == int(monitor["status"].get("availableReplicas") or 0)
    gpu = GpuWorkload.objects.get(tenant=globex, name="serve", node_group="gpu")
    assert gpu.gpus_per_instance == 2
    page = bob_client.get(reverse("gpus:my_gpus", args=["tenant-globex"])).content.decode()
    assert "md0" in page and "No GPUs (" in page


def test_legacy_flavour_syncs_virtual_machines(tmp_path, acme, globex):
    with run_devcluster(tmp_path / "dc", fleet="demo", flavour="legacy", speed=50.0) as dc:
        cluster = Cluster.objects.create(
            name="legacy", kubeconfig=str(dc.kubeconfig), context="admin"
        )
        sync_until(
            cluster,
            lambda: GpuWorkload.objects.filter(name="gpu-ws", state=ResourceState.RUNNING).exists(),
        )
    cluster.refresh_from_db()
    assert cluster.vm_kind == "VirtualMachine"
    assert GpuWorkload.objects.get(name="gpu-ws").app_kind == "VirtualMachine"


VM_YAML = """
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata: {name: big-system, namespace: tenant-acme}
spec:
  source: {image: {name: ubuntu-2404}}
  storage: 100Gi
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata: {name: big, namespace: tenant-acme}
spec:
  runStrategy: Always
  instanceType: u1.8xlarge
  disks: [{name: big-system}]
  gpus: [{name: nvidia.com/H100_94GB}, {name: nvidia.com/H100_94GB}]
"""


ODD_YAML = """
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata: {name: odd, namespace: tenant-acme}
spec:
  runStrategy: Always
  instanceType: u1.medium
  gpus: [{name: nvidia.com/%(gpu)s}]
---
apiVersion: apps.cozystack.io/v1alpha1
kind: Kubernetes
metadata: {name: wide, namespace: tenant-acme}
spec:
  nodeGroups:
    %(group)s:
      minReplicas: 1
      maxReplicas: 2
      instanceType: u1.xlarge
      resources: {}
      gpus: [{name: %(a100)s}]
"""


def test_one_tenants_odd_objects_do_not_freeze_the_inventory(
    dc, cluster, acme, globex, admin_client_, bob_client
):
    gpu, group = "X" * 139, "g" * 80  # a 150-character GPU name, an 80-character group key
    dc.kubectl("apply", "-f", "-", input=ODD_YAML % {"gpu": gpu, "group": group, "a100": A100})
    sync_until(cluster, lambda: GpuWorkload.objects.filter(name="odd").exists())
    cluster.refresh_from_db()
    assert cluster.last_error == "" and cluster.unreachable_since is None
    assert totals(H100)[0] == 16  # the rest of the fleet is there
    # The node group that cannot be stored is recorded and shown to admins.
    issue = SyncIssue.objects.get(cluster=cluster, kind="Kubernetes")
    assert issue.name == f"wide/{group}" and "node_group is 80 characters long" in issue.problem
    assert f"wide/{group[:20]}" in admin_client_.get(reverse("gpus:inventory")).content.decode()
    # The VM's odd GPU name is acme's business: on its row, not in anyone's catalog.
    odd = GpuWorkload.objects.get(name="odd")
    assert odd.gpu_model is None and odd.gpu_resource == f"nvidia.com/{gpu}"
    assert not GpuModel.objects.filter(resource_name__contains=gpu).exists()
    assert gpu not in bob_client.get(reverse("gpus:catalog")).content.decode()
    # Gone from the cluster: gone from the portal.
    dc.kubectl("delete", "vminstance", "odd", "-n", "tenant-acme", "--wait=false")
    dc.kubectl("delete", "kubernetes", "wide", "-n", "tenant-acme", "--wait=false")
    sync_until(
        cluster,
        lambda: (
            not GpuWorkload.objects.filter(name="odd").exists() and not SyncIssue.objects.exists()
        ),
    )


def test_a_failing_cluster_costs_a_bounded_number_of_requests(dc, cluster, settings):
    """Each sync spends its retry budget once; the task retries the whole sync a bounded number
    of times (eagerly here: Celery runs the retries at once), then gives up and backs off."""
    from gpus.inventory.tasks import sync_all_inventories, sync_inventory

    dc.set_faults({"rules": [{"verb": "*", "resource": "*", "error_500": 1.0}]})
    result = sync_inventory.apply(args=[cluster.pk])
    per_sync = settings.INVENTORY_SYNC_RETRY_BUDGET + 1
    syncs = settings.INVENTORY_SYNC_TASK_RETRIES + 1
    assert dc.get_faults()["injected"] == per_sync * syncs
    cluster.refresh_from_db()
    assert cluster.consecutive_failures == syncs and cluster.unreachable_since is not None
    assert "500" in cluster.last_error
    assert result.result == {
        "cluster": cluster.pk,
        "ok": False,
        "gave_up": True,
        "error": cluster.last_error,
    }
    # The beat leaves the cluster alone while it backs off.
    assert sync_all_inventories() == 0


BROKEN_VM_YAML = """
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata: {name: broken, namespace: tenant-acme}
spec:
  runStrategy: Sometimes
  instanceType: u1.medium
  gpus: [{name: nvidia.com/H100_94GB}]
"""


def test_helm_failures_and_terminating_apps_as_cozystack_reports_them(dc, cluster, acme, globex):
    """v1.1 accepts a spec that breaks the chart (Helm fails later), keeps a deleted app
    Terminating while Helm uninstalls, and the sync shows both as the cluster says them."""
    sync_until(cluster, demo_settled)
    dc.set_faults({"knobs": {"stop_grace": 3000}})  # a terminating VM keeps its GPUs a while
    dc.kubectl("apply", "-f", "-", input=BROKEN_VM_YAML)
    sync_until(
        cluster,
        lambda: GpuWorkload.objects.filter(name="broken", state=ResourceState.FAILED).exists(),
    )
    broken = GpuWorkload.objects.get(name="broken")
    assert broken.reason == "InstallFailed"
    assert broken.message.startswith(
        "Helm install failed for release tenant-acme/vm-instance-broken"
    )
    # An update the chart refuses: UpgradeFailed, the previous release (and its GPU) still there.
    dc.kubectl(
        "patch", "vminstance", "gpu-ws", "-n", "tenant-acme", "--type=merge",
        "-p", '{"spec": {"runStrategy": "Sometimes"}}',
    )  # fmt: skip
    sync_until(
        cluster,
        lambda: GpuWorkload.objects.filter(name="gpu-ws", reason="UpgradeFailed").exists(),
    )
    ws = GpuWorkload.objects.get(name="gpu-ws")
    assert (ws.state, ws.gpus_held) == (ResourceState.FAILED, 1)
    assert "Helm upgrade failed" in ws.message
    # Deleted: Terminating (deletionTimestamp) while the launcher pod still holds the GPU.
    dc.kubectl("delete", "vminstance", "gpu-ws", "-n", "tenant-acme", "--wait=false")
    sync_until(
        cluster,
        lambda: GpuWorkload.objects.filter(name="gpu-ws", state=ResourceState.DELETING).exists(),
    )
    ws = GpuWorkload.objects.get(name="gpu-ws")
    assert (ws.reason, ws.gpus_held) == ("Terminating", 1)


def test_the_sync_command_also_reads_the_served_schemas(cluster):
    """A first start (`make run` calls the command) offers the Kubernetes versions at once,
    not after the beat's first schema refresh ten minutes later."""
    from django.core.management import call_command

    from gpus.inventory.models import ServedSchema
    from gpus.inventory.selectors import catalogue_for

    out = io.StringIO()
    call_command("sync_inventory", stdout=out)
    assert "nodes synced" in out.getvalue()
    assert ServedSchema.objects.filter(cluster=cluster, app_kind="Kubernetes").exists()
    assert catalogue_for(cluster).kubernetes_versions
