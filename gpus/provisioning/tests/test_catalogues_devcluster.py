"""Catalogues read from the cluster (issue 16 item 7): the sync stores the instance types,
profiles, golden images and storage classes devcluster serves as v1.1 does, the forms offer only
those, and an operation that meets the charts' `lookup` + `fail` (or CDI waiting on a missing
image) fails at once in plain words. Over HTTP with the real client; kubectl changes the cluster
as an admin would."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.testing import DevCluster, run_devcluster
from gpus.inventory import sync
from gpus.inventory.models import CatalogueEntry, Cluster
from gpus.inventory.selectors import catalogue_for
from gpus.kube import apps
from gpus.provisioning import presenters, services
from gpus.provisioning.capacity import gpu_model_choices
from gpus.provisioning.choices import OperationState
from gpus.provisioning.forms import NodeGroupForm
from gpus.provisioning.models import Operation
from gpus.provisioning.tests.test_provisioning_devcluster import drive
from gpus.provisioning.tests.test_provisioning_views import form_data
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"
ENDED = {OperationState.SUCCEEDED, OperationState.FAILED}


@pytest.fixture
def catalog(db):
    seed_catalog()


@pytest.fixture(scope="module")
def dc(tmp_path_factory) -> Iterator[DevCluster]:
    with run_devcluster(tmp_path_factory.mktemp("dc-catalogues"), speed=200.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, register) -> Cluster:
    return register(dc, name=f"dc{dc.port}")


@pytest.fixture
def removed(dc: DevCluster, tmp_path: Path) -> Iterator:
    """removed(kind, name, namespace=""): an admin deletes the object with kubectl; it is
    created again (as it was) after the test."""
    kept: list[Path] = []

    def remove(kind: str, name: str, namespace: str = "") -> None:
        where = ["-n", namespace] if namespace else []
        obj = json.loads(dc.kubectl(*where, "get", kind, name, "-o", "json").stdout)
        meta = obj["metadata"]
        obj["metadata"] = {
            k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)
        }
        obj.pop("status", None)
        path = tmp_path / f"{kind}-{name}.json"
        path.write_text(json.dumps(obj))
        kept.append(path)
        dc.kubectl(*where, "delete", kind, name)

    yield remove
    for path in kept:
        dc.kubectl("create", "-f", str(path))


def vm_request(name: str, **chosen: str) -> apps.VmRequest:
    values = {
        "instance_type": "u1.2xlarge",
        "instance_profile": "ubuntu",
        "image": "ubuntu-2404",
        "storage_class": "replicated",
        **chosen,
    }
    return apps.VmRequest(
        name=name, gpu_resource=H100, gpu_count=1, disk_size_gi=50, **values
    )  # fmt: skip


def test_the_sync_reads_what_the_cluster_offers(dc, cluster, removed, tmp_path):
    offered = catalogue_for(cluster)
    u1 = offered.instance_type("u1.2xlarge")
    # cozystack v1.1.0 packages/system/kubevirt-instancetypes, as served.
    assert u1 is not None and (u1.vcpu, u1.memory_mib) == (8, 32 * 1024)
    assert offered.instance_type("o1.nano").memory_mib == 512
    # gn1 is deprecated and brings its own GPU: never offered.
    assert offered.instance_type("gn1.xlarge") is None and len(offered.instance_types) == 44
    assert offered.image("ubuntu-2404").os_family == "ubuntu"
    assert offered.image("almalinux-9").os_family == "almalinux"
    assert offered.image("talos") is not None
    assert [c.name for c in offered.storage_classes] == ["local", "replicated", "replicated-async"]
    assert offered.default_storage_class == "replicated"
    assert offered.profile("windows.2k22.virtio").windows
    assert not offered.profile("ubuntu").windows
    # The Kubernetes versions the served schema allows, its default first choice.
    assert offered.kubernetes_versions == ["v1.35", "v1.34", "v1.33", "v1.32", "v1.31", "v1.30"]
    assert offered.kubernetes_default == "v1.35"

    # What an admin adds or removes shows at the next sync.
    removed("datavolume", "vm-image-debian-12", "cozy-public")
    added = tmp_path / "s1.yaml"
    added.write_text(
        "apiVersion: instancetype.kubevirt.io/v1beta1\n"
        "kind: VirtualMachineClusterInstancetype\n"
        "metadata: {name: s1.large}\n"
        "spec: {cpu: {guest: 4}, memory: {guest: 8Gi}}\n"
    )
    dc.kubectl("create", "-f", str(added))
    try:
        sync.sync_cluster(cluster.pk)
        offered = catalogue_for(cluster)
        assert offered.image("debian-12") is None
        assert offered.instance_type("s1.large").vcpu == 4
    finally:
        dc.kubectl("delete", "vmcit", "s1.large")


def test_the_vm_form_offers_what_the_cluster_has_and_names_what_it_lost(
    dc, cluster, removed, alice_client, acme
):
    page = alice_client.get(f"/tenants/{acme.namespace}/vms/new/").content.decode()

    def options(field: str) -> set[str]:
        select = re.search(rf'<select name="{field}".*?</select>', page, re.S)
        assert select, field
        return set(re.findall(r'<option value="([^"]*)"', select.group(0)))

    assert "u1.2xlarge" in options("instance_type") and "cx1.2xlarge" in options("instance_type")
    assert not {"gn1.xlarge", "s1.small"} & options("instance_type")
    assert {"ubuntu-2404", "talos"} <= options("image")
    assert options("storage_class") == {"local", "replicated", "replicated-async"}
    assert "windows.2k25.virtio" in options("instance_profile")

    removed("vmcit", "u1.4xlarge")
    sync.sync_cluster(cluster.pk)
    check = alice_client.post(
        f"/tenants/{acme.namespace}/vms/new/check/", form_data(instance_type="u1.4xlarge")
    )
    assert check.context["form"].errors["instance_type"] == [
        "The cluster does not offer “u1.4xlarge” (any more): pick one of the choices it has."
    ]
    html = check.content.decode()
    assert 'id="err-instance_type"' in html  # next to the field


def test_node_groups_take_the_served_versions_and_the_schema_check(dc, cluster, alice, acme):
    form = NodeGroupForm(gpu_choices=gpu_model_choices(), catalogue=catalogue_for(cluster))
    assert [v for v, _ in form.fields["version"].choices][:2] == ["v1.35", "v1.34"]
    assert form.fields["version"].initial == "v1.35"
    # A version the served schema's enum leaves out is refused before anything is sent.
    request = apps.NodeGroupRequest(
        cluster_name="cat-new",
        group="gpu",
        min_replicas=1,
        max_replicas=2,
        instance_type="u1.2xlarge",
        disk_size_gi=50,
        gpu_resource=L40S,
        gpus_per_node=1,
        new_cluster_version="v1.29",
    )
    with pytest.raises(services.OperationRefused) as refused:
        services.submit_node_group(alice, acme, cluster, request, resize=False)
    assert "spec.version" in refused.value.message and "v1.29" in refused.value.message
    assert not Operation.objects.filter(name="cat-new").exists()


def test_a_vm_whose_instance_type_the_cluster_lost_fails_at_once(dc, cluster, removed, alice, acme):
    op = services.submit_vm(alice, acme, cluster, vm_request("cat-lost", instance_type="cx1.large"))
    removed("vmcit", "cx1.large")  # after the submit, before Helm renders the chart
    op = drive(op, ENDED)
    assert op.state == OperationState.FAILED
    assert "Specified instanceType does not exist in the cluster: cx1.large" in op.message
    assert "helm_retrying_since" not in op.params  # final: not waited out as a retry
    assert presenters.plain_reason(op.reason, op.message) == (
        "The cluster has no instance type “cx1.large” (any more): send the request again with "
        "one it offers (a retry would send the same one)."
    )


def test_a_vm_whose_image_the_cluster_lost_fails_instead_of_waiting(
    dc, cluster, removed, alice, acme
):
    op = services.submit_vm(alice, acme, cluster, vm_request("cat-img", image="almalinux-9"))
    removed("datavolume", "vm-image-almalinux-9", "cozy-public")
    op = drive(op, ENDED)
    # CDI waits forever for a clone's source (CloneWithoutSource): the portal does not.
    assert op.state == OperationState.FAILED and op.reason == "CloneWithoutSource"
    assert "The source pvc vm-image-almalinux-9 doesn't exist" in op.message
    assert "no image “almalinux-9”" in presenters.plain_reason(op.reason, op.message)
    assert CatalogueEntry.objects.filter(cluster=cluster, name="almalinux-9").exists()
