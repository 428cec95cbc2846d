"""Operations: record what a person asked, apply it, follow it until done (DESIGN rules 2, 8, 9).

A service module: every write to Operation/AuditEvent goes through here. Tasks (tasks.py) call
``claim_and_apply``, ``poll_cluster`` and ``reconcile`` with ids; views call ``submit``.
Target-by-value and the kinds (create/update/start/stop/delete/resize/retry) fit VMs and
Kubernetes node groups alike; only the manifest builder and the progress reading differ.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .choices import (
    ACTIVE_OPERATION_STATES,
    POLLED_OPERATION_STATES,
    OperationKind,
    OperationState,
    OperationStep,
)
from .kube import manifests as mf
from .kube.client import ClusterConfig
from .kube.errors import (
    Cause,
    ForbiddenError,
    InvalidError,
    KubeError,
    TransientError,
)
from .kube.gateway import ClusterGateway
from .kube.operations import (
    KUBEVIRT_PREFIX,
    Identity,
    NamespaceView,
    apply_manifest,
    delete_target,
    node_group_progress,
    observe,
    released_marker,
    scheduling_event,
    vm_progress,
)
from .kube.schema_check import read_spec_schemas, spec_causes
from .models import (
    AuditEvent,
    Cluster,
    GpuModel,
    GpuQuota,
    GpuWorkload,
    NodeGpu,
    Operation,
    ServedSchema,
    Tenant,
)

log = logging.getLogger(__name__)


def gateway_for(cluster: Cluster) -> ClusterGateway:
    return ClusterGateway(
        ClusterConfig(
            name=cluster.name,
            kubeconfig=cluster.kubeconfig or None,
            context=cluster.context or None,
            in_cluster=cluster.in_cluster,
            timeout=settings.CLUSTER_TIMEOUT_SECONDS,
            qps=settings.CLUSTER_QPS,
            burst=settings.CLUSTER_BURST,
        )
    )


class OperationRefused(Exception):
    """The request cannot be recorded; ``field`` names the form field to show it next to."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


# --- GPU VM request and its manifests (one builder for preview and task) --------------


@dataclass(frozen=True)
class VmRequest:
    name: str
    gpu_resource: str
    gpu_count: int
    instance_type: str
    instance_profile: str
    image: str
    disk_size_gi: int
    storage_class: str
    ssh_keys: tuple[str, ...] = ()
    external: str = "none"  # none | PortList | WholeIP
    external_ports: tuple[int, ...] = (22,)
    cloud_init: str = ""
    run_strategy: str = "Always"
    queue_until_capacity: bool = False

    def as_params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gpu_resource": self.gpu_resource,
            "gpu_count": self.gpu_count,
            "instance_type": self.instance_type,
            "instance_profile": self.instance_profile,
            "image": self.image,
            "disk_size_gi": self.disk_size_gi,
            "storage_class": self.storage_class,
            "ssh_keys": list(self.ssh_keys),
            "external": self.external,
            "external_ports": list(self.external_ports),
            "cloud_init": self.cloud_init,
            "run_strategy": self.run_strategy,
            "queue_until_capacity": self.queue_until_capacity,
        }


PORTAL_LABELS = {"app.kubernetes.io/managed-by": "hikube-portal"}


def system_disk_name(vm_name: str) -> str:
    return f"{vm_name}-system"


def max_vm_name_length(vm_kind: str) -> int:
    """Longest VM name: prefix + name <= 53, and the system VMDisk ``<name>-system`` too."""
    if vm_kind == mf.VM_INSTANCE:
        return min(
            mf.max_name_length(mf.VM_INSTANCE),
            mf.max_name_length(mf.VM_DISK) - len(system_disk_name("")),
        )
    return mf.max_name_length(vm_kind)


