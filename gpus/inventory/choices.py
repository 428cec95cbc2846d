"""The snapshot's states: node health, workload kinds and states, sync failures, declared once."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


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
