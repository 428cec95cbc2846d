"""Plain, translated words for the machine reasons KubeVirt, Kubernetes, Helm and the API
report: the one table, for workloads (My GPUs) and operations (provisioning's presenters).

Each sentence stands on its own, since it is shown both on a workload's row and after "It did
not work." on an operation. The raw reason and message stay available (shown as details); the
portal leads with these.
"""

from __future__ import annotations

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

REASONS: dict[str, Promise] = {
    "PodNotReady": _("The virtual machine is starting: its pod is not ready yet."),
    "VMINotExists": _("The virtual machine is not running."),
    # Not only GPUs: CPU or memory may be short too (a GPU shortage is told with numbers).
    "Unschedulable": _("No server can take this VM right now."),
    "ErrorUnschedulable": _("No server can take this VM right now."),
    "ErrImagePull": _("The disk image could not be downloaded."),
    "ImagePullBackOff": _("The disk image could not be downloaded; retrying."),
    "ErrorPvcNotFound": _("Its disk is missing."),
    "ErrorDataVolumeNotFound": _("Its disk is missing."),
    "DataVolumeError": _("The disk image could not be imported."),
    # KubeVirt's permittedHostDevices does not list the GPU: its pod is never created.
    "GpuNotPermitted": _(
        "This GPU model is not enabled for virtual machines on this platform; it cannot start "
        "until the platform team permits it. Choose another model or contact support."
    ),
    "WaitingForVolumeBinding": _("Waiting for its disk."),
    "CloneWithoutSource": _("The image of its disk does not exist in the cluster."),
    "CrashLoopBackOff": _("The virtual machine keeps stopping; it is restarted each time."),
    "Progressing": _("The platform is setting it up."),
    "Provisioning": _("The platform is setting it up."),
    "Starting": _("Starting."),
    "Stopped": _("Stopped."),
    "Stopping": _("Stopping."),
    "Terminating": _("Being deleted."),
    # Not "Helm refused the settings": a timing failure (a disk not there yet) is one too.
    "InstallFailed": _("The platform could not install it."),
    "UpgradeFailed": _("The platform could not apply the last change."),
    "InstallSucceeded": _("Installed."),
    "UpgradeSucceeded": _("Up to date."),
    # KubeVirt could not create the launcher pod (a quota's refusal is told with numbers).
    "FailedCreate": _("The cluster could not create the virtual machine's pod."),
    "QuotaExceeded": _("The tenant's quota on the cluster does not allow it."),
    # The API's refusals, recorded on operations.
    "Forbidden": _("The cluster refused this action for your account."),
    "Invalid": _("The cluster refused the settings."),
    "SchemaViolation": _("The cluster refused the settings."),
}


def explain_reason(reason: str) -> str:
    """The reason in plain words in the active language, or "" for a reason we do not know."""
    text = REASONS.get(reason.strip())
    return str(text) if text is not None else ""


def quota_sentence(message: str) -> str:
    """A refusal by the tenant's own ResourceQuota on the cluster, in plain words with its
    numbers ("" when the message is not one)."""
    from gpus.catalog.models import GpuModel
    from gpus.kube.records import quota_denial

    denial = quota_denial(message)
    if denial is None or not denial.limited:
        return ""
    resource = next(iter(sorted(denial.limited)))
    model = GpuModel.objects.filter(resource_name=resource).first()
    return _(
        "The tenant's quota on the cluster (%(quota)s) allows %(limit)d × %(model)s; %(used)d "
        "are in use, so %(requested)d more cannot start. Free one, or ask for a higher quota."
    ) % {
        "quota": denial.quota,
        "limit": denial.limited[resource],
        "model": model.display_name if model else resource.split("/", 1)[-1],
        "used": denial.used.get(resource, 0),
        "requested": denial.requested.get(resource, 0),
    }


def explain(reason: str, message: str) -> str:
    """The reason in plain words, a quota's refusal with its numbers; "" if unknown."""
    return quota_sentence(message) or explain_reason(reason)