def vm_manifests(request: VmRequest, namespace: str, vm_kind: str) -> list[dict[str, Any]]:
    """The exact manifests the task applies, in Hikube's shapes (VMDisk first on current)."""
    gpus = [request.gpu_resource] * request.gpu_count
    external = request.external != "none"
    ports = list(request.external_ports) or [22]
    if vm_kind == mf.VIRTUAL_MACHINE:
        vm = mf.legacy_virtual_machine(
            request.name,
            namespace,
            request.instance_type,
            request.instance_profile,
            gpus,
            image=request.image,
            storage=f"{request.disk_size_gi}Gi",
            storage_class=request.storage_class,
            running=request.run_strategy != "Halted",
            ssh_keys=request.ssh_keys,
            cloud_init=request.cloud_init,
            external=external,
            external_ports=ports,
            labels=PORTAL_LABELS,
        )
        vm["spec"]["runStrategy"] = request.run_strategy
        docs = [vm]
    else:
        disk = mf.vm_disk(
            system_disk_name(request.name),
            namespace,
            request.image,
            f"{request.disk_size_gi}Gi",
            request.storage_class,
            labels=PORTAL_LABELS,
        )
        vm = mf.vm_instance(
            request.name,
            namespace,
            request.instance_type,
            request.instance_profile,
            [disk["metadata"]["name"]],
            gpus,
            run_strategy=request.run_strategy,
            ssh_keys=request.ssh_keys,
            cloud_init=request.cloud_init,
            external=external,
            external_ports=ports,
            labels=PORTAL_LABELS,
        )
        docs = [disk, vm]
    if request.external == "WholeIP":
        vm["spec"]["externalMethod"] = "WholeIP"
        vm["spec"].pop("externalPorts", None)
    return docs


def served_schema_causes(cluster: Cluster, docs: list[dict[str, Any]]) -> list[Cause]:
    """Check each manifest's spec against the schema the cluster serves (read by a task)."""
    schemas = dict(ServedSchema.objects.filter(cluster=cluster).values_list("app_kind", "schema"))
    causes: list[Cause] = []
    for doc in docs:
        causes += spec_causes(schemas.get(doc["kind"]) or {}, doc.get("spec") or {})
    return causes


def refresh_served_schemas(cluster_id: int) -> int:
    """Read the OpenAPI v3 spec schemas of the app kinds and keep them for the forms."""
    cluster = Cluster.objects.get(pk=cluster_id)
    gateway = gateway_for(cluster)
    try:
        schemas = read_spec_schemas(gateway.session)
    finally:
        gateway.close()
    now = timezone.now()
    for kind, schema in schemas.items():
        ServedSchema.objects.update_or_create(
            cluster=cluster, app_kind=kind, defaults={"schema": schema, "fetched_at": now}
        )
    return len(schemas)


# --- capacity and quota ----------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    model: GpuModel
    requested: int
    free_total: int
    free_max_one: int

    @property
    def fits(self) -> bool:
        return self.requested <= self.free_max_one

    def message(self) -> str:
        name = self.model.display_name
        if self.fits:
            return _(
                "%(n)d x %(model)s requested: %(free)d free in all, up to %(one)d on one server."
            ) % {
                "n": self.requested,
                "model": name,
                "free": self.free_total,
                "one": self.free_max_one,
            }
        if self.requested <= self.free_total:
            return _(
                "%(n)d x %(model)s requested: %(free)d free in all, but at most %(one)d on one "
                "server."
            ) % {
                "n": self.requested,
                "model": name,
                "free": self.free_total,
                "one": self.free_max_one,
            }
        return _("%(n)d x %(model)s requested: only %(free)d free right now.") % {
            "n": self.requested,
            "model": name,
            "free": self.free_total,
        }


def free_on_servers(model: GpuModel) -> tuple[int, int]:
    """(free in all, most free on one server) for a model, from the last snapshot."""
    row = NodeGpu.objects.filter(
        gpu_model=model, node__ready=True, node__unschedulable=False
    ).aggregate(total=Sum("free"), most=Max("free"))
    return int(row["total"] or 0), int(row["most"] or 0)


def fit_for(model: GpuModel, count: int) -> Fit:
    total, most = free_on_servers(model)
    return Fit(model, count, total, most)


