"""An operation for people: its timeline, progress, and the cluster's reason in plain words."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState
from gpus.inventory.models import GpuWorkload
from gpus.inventory.reasons import explain
from gpus.inventory.selectors import free_on_servers
from gpus.kube import apps as mf
from gpus.kube.operations import (
    GPUS_UNSEEN_FORBIDDEN,
    GPUS_UNSEEN_MISSING,
    GPUS_UNSEEN_OPERATOR_OFF,
    GPUS_UNSEEN_UNREACHABLE,
    missing_from_cluster,
)
from gpus.provisioning.capacity import capacity_sentence
from gpus.provisioning.choices import (
    OperationKind,
    OperationState,
    OperationStep,
)
from gpus.provisioning.engine import _want_running
from gpus.provisioning.models import Operation

# --- reading an operation for people ---------------------------------------------------

_INSUFFICIENT_ANY = re.compile(r"Insufficient (nvidia\.com/[\w-]+)")


def plain_reason(reason: str, message: str, wanted: int = 0) -> str:
    """The cluster's reason in plain words: a GPU shortage with the snapshot's numbers, else
    the words of inventory's table, else the cluster's own message."""
    match = _INSUFFICIENT_ANY.search(message or "")
    if match:
        model = GpuModel.objects.filter(resource_name=match.group(1)).first()
        label = model.display_name if model else match.group(1).split("/", 1)[-1]
        total, most = free_on_servers(model) if model else (0, 0)
        return capacity_sentence(label, wanted or 1, total, most)
    missing = missing_from_cluster(message)
    if missing:
        what, name = missing
        return str(MISSING_SENTENCES[what]) % {"name": name}
    return explain(reason, message) or message


# A Helm render failure or a CDI wait naming something the cluster does not have (any more).
MISSING_SENTENCES = {
    "instance_type": _(
        "The cluster has no instance type “%(name)s” (any more): send the request again "
        "with one it offers (a retry would send the same one)."
    ),
    "profile": _(
        "The cluster has no operating system profile “%(name)s” (any more): send the request "
        "again with one it offers (a retry would send the same one)."
    ),
    "image": _(
        "The cluster has no image “%(name)s” (any more), so the disk can never be made: pick "
        "an image it offers and create the VM again."
    ),
}


@dataclass
class Step:
    key: str
    label: str
    at: Any
    current: bool = False
    note: str = ""


@dataclass
class OperationView:
    op: Operation
    steps: list[Step] = field(default_factory=list)
    explanation: str = ""
    percent: int = 0
    eta_seconds: int | None = None
    after: str = ""  # the state a succeeded operation left its target in


def provisioning_median_seconds(model: GpuModel | None, limit: int = 50) -> float | None:
    if model is None:
        return None
    rows = (
        Operation.objects.filter(
            gpu_model=model,
            kind__in=[OperationKind.CREATE, OperationKind.RETRY],
            state=OperationState.SUCCEEDED,
            running_at__isnull=False,
        )
        .order_by("-finished_at")
        .values_list("created_at", "running_at")[:limit]
    )
    durations = [(r - c).total_seconds() for c, r in rows]
    return statistics.median(durations) if durations else None


def describe(op: Operation, now: Any = None) -> OperationView:
    now = now or timezone.now()
    points = [
        (OperationStep.SUBMITTED, op.created_at),
        (OperationStep.APPLIED, op.applied_at),
    ]
    creates = op.kind in (OperationKind.CREATE, OperationKind.RETRY)
    has_disk = any(d["kind"] == mf.VM_DISK for d in op.manifests)
    if creates and (has_disk or op.app_kind == mf.VIRTUAL_MACHINE):
        points.append((OperationStep.DISK_READY, op.disk_ready_at))
    # A VM created stopped (Halted) is never scheduled nor running: its timeline ends earlier.
    halted_create = creates and not op.node_group and _halted(op)
    group_steps: list[Step] = []
    if op.node_group and op.kind != OperationKind.DELETE:
        group_steps = node_group_steps(op)
    elif (
        (creates and not halted_create) or op.kind in (OperationKind.START, OperationKind.RESTART)
        # A node group being deleted has no server to find nor workers to run.
    ):
        points.append((OperationStep.SCHEDULED, op.scheduled_at))
        points.append((OperationStep.RUNNING, op.running_at))
    # An action that was already true ran nothing: no steps to show (#20 tryout item 4).
    steps = (
        []
        if op.was_already_true
        else [Step(str(k), str(k.label), at) for k, at in points] + group_steps
    )
    if op.is_active:
        for step in steps:
            if step.at is None:
                step.current = True
                break
    done = sum(1 for s in steps if s.at)
    view = OperationView(op, steps, after=state_after(op) or "")
    # Only an operation in flight has an ETA: a finished one costs no query for it.
    median = (
        provisioning_median_seconds(op.gpu_model)
        if op.kind in (OperationKind.CREATE, OperationKind.RETRY) and not op.is_terminal
        else None
    )
    if op.state == OperationState.SUCCEEDED:
        view.percent = 100
    elif op.is_terminal:
        # Failed or cancelled: how far it got, never a full bar.
        view.percent = min(int(100 * done / len(steps)), 95)
    elif median:
        elapsed = (now - op.created_at).total_seconds()
        view.percent = min(95, max(int(100 * done / len(steps)) - 10, int(100 * elapsed / median)))
        view.eta_seconds = max(int(median - elapsed), 0)
    else:
        view.percent = int(100 * done / len(steps)) - 10 if done < len(steps) else 95
    if op.reason or op.message:
        view.explanation = plain_reason(op.reason, op.message, op.gpu_count)
    return view


def gpus_unseen_sentence(observed: dict[str, Any]) -> str:
    """Why the portal cannot see a node group's GPUs in its tenant cluster, in plain words."""
    why = observed.get("gpus_unseen") or ""
    if why == GPUS_UNSEEN_OPERATOR_OFF:
        return _(
            "The cluster's GPU operator is off, so no GPU is advertised to its pods: "
            "turn it on to use them."
        )
    if why == GPUS_UNSEEN_MISSING:
        return _(
            "The cluster's admin kubeconfig is not there yet, so the portal cannot see "
            "whether the GPUs are ready: booted workers are the last step it can check."
        )
    if why in (GPUS_UNSEEN_FORBIDDEN, GPUS_UNSEEN_UNREACHABLE):
        return _(
            "The portal could not read the cluster's admin kubeconfig or its nodes "
            "(%(detail)s), so it cannot see whether the GPUs are ready: booted workers are "
            "the last step it can check."
        ) % {"detail": observed.get("gpus_unseen_detail") or why}
    return ""


