"""From what the cluster reports to the portal's workload state: pure functions over records.

Used by the inventory sync and meant for the provisioning poller too. The values of
``WorkloadState`` are those of ``gpus.choices.ResourceState`` (a test keeps them equal); this
module stays free of Django like the rest of ``gpus/kube``.

Sources: cozystack-api copies only the HelmRelease's Ready/Released conditions onto an app
(v1.3+ adds WorkloadsReady); helm-controller's reasons are ``InstallFailed``/``UpgradeFailed``/...
with ``Ready=False`` and retries forever; a deleted app keeps ``metadata.deletionTimestamp`` until
Helm has uninstalled it; KubeVirt's ``printableStatus`` values are in kubevirt/api
``core/v1/types.go``; worker readiness comes from the node group's WorkloadMonitor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from gpus.kube.records import (
    Condition,
    KubernetesApp,
    KubevirtVm,
    NodeGroup,
    VmApp,
    WorkloadMonitor,
)


class WorkloadState(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    STARTING = "starting"
    RUNNING = "running"
    SCALING = "scaling"
    UNSCHEDULABLE = "unschedulable"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DELETING = "deleting"
    FAILED = "failed"
    UNKNOWN = "unknown"


# KubeVirt VirtualMachine.status.printableStatus -> portal state; anything else is "unknown".
PRINTABLE_STATUS_STATES: dict[str, WorkloadState] = {
    "Stopped": WorkloadState.STOPPED,
    "Provisioning": WorkloadState.PROVISIONING,
    "Starting": WorkloadState.STARTING,
    "Running": WorkloadState.RUNNING,
    "Paused": WorkloadState.STOPPED,
    "Stopping": WorkloadState.STOPPING,
    "Terminating": WorkloadState.DELETING,
    "Migrating": WorkloadState.RUNNING,
    "WaitingForVolumeBinding": WorkloadState.PROVISIONING,
    "WaitingForReceiver": WorkloadState.PROVISIONING,
    "ErrorUnschedulable": WorkloadState.UNSCHEDULABLE,
    "CrashLoopBackOff": WorkloadState.FAILED,
    "ErrImagePull": WorkloadState.FAILED,
    "ImagePullBackOff": WorkloadState.FAILED,
    "ErrorPvcNotFound": WorkloadState.FAILED,
    "ErrorDataVolumeNotFound": WorkloadState.FAILED,
    "DataVolumeError": WorkloadState.FAILED,
}
# KubeVirt conditions that say nothing about why a VM is not up (e.g. "not live-migratable").
QUIET_VM_CONDITIONS = frozenset({"LiveMigratable", "StorageLiveMigratable", "Paused"})

# virt-controller cannot render a VM's launcher pod for a reason no retry clears: a GPU the
# KubeVirt CR does not permit (kubevirt v1.6.2 pkg/virt-controller/services/renderresources.go
# validatePermittedHostDevices). The VMI stays Pending (the VM prints Starting) with
# Synchronized=False, reason FailedCreate, copied onto the VM (watch/vm/vm.go syncConditions).
GPU_NOT_PERMITTED = "GpuNotPermitted"
FINAL_LAUNCH_MESSAGES = {
    "is not permitted in permittedHostDevices configuration": GPU_NOT_PERMITTED,
}


def failed_create(conditions: Mapping[str, Condition]) -> str | None:
    """The cluster's message when virt-controller could not create the VM's launcher pod
    (``Synchronized=False``, reason ``FailedCreate``), else None."""
    sync = conditions.get("Synchronized")
    if sync is None or sync.status != "False" or sync.reason != "FailedCreate":
        return None
    return sync.message


def launch_refusal(conditions: Mapping[str, Condition]) -> StateReading | None:
    """A failed reading when KubeVirt will never create the VM's launcher pod, else None.
    Its reason names the cause (``GpuNotPermitted``); its message is the cluster's."""
    message = failed_create(conditions)
    if message is None:
        return None
    for text, reason in FINAL_LAUNCH_MESSAGES.items():
        if text in message:
            return StateReading(WorkloadState.FAILED, reason, message)
    return None


# The tenant's own ResourceQuota refused the launcher pod (kube-apiserver's quota admission:
# "exceeded quota: <name>, requested: ..., used: ..., limited: ...", wrapped by virt-controller
# in the same Synchronized/FailedCreate condition). KubeVirt retries, and the pod is created once
# a GPU of the tenant frees or the quota grows: the VM stays Starting, holding nothing.
QUOTA_EXCEEDED = "QuotaExceeded"