def gpus_counted(
    tenant: Tenant, model: GpuModel, exclude: tuple[int, str, str] | None = None
) -> int:
    """GPUs held (snapshot) plus in flight (active operations), without counting a target twice."""
    active = Operation.objects.filter(
        tenant=tenant, gpu_model=model, state__in=ACTIVE_OPERATION_STATES
    )
    in_flight = active.aggregate(n=Sum("gpu_count"))["n"] or 0
    targets = {
        (o.cluster_id, o.name, o.node_group) for o in active.only("cluster", "name", "node_group")
    }
    if exclude:
        targets.add(exclude)  # the target being changed: its new size replaces what it holds
    held = 0
    for w in GpuWorkload.objects.filter(tenant=tenant, gpu_model=model).only(
        "cluster", "name", "node_group", "gpus_per_instance", "instances"
    ):
        if (w.cluster_id, w.name, w.node_group) not in targets:
            held += w.gpus_requested
    return held + int(in_flight)


def quota_left(
    tenant: Tenant, model: GpuModel, exclude: tuple[int, str, str] | None = None
) -> int | None:
    quota = GpuQuota.objects.filter(tenant=tenant, gpu_model=model).first()
    if quota is None:
        return None
    return max(quota.limit - gpus_counted(tenant, model, exclude), 0)


def quota_message(model: GpuModel, left: int) -> str:
    if left == 0:
        return _("Your quota allows no more %(model)s.") % {"model": model.display_name}
    return ngettext(
        "Your quota allows %(n)d more %(model)s.",
        "Your quota allows %(n)d more %(model)s.",
        left,
    ) % {"n": left, "model": model.display_name}


# --- recording -----------------------------------------------------------------------


def default_cluster() -> Cluster | None:
    return (
        Cluster.objects.filter(last_synced_at__isnull=False).order_by("pk").first()
        or Cluster.objects.order_by("pk").first()
    )


def audit(
    op: Operation | None, tenant: Tenant, actor: str, action: str, detail: dict | None = None
) -> None:
    target = ""
    if op is not None:
        target = f"{op.app_kind} {op.namespace}/{op.name}" + (
            f"/{op.node_group}" if op.node_group else ""
        )
    AuditEvent.objects.create(
        operation=op,
        tenant=tenant,
        actor_name=actor,
        action=action,
        target=target,
        detail=detail or {},
    )


def _enqueue_apply(op_id: int) -> None:
    from .tasks import apply_operation

    apply_operation.delay(op_id)


def record(
    *,
    user: Any,
    tenant: Tenant,
    cluster: Cluster,
    kind: str,
    app_kind: str,
    name: str,
    docs: list[dict[str, Any]],
    gpu_model: GpuModel | None = None,
    gpu_count: int = 0,
    node_group: str = "",
    params: dict[str, Any] | None = None,
    queue_until_capacity: bool = False,
    check_capacity: bool = True,
) -> Operation:
    """Check quota (under a row lock) and capacity, save the operation and its audit event in
    one transaction, enqueue the apply on commit. Raises OperationRefused."""
    actor = user.get_username()
    with transaction.atomic():
        # The tenant row is the lock: concurrent submissions of one tenant queue here.
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        if gpu_model is not None and gpu_count:
            left = quota_left(tenant, gpu_model, (cluster.pk, name, node_group))
            if left is not None and gpu_count > left:
                raise OperationRefused(quota_message(gpu_model, left), "gpu_count")
            if check_capacity and not queue_until_capacity:
                fit = fit_for(gpu_model, gpu_count)
                if not fit.fits:
                    raise OperationRefused(
                        fit.message()
                        + " "
                        + _("Pick fewer GPUs, or tick “queue until capacity frees”."),
                        "gpu_count",
                    )
        try:
            with transaction.atomic():
                op = Operation.objects.create(
                    cluster=cluster,
                    tenant=tenant,
                    actor=user if getattr(user, "pk", None) else None,
                    actor_name=actor,
                    kind=kind,
                    namespace=tenant.namespace,
                    app_kind=app_kind,
                    name=name,
                    node_group=node_group,
                    gpu_model=gpu_model,
                    gpu_count=gpu_count,
                    queue_until_capacity=queue_until_capacity,
                    params=params or {},
                    manifests=docs,
                )
        except IntegrityError:
            raise OperationRefused(
                _("Another change to %(name)s is still in progress; wait for it to finish.")
                % {"name": name},
                "name",
            ) from None
        audit(op, tenant, actor, f"operation.{kind}", {"operation": op.pk, "gpus": gpu_count})
        transaction.on_commit(lambda: _enqueue_apply(op.pk))
    return op


