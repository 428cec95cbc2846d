"""The request side of operations (DESIGN rule 2): validate, check quota and capacity, record the
operation and its audit event in one transaction, send the apply on commit."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ParamSpec

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from gpus.accounts.selectors import cluster_groups, cluster_user
from gpus.catalog.models import GpuModel
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.inventory.schemas import served_schema_causes
from gpus.kube import apps as mf
from gpus.kube.apps import NodeGroupRequest, VmRequest, node_group_manifests, vm_manifests
from gpus.provisioning.audit import audit
from gpus.provisioning.capacity import (
    fit_for,
    group_fit_for,
    live_node_group,
    quota_room,
    resize_plan,
)
from gpus.provisioning.choices import (
    ACTIVE_OPERATION_STATES,
    OperationKind,
    OperationState,
)
from gpus.provisioning.models import Operation
from gpus.provisioning.signals import capacity_refused
from gpus.tenancy.models import Tenant
from gpus.web import guest_agent, queue, ratelimit

log = logging.getLogger(__name__)
_P = ParamSpec("_P")


class OperationRefused(Exception):
    """The request cannot be recorded; ``field`` names the form field to show it next to;
    ``retry_after`` (seconds) says it was refused for coming too often."""

    def __init__(
        self, message: str, field: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after = retry_after
        # Set when refused for lack of capacity: what capacity counts as unmet demand.
        self.for_capacity: dict[str, Any] | None = None


def _check_tenant_pace(tenant: Tenant) -> None:
    """Per tenant, a rate of submissions and a cap on operations waiting for a worker: the
    apply tasks share one FIFO queue, so these bound how far one tenant's flood can push
    another tenant's operation back (issue 20 item 6)."""
    wait = ratelimit.hit(f"operations:{tenant.pk}", settings.OPERATION_RATE_PER_MINUTE)
    if wait:
        raise OperationRefused(
            _("Too many requests for this tenant: try again in %(n)d s.") % {"n": wait},
            retry_after=wait,
        )
    waiting = Operation.objects.filter(
        tenant=tenant, state__in=(OperationState.PENDING, OperationState.APPLYING)
    ).count()
    if waiting >= settings.OPERATION_TENANT_MAX_WAITING:
        raise OperationRefused(
            _(
                "Too many requests for this tenant: %(n)d operations are still waiting to be "
                "sent to the cluster. Try again in a minute."
            )
            % {"n": waiting},
            retry_after=60,
        )


