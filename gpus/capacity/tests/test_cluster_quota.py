"""The cluster's own ResourceQuota (#18 item 3, #16 item 8): the inventory sync reads each tenant
namespace's quotas on ``requests.nvidia.com/*``; the tenant page and the headroom show it beside
the portal's quota and the lower one wins; an operation the cluster's quota refuses fails with
the cluster's message in plain words instead of timing out. devcluster over HTTP, the quota
made with kubectl."""

from __future__ import annotations

import time
from html import escape

import pytest
from django.urls import reverse

from devcluster.testing import run_devcluster
from gpus.capacity import selectors, services
from gpus.catalog.models import GpuModel
from gpus.inventory import sync
from gpus.inventory.models import Cluster, ClusterQuota
from gpus.kube import apps
from gpus.provisioning import engine
from gpus.provisioning import services as provisioning
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import Operation
from gpus.provisioning.presenters import plain_reason
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

H100 = "nvidia.com/H100_94GB"
# As the v1.1 tenant chart renders `resourceQuotas: {nvidia.com/H100_94GB: 1}` (cozy-lib
# flatten: requests.X and limits.X); only the first is enforced for an extended resource.
QUOTA = """
apiVersion: v1
kind: ResourceQuota
metadata: {name: tenant-quota, namespace: tenant-acme}
spec:
  hard: {requests.nvidia.com/H100_94GB: "%(n)s", limits.nvidia.com/H100_94GB: "%(n)s"}
"""


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    with run_devcluster(tmp_path_factory.mktemp("dc"), speed=50.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, register) -> Cluster:
    seed_catalog()
    dc.kubectl("apply", "-f", "-", input=QUOTA % {"n": 1})
    return register(dc, f"dc{dc.port}")


def _request(name: str, count: int) -> apps.VmRequest:
    return apps.VmRequest(
        name=name, gpu_resource=H100, gpu_count=count, instance_type="u1.2xlarge",
        instance_profile="ubuntu", image="ubuntu-2404", disk_size_gi=20,
        storage_class="replicated",
    )  # fmt: skip


def _drive(op: Operation, seconds: float = 60) -> Operation:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        op.refresh_from_db()
        if op.is_terminal:
            return op
        if op.state == OperationState.PENDING:
            if claimed := engine.claim(op.pk):
                engine.apply(claimed)
        else:
            engine.poll_cluster(op.cluster_id)
        time.sleep(0.05)
    raise AssertionError(f"stayed {op.state}: {op.reason} {op.message}")


def test_the_lower_quota_wins_and_the_clusters_refusal_is_told(
    dc, cluster, platform_admin, alice, acme, globex, alice_client, admin_client_
) -> None:
    h100 = GpuModel.objects.get(resource_name=H100)
    # The sync read the quota: only the enforced form (requests.), with the controller's used.
    rows = list(ClusterQuota.objects.filter(cluster=cluster).values_list(
        "tenant__namespace", "name", "gpu_model__resource_name", "hard", "used"))  # fmt: skip
    assert rows == [("tenant-acme", "tenant-quota", H100, 1, 0)]

    # The portal's quota is higher: the cluster's wins, and both are shown.
    services.set_quota(platform_admin, acme, h100, 4)
    (room,) = [h for h in selectors.headroom(acme) if h.model == h100]
    assert (room.portal.limit, room.cluster.limit, room.left, room.by_cluster) == (4, 1, 1, True)
    page = admin_client_.get(reverse("gpus:capacity_quotas", args=["tenant-acme"])).content
    row = page.decode().split(f'id="headroom-{h100.pk}"')[1].split("</tr>")[0]
    assert ">4<" in row and "1 <span" in row and "tenant-quota" in row
    box = alice_client.get(reverse("gpus:capacity_headroom") + "?tenant=tenant-acme")
    assert "1 of 1 NVIDIA H100 NVL left (cluster quota tenant-quota)" in box.content.decode()
    # Another tenant's headroom is a 404.
    other = alice_client.get(reverse("gpus:capacity_headroom") + "?tenant=tenant-globex")
    assert other.status_code == 404

    # A request over the cluster's quota is refused before anything is sent.
    with pytest.raises(provisioning.OperationRefused) as refused:
        provisioning.submit_vm(alice, acme, cluster, _request("two", 2))
    assert str(refused.value.message) == (
        "The cluster's quota tenant-quota allows 1 more NVIDIA H100 NVL."
    )

    # The quota is lowered on the cluster after the last sync: the portal lets the request
    # through, the cluster refuses the launcher pod, and the operation fails at once with the
    # cluster's words (not after OPERATION_TIMEOUT_SECONDS).
    dc.kubectl("apply", "-f", "-", input=QUOTA % {"n": 0})
    op = _drive(provisioning.submit_vm(alice, acme, cluster, _request("one", 1)))
    assert op.state == OperationState.FAILED and op.reason == "QuotaExceeded", op.message
    assert "exceeded quota: tenant-quota" in op.message
    plain = plain_reason(op.reason, op.message, op.gpu_count)
    assert plain == (
        "The tenant's quota on the cluster (tenant-quota) allows 0 × NVIDIA H100 NVL; 0 are "
        "in use, so 1 more cannot start. Free one, or ask for a higher quota."
    )
    page = alice_client.get(reverse("gpus:operation", args=["tenant-acme", op.pk]))
    assert escape(plain) in page.content.decode()

    # The next sync follows the cluster: the lower quota shows at once on the headroom.
    sync.sync_cluster(cluster.pk)
    (room,) = [h for h in selectors.headroom(acme) if h.model == h100]
    assert (room.cluster.limit, room.left) == (0, 0)
    # ... and among the tenants at their quota on the capacity page.
    page = admin_client_.get(reverse("gpus:capacity"))
    pressure = [(q["tenant"], q["cluster_quota"]) for q in page.context["quota_pressure"]]
    assert (acme, "tenant-quota") in pressure
    assert "(cluster quota tenant-quota)" in page.content.decode()