def submit_vm(user: Any, tenant: Tenant, cluster: Cluster, request: VmRequest) -> Operation:
    vm_kind = cluster.vm_kind or mf.VM_INSTANCE
    docs = vm_manifests(request, tenant.namespace, vm_kind)
    causes = served_schema_causes(cluster, docs)
    if causes:
        raise OperationRefused(
            _("The cluster's schema refuses: %(causes)s")
            % {"causes": "; ".join(f"{c.field}: {c.message}" for c in causes)}
        )
    existing = GpuWorkload.objects.filter(
        cluster=cluster, tenant=tenant, name=request.name, node_group=""
    ).exists()
    if existing:
        raise OperationRefused(_("A VM with this name already exists."), "name")
    model = GpuModel.objects.get(resource_name=request.gpu_resource)
    return record(
        user=user,
        tenant=tenant,
        cluster=cluster,
        kind=OperationKind.CREATE,
        app_kind=vm_kind,
        name=request.name,
        docs=docs,
        gpu_model=model,
        gpu_count=request.gpu_count,
        params=request.as_params(),
        queue_until_capacity=request.queue_until_capacity,
    )


def retry(user: Any, op: Operation) -> Operation:
    """A failed operation, submitted again with the same manifests (a new record)."""
    if op.state != OperationState.FAILED:
        raise OperationRefused(_("Only a failed operation can be retried."))
    return record(
        user=user,
        tenant=op.tenant,
        cluster=op.cluster,
        kind=OperationKind.RETRY,
        app_kind=op.app_kind,
        name=op.name,
        node_group=op.node_group,
        docs=op.manifests,
        gpu_model=op.gpu_model,
        gpu_count=op.gpu_count if op.kind in (OperationKind.CREATE, OperationKind.RETRY) else 0,
        params={**op.params, "retry_of": op.pk},
        queue_until_capacity=op.queue_until_capacity,
        check_capacity=False,
    )


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
    ):
        audit(
            op,
            op.tenant,
            "portal",
            "operation.failed",
            {"reason": reason, "message": message[:500]},
        )


def succeed(op: Operation) -> None:
    now = timezone.now()
    if _transition(
        op,
        set(ACTIVE_OPERATION_STATES),
        state=OperationState.SUCCEEDED,
        finished_at=now,
        running_at=op.running_at or (now if _want_running(op) and op.kind != "delete" else None),
        reason="",
        message="",
        lease_until=None,
    ):
        audit(op, op.tenant, "portal", "operation.succeeded")


def identity_for(op: Operation) -> Identity:
    return Identity.tenant_admin(op.actor_name, op.namespace)


def _record_baseline(op: Operation, gateway: ClusterGateway) -> None:
    """Before the first write, keep what Helm last said about the target (no generation in
    v1.1: an update is done when this moves). Saved once: an attempt after a crash must not
    take its own earlier write for the starting point."""
    if "before" in op.baseline:
        return
    current = gateway.get(mf.PLURALS[op.app_kind], op.namespace, op.name)
    op.baseline = {"before": released_marker(current) if current else {}}
    Operation.objects.filter(pk=op.pk, state=OperationState.APPLYING).update(baseline=op.baseline)