def _lock_key(*parts: object) -> int:
    """A signed 64-bit advisory lock key (a collision only serializes a little more)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_counts(tenant: Tenant, cluster: Cluster, model: GpuModel | None) -> None:
    """Serialize, until the transaction ends, the submissions that count the same GPUs: per
    tenant and model (its quota) and per cluster and model (the free GPUs), so the checks
    see every operation recorded before them (issue 20 item 2c).

    PostgreSQL advisory locks, taken in one order (ascending keys), and no row lock: a row
    lock on the tenant deadlocked with the inventory sync, which locks the cluster row and
    then, through its foreign keys, the tenant rows (item 5). SQLite writes one at a time."""
    if model is None or connection.vendor != "postgresql":
        return
    keys = sorted(
        {_lock_key("quota", tenant.pk, model.pk), _lock_key("free", cluster.pk, model.pk)}
    )
    with connection.cursor() as cursor:
        for key in keys:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def in_progress_message(name: str) -> str:
    """The one sentence for a change refused because another one to the same target runs."""
    return _("Another change to %(name)s is still in progress; wait for it to finish.") % {
        "name": name
    }


def _counting_capacity_refusals(
    submit: Callable[_P, Operation],
) -> Callable[_P, Operation]:
    """A refusal for lack of capacity is unmet demand that capacity counts: sent once the
    refusing transaction is rolled back, so it is kept."""

    @functools.wraps(submit)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Operation:
        try:
            return submit(*args, **kwargs)
        except OperationRefused as exc:
            if exc.for_capacity:
                capacity_refused.send(Operation, **exc.for_capacity)
            raise

    return wrapper


@_counting_capacity_refusals
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
    quota_field: str = "gpu_count",
    name_field: str = "name",
    fit_check: Callable[[], None] | None = None,
) -> Operation:
    """Check quota and capacity under the counting locks, save the operation and its audit
    event in one transaction, enqueue the apply on commit. ``fit_check`` replaces the VM's
    capacity check (a node group's). Raises OperationRefused."""
    actor = user.get_username()
    size = mf.manifests_size(docs)
    if size > mf.MAX_MANIFESTS_BYTES:
        raise OperationRefused(
            _("This request is too large to send to the cluster (%(size)d KiB, at most %(max)d).")
            % {"size": size // 1024, "max": mf.MAX_MANIFESTS_BYTES // 1024}
        )
    _check_tenant_pace(tenant)
    with transaction.atomic():
        lock_counts(tenant, cluster, gpu_model if gpu_count else None)
        if gpu_model is not None and gpu_count:
            room = quota_room(tenant, gpu_model, (cluster.pk, name, node_group), cluster.pk)
            if room is not None and gpu_count > room.left:
                raise OperationRefused(room.message(), quota_field)
            if fit_check is not None:
                fit_check()
            elif check_capacity and not queue_until_capacity:
                fit = fit_for(gpu_model, gpu_count, cluster.pk, (tenant.pk, name, node_group))
                if not fit.fits:
                    refused = OperationRefused(
                        fit.message()
                        + " "
                        + _("Pick fewer GPUs, or tick “queue until capacity frees”."),
                        "gpu_count",
                    )
                    # Unmet demand is counted by capacity: sent once this transaction is gone.
                    refused.for_capacity = {
                        "tenant_id": tenant.pk,
                        "cluster_id": cluster.pk,
                        "gpu_model_id": gpu_model.pk,
                        "gpus": gpu_count,
                        "actor_name": actor,
                        "user_id": getattr(user, "pk", None),
                    }
                    raise refused
        try:
            with transaction.atomic():
                op = Operation.objects.create(
                    cluster=cluster,
                    tenant=tenant,
                    actor=user if getattr(user, "pk", None) else None,
                    actor_name=actor,
                    cluster_user=cluster_user(user),
                    cluster_groups=cluster_groups(user, tenant),
                    kind=kind,
                    namespace=tenant.namespace,
                    app_kind=app_kind,
                    name=name,
                    node_group=node_group,
                    gpu_model=gpu_model,
                    gpu_count=gpu_count,
                    queue_until_capacity=queue_until_capacity,
                    params={**(params or {}), "language": get_language() or ""},
                    manifests=docs,
                )
        except IntegrityError:
            raise OperationRefused(
                in_progress_message(name),
                name_field,
            ) from None
        audit(op, tenant, actor, f"operation.{kind}", {"operation": op.pk, "gpus": gpu_count})
        queue.enqueue_on_commit(
            "provisioning.apply_operation", op.pk, sent=lambda went: setattr(op, "queued", went)
        )
    return op


def queue_down_message() -> str:
    return _(
        "Recorded. The task queue cannot be reached right now: this operation will run when "
        "the queue is back, by itself."
    )


def target_exists(
    cluster: Cluster, tenant: Tenant, app_kind: str, name: str, group: str = ""
) -> bool:
    """Whether a create would meet an existing object: the last operation that succeeded on
    it since the cluster's last snapshot says (a delete: gone; anything else: there), else
    the snapshot. An operation in flight on it is refused by the one-active constraint."""
    unsynced = Q(cluster__last_synced_at__isnull=True) | Q(
        finished_at__gte=F("cluster__last_synced_at")
    )
    last = (
        Operation.objects.filter(
            unsynced,
            cluster=cluster,
            namespace=tenant.namespace,
            app_kind=app_kind,
            name=name,
            node_group=group,
            state=OperationState.SUCCEEDED,
        )
        .order_by("-finished_at", "-pk")
        .values_list("kind", "params")
        .first()
    )
    if last is not None:
        kind, params = last
        return OperationKind.DELETE not in (kind, (params or {}).get("retry_kind"))
    workloads = GpuWorkload.objects.filter(cluster=cluster, tenant=tenant, name=name)
    if group:
        return workloads.filter(node_group=group).exists()
    return workloads.filter(node_group="").exists()


def check_served_schema(
    cluster: Cluster, docs: list[dict[str, Any]], partial: bool = False
) -> None:
    """Refuse, in the cluster's words, what its served schema refuses. ``partial``: a merge
    patch of changed keys, whose absent keys are the live object's, not missing."""
    causes = [
        c
        for c in served_schema_causes(cluster, docs)
        if not partial or "is a required property" not in c.message
    ]
    if causes:
        raise OperationRefused(
            _("The cluster's schema refuses: %(causes)s")
            % {"causes": "; ".join(f"{c.field}: {c.message}" for c in causes)}
        )


def submit_vm(user: Any, tenant: Tenant, cluster: Cluster, request: VmRequest) -> Operation:
    vm_kind = cluster.vm_kind or mf.VM_INSTANCE
    if request.guest_agent:
        # Cloud-init runs once: the agent and the VM's own token go in now (a signed token
        # naming this VM, bound to it on its first post).
        token = guest_agent.creation_token(cluster.pk, tenant.namespace, request.name)
        request = replace(
            request,
            cloud_init=guest_agent.merge_cloud_init(
                request.cloud_init, guest_agent.cloud_init_snippet(token)
            ),
        )
    docs = vm_manifests(request, tenant.namespace, vm_kind)
    check_served_schema(cluster, docs)
    if target_exists(cluster, tenant, vm_kind, request.name):
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
    _check_target_unchanged(op)
    restart = op.kind == OperationKind.RESTART
    return record(
        user=user,
        tenant=op.tenant,
        cluster=op.cluster,
        # A restart runs again from its stop: its two manifests are two steps, not one apply.
        kind=OperationKind.RESTART if restart else OperationKind.RETRY,
        app_kind=op.app_kind,
        name=op.name,
        node_group=op.node_group,
        docs=op.manifests,
        gpu_model=op.gpu_model,
        gpu_count=op.gpu_count if op.kind in (OperationKind.CREATE, OperationKind.RETRY) else 0,
        params={
            **op.params,
            "retry_of": op.pk,
            # What the retried operation was: a retried start still patches, never creates.
            "retry_kind": op.params.get("retry_kind") or op.kind,
            **({"phase": "stop"} if restart else {}),
        },
        queue_until_capacity=op.queue_until_capacity,
        check_capacity=False,
    )


def _check_target_unchanged(op: Operation) -> None:
    """A retry sends the old manifests again: refuse it when its target has moved on since
    (deleted, made again, changed by a later operation), or a day-2 change whose target is no
    longer in the cluster. Raises OperationRefused in plain words."""
    later = Operation.objects.filter(
        cluster=op.cluster,
        namespace=op.namespace,
        app_kind=op.app_kind,
        name=op.name,
        node_group=op.node_group,
        pk__gt=op.pk,
        state=OperationState.SUCCEEDED,
    )
    deleted = later.filter(kind=OperationKind.DELETE) | later.filter(
        kind=OperationKind.RETRY, params__retry_kind=OperationKind.DELETE
    )
    if deleted.exists():
        raise OperationRefused(
            _(
                "%(name)s was deleted after this operation failed. Trying it again would bring "
                "it back as it was then, so it is not tried again: create a new one instead."
            )
            % {"name": op.name}
        )
    if later.exists():
        raise OperationRefused(
            _(
                "%(name)s has changed since this operation failed (a later change succeeded), "
                "so it is not tried again: make the change anew from its page."
            )
            % {"name": op.name}
        )
    kind = op.params.get("retry_kind") or op.params.get("action") or op.kind
    day2 = kind not in (OperationKind.CREATE, OperationKind.DELETE) and not (
        op.node_group and kind != OperationKind.RESIZE
    )
    if (
        day2
        and not GpuWorkload.objects.filter(
            cluster=op.cluster, tenant=op.tenant, name=op.name, node_group=op.node_group
        ).exists()
    ):
        raise OperationRefused(
            _(
                "%(name)s is no longer in the cluster, so this change is not tried again "
                "(trying it would create it anew, without its disk)."
            )
            % {"name": op.name}
        )


# --- day-2 actions on VMs, also those made outside the portal ---------------------------

VM_ACTIONS = (
    OperationKind.START,
    OperationKind.STOP,
    OperationKind.DELETE,
    OperationKind.RESTART,
)


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
    created = None
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
    elif kind == OperationKind.RESTART:
        if workload.reason != "RestartRequired":
            raise OperationRefused(_("This VM has no change waiting for a restart."))
        # Tenants may not use KubeVirt's restart subresource on Cozystack: stop, then start,
        # through the app's spec.
        docs = [
            {**base, "spec": mf.vm_power_patch(app_kind, running)["spec"]}
            for running in (False, True)
        ]
    else:
        docs = [{**base, "spec": mf.vm_power_patch(app_kind, kind == OperationKind.START)["spec"]}]
    starting = kind in (OperationKind.START, OperationKind.RESTART)
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
        params={
            "action": kind,
            **({"phase": "stop"} if kind == OperationKind.RESTART else {}),
            # The portal made it: it carries the portal's label, so the poller's cluster-wide
            # list by that label sees it go.
            **({"portal_made": True} if kind == OperationKind.DELETE and created else {}),
        },
    )


def with_monitoring(
    request: NodeGroupRequest, tenant: Tenant, cluster: Cluster
) -> NodeGroupRequest:
    """A new cluster turns on its monitoring agents and the GPU exporter's ServiceMonitor when the
    tenant has a monitoring tenant to write to (else vmagent would have nowhere to send)."""
    if not request.new_cluster_version:
        return request
    return replace(request, monitoring=bool(cluster.monitoring_for(tenant.namespace)))


def no_monitoring_warning(request: NodeGroupRequest) -> str:
    """What the form says when a new cluster will export no GPU metrics ("" when it will)."""
    if not request.new_cluster_version or request.monitoring:
        return ""
    return _(
        "This tenant has no monitoring: the new cluster is created without monitoring agents, so "
        "the portal will show no utilization, memory or power for its GPUs. A platform admin can "
        "turn monitoring on for the tenant first."
    )


def submit_node_group(
    user: Any, tenant: Tenant, cluster: Cluster, request: NodeGroupRequest, resize: bool
) -> Operation:
    request = with_monitoring(request, tenant, cluster)
    model = GpuModel.objects.get(resource_name=request.gpu_resource)
    plan = None
    if resize:
        # A merge patch of only what differs from the live group: a key sent from the form's
        # defaults (instance type, disk, roles) would roll every worker for nothing.
        plan = resize_plan(
            live_node_group(cluster, tenant, request), request, cluster.node_group_disk_field
        )
        if not plan.keys:
            raise OperationRefused(
                _("Nothing to change: this is the group as it is. Change a value first."),
                "max_replicas",
            )
    else:
        _check_new_group(cluster, tenant, request)
    docs = node_group_manifests(
        request,
        tenant.namespace,
        cluster.node_group_disk_field,
        keys=plan.keys if plan is not None else None,
    )
    # The served schema, as for a VM: a new cluster's version, the group's keys. A resize sends
    # only the changed keys (a merge patch): what it leaves out is the live group's, not missing.
    check_served_schema(cluster, docs, partial=plan is not None)
    params = request.as_params()
    if plan is not None:
        params.update(changed=list(plan.keys), rolls=plan.rolls)
        if plan.rolls:
            params["rolling_gpus"] = plan.gpu_count

    def fit_check() -> None:
        fit = group_fit_for(
            model,
            cluster.pk,
            tenant,
            request.cluster_name,
            request.group,
            request.min_replicas,
            request.gpus_per_node,
            surge_workers=plan.surge_workers if plan is not None and plan.rolls else 0,
        )
        if not fit.worker_fits:
            raise OperationRefused(fit.worker_message(), "gpus_per_node")
        if not fit.total_fits:
            raise OperationRefused(fit.total_message(), "min_replicas")

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
        # Counted at what the autoscaler may grow it to, not what it starts with; during a
        # roll, the old workers' GPUs too.
        gpu_count=max(
            request.gpus_per_node * request.workers_at_most, plan.gpu_count if plan else 0
        ),
        params=params,
        # Over the quota: said next to the maximum, since the group counts at what it may grow to.
        quota_field="max_replicas",
        name_field="group",
        # Workers are placed one by one: per worker on one server, and all of them in all.
        fit_check=fit_check,
    )


