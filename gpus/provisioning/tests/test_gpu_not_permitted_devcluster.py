"""A GPU model KubeVirt's permittedHostDevices does not list (issue 16, devcluster section and
item 8): the VM, or every worker of a node group, never gets a launcher pod. The operation fails
with the cluster's message and plain words at the first poll that sees it, not at the timeout.
Against devcluster over HTTP with the real client, driven as the Celery tasks do."""

from __future__ import annotations

import pytest

from devcluster.testing import run_devcluster
from gpus.inventory import sync
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.kube import apps
from gpus.provisioning import presenters, services
from gpus.provisioning.choices import OperationState
from gpus.provisioning.tests.test_provisioning_devcluster import drive
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

L40S = "nvidia.com/AD102GL_L40S"
A100 = "nvidia.com/GA100_A100_PCIE_80GB"
H100 = "nvidia.com/H100_94GB"
ENDED = {OperationState.SUCCEEDED, OperationState.FAILED}
NOT_PERMITTED = (
    "failed to render launch manifest: GPU nvidia.com/H100_94GB is not permitted in "
    "permittedHostDevices configuration"
)


@pytest.fixture
def catalog(db):
    seed_catalog()


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    # The platform's KubeVirt permits L40S and A100 only: the H100 hosts are there, unusable.
    faults = {"rules": [], "knobs": {"permitted_host_devices": [L40S, A100]}}
    with run_devcluster(
        tmp_path_factory.mktemp("dc-perm"), flavour="current", speed=200.0, faults=faults
    ) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, register) -> Cluster:
    return register(dc, f"dc{dc.port}")


def test_a_vm_whose_gpu_is_not_permitted_fails_with_the_clusters_message(
    cluster, alice, acme, settings
):
    # Long graces: the failure must not come from waiting one out.
    settings.OPERATION_UNSCHEDULABLE_GRACE_SECONDS = 3600
    settings.OPERATION_HELM_RETRY_GRACE_SECONDS = 3600
    request = apps.VmRequest(
        name="np-vm",
        gpu_resource=H100,
        gpu_count=1,
        instance_type="u1.2xlarge",
        instance_profile="ubuntu",
        image="ubuntu-2404",
        disk_size_gi=20,
        storage_class="replicated",
    )
    op = drive(services.submit_vm(alice, acme, cluster, request), ENDED, seconds=60)
    assert op.state == OperationState.FAILED, (op.state, op.reason, op.message)
    assert op.reason == "GpuNotPermitted" and op.message.startswith(NOT_PERMITTED)
    assert "removes the VM and the disk" in op.message  # nothing left to start later
    view = presenters.describe(op)
    assert view.explanation.startswith("This GPU model is not enabled for virtual machines")
    # The inventory says so too, not "starting" forever.
    sync.sync_cluster(cluster.pk)
    row = GpuWorkload.objects.get(tenant=acme, name="np-vm", node_group="")
    assert (row.state, row.reason) == ("failed", "GpuNotPermitted")


def test_a_node_group_whose_gpu_is_not_permitted_fails_with_the_clusters_message(
    cluster, alice, acme, settings
):
    settings.OPERATION_UNSCHEDULABLE_GRACE_SECONDS = 3600
    settings.OPERATION_HELM_RETRY_GRACE_SECONDS = 3600
    request = apps.NodeGroupRequest(
        cluster_name="ml",
        group="h100",
        min_replicas=1,
        max_replicas=2,
        instance_type="u1.2xlarge",
        disk_size_gi=50,
        gpu_resource=H100,
        gpus_per_node=1,
    )
    op = services.submit_node_group(alice, acme, cluster, request, resize=False)
    op = drive(op, ENDED, seconds=60)
    assert op.state == OperationState.FAILED, (op.state, op.reason, op.message)
    assert (op.reason, op.message) == ("GpuNotPermitted", NOT_PERMITTED)


def test_a_permitted_model_still_runs(cluster, alice, acme):
    request = apps.NodeGroupRequest(
        cluster_name="ml",
        group="l40s",
        min_replicas=1,
        max_replicas=2,
        instance_type="u1.2xlarge",
        disk_size_gi=50,
        gpu_resource=L40S,
        gpus_per_node=1,
    )
    op = drive(services.submit_node_group(alice, acme, cluster, request, resize=False), ENDED, 90)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