def apply(op: Operation) -> None:
    """Apply the claimed operation's manifests (idempotent) and hand it to the poller.

    TransientError propagates (the task retries); permanent errors fail the operation.
    """
    gateway = gateway_for(op.cluster)
    who = identity_for(op)
    try:
        if op.kind == OperationKind.DELETE:
            # Delete the VM first, then its disks: 404 means already gone.
            for doc in reversed(op.manifests):
                delete_target(
                    gateway, doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"], who
                )
        else:
            _record_baseline(op, gateway)
            # Day-2 changes patch an object that must be there; they never re-create it.
            must_exist = op.kind in (
                OperationKind.START,
                OperationKind.STOP,
                OperationKind.RESIZE,
            ) or bool(op.node_group and not op.params.get("new_cluster_version"))
            for doc in op.manifests:
                apply_manifest(gateway, doc, who, must_exist=must_exist)
    except TransientError:
        raise
    except InvalidError as exc:
        fail(op, exc.reason or "Invalid", exc.detail or exc.message, exc.causes, str(exc))
        return
    except ForbiddenError as exc:
        fail(op, "Forbidden", exc.detail or exc.message, (), str(exc))
        return
    except KubeError as exc:
        fail(op, exc.reason or type(exc).__name__, exc.detail or exc.message, (), str(exc))
        return
    finally:
        gateway.close()
    now = timezone.now()
    changes: dict[str, Any] = {
        "state": OperationState.PROVISIONING,
        "applied_at": now,
        "lease_until": None,
        "error": "",
    }
    if _transition(op, {OperationState.APPLYING}, **changes):
        audit(op, op.tenant, "portal", "operation.applied", {"attempt": op.attempts})


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
    vm = next((d for d in op.manifests if d["kind"] == op.app_kind), {})
    spec = vm.get("spec") or {}
    return spec.get("runStrategy", "Always") != "Halted" and spec.get("running", True) is not False


def _disk_name(op: Operation) -> str | None:
    disk = next((d for d in op.manifests if d["kind"] == mf.VM_DISK), None)
    return disk["metadata"]["name"] if disk else None


def advance(op: Operation, view: NamespaceView, now: Any) -> None:
    """Move one polled operation forward from one observation."""
    plural = mf.PLURALS.get(op.app_kind, "")
    if op.kind == OperationKind.DELETE:
        if (plural, op.name) not in view.apps:
            succeed(op)
        else:
            _check_ceiling(op, now)
        return
    if op.node_group:
        progress = node_group_progress(
            op.name,
            op.node_group,
            view,
            int(op.params.get("min_replicas") or 0),
            op.baseline.get("before", {}),
        )
    else:
        progress = vm_progress(
            op.app_kind,
            op.name,
            view,
            _disk_name(op),
            op.baseline.get("before", {}),
            _want_running(op),
        )
    changes: dict[str, Any] = (
        {"observed": progress.observed} if progress.observed != op.observed else {}
    )
    if progress.failed:
        fail(op, progress.reason, progress.message, progress.causes)
        return
    if progress.disk_ready and not op.disk_ready_at:
        changes["disk_ready_at"] = now
    if progress.scheduled and not op.scheduled_at:
        changes["scheduled_at"] = now
    if progress.unschedulable:
        message = (
            scheduling_event(view, KUBEVIRT_PREFIX.get(op.app_kind, "") + op.name)
            or progress.message
        )
        changes.update(reason=progress.reason, message=message)
        since = op.unschedulable_since or now
        changes["unschedulable_since"] = since
        if op.queue_until_capacity:
            changes["state"] = OperationState.QUEUED
        elif (now - since).total_seconds() > settings.OPERATION_UNSCHEDULABLE_GRACE_SECONDS:
            fail(op, progress.reason, message)
            return
    elif op.unschedulable_since or op.state == OperationState.QUEUED:
        changes.update(
            unschedulable_since=None, reason="", message="", state=OperationState.PROVISIONING
        )
    if changes:
        _transition(op, set(POLLED_OPERATION_STATES), **changes)
    if progress.done:
        succeed(op)
        return
    _check_ceiling(op, now)


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