def quota_refusal(conditions: Mapping[str, Condition]) -> StateReading | None:
    """A reading naming the quota's refusal (the cluster's message), else None."""
    message = failed_create(conditions)
    if message is None or "exceeded quota: " not in message:
        return None
    return StateReading(WorkloadState.STARTING, QUOTA_EXCEEDED, message)


@dataclass(frozen=True)
class StateReading:
    state: WorkloadState
    reason: str = ""
    message: str = ""
    available: int = 0  # node groups: workers ready


def helm_state(conditions: Mapping[str, Condition], deleting: bool) -> StateReading | None:
    """What the app's own status decides before anything else is looked at, or None.

    ``deletionTimestamp`` -> deleting (v1.1 keeps the app ``Terminating`` until Helm uninstalls);
    ``Ready=False`` with a ``*Failed`` reason (``InstallFailed``, ``UpgradeFailed``, ...) -> failed,
    with helm-controller's message, e.g. "Helm upgrade failed for release ...: values don't meet
    the specifications of the schema(s) ...". On ``UpgradeFailed`` the previous release keeps
    running (its GPUs stay held), but what the user asked for did not happen: failed.
    """
    ready = conditions.get("Ready")
    if deleting:
        return StateReading(WorkloadState.DELETING, "Terminating", ready.message if ready else "")
    if ready is not None and ready.status == "False" and ready.reason.endswith("Failed"):
        return StateReading(WorkloadState.FAILED, ready.reason, ready.message)
    return None


def vm_state(app: VmApp, vm: KubevirtVm | None) -> StateReading:
    """State of a GPU VM from its app and its KubeVirt VirtualMachine (None: not created yet)."""
    decided = helm_state(app.conditions, app.deleting)
    if decided is not None:
        return decided
    ready = app.conditions.get("Ready")
    app_reason, app_message = (ready.reason, ready.message) if ready else ("", "")
    if vm is None:
        state = WorkloadState.STOPPED if app.halted else WorkloadState.PROVISIONING
        return StateReading(state, app_reason, app_message)
    if vm.deleting:
        return StateReading(WorkloadState.DELETING, "Terminating", "")
    refused = launch_refusal(vm.conditions)
    if refused is not None:
        return refused
    state = PRINTABLE_STATUS_STATES.get(vm.printable_status, WorkloadState.UNKNOWN)
    restart = vm.conditions.get("RestartRequired")
    if restart is not None and restart.is_true:
        # A change (gpus, instanceType) waits for a restart; the VM runs as it was.
        return StateReading(state, "RestartRequired", restart.message)
    quota = quota_refusal(vm.conditions)
    if quota is not None:
        # That, not the pod-less Ready condition, is why it does not start.
        return StateReading(state, quota.reason, quota.message)
    if state not in (WorkloadState.RUNNING, WorkloadState.STOPPED):
        # The KubeVirt condition that explains a waiting VM (Unschedulable, DataVolumeError...).
        for condition in vm.conditions.values():
            if condition.type in QUIET_VM_CONDITIONS or condition.is_true:
                continue
            if condition.message:
                return StateReading(
                    state, condition.reason or vm.printable_status, condition.message
                )
    return StateReading(state, vm.printable_status or app_reason, app_message)


def node_group_state(
    app: KubernetesApp, group: NodeGroup, monitor: WorkloadMonitor | None
) -> StateReading:
    """State of one node group: Helm first, then the group's WorkloadMonitor.

    v1.1's Ready reflects the Helm release, not the workers; workers are ready when the
    monitor's ``availableReplicas`` reaches the group's ``minReplicas``.
    """
    decided = helm_state(app.conditions, app.deleting)
    if decided is not None:
        return decided
    if monitor is None:
        ready = app.conditions.get("Ready")
        return StateReading(
            WorkloadState.PROVISIONING,
            ready.reason if ready else "",
            ready.message if ready else "",
        )
    available = max(monitor.available_replicas or 0, 0)
    wanted = group.min_replicas
    # Not `status.operational`: v1.1's controller computes it on a copy it never writes
    # (internal/controller/workloadmonitor_controller.go), so a real monitor does not carry it.
    if available >= wanted:
        return StateReading(WorkloadState.RUNNING, available=available)
    return StateReading(
        WorkloadState.SCALING if available else WorkloadState.PROVISIONING,
        "WorkersNotReady",
        f"{available} of {max(wanted, 1)} workers ready",
        available,
    )