def _check_new_group(cluster: Cluster, tenant: Tenant, request: NodeGroupRequest) -> None:
    """A new group, or a new cluster, never takes the name of one that exists (the apply
    checks again in the cluster, which knows groups without GPUs too)."""
    if request.new_cluster_version:
        if GpuWorkload.objects.filter(
            cluster=cluster, tenant=tenant, app_kind=mf.KUBERNETES, name=request.cluster_name
        ).exists() or target_exists(
            cluster, tenant, mf.KUBERNETES, request.cluster_name, request.group
        ):
            raise OperationRefused(
                _("A Kubernetes cluster named %(name)s already exists: pick it above.")
                % {"name": request.cluster_name},
                "new_cluster",
            )
        return
    if request.group == mf.DEFAULT_NODE_GROUP or target_exists(
        cluster, tenant, mf.KUBERNETES, request.cluster_name, request.group
    ):
        raise OperationRefused(
            _(
                "%(name)s already has a node group named %(group)s: pick another name, or "
                "resize that group from its page."
            )
            % {"name": request.cluster_name, "group": request.group},
            "group",
        )


def cancel(user: Any, op: Operation) -> None:
    """Cancel an operation nothing has started on (submitted, never claimed by a worker). One
    conditional update: the worker's claim and the cancel never both win. Raises
    OperationRefused once the worker has it (the cluster may already have part of it)."""
    now = timezone.now()
    done = Operation.objects.filter(pk=op.pk, state=OperationState.PENDING, attempts=0).update(
        state=OperationState.CANCELLED,
        finished_at=now,
        updated_at=now,
    )
    if not done:
        raise OperationRefused(
            _("It is already being applied, or over: it can no longer be cancelled.")
        )
    audit(op, op.tenant, user.get_username(), "operation.cancel", {"operation": op.pk})