def poll_cluster(cluster_id: int) -> int:
    """One batched observation of every applied operation of a cluster. Returns how many."""
    ops = list(
        Operation.objects.filter(
            cluster_id=cluster_id, state__in=POLLED_OPERATION_STATES
        ).select_related("cluster", "tenant")
    )
    if not ops:
        return 0
    wanted: dict[str, set[str]] = defaultdict(set)
    events_for = set()
    for op in ops:
        wanted[op.namespace].add(mf.PLURALS.get(op.app_kind, ""))
        wanted[op.namespace].update(
            mf.PLURALS[d["kind"]] for d in op.manifests if d["kind"] in mf.PLURALS
        )
        if op.unschedulable_since or op.observed.get("printableStatus") == "ErrorUnschedulable":
            events_for.add(op.namespace)
    gateway = gateway_for(ops[0].cluster)
    try:
        views = observe(gateway, wanted, events_for)
    finally:
        gateway.close()
    now = timezone.now()
    for op in ops:
        advance(op, views.get(op.namespace, NamespaceView()), now)
    return len(ops)


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
    ids = list(
        Operation.objects.filter(
            Q(state=OperationState.PENDING, updated_at__lt=stale, lease_until__isnull=True)
            | Q(state=OperationState.PENDING, lease_until__lt=now)
            | Q(state=OperationState.APPLYING, lease_until__lt=now)
        ).values_list("pk", flat=True)[:500]
    )
    for op_id in ids:
        _enqueue_apply(op_id)
    return ids


# --- reading an operation for people ---------------------------------------------------

_INSUFFICIENT_ANY = re.compile(r"Insufficient (nvidia\.com/[\w-]+)")