def node_group_steps(op: Operation) -> list[Step]:
    """A node group's two steps after the apply: its workers booted (the WorkloadMonitor's
    count), then their GPUs ready in the tenant cluster, where the portal can read it."""
    seen = op.observed or {}
    booted, workers = int(seen.get("booted") or 0), int(seen.get("workers") or 0)
    workers = workers or int(op.params.get("min_replicas") or 0)
    if op.scheduled_at:
        booted = max(booted, workers)
    steps = [
        Step(
            str(OperationStep.WORKERS_BOOTED),
            _("Workers booted (%(n)d of %(of)d)") % {"n": booted, "of": workers},
            op.scheduled_at,
        )
    ]
    unseen = gpus_unseen_sentence(seen)
    if op.gpu_count and not unseen:
        wanted = int(seen.get("gpus_wanted") or op.gpu_count)
        ready = int(seen.get("gpus_ready") or 0)
        if op.state == OperationState.SUCCEEDED:
            ready = max(ready, wanted)
        steps.append(
            Step(
                str(OperationStep.GPUS_READY),
                _("GPUs ready (%(n)d of %(of)d)") % {"n": ready, "of": wanted},
                op.running_at,
            )
        )
    else:
        steps.append(
            Step(
                str(OperationStep.RUNNING),
                str(OperationStep.RUNNING.label),
                op.running_at,
                note=unseen,
            )
        )
    return steps


# --- My GPUs: a row agrees with its latest operation until a sync confirms it -------------

# What a succeeded operation leaves its target as, by what it did (a retry by what it retried).
_STATE_AFTER = {
    OperationKind.CREATE: ResourceState.RUNNING,
    OperationKind.UPDATE: ResourceState.RUNNING,
    OperationKind.START: ResourceState.RUNNING,
    OperationKind.RESTART: ResourceState.RUNNING,
    OperationKind.RESIZE: ResourceState.RUNNING,
    OperationKind.STOP: ResourceState.STOPPED,
    OperationKind.DELETE: ResourceState.DELETING,
}


def state_after(op: Operation) -> str | None:
    """The state a succeeded operation left its target in, or None when it says nothing."""
    if op.state != OperationState.SUCCEEDED:
        return None
    kind = op.params.get("retry_kind") or op.params.get("action") or op.kind
    if kind in (OperationKind.CREATE, OperationKind.RETRY) and not op.node_group and _halted(op):
        return ResourceState.STOPPED
    found = _STATE_AFTER.get(kind)
    return str(found) if found else None


def _halted(op: Operation) -> bool:
    """A VM create asked to stay stopped: what the engine waits for (Stopped, not Running)."""
    return not _want_running(op)


def overlay_operations(rows: list[GpuWorkload], ops: list[Operation]) -> list[Operation]:
    """Give each row its latest operation the snapshot does not show yet (``w.op``) and the state
    to show (``w.shown_state``): what the operation did, until a sync confirms it, so My GPUs
    never contradicts the operation page. Returns the operations no row on this page took."""
    latest: dict[tuple[int, str, str], Operation] = {}
    whole: dict[tuple[int, str], Operation] = {}  # a whole Kubernetes cluster's (its delete)
    for op in ops:  # newest first
        latest.setdefault((op.cluster_id, op.name, op.node_group), op)
        if op.app_kind == mf.KUBERNETES and not op.node_group:
            whole.setdefault((op.cluster_id, op.name), op)
    shown = {(w.cluster_id, w.name, w.node_group) for w in rows}
    shown |= {(w.cluster_id, w.name, "") for w in rows if w.node_group}
    for w in rows:
        found = [latest.get((w.cluster_id, w.name, w.node_group))]
        if w.node_group:  # a change to its whole cluster is a change to the group too
            found.append(whole.get((w.cluster_id, w.name)))
        candidates = [o for o in found if o is not None]
        op = max(candidates, key=lambda o: (o.created_at, o.pk)) if candidates else None
        w.op, w.shown_state = op, w.state
        if op is None:
            continue
        after = state_after(op)
        if after is not None:
            w.shown_state = after
            w.shown_state_label = ResourceState(after).label
        elif op.is_active:
            w.shown_state = ""  # in flight: the row says the operation, and offers no action
    return [op for op in ops if (op.cluster_id, op.name, op.node_group) not in shown]
