"""An operation for people: its timeline, progress, and the cluster's reason in plain words."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory.reasons import explain_reason
from gpus.inventory.selectors import free_on_servers
from gpus.kube import apps as mf
from gpus.provisioning.capacity import capacity_sentence
from gpus.provisioning.choices import (
    OperationKind,
    OperationState,
    OperationStep,
)
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
    return explain_reason(reason) or message


@dataclass
class Step:
    key: str
    label: str
    at: Any
    current: bool = False


@dataclass
class OperationView:
    op: Operation
    steps: list[Step] = field(default_factory=list)
    explanation: str = ""
    percent: int = 0
    eta_seconds: int | None = None


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
    # A node group being deleted has no server to find nor workers to run.
    grows = op.node_group and op.kind != OperationKind.DELETE
    if creates or op.kind in (OperationKind.START, OperationKind.RESTART) or grows:
        points.append((OperationStep.SCHEDULED, op.scheduled_at))
        points.append((OperationStep.RUNNING, op.running_at))
    steps = [Step(str(k), str(k.label), at) for k, at in points]
    if op.is_active:
        for step in steps:
            if step.at is None:
                step.current = True
                break
    done = sum(1 for s in steps if s.at)
    view = OperationView(op, steps)
    # Only an operation in flight has an ETA: a finished one costs no query for it.
    median = (
        provisioning_median_seconds(op.gpu_model)
        if op.kind in (OperationKind.CREATE, OperationKind.RETRY) and not op.is_terminal
        else None
    )
    if op.is_terminal:
        view.percent = 100
    elif median:
        elapsed = (now - op.created_at).total_seconds()
        view.percent = min(95, max(int(100 * done / len(steps)) - 10, int(100 * elapsed / median)))
        view.eta_seconds = max(int(median - elapsed), 0)
    else:
        view.percent = int(100 * done / len(steps)) - 10 if done < len(steps) else 95
    if op.reason or op.message:
        view.explanation = plain_reason(op.reason, op.message, op.gpu_count)
    return view