def plain_reason(reason: str, message: str, wanted: int = 0) -> str:
    """The cluster's reason in plain words, using the snapshot for numbers."""
    match = _INSUFFICIENT_ANY.search(message or "")
    if match:
        model = GpuModel.objects.filter(resource_name=match.group(1)).first()
        label = model.display_name if model else match.group(1).split("/", 1)[-1]
        total, most = free_on_servers(model) if model else (0, 0)
        if total >= wanted > most:
            return _(
                "No server has %(n)d %(model)s free right now; the most free on one server is "
                "%(most)d (%(total)d free in all)."
            ) % {"n": wanted, "model": label, "most": most, "total": total}
        return _(
            "No server has %(n)d %(model)s free right now; the most free on one server is %(most)d."
        ) % {"n": wanted or 1, "model": label, "most": most}
    if reason in ("InstallFailed", "UpgradeFailed"):
        return _("The cluster accepted the request but Helm refused the settings.")
    if reason == "ErrorUnschedulable":
        return _("No server can take this VM right now.")
    if reason == "Forbidden":
        return _("The cluster refused this action for your account.")
    if reason in ("Invalid", "SchemaViolation"):
        return _("The cluster refused the settings.")
    if reason == "Timeout":
        return message
    if reason in ("ErrImagePull", "ImagePullBackOff", "DataVolumeError"):
        return _("The disk image could not be imported.")
    return message


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
    if creates or op.kind == OperationKind.START or op.node_group:
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
    median = (
        provisioning_median_seconds(op.gpu_model)
        if op.kind in (OperationKind.CREATE, OperationKind.RETRY)
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


# --- day-2 actions on VMs, also those made outside the portal ---------------------------

VM_ACTIONS = (OperationKind.START, OperationKind.STOP, OperationKind.DELETE)


def submit_vm_action(user: Any, workload: GpuWorkload, kind: str) -> Operation:
    """Start, stop or delete a GPU VM the snapshot shows. The target is taken by value from the
    snapshot row; the operation records what is sent, like a create."""
    if kind not in VM_ACTIONS:
        raise OperationRefused(_("Unknown action."))
    tenant, app_kind, name = workload.tenant, workload.app_kind, workload.name
    base = {
        "apiVersion": mf.API_VERSION,
        "kind": app_kind,
        "metadata": {"name": name, "namespace": tenant.namespace},
    }
    docs: list[dict[str, Any]]
    if kind == OperationKind.DELETE:
        # The system disk goes too when the portal made it (an outside VM's disks are left alone).
        created = (
            Operation.objects.filter(
                cluster=workload.cluster,
                namespace=tenant.namespace,
                app_kind=app_kind,
                name=name,
                kind__in=[OperationKind.CREATE, OperationKind.RETRY],
                state=OperationState.SUCCEEDED,
            )
            .order_by("-pk")
            .first()
        )
        disks = [d for d in (created.manifests if created else []) if d["kind"] == mf.VM_DISK]
        docs = [*[{**d, "spec": {}} for d in disks], base]
    else:
        docs = [{**base, "spec": mf.vm_power_patch(app_kind, kind == OperationKind.START)["spec"]}]
    starting = kind == OperationKind.START
    return record(
        user=user,
        tenant=tenant,
        cluster=workload.cluster,
        kind=kind,
        app_kind=app_kind,
        name=name,
        docs=docs,
        gpu_model=workload.gpu_model if starting else None,
        gpu_count=workload.gpus_per_instance if starting else 0,
        # A start waits for capacity rather than failing: the user asked for this VM to run.
        queue_until_capacity=starting,
        check_capacity=False,
        params={"action": kind},
    )


# --- Kubernetes node groups (add or resize one group of an existing tenant cluster) -----

# Cozystack v1.1 creates every MachineDeployment with 2 workers and returns to 2 on each
# change (devcluster-vs-cozystack.md D): the fit and quota count at least that many.
V11_CHART_WORKERS = 2


@dataclass(frozen=True)
class NodeGroupRequest:
    cluster_name: str
    group: str
    min_replicas: int
    max_replicas: int
    instance_type: str
    disk_size_gi: int
    gpu_resource: str
    gpus_per_node: int
    roles: tuple[str, ...] = ()
    new_cluster_version: str = ""  # set: create the cluster with this group

    @property
    def workers_held(self) -> int:
        return max(self.min_replicas, V11_CHART_WORKERS)

    def as_params(self) -> dict[str, Any]:
        return {
            "cluster_name": self.cluster_name,
            "group": self.group,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "instance_type": self.instance_type,
            "disk_size_gi": self.disk_size_gi,
            "gpu_resource": self.gpu_resource,
            "gpus_per_node": self.gpus_per_node,
            "roles": list(self.roles),
            "new_cluster_version": self.new_cluster_version,
        }


def node_group_manifests(
    request: NodeGroupRequest, namespace: str, disk_field: str
) -> list[dict[str, Any]]:
    """One partial Kubernetes manifest whose spec holds only this group: applied as a JSON
    merge patch it changes that group alone (never the whole spec, never a null)."""
    group = mf.node_group(
        request.min_replicas,
        request.max_replicas,
        request.instance_type,
        f"{request.disk_size_gi}Gi",
        gpus=[request.gpu_resource] * request.gpus_per_node,
        roles=request.roles,
        disk_field=disk_field or "ephemeralStorage",
    )
    if request.new_cluster_version:
        # A new cluster: supplying nodeGroups replaces the chart's default md0 in the values
        # (v1.1 still deep-merges md0 in); the GPU operator installs the drivers.
        return [
            mf.kubernetes_cluster(
                request.cluster_name,
                namespace,
                request.new_cluster_version,
                {request.group: group},
                gpu_operator=True,
                labels=PORTAL_LABELS,
            )
        ]
    mf.validate_name(mf.KUBERNETES, request.cluster_name)
    return [
        {
            "apiVersion": mf.API_VERSION,
            "kind": mf.KUBERNETES,
            "metadata": {"name": request.cluster_name, "namespace": namespace},
            "spec": {"nodeGroups": {request.group: group}},
        }
    ]


def submit_node_group(
    user: Any, tenant: Tenant, cluster: Cluster, request: NodeGroupRequest, resize: bool
) -> Operation:
    docs = node_group_manifests(request, tenant.namespace, cluster.node_group_disk_field)
    model = GpuModel.objects.get(resource_name=request.gpu_resource)
    return record(
        user=user,
        tenant=tenant,
        cluster=cluster,
        kind=OperationKind.RESIZE if resize else OperationKind.CREATE,
        app_kind=mf.KUBERNETES,
        name=request.cluster_name,
        node_group=request.group,
        docs=docs,
        gpu_model=model,
        gpu_count=request.gpus_per_node * request.workers_held,
        params=request.as_params(),
        # Workers are placed one by one; the fit is per worker, not all on one server.
        check_capacity=False,
    )
