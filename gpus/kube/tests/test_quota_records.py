"""Reading a tenant's ResourceQuota and the apiserver's quota refusal (pure parsers)."""

from __future__ import annotations

from gpus.kube.operations import NamespaceView, node_group_progress
from gpus.kube.records import (
    Condition,
    GpuQuotaLimit,
    KubevirtVm,
    VmApp,
    gpu_quota_limits,
    quota_denial,
)
from gpus.kube.states import (
    QUOTA_EXCEEDED,
    WorkloadState,
    failed_create,
    launch_refusal,
    quota_refusal,
    vm_state,
)

REFUSAL = (
    'failed to create virtual machine pod: pods "virt-launcher-vm-instance-a-x2b4c" is '
    "forbidden: exceeded quota: tenant-quota, requested: requests.nvidia.com/GA100=2, "
    "used: requests.nvidia.com/GA100=3, limited: requests.nvidia.com/GA100=4"
)


def test_only_the_requests_form_of_a_gpu_is_a_limit() -> None:
    quota = {
        "metadata": {"name": "tenant-quota", "namespace": "tenant-a"},
        "spec": {
            "hard": {
                "requests.nvidia.com/GA100": "4",
                "limits.nvidia.com/GA100": "4",
                "nvidia.com/AD102GL_L40S": "2",
                "requests.cpu": "8",
            }
        },
        "status": {"used": {"requests.nvidia.com/GA100": "3"}},
    }
    assert gpu_quota_limits(quota) == [
        GpuQuotaLimit("tenant-a", "tenant-quota", "nvidia.com/GA100", 4, 3)
    ]
    quota.pop("status")  # before the quota controller wrote it
    assert gpu_quota_limits(quota)[0].used == 0


def test_the_refusal_is_read_with_its_numbers() -> None:
    denial = quota_denial(REFUSAL)
    assert denial is not None
    assert denial.quota == "tenant-quota"
    assert (denial.requested, denial.used, denial.limited) == (
        {"nvidia.com/GA100": 2},
        {"nvidia.com/GA100": 3},
        {"nvidia.com/GA100": 4},
    )
    assert quota_denial("0/9 nodes are available: 7 Insufficient nvidia.com/GA100.") is None


def test_kubevirt_reports_the_refusal_on_the_synchronized_condition() -> None:
    def conds(reason: str, message: str) -> dict[str, Condition]:
        return {"Synchronized": Condition("Synchronized", "False", reason, message)}

    refused = quota_refusal(conds("FailedCreate", REFUSAL))
    assert refused is not None
    assert (refused.reason, refused.message) == (QUOTA_EXCEEDED, REFUSAL)
    assert quota_refusal(conds("FailedCreate", "pods is forbidden: violates PodSecurity")) is None
    assert quota_refusal(conds("Other", REFUSAL)) is None
    assert quota_refusal({}) is None


def test_one_reading_of_failed_create_serves_the_quota_and_the_gpu_refusals() -> None:
    def sync(status: str, reason: str, message: str) -> dict[str, Condition]:
        return {"Synchronized": Condition("Synchronized", status, reason, message)}

    assert failed_create(sync("False", "FailedCreate", REFUSAL)) == REFUSAL
    assert failed_create(sync("True", "FailedCreate", REFUSAL)) is None
    assert failed_create(sync("False", "Other", REFUSAL)) is None
    assert failed_create({}) is None
    gpu = "GPU nvidia.com/X is not permitted in permittedHostDevices configuration"
    refused = launch_refusal(sync("False", "FailedCreate", gpu))
    assert refused is not None and refused.state == WorkloadState.FAILED
    assert launch_refusal(sync("True", "FailedCreate", gpu)) is None
    assert quota_refusal(sync("False", "FailedCreate", gpu)) is None


def test_a_node_group_whose_worker_the_quota_refuses_fails() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "InstallSucceeded", "message": "ok"}
    worker = {
        "metadata": {"name": "kubernetes-ml-gpu-abc123-x1", "creationTimestamp": "2026-12-06"},
        "spec": {
            "template": {
                "metadata": {"labels": {"cluster.x-k8s.io/deployment-name": "kubernetes-ml-gpu"}}
            }
        },
        "status": {
            "printableStatus": "Starting",
            "conditions": [
                {
                    "type": "Synchronized",
                    "status": "False",
                    "reason": "FailedCreate",
                    "message": REFUSAL,
                }
            ],
        },
    }
    view = NamespaceView(
        apps={("kuberneteses", "ml"): {"status": {"conditions": [ready]}}},
        kubevirt={"kubernetes-ml-gpu-abc123-x1": worker},
        monitors={"kubernetes-ml-gpu": {"status": {"availableReplicas": 0}}},
    )
    progress = node_group_progress("ml", "gpu", view, 1, {})
    assert progress.failed and progress.reason == QUOTA_EXCEEDED
    assert progress.message == REFUSAL


def test_the_snapshot_says_why_the_vm_does_not_start() -> None:
    app = VmApp(
        namespace="tenant-a", name="a", kind="VMInstance", gpus=("nvidia.com/GA100",),
        run_strategy="Always", running=None, instance_type="u1.2xlarge", deleting=False,
        conditions={},
    )  # fmt: skip
    vm = KubevirtVm(
        namespace="tenant-a",
        name="vm-instance-a",
        printable_status="Starting",
        ready=False,
        conditions={
            "Ready": Condition("Ready", "False", "PodNotExists", "virt-launcher pod has not yet"),
            "Synchronized": Condition("Synchronized", "False", "FailedCreate", REFUSAL),
        },
    )
    reading = vm_state(app, vm)
    assert (reading.state, reading.reason, reading.message) == (
        WorkloadState.STARTING,
        QUOTA_EXCEEDED,
        REFUSAL,
    )
