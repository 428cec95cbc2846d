"""The state mapping (gpus.kube.states) and the record parsers, on objects shaped as Cozystack
v1.1, helm-controller and KubeVirt write them (domain reference §1; devcluster-vs-cozystack.md
A, C, E, F, G)."""

from __future__ import annotations

from gpus.inventory.choices import ResourceState
from gpus.kube.records import (
    kubernetes_app_from_json,
    kubevirt_vm_from_json,
    vm_app_from_json,
    workload_monitor_from_json,
)
from gpus.kube.states import PRINTABLE_STATUS_STATES, WorkloadState, node_group_state, vm_state

H100 = "nvidia.com/H100_94GB"
A100 = "nvidia.com/GA100_A100_PCIE_80GB"
NS = "tenant-acme"

INSTALL_FAILED = (
    "Helm install failed for release tenant-acme/vm-instance-big with chart vm-instance@0.13.0: "
    "values don't meet the specifications of the schema(s) in the following chart(s):\n"
    "vm-instance:\n- instanceType: instanceType must be one of the following: ..."
)
UPGRADE_FAILED = (
    "Helm upgrade failed for release tenant-acme/kubernetes-ml with chart kubernetes@0.24.0: "
    "values don't meet the specifications of the schema(s) in the following chart(s):\n"
    "kubernetes:\n- nodeGroups.gpu.minReplicas: Invalid type. Expected: integer, given: string"
)


def condition(type_: str, status: str, reason: str, message: str = "") -> dict:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-29T03:58:12Z",
    }


def app_meta(name: str, deleting: bool = False) -> dict:
    # v1.1 apps carry no generation; a deleted one keeps deletionTimestamp until Helm uninstalls.
    meta = {
        "name": name,
        "namespace": NS,
        "uid": "8d4f7a52-0c1e-4b8e-9d1e-5f0c2a7b3e11",
        "resourceVersion": "48213",
        "creationTimestamp": "2026-11-29T03:50:00Z",
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T04:01:00Z"
        meta["finalizers"] = ["finalizers.fluxcd.io"]
    return meta


def vminstance(name: str, conditions: list[dict], deleting: bool = False, **spec) -> dict:
    return {
        "apiVersion": "apps.cozystack.io/v1alpha1",
        "kind": "VMInstance",
        "metadata": app_meta(name, deleting),
        "spec": {
            "runStrategy": "Always",
            "instanceType": "u1.8xlarge",
            "disks": [{"name": f"{name}-system"}],
            "gpus": [{"name": H100}],
            **spec,
        },
        "status": {"version": "0.13.0+abc123", "conditions": conditions},
    }


def released(ok: bool = True) -> list[dict]:
    message = "Helm install succeeded for release tenant-acme/vm-instance-big.v1 with chart ..."
    return [
        condition("Ready", "True" if ok else "False", "InstallSucceeded", message),
        condition("Released", "True", "InstallSucceeded", message),
    ]


def kubevirt(name: str, printable: str, conditions: list[dict] = (), **meta) -> dict:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS, **meta},
        "spec": {"runStrategy": "Always"},
        "status": {"printableStatus": printable, "conditions": list(conditions)},
    }


def test_workload_states_are_the_portals_resource_states():
    assert {s.value for s in WorkloadState} == {s.value for s in ResourceState}
    assert set(PRINTABLE_STATUS_STATES.values()) <= set(WorkloadState)


def test_install_failed_is_failed_with_helms_message():
    app = vm_app_from_json(
        vminstance(
            "big",
            [
                condition("Ready", "False", "InstallFailed", INSTALL_FAILED),
                condition("Released", "False", "InstallFailed", INSTALL_FAILED),
            ],
        ),
        "VMInstance",
    )
    got = vm_state(app, None)  # Helm never created the KubeVirt VM
    assert got.state == ResourceState.FAILED
    assert got.reason == "InstallFailed"
    assert got.message == INSTALL_FAILED


def test_upgrade_failed_node_group_is_failed_although_workers_run():
    obj = {
        "apiVersion": "apps.cozystack.io/v1alpha1",
        "kind": "Kubernetes",
        "metadata": app_meta("ml"),
        "spec": {
            "nodeGroups": {
                "md0": {"minReplicas": 0, "maxReplicas": 10, "instanceType": "u1.medium"},
                "gpu": {
                    "minReplicas": "two",  # what the failed upgrade sent
                    "maxReplicas": 4,
                    "instanceType": "u1.2xlarge",
                    "roles": ["ingress-nginx"],
                    "gpus": [{"name": A100}],
                },
            }
        },
        "status": {
            "version": "0.24.0+def456",
            "conditions": [
                condition("Ready", "False", "UpgradeFailed", UPGRADE_FAILED),
                condition("Released", "False", "UpgradeFailed", UPGRADE_FAILED),
            ],
        },
    }
    app = kubernetes_app_from_json(obj)
    groups = {g.name: g for g in app.node_groups}
    # All groups come back, also md0 without GPUs (provisioning needs them).
    assert set(groups) == {"md0", "gpu"}
    assert groups["md0"].gpus == () and groups["md0"].max_replicas == 10
    gpu = groups["gpu"]
    assert (gpu.gpus, gpu.min_replicas, gpu.roles) == ((A100,), 0, ("ingress-nginx",))
    assert gpu.monitor_name == "kubernetes-ml-gpu" and gpu.worker_prefix == "kubernetes-ml-gpu-"
    monitor = workload_monitor_from_json(
        {
            "metadata": {"name": "kubernetes-ml-gpu", "namespace": NS},
            "spec": {"kind": "kubernetes", "type": "worker", "minReplicas": 2},  # no replicas
            "status": {"operational": True, "availableReplicas": 2, "observedReplicas": 2},
        }
    )
    assert monitor.replicas is None
    got = node_group_state(app, gpu, monitor)
    assert (got.state, got.reason, got.message) == (
        ResourceState.FAILED,
        "UpgradeFailed",
        UPGRADE_FAILED,
    )


