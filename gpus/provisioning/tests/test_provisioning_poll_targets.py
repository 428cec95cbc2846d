"""What the poller looks for, and where (#17 item 3): an app the portal made is found by the
cluster-wide list of its label; one made elsewhere in a list of its namespace."""

from __future__ import annotations

from gpus.kube import apps as mf
from gpus.kube.operations import Target
from gpus.provisioning.engine import targets
from gpus.provisioning.models import Operation

NS = "tenant-acme"


def vm_request(name: str) -> mf.VmRequest:
    return mf.VmRequest(
        name=name, gpu_resource="nvidia.com/H100_94GB", gpu_count=1, instance_type="u1.2xlarge",
        instance_profile="ubuntu", image="ubuntu-2404", disk_size_gi=20,
        storage_class="replicated",
    )  # fmt: skip


def op(kind: str, docs: list[dict], **fields) -> Operation:
    return Operation(
        kind=kind, namespace=NS, app_kind=mf.VM_INSTANCE, name="gpu-ws", manifests=docs, **fields
    )


def test_a_create_is_found_by_the_portal_label():
    docs = mf.vm_manifests(vm_request("gpu-ws"), NS, mf.VM_INSTANCE)
    assert targets(op("create", docs)) == [
        Target(NS, mf.VM_DISK, "gpu-ws-system", True),
        Target(NS, mf.VM_INSTANCE, "gpu-ws", True),
    ]


def test_a_day2_change_follows_what_the_cluster_showed_before_the_write():
    patch = [{"kind": mf.VM_INSTANCE, "metadata": {"name": "gpu-ws", "namespace": NS}}]
    made_here = op("start", patch, baseline={"before": {}, "labelled": True})
    made_elsewhere = op("start", patch, baseline={"before": {}, "labelled": False})
    not_read_yet = op("start", patch)
    assert targets(made_here) == [Target(NS, mf.VM_INSTANCE, "gpu-ws", True)]
    assert targets(made_elsewhere) == [Target(NS, mf.VM_INSTANCE, "gpu-ws", False)]
    assert targets(not_read_yet) == [Target(NS, mf.VM_INSTANCE, "gpu-ws", False)]


def test_a_delete_of_a_vm_made_with_kubectl_is_not_taken_for_done():
    base = {"kind": mf.VM_INSTANCE, "metadata": {"name": "gpu-ws", "namespace": NS}}
    foreign = op("delete", [base], params={"action": "delete"})
    ours = op("delete", [base], params={"action": "delete", "portal_made": True})
    assert targets(foreign) == [Target(NS, mf.VM_INSTANCE, "gpu-ws", False)]
    assert targets(ours) == [Target(NS, mf.VM_INSTANCE, "gpu-ws", True)]
