"""The task side of operations: claim, apply idempotently, follow progress in batched polls
until done or failed, and re-send what was lost (DESIGN rules 2 and 9)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from gpus.inventory.clusters import gateway_for
from gpus.kube import apps as mf
from gpus.kube.errors import (
    Cause,
    ConflictError,
    ForbiddenError,
    InvalidError,
    KubeError,
    NotFoundError,
    TransientError,
)
from gpus.kube.gateway import ClusterGateway
from gpus.kube.operations import (
    Identity,
    NamespaceView,
    Progress,
    Target,
    app_ready,
    apply_manifest,
    delete_target,
    has_portal_label,
    helm_progress,
    node_group_progress,
    observe,
    released_marker,
    scheduling_event,
    vm_progress,
)
from gpus.provisioning.audit import audit
from gpus.provisioning.choices import (
    ACTIVE_OPERATION_STATES,
    ALREADY_DONE,
    POLLED_OPERATION_STATES,
    OperationKind,
    OperationState,
)
from gpus.provisioning.models import Operation
from gpus.provisioning.signals import operation_ended
from gpus.web import queue
from gpus.web.bulk import update_rows

log = logging.getLogger(__name__)

# Operations a poll advances per transaction.
ADVANCE_BATCH = 200


# --- applying (the task's side) --------------------------------------------------------


def lease() -> timedelta:
    return timedelta(seconds=settings.OPERATION_LEASE_SECONDS)


def claim(op_id: int) -> Operation | None:
    """Take the operation for this task: a conditional update, so two deliveries of the same
    message (or a reconciler re-enqueue) never apply at once. None if someone else has it."""
    now = timezone.now()
    claimable = Q(state=OperationState.PENDING) | Q(
        state=OperationState.APPLYING, lease_until__lt=now
    )
    taken = Operation.objects.filter(claimable, pk=op_id).update(
        state=OperationState.APPLYING,
        attempts=F("attempts") + 1,
        lease_until=now + lease(),
        updated_at=now,
    )
    return Operation.objects.select_related("cluster", "tenant").get(pk=op_id) if taken else None


def _transition(op: Operation, from_states: set[str], **changes: Any) -> bool:
    """Update only if the operation is still in one of ``from_states`` (no lost updates)."""
    changes.setdefault("updated_at", timezone.now())
    done = Operation.objects.filter(pk=op.pk, state__in=from_states).update(**changes)
    if done:
        for key, value in changes.items():
            setattr(op, key, value)
    return bool(done)


def _causes_json(causes: list[Cause] | tuple[Cause, ...]) -> list[dict[str, str]]:
    return [{"field": c.field, "message": c.message, "reason": c.reason} for c in causes]


def fail(op: Operation, reason: str, message: str, causes: Any = (), error: str = "") -> None:
    now = timezone.now()
    cleanup = _made_by_this_create(op)
    extra: dict[str, Any] = {}
    if cleanup:
        # A failed create must not leave a VM that starts later, when GPUs free up, while the
        # portal says Failed: remove what this create made (issue 20 item 10).
        message = f"{message} {_cleanup_sentence()}".strip()
        extra["params"] = {**op.params, "cleanup": "pending"}
    if _transition(
        op,
        set(ACTIVE_OPERATION_STATES),
        state=OperationState.FAILED,
        reason=reason[:200],
        message=message,
        causes=_causes_json(causes),
        error=error or message,
        finished_at=now,
        lease_until=None,
        **extra,
    ):
        audit(
            op,
            op.tenant,
            "portal",
            "operation.failed",
            {"reason": reason, "message": message[:500]},
        )
        if cleanup:
            queue.enqueue_on_commit("provisioning.clean_up_operation", op.pk)
        _announce_end(op)


def _announce_end(op: Operation) -> None:
    """Tell the apps above (capacity's notifications) once the end is committed."""
    transaction.on_commit(lambda: operation_ended.send_robust(Operation, operation_id=op.pk))


def _cleanup_sentence() -> str:
    return _(
        "The portal removes the VM and the disk this request made from the cluster, so "
        "nothing starts later and holds GPUs: try again or create it anew when you are ready."
    )


def _made_by_this_create(op: Operation) -> list[dict[str, str]]:
    """The objects a VM create made (absent before its first write), for its clean-up."""
    kind = op.params.get("retry_kind") or op.kind
    if kind not in (OperationKind.CREATE, OperationKind.RETRY) or op.node_group:
        return []
    return list(op.baseline.get("absent") or [])


def clean_up(op_id: int) -> str:
    """Delete what a failed create made: the VM first, then its disk (404 is done).
    Skipped when a later operation took the target over (a retry, a new create). Raises
    TransientError for the task to retry."""
    op = Operation.objects.select_related("cluster", "tenant").get(pk=op_id)
    if op.state != OperationState.FAILED or op.params.get("cleanup") != "pending":
        return "nothing to do"
    later = Operation.objects.filter(
        cluster=op.cluster, namespace=op.namespace, name=op.name, node_group="", pk__gt=op.pk
    )
    outcome = "superseded"
    if not later.exists():
        gateway = gateway_for(op.cluster)
        who = identity_for(op)
        try:
            made = _made_by_this_create(op)
            # The VM before its disks, as a delete operation does.
            for item in sorted(made, key=lambda d: d["kind"] == mf.VM_DISK):
                delete_target(gateway, item["kind"], op.namespace, item["name"], who)
        finally:
            gateway.close()
        outcome = "done"
    Operation.objects.filter(pk=op.pk).update(params={**op.params, "cleanup": outcome})
    audit(op, op.tenant, "portal", "operation.cleaned_up", {"outcome": outcome})
    return outcome


def succeed(op: Operation, reason: str = "", message: str = "") -> None:
    now = timezone.now()
    if _transition(
        op,
        set(ACTIVE_OPERATION_STATES),
        state=OperationState.SUCCEEDED,
        finished_at=now,
        running_at=op.running_at or (now if _want_running(op) and not _is_delete(op) else None),
        reason=reason,
        message=message,
        lease_until=None,
    ):
        audit(op, op.tenant, "portal", "operation.succeeded")
        _announce_end(op)


def identity_for(op: Operation) -> Identity:
    """The person, as recorded at submit time (their prefixed name and tenant groups)."""
    if op.cluster_user:
        return Identity(op.cluster_user, tuple(op.cluster_groups))
    return Identity.tenant_admin(op.actor_name, op.namespace)  # rows from before the change


def _record_baseline(op: Operation, gateway: ClusterGateway) -> None:
    """Before the first write, keep what Helm last said about the target (no generation in
    v1.1: an update is done when this moves). Saved once: an attempt after a crash must not
    take its own earlier write for the starting point."""
    if "before" in op.baseline:
        return
    current = gateway.get(mf.PLURALS[op.app_kind], op.namespace, op.name)
    op.baseline = {"before": released_marker(current) if current else {}}
    if current is not None:
        # Whether the poller's cluster-wide list by the portal's label will find it.
        op.baseline["labelled"] = has_portal_label(current)
    if _is_create(op):
        # What this create is about to make, so that a failure can remove exactly that; and
        # what is there already and not made by it (nor by the create it retries): a create
        # never changes an existing object (issue 20 item 4).
        ours = _made_by_retried(op)
        absent, present = [], []
        adding_group = _adds_group(op)
        for doc in op.manifests:
            name = doc["metadata"]["name"]
            if doc["kind"] == op.app_kind and name == op.name:
                if adding_group:
                    continue  # the cluster is there by design; its group is what must not be
                there = current is not None
            else:
                there = gateway.get(mf.PLURALS[doc["kind"]], op.namespace, name) is not None
            item = {"kind": doc["kind"], "name": name}
            if not there:
                absent.append(item)
            elif (item["kind"], name) not in ours:
                present.append(item)
        if adding_group:
            item = {"kind": NODE_GROUP, "name": f"{op.name}/{op.node_group}"}
            if not mf.has_node_group(current, op.node_group):
                absent.append(item)
            elif (NODE_GROUP, item["name"]) not in ours:
                present.append(item)
        op.baseline["absent"] = absent
        op.baseline["present"] = present
    Operation.objects.filter(pk=op.pk, state=OperationState.APPLYING).update(baseline=op.baseline)


NODE_GROUP = "NodeGroup"  # a worker group inside a Kubernetes app, in a baseline's lists


def _is_delete(op: Operation) -> bool:
    """A delete, or a retry of one (it deletes again, never applies the old manifests)."""
    return (op.params.get("retry_kind") or op.kind) == OperationKind.DELETE


def _is_create(op: Operation) -> bool:
    return (op.params.get("retry_kind") or op.kind) in (OperationKind.CREATE, OperationKind.RETRY)


def _adds_group(op: Operation) -> bool:
    """A group added to an existing tenant cluster (a merge patch of that cluster)."""
    return bool(op.node_group) and not op.params.get("new_cluster_version")


def _made_by_retried(op: Operation) -> set[tuple[str, str]]:
    """(kind, name) of what the creates this one retries made: the retry may find them."""
    made: set[tuple[str, str]] = set()
    retried = op.params.get("retry_of")
    for _step in range(20):  # a chain of retries, never a loop
        if not retried:
            break
        row = Operation.objects.filter(pk=retried).values_list("baseline", "params").first()
        if row is None:
            break
        made |= {(d["kind"], d["name"]) for d in (row[0] or {}).get("absent") or []}
        retried = (row[1] or {}).get("retry_of")
    return made


def _refuse_existing(op: Operation, what: list[dict[str, str]], wrote: bool = False) -> None:
    """Fail a create whose target exists already, having changed nothing there. Its clean-up
    removes only what it made before it met the object (nothing when it wrote nothing)."""
    made = [a for a in op.baseline.get("absent") or [] if wrote and a not in what]
    op.baseline = {**op.baseline, "absent": made}
    Operation.objects.filter(pk=op.pk).update(baseline=op.baseline)
    if any(item["kind"] == NODE_GROUP for item in what):
        message = _(
            "%(name)s already has a node group named %(group)s. Adding it would overwrite "
            "that group, so nothing was changed: pick another name, or resize the group from "
            "its page."
        ) % {"name": op.name, "group": op.node_group}
    else:
        message = _(
            "%(objects)s already exists in the cluster. A create never changes what is "
            "there, so nothing was changed: pick another name, or change it from its page."
        ) % {"objects": ", ".join(f"{item['kind']} {item['name']}" for item in what)}
    fail(op, "AlreadyExists", message)


def apply(op: Operation) -> None:
    """Apply the claimed operation's manifests (idempotent) and hand it to the poller.

    TransientError propagates (the task retries); permanent errors fail the operation.
    """
    gateway = gateway_for(op.cluster)
    who = identity_for(op)
    wrote = must_exist = False
    deferred: dict[str, Any] | None = None
    try:
        if _is_delete(op) and not op.node_group:
            # Delete the VM first, then its disks: 404 means already gone. (A node group's
            # delete is a merge patch of its cluster, below: the cluster stays.)
            for doc in reversed(op.manifests):
                delete_target(
                    gateway, doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"], who
                )
        else:
            _record_baseline(op, gateway)
            if op.baseline.get("present"):
                _refuse_existing(op, op.baseline["present"])
                return
            # Day-2 changes patch an object that must be there; they never re-create it.
            # A retry of one of these is one of these too: it must not re-create what was
            # deleted since (a VM with no disk and no GPU).
            must_exist = (op.params.get("retry_kind") or op.kind) in (
                OperationKind.START,
                OperationKind.STOP,
                OperationKind.RESIZE,
                OperationKind.RESTART,
            ) or bool(op.node_group and not op.params.get("new_cluster_version"))
            # A create's first attempt creates only: what appears between the read above and
            # the write is someone else's. A later attempt may find its own earlier write.
            # What a retried create made is the retry's to apply again. A VM held back for its
            # disk (awaiting_disk) is still this create's to make; its disk is already written.
            awaiting = bool(op.params.get("awaiting_disk"))
            create_only = _is_create(op) and not _adds_group(op) and (op.attempts <= 1 or awaiting)
            absent = op.baseline.get("absent") or []
            deferred = _vm_waiting_for_its_disk(op, gateway)
            for doc in _manifests_to_apply(op):
                if doc is deferred:
                    continue
                item = {"kind": doc["kind"], "name": doc["metadata"]["name"]}
                written_before = awaiting and doc["kind"] == mf.VM_DISK
                try:
                    applied = apply_manifest(
                        gateway,
                        doc,
                        who,
                        must_exist=must_exist,
                        create_only=create_only and item in absent and not written_before,
                    )
                except ConflictError as exc:
                    if not (create_only and exc.already_exists):
                        raise
                    _refuse_existing(op, [item], wrote=True)
                    return
                wrote = applied.wrote or wrote
        now = timezone.now()
        changes: dict[str, Any] = {
            "state": OperationState.PROVISIONING,
            "applied_at": now,
            "lease_until": None,
            "error": "",
        }
        if not _is_delete(op) and bool(deferred) != bool(op.params.get("awaiting_disk")):
            changes["params"] = {**op.params, "awaiting_disk": bool(deferred)}
        unchanged = not wrote and _is_power_action(op)
        if unchanged:
            # The app already asks for this: no Helm release will come, so wait for nothing
            # but the VM's own state (a no-op start on a running VM ends now).
            changes["baseline"] = {"before": {}, "unchanged": True}
        if _transition(op, {OperationState.APPLYING}, **changes):
            audit(op, op.tenant, "portal", "operation.applied", {"attempt": op.attempts})
            if deferred:
                # The next poll sends the VM once its disk is Ready: look again soon.
                queue.enqueue_on_commit(
                    "provisioning.poll_operations",
                    countdown=settings.OPERATION_DISK_RECHECK_SECONDS,
                )
            if unchanged:
                target = Target(op.namespace, op.app_kind, op.name, labelled=False)
                view = observe(gateway, [target])
                advance(op, view.get(op.namespace, NamespaceView()), now)
    except TransientError:
        raise
    except InvalidError as exc:
        fail(op, exc.reason or "Invalid", exc.detail or exc.message, exc.causes, str(exc))
    except ForbiddenError as exc:
        fail(op, "Forbidden", exc.detail or exc.message, (), str(exc))
    except NotFoundError as exc:
        if not must_exist:
            fail(op, exc.reason or "NotFound", exc.detail or exc.message, (), str(exc))
            return
        fail(
            op,
            "Gone",
            _(
                "%(name)s is no longer in the cluster (deleted since this change was asked "
                "for): nothing was changed, and it was not created again."
            )
            % {"name": op.name},
            (),
            str(exc),
        )
    except KubeError as exc:
        fail(op, exc.reason or type(exc).__name__, exc.detail or exc.message, (), str(exc))
    finally:
        gateway.close()


def _vm_waiting_for_its_disk(op: Operation, gateway: ClusterGateway) -> dict[str, Any] | None:
    """The VMInstance of a create whose VMDisk is not Ready yet, or None.

    The v1.1 vm-instance chart looks the disk's DataVolume up at render time and fails
    ("Specified disk not exists in cluster") until the disk's release has made it; Cozystack's
    own e2e test waits for the disk first (hack/e2e-apps/vminstance.bats). So the VM is applied
    once the disk app is Ready, by a later apply the poller asks for."""
    disk = _disk_name(op)
    vm = next((d for d in op.manifests if d["kind"] == mf.VM_INSTANCE), None)
    if not disk or vm is None or op.kind not in (OperationKind.CREATE, OperationKind.RETRY):
        return None
    if app_ready(gateway.get(mf.PLURALS[mf.VM_DISK], op.namespace, disk)):
        return None
    return vm


def _is_power_action(op: Operation) -> bool:
    """A start or stop (or a retry of one): it only flips the VM's run strategy."""
    kind = op.params.get("retry_kind") or op.kind
    return kind in (OperationKind.START, OperationKind.STOP) and not op.node_group


def _already_true(op: Operation) -> str:
    if _want_running(op):
        return _("It was already running: nothing was changed.")
    return _("It was already stopped: nothing was changed.")


def _manifests_to_apply(op: Operation) -> list[dict[str, Any]]:
    """A restart applies its stop, then (once stopped) its start; others apply every manifest."""
    if op.kind == OperationKind.RESTART:
        return [op.manifests[1 if op.params.get("phase") == "start" else 0]]
    return list(op.manifests)


def release_for_retry(op: Operation, exc: TransientError, delay: float) -> None:
    """A transient failure: back to pending, visible with its reason, retried after ``delay``."""
    _transition(
        op,
        {OperationState.APPLYING},
        state=OperationState.PENDING,
        error=str(exc),
        lease_until=timezone.now() + timedelta(seconds=delay),
    )


# --- polling (batched) -------------------------------------------------------------------


def _want_running(op: Operation) -> bool:
    if op.kind == OperationKind.STOP:
        return False
    if op.kind == OperationKind.START:
        return True
    if op.kind == OperationKind.RESTART:
        return op.params.get("phase") == "start"
    vm = next((d for d in op.manifests if d["kind"] == op.app_kind), {})
    spec = vm.get("spec") or {}
    return spec.get("runStrategy", "Always") != "Halted" and spec.get("running", True) is not False


def _disk_name(op: Operation) -> str | None:
    disk = next((d for d in op.manifests if d["kind"] == mf.VM_DISK), None)
    return disk["metadata"]["name"] if disk else None


def _worker_unschedulable(op: Operation, observed: dict[str, Any]) -> str:
    """A node group's worker VM the scheduler cannot place, in the person's words."""
    model = op.gpu_model.display_name if op.gpu_model else _("GPU")
    return _("No %(model)s free for worker %(n)d of %(of)d.") % {
        "model": model,
        "n": int(observed.get("unschedulable_worker") or 1),
        "of": int(observed.get("workers") or 1),
    }


def _progress(op: Operation, view: NamespaceView) -> Progress:
    """What one observation says about a (non-delete) operation's target."""
    if op.node_group:
        return node_group_progress(
            op.name,
            op.node_group,
            view,
            int(op.params.get("min_replicas") or 0),
            op.baseline.get("before", {}),
            removing=(op.params.get("retry_kind") or op.kind) == OperationKind.DELETE,
        )
    return vm_progress(
        op.app_kind,
        op.name,
        view,
        _disk_name(op),
        op.baseline.get("before", {}),
        _want_running(op),
        # A restart is done once the change it waited for is applied, not merely Running.
        restart_applied=op.kind == OperationKind.RESTART,
    )


def _facts(op: Operation, progress: Progress, now: Any) -> dict[str, Any]:
    """What the observation adds to the record without moving its state: what was seen, and
    when the disk was first ready and the VM first scheduled."""
    facts: dict[str, Any] = (
        {"observed": progress.observed} if progress.observed != op.observed else {}
    )
    if progress.disk_ready and not op.disk_ready_at:
        facts["disk_ready_at"] = now
    if progress.scheduled and not op.scheduled_at:
        facts["scheduled_at"] = now
    return facts


# What a step leaves to do once its changes are written: succeed, fail, back to pending, or
# check the ceiling. None when nothing is left.
End = Callable[[], None] | None


def _changed(op: Operation, changes: dict[str, Any]) -> dict[str, Any]:
    """Only the fields whose values differ from the operation's: a sweep that sees nothing new
    writes nothing."""
    return {key: value for key, value in changes.items() if getattr(op, key) != value}


def _step(op: Operation, view: NamespaceView, now: Any) -> tuple[dict[str, Any], End]:
    """What one observation means for a polled operation, without writing anything: the changes
    that end nothing (only the fields that differ: what was seen, the reason and message shown,
    queued or not), and what is left to do once they are written."""
    plural = mf.PLURALS.get(op.app_kind, "")
    if _is_delete(op) and not op.node_group:
        if (plural, op.name) not in view.apps:
            return {}, lambda: succeed(op)
        return {}, lambda: _check_ceiling(op, now)
    if not op.node_group and op.params.get("awaiting_disk"):
        return _step_awaiting_disk(op, view, now)
    progress = _progress(op, view)
    if progress.failed:
        return {}, lambda: fail(op, progress.reason, progress.message, progress.causes)
    changes = _facts(op, progress, now)
    end = _helm_retrying(op, progress, now, changes)
    if end is not None:
        return _changed(op, changes), end
    if progress.unschedulable:
        if op.node_group:
            message = _worker_unschedulable(op, progress.observed)
        else:
            message = (
                scheduling_event(view, mf.release_name(op.app_kind, op.name)) or progress.message
            )
        changes.update(reason=progress.reason, message=message)
        since = op.unschedulable_since or now
        changes["unschedulable_since"] = since
        if op.queue_until_capacity:
            changes["state"] = OperationState.QUEUED
        elif (now - since).total_seconds() > settings.OPERATION_UNSCHEDULABLE_GRACE_SECONDS:
            return _changed(op, changes), lambda: fail(op, progress.reason, message)
    elif op.unschedulable_since or op.state == OperationState.QUEUED:
        changes.update(
            unschedulable_since=None, reason="", message="", state=OperationState.PROVISIONING
        )
    changes = _changed(op, changes)
    if progress.done and op.kind == OperationKind.RESTART and not _want_running(op):
        return changes, lambda: _restart_start(op)
    if progress.done:
        if op.baseline.get("unchanged"):
            return changes, lambda: succeed(op, ALREADY_DONE, _already_true(op))
        return changes, lambda: succeed(op)
    return changes, lambda: _check_ceiling(op, now)


def advance(op: Operation, view: NamespaceView, now: Any) -> None:
    """Move one polled operation forward from one observation (the apply of a no-op start or
    stop; a sweep does the same for a batch at once, ``poll_cluster``)."""
    changes, end = _step(op, view, now)
    if changes:
        _transition(op, set(POLLED_OPERATION_STATES), **changes)
    if end is not None:
        end()


def _write_steps(steps: list[tuple[Operation, dict[str, Any], End]], now: Any) -> None:
    """The changes of a batch's steps, in one UPDATE per set of fields (``update_rows``), and
    only into operations still polled (one another worker ended is left alone)."""
    rows = {op.pk: {**changes, "updated_at": now} for op, changes, _end in steps if changes}
    if not rows:
        return
    update_rows(Operation, rows, only_where={"state": POLLED_OPERATION_STATES})
    for op, _changes, _end in steps:
        for key, value in rows.get(op.pk, {}).items():
            setattr(op, key, value)


def _helm_retrying(op: Operation, progress: Any, now: Any, changes: dict[str, Any]) -> End:
    """Helm failed in a way that may clear (helm-controller retries forever): say what the
    cluster is retrying (into ``changes``), and fail only once the grace period has passed.
    What is left to do when Helm is retrying; None when it is not."""
    since_key = "helm_retrying_since"
    if not progress.retrying:
        if op.params.get(since_key):
            params = {k: v for k, v in op.params.items() if k != since_key}
            changes.update(params=params, reason="", message="")
        return None
    since = op.params.get(since_key) or now.isoformat()
    waited = (now - datetime.fromisoformat(since)).total_seconds()
    if waited > settings.OPERATION_HELM_RETRY_GRACE_SECONDS:
        return lambda: fail(op, progress.reason, progress.message)
    message = _("The cluster is retrying (Helm retries until it works): %(message)s") % {
        "message": progress.message
    }
    changes.update(params={**op.params, since_key: since}, reason=progress.reason, message=message)
    return lambda: _check_ceiling(op, now)


def _step_awaiting_disk(op: Operation, view: NamespaceView, now: Any) -> tuple[dict, End]:
    """A create whose VM waits for its disk: once the disk app is Ready, back to pending so the
    apply task sends the VM; a disk Helm cannot install fails the operation."""
    disk = view.apps.get((mf.PLURALS[mf.VM_DISK], _disk_name(op) or ""))
    progress = helm_progress(disk)
    if progress.failed:
        return {}, lambda: fail(op, progress.reason, progress.message, progress.causes)
    if disk is not None and app_ready(disk):
        return {}, lambda: _disk_ready(op, now)
    changes: dict[str, Any] = {}
    end = _helm_retrying(op, progress, now, changes)
    return _changed(op, changes), end or (lambda: _check_ceiling(op, now))


def _disk_ready(op: Operation, now: Any) -> None:
    """The disk of a VM held back for it is Ready: back to pending, the apply task sends the VM."""
    if _transition(
        op,
        set(POLLED_OPERATION_STATES),
        state=OperationState.PENDING,
        disk_ready_at=op.disk_ready_at or now,
        lease_until=None,
    ):
        queue.enqueue_on_commit("provisioning.apply_operation", op.pk)


def _restart_start(op: Operation) -> None:
    """The restart's VM is stopped: back to pending for its start (the apply task takes it).
    The baseline is read again, since the stop made a Helm release of its own."""
    params = {**op.params, "phase": "start"}
    if _transition(
        op,
        set(POLLED_OPERATION_STATES),
        state=OperationState.PENDING,
        params=params,
        baseline={},
        scheduled_at=None,
        lease_until=None,
    ):
        audit(op, op.tenant, "portal", "operation.stopped")
        queue.enqueue_on_commit("provisioning.apply_operation", op.pk)


def _check_ceiling(op: Operation, now: Any) -> None:
    if op.state == OperationState.QUEUED:
        return  # waiting for capacity is what the user asked for
    start = op.scheduled_at or op.applied_at or op.created_at
    ceiling = (
        settings.OPERATION_NODE_GROUP_TIMEOUT_SECONDS
        if op.node_group
        else settings.OPERATION_TIMEOUT_SECONDS
    )
    if (now - start).total_seconds() > ceiling:
        minutes = ceiling // 60
        fail(
            op,
            "Timeout",
            _("Not ready after %(minutes)d minutes; the last thing the cluster said is kept below.")
            % {"minutes": minutes},
        )


def targets(op: Operation) -> list[Target]:
    """What the poller must see for ``op``: its app and the other apps it applies (a disk)."""
    labelled = op.baseline.get("labelled")
    out = []
    for doc in op.manifests:
        if doc["kind"] not in mf.PLURALS:
            continue
        name = doc["metadata"]["name"]
        own = has_portal_label(doc) or bool(op.params.get("portal_made"))
        if doc["kind"] == op.app_kind and name == op.name and labelled is not None:
            own = bool(labelled)  # what the cluster showed before the first write
        out.append(Target(op.namespace, doc["kind"], name, labelled=own))
    if not any(t.kind == op.app_kind and t.name == op.name for t in out):
        out.append(Target(op.namespace, op.app_kind, op.name, labelled=bool(labelled)))
    return out


def poll_cluster(cluster_id: int) -> int:
    """One batched observation of every applied operation of a cluster. Returns how many.
    Its requests grow with the operations in flight, not with the tenants (``observe``)."""
    ops = list(
        Operation.objects.filter(cluster_id=cluster_id, state__in=POLLED_OPERATION_STATES)
        # One read per table: the cluster, tenants and models, not a copy of each per row.
        .prefetch_related("cluster", "tenant", "gpu_model")
    )
    if not ops:
        return 0
    wanted = [target for op in ops for target in targets(op)]
    events_for = {
        op.namespace
        for op in ops
        if op.unschedulable_since or op.observed.get("printableStatus") == "ErrorUnschedulable"
    }
    gateway = gateway_for(ops[0].cluster)
    try:
        # A VM still provisioning may wait on a golden image the cluster does not have.
        clone_events_for = {
            op.namespace for op in ops if op.observed.get("printableStatus") == "Provisioning"
        }
        views = observe(gateway, wanted, events_for, clone_events_for, _awaiting_gpus(ops))
    finally:
        gateway.close()
    now = timezone.now()
    # Per batch: one commit, one UPDATE per set of changed fields (only the operations whose
    # values changed: a sweep that sees nothing new writes nothing), then what ends.
    for start in range(0, len(ops), ADVANCE_BATCH):
        batch = ops[start : start + ADVANCE_BATCH]
        steps = [(op, *_step(op, views.get(op.namespace, NamespaceView()), now)) for op in batch]
        with transaction.atomic():
            _write_steps(steps, now)
            for _op, _changes, end in steps:
                if end is not None:
                    end()
    return len(ops)


def _awaiting_gpus(ops: list[Operation]) -> dict[tuple[str, str], Identity]:
    """Tenant clusters whose nodes this poll reads: node groups whose workers booted (the "GPUs
    ready" step; a retried resize records no GPU count, so every such group is read), with the
    asker's rights (the admin kubeconfig Secret is readable from the tenant's -use level up).
    Only node groups in flight, so a sweep costs two requests per group waiting for its GPUs
    and nothing for the rest of the fleet."""
    out: dict[tuple[str, str], Identity] = {}
    for op in ops:
        if op.node_group and op.scheduled_at and not _is_delete(op):
            out.setdefault((op.namespace, op.name), identity_for(op))
    return out


def clusters_with_polled_operations() -> list[int]:
    return list(
        Operation.objects.filter(state__in=POLLED_OPERATION_STATES)
        .values_list("cluster_id", flat=True)
        .distinct()
        .order_by()
    )


def reconcile() -> list[int]:
    """Operations whose task was lost (worker killed, Redis restarted): enqueue them again.
    Pending past their retry time, or applying past their lease. ``claim`` makes it safe."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.OPERATION_RECONCILE_AFTER_SECONDS)
    for op_id in Operation.objects.filter(
        state=OperationState.FAILED, params__cleanup="pending", updated_at__lt=stale
    ).values_list("pk", flat=True)[:100]:
        queue.enqueue("provisioning.clean_up_operation", op_id)
    ids = list(
        Operation.objects.filter(
            Q(state=OperationState.PENDING, updated_at__lt=stale, lease_until__isnull=True)
            | Q(state=OperationState.PENDING, lease_until__lt=now)
            | Q(state=OperationState.APPLYING, lease_until__lt=now)
        ).values_list("pk", flat=True)[:500]
    )
    for op_id in ids:
        queue.enqueue("provisioning.apply_operation", op_id)
    return ids