def test_progressing_release_is_not_failed():
    app = vm_app_from_json(
        vminstance("big", [condition("Ready", "Unknown", "Progressing", "Running 'install'")]),
        "VMInstance",
    )
    got = vm_state(app, None)
    assert got.state == ResourceState.PROVISIONING and got.reason == "Progressing"


def test_terminating_app_is_deleting_until_helm_uninstalls():
    app = vm_app_from_json(vminstance("ws", released(), deleting=True), "VMInstance")
    assert app.deleting
    running_vm = kubevirt_vm_from_json(kubevirt("vm-instance-ws", "Running"))
    got = vm_state(app, running_vm)
    assert (got.state, got.reason) == (ResourceState.DELETING, "Terminating")
    # The KubeVirt VM going away on its own says the same.
    app = vm_app_from_json(vminstance("ws", released()), "VMInstance")
    vm = kubevirt_vm_from_json(
        kubevirt("vm-instance-ws", "Terminating", deletionTimestamp="2026-11-29T04:01:00Z")
    )
    assert vm.deleting and vm_state(app, vm).state == ResourceState.DELETING


def test_kubernetes_app_being_deleted_is_deleting():
    obj = {
        "metadata": app_meta("ml", deleting=True),
        "spec": {"nodeGroups": {"gpu": {"minReplicas": 1, "gpus": [{"name": A100}]}}},
        "status": {"conditions": released()},
    }
    app = kubernetes_app_from_json(obj)
    assert node_group_state(app, app.node_groups[0], None).state == ResourceState.DELETING


def test_restart_required_keeps_the_vm_running_and_says_why():
    app = vm_app_from_json(vminstance("ws", released()), "VMInstance")
    vm = kubevirt_vm_from_json(
        kubevirt(
            "vm-instance-ws",
            "Running",
            [
                condition("Ready", "True", ""),
                condition(
                    "RestartRequired",
                    "True",
                    "",
                    "a non-live-updatable field was changed in the template spec",
                ),
            ],
        )
    )
    got = vm_state(app, vm)
    assert (got.state, got.reason) == (ResourceState.RUNNING, "RestartRequired")
    assert "non-live-updatable" in got.message


def test_data_volume_error_is_failed_with_kubevirts_message():
    app = vm_app_from_json(vminstance("big", released()), "VMInstance")
    vm = kubevirt_vm_from_json(
        kubevirt(
            "vm-instance-big",
            "DataVolumeError",
            [
                condition("LiveMigratable", "False", "DisksNotLiveMigratable", "PVC not shared"),
                condition(
                    "DataVolumesReady",
                    "False",
                    "DataVolumeError",
                    "DataVolume vm-disk-big-system import failed: HTTP 404",
                ),
            ],
        )
    )
    got = vm_state(app, vm)
    assert got.state == ResourceState.FAILED
    assert (got.reason, got.message) == (
        "DataVolumeError",
        "DataVolume vm-disk-big-system import failed: HTTP 404",
    )


def test_halted_vm_without_kubevirt_vm_is_stopped_and_legacy_running_false_too():
    app = vm_app_from_json(vminstance("ws", released(), runStrategy="Halted"), "VMInstance")
    assert vm_state(app, None).state == ResourceState.STOPPED
    legacy = vm_app_from_json(
        {"metadata": app_meta("old"), "spec": {"running": False, "gpus": [{"name": H100}]}},
        "VirtualMachine",
    )
    assert legacy.kubevirt_name == "virtual-machine-old"
    assert vm_state(legacy, None).state == ResourceState.STOPPED


def test_odd_specs_parse_to_empty_values_not_exceptions():
    app = vm_app_from_json(
        {
            "metadata": app_meta("odd"),
            "spec": {"gpus": [{"name": 7}, "x", {"name": H100}], "runStrategy": ["Always"]},
            "status": {"conditions": [{"type": "Ready"}, "garbage"]},
        },
        "VMInstance",
    )
    assert app.gpus == (H100,) and app.run_strategy == ""
    assert app.conditions["Ready"].status == "Unknown"
    k8s = kubernetes_app_from_json(
        {"metadata": app_meta("k"), "spec": {"nodeGroups": {"g": "not a map", "h": None}}}
    )
    assert [(g.name, g.gpus, g.min_replicas) for g in k8s.node_groups] == [
        ("g", (), 0),
        ("h", (), 0),
    ]
