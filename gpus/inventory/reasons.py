"""Plain, translated words for the machine reasons KubeVirt, Kubernetes and Helm report.

The raw reason and message stay available (shown as details); the portal leads with these.
"""

from __future__ import annotations

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

REASONS: dict[str, Promise] = {
    "PodNotReady": _("The virtual machine is starting: its pod is not ready yet."),
    "VMINotExists": _("The virtual machine is not running."),
    "Unschedulable": _(
        "No node has a free GPU of this model right now; it starts as soon as one is free."
    ),
    "ErrorUnschedulable": _(
        "No node has a free GPU of this model right now; it starts as soon as one is free."
    ),
    "ErrImagePull": _("The disk image could not be downloaded."),
    "ImagePullBackOff": _("The disk image could not be downloaded; retrying."),
    "ErrorPvcNotFound": _("Its disk is missing."),
    "ErrorDataVolumeNotFound": _("Its disk is missing."),
    "DataVolumeError": _("Its disk could not be prepared."),
    "WaitingForVolumeBinding": _("Waiting for its disk."),
    "CrashLoopBackOff": _("The virtual machine keeps stopping; it is restarted each time."),
    "Progressing": _("The platform is setting it up."),
    "Provisioning": _("The platform is setting it up."),
    "Starting": _("Starting."),
    "Stopped": _("Stopped."),
    "Stopping": _("Stopping."),
    "Terminating": _("Being deleted."),
    "InstallFailed": _("The platform could not install it."),
    "UpgradeFailed": _("The platform could not apply the last change."),
    "InstallSucceeded": _("Installed."),
    "UpgradeSucceeded": _("Up to date."),
}


def explain_reason(reason: str) -> str:
    """The reason in plain words in the active language, or "" for a reason we do not know."""
    text = REASONS.get(reason.strip())
    return str(text) if text is not None else ""