def submit_cluster_delete(user: Any, groups: list[GpuWorkload]) -> Operation:
    """Delete a whole tenant Kubernetes cluster (every node group with it), as the snapshot shows
    it. Refused while any change to it or one of its groups is in flight."""
    first = groups[0]
    tenant, name = first.tenant, first.name
    busy = Operation.objects.filter(
        cluster=first.cluster,
        namespace=tenant.namespace,
        app_kind=mf.KUBERNETES,
        name=name,
        state__in=ACTIVE_OPERATION_STATES,
    ).exists()
    if busy:
        raise OperationRefused(in_progress_message(name))
    doc = {
        "apiVersion": mf.API_VERSION,
        "kind": mf.KUBERNETES,
        "metadata": {"name": name, "namespace": tenant.namespace},
    }
    return record(
        user=user,
        tenant=tenant,
        cluster=first.cluster,
        kind=OperationKind.DELETE,
        app_kind=mf.KUBERNETES,
        name=name,
        docs=[doc],
        check_capacity=False,
        params={"action": OperationKind.DELETE, "node_groups": [g.node_group for g in groups]},
    )


def submit_node_group_delete(user: Any, workload: GpuWorkload) -> Operation:
    """Remove one node group from its cluster: a JSON merge patch with the group set to null
    (RFC 7386: null deletes), the other groups and the cluster untouched. The chart's own md0
    cannot go: Cozystack v1.1 deep-merges values.yaml's md0 into every cluster's groups, so it
    would come back at once; it can be scaled to 0 instead."""
    tenant, name, group = workload.tenant, workload.name, workload.node_group
    if group == "md0":
        raise OperationRefused(
            _(
                "md0 is the chart's default group: the platform puts it back at once if it is "
                "removed. Resize it to 0 minimum workers instead."
            )
        )
    # The whole cluster's delete is another target for the one-active constraint: not both.
    if Operation.objects.filter(
        cluster=workload.cluster,
        namespace=tenant.namespace,
        app_kind=mf.KUBERNETES,
        name=name,
        node_group="",
        state__in=ACTIVE_OPERATION_STATES,
    ).exists():
        raise OperationRefused(in_progress_message(name))
    doc = {
        "apiVersion": mf.API_VERSION,
        "kind": mf.KUBERNETES,
        "metadata": {"name": name, "namespace": tenant.namespace},
        "spec": {"nodeGroups": {group: None}},
    }
    return record(
        user=user,
        tenant=tenant,
        cluster=workload.cluster,
        kind=OperationKind.DELETE,
        app_kind=mf.KUBERNETES,
        name=name,
        node_group=group,
        docs=[doc],
        check_capacity=False,
        params={"action": OperationKind.DELETE},
    )
