"""The operation state machine, declared once: kinds, states with their active and terminal
groups, steps, and the VM form's choices."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

# --- operations: what a person asked the portal to do (DESIGN rule 8) -----------------


class OperationKind(models.TextChoices):
    """Every change the portal makes; node groups (and day-2 actions) reuse the same kinds."""

    CREATE = "create", _("Create")
    UPDATE = "update", _("Update")
    START = "start", _("Start")
    STOP = "stop", _("Stop")
    DELETE = "delete", _("Delete")
    RESIZE = "resize", _("Resize")
    RETRY = "retry", _("Retry")
    # A stop then a start, so a VM picks up a change waiting for a restart (RestartRequired).
    RESTART = "restart", _("Restart to apply changes")


class OperationState(models.TextChoices):
    PENDING = "pending", _("Submitted")
    APPLYING = "applying", _("Applying")
    PROVISIONING = "provisioning", _("In progress")
    QUEUED = "queued", _("Waiting for capacity")
    SUCCEEDED = "succeeded", _("Done")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


ACTIVE_OPERATION_STATES = frozenset(
    {
        OperationState.PENDING,
        OperationState.APPLYING,
        OperationState.PROVISIONING,
        OperationState.QUEUED,
    }
)
TERMINAL_OPERATION_STATES = frozenset(
    {OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED}
)
# Applied to the cluster: the poller watches these.
POLLED_OPERATION_STATES = frozenset({OperationState.PROVISIONING, OperationState.QUEUED})


class OperationStep(models.TextChoices):
    """The timeline of a provisioning, in order."""

    SUBMITTED = "submitted", _("Submitted")
    APPLIED = "applied", _("Applied to the cluster")
    DISK_READY = "disk_ready", _("Disk ready")
    SCHEDULED = "scheduled", _("GPU server found")
    RUNNING = "running", _("Running")
    # A node group's: its worker VMs booted, then their GPUs are allocatable in the tenant
    # cluster (the GPU operator loads the driver after the boot).
    WORKERS_BOOTED = "workers_booted", _("Workers booted")
    GPUS_READY = "gpus_ready", _("GPUs ready")


class RunStrategy(models.TextChoices):
    ALWAYS = "Always", _("Always on (restart if it stops)")
    RERUN_ON_FAILURE = "RerunOnFailure", _("Restart only after a failure")
    ONCE = "Once", _("Run once")
    HALTED = "Halted", _("Created stopped")


# The reason of a start or stop that was already true: nothing was written, nothing ran.
ALREADY_DONE = "AlreadyDone"


class ExternalAccess(models.TextChoices):
    NONE = "none", _("No external access")
    PORTS = "PortList", _("Some ports")
    WHOLE_IP = "WholeIP", _("The whole IP address")
