"""Every enumeration of the portal, declared once, with translated labels."""

from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


class MembershipRole(models.TextChoices):
    VIEWER = "viewer", _("Viewer")
    OPERATOR = "operator", _("Operator")


class GpuUse(models.TextChoices):
    """Typical uses, as the Hikube GPU overview words them."""

    GENERATIVE_AI = "generative_ai", _("Generative AI")
    INFERENCE = "inference", _("Inference")
    RENDERING = "rendering", _("Real-time rendering")
    ML_TRAINING = "ml_training", _("ML training")
    HPC = "hpc", _("High-performance computing")
    LLM = "llm", _("Large language models")
    TRANSFORMERS = "transformers", _("Transformers")
    EXASCALE = "exascale", _("Exascale computing")


class Approach(models.TextChoices):
    """The two ways Hikube rents a GPU."""

    VM = "vm", _("GPU virtual machine")
    KUBERNETES = "kubernetes", _("Kubernetes worker nodes with GPUs")


class Workload(models.TextChoices):
    """What the "which GPU and which way?" helper asks about."""

    INFERENCE = "inference", _("Inference or generative AI serving")
    TRAINING = "training", _("Machine-learning training or fine-tuning")
    LLM = "llm", _("Large language models (training or serving)")
    RENDERING = "rendering", _("Rendering, CAD or other graphics")
    LEGACY = "legacy", _("A legacy or specialized application")
    DEVELOPMENT = "development", _("An isolated CUDA development environment")


class NodeHealth(models.TextChoices):
    READY = "ready", _("Ready")
    CORDONED = "cordoned", _("Cordoned")
    NOT_READY = "not_ready", _("Not ready")


class WorkloadKind(models.TextChoices):
    VM = "vm", _("GPU virtual machine")
    NODE_GROUP = "node_group", _("Kubernetes node group")


class ResourceState(models.TextChoices):
    """The life of a GPU VM or node group as the portal shows it (mapped from the cluster)."""

    PENDING = "pending", _("Pending")
    PROVISIONING = "provisioning", _("Provisioning")
    STARTING = "starting", _("Starting")
    RUNNING = "running", _("Running")
    SCALING = "scaling", pgettext_lazy("workload state", "Scaling")
    UNSCHEDULABLE = "unschedulable", _("Waiting for a free GPU")
    STOPPING = "stopping", _("Stopping")
    STOPPED = "stopped", _("Stopped")
    DELETING = "deleting", _("Deleting")
    FAILED = "failed", _("Failed")
    UNKNOWN = "unknown", _("Unknown")


ACTIVE_RESOURCE_STATES = frozenset(
    {
        ResourceState.PENDING,
        ResourceState.PROVISIONING,
        ResourceState.STARTING,
        ResourceState.SCALING,
        ResourceState.UNSCHEDULABLE,
        ResourceState.STOPPING,
        ResourceState.DELETING,
    }
)
TERMINAL_RESOURCE_STATES = frozenset(
    {ResourceState.RUNNING, ResourceState.STOPPED, ResourceState.FAILED}
)
# How the cluster's status maps to these states: gpus.kube.states (pure, shared with the poller).


class SyncErrorKind(models.TextChoices):
    """Why a cluster's last sync failed (codes from gpus.kube.errors.failure_kind)."""

    UNREACHABLE = "unreachable", _("Unreachable")
    TIMEOUT = "timeout", _("No answer in time")
    SERVER_ERROR = "server_error", _("Cluster error")
    RATE_LIMITED = "rate_limited", _("Too many requests")
    UNAUTHORIZED = "unauthorized", _("Credentials refused")
    FORBIDDEN = "forbidden", _("Access refused")
    INVALID = "invalid", _("Request rejected")
    NOT_FOUND = "not_found", _("Not found")
    TLS = "tls", _("Secure connection failed")
    UNEXPECTED = "unexpected", _("Unexpected error")


# The sentence shown for each kind, in plain words; %(name)s is the cluster's name.
SYNC_ERROR_SENTENCES = {
    SyncErrorKind.UNREACHABLE: _("The portal could not reach cluster %(name)s."),
    SyncErrorKind.TIMEOUT: _("Cluster %(name)s did not answer in time."),
    SyncErrorKind.SERVER_ERROR: _("Cluster %(name)s answered with an internal error."),
    SyncErrorKind.RATE_LIMITED: _(
        "Cluster %(name)s is busy and asked the portal to slow down; it will try again later."
    ),
    SyncErrorKind.UNAUTHORIZED: _(
        "Cluster %(name)s did not accept the portal's credentials (expired or wrong)."
    ),
    SyncErrorKind.FORBIDDEN: _(
        "Cluster %(name)s refused the portal access to what it needs to read."
    ),
    SyncErrorKind.INVALID: _("Cluster %(name)s rejected the portal's request as invalid."),
    SyncErrorKind.NOT_FOUND: _(
        "Cluster %(name)s does not serve what the portal reads (an API is missing)."
    ),
    SyncErrorKind.TLS: _("The portal could not talk to cluster %(name)s securely."),
    SyncErrorKind.UNEXPECTED: _("The last sync of cluster %(name)s failed unexpectedly."),
}


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


class RunStrategy(models.TextChoices):
    ALWAYS = "Always", _("Always on (restart if it stops)")
    RERUN_ON_FAILURE = "RerunOnFailure", _("Restart only after a failure")
    ONCE = "Once", _("Run once")
    HALTED = "Halted", _("Created stopped")


class ExternalAccess(models.TextChoices):
    NONE = "none", _("No external access")
    PORTS = "PortList", _("Some ports")
    WHOLE_IP = "WholeIP", _("The whole IP address")
