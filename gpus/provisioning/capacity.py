"""Will it fit, and may the tenant have it: free GPUs in all vs on one server, and quotas, in
one set of sentences."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from django.db.models import F, Q, QuerySet, Sum
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import ClusterQuota, GpuWorkload
from gpus.inventory.selectors import free_on_servers, served_gpu_models
from gpus.kube.apps import (
    DEFAULT_NODE_GROUP_DISK,
    ROLLING_KEYS,
    V11_CHART_WORKERS,
    NodeGroupRequest,
    changed_group_keys,
    requested_group,
)
from gpus.provisioning.choices import ACTIVE_OPERATION_STATES, OperationState
from gpus.provisioning.models import GpuQuota, Operation
from gpus.provisioning.selectors import last_node_group_params
from gpus.tenancy.models import Tenant

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
        return capacity_sentence(
            self.model.display_name, self.requested, self.free_total, self.free_max_one
        )


def capacity_sentence(model: str, requested: int, free_total: int, free_max_one: int) -> str:
    """The one sentence for "will it fit": free in all vs the most free on one server (a VM's
    GPUs must all be on one server). Used by the form, the refusal, My GPUs and operations."""
    values = {"n": requested, "model": model, "free": free_total, "one": free_max_one}
    if requested <= free_max_one:
        return (
            _("%(n)d × %(model)s requested: %(free)d free in all, up to %(one)d on one server.")
            % values
        )
    if requested <= free_total:
        return (
            _(
                "%(n)d × %(model)s requested: %(free)d free in all, but at most %(one)d on one "
                "server."
            )
            % values
        )
    return _("%(n)d × %(model)s requested: only %(free)d free right now.") % values


# (tenant, name, node group): one target on one cluster.
Target = tuple[int, str, str]


def fit_for(
    model: GpuModel, count: int, cluster_id: int | None = None, target: Target | None = None
) -> Fit:
    """Free GPUs from the snapshot, less those that operations in flight on the cluster will
    take (the snapshot does not show them yet): 20 creates at once with 2 free fit 2 times."""
    total, most = free_on_servers(model, cluster_id)
    if cluster_id is not None:
        total = max(total - reserved_gpus(cluster_id, model, target), 0)
        # Where the reserved GPUs will land is not known: no server has more than is left.
        most = min(most, total)
    return Fit(model, count, total, most)


def _gpus_at_start(node_group: str, count: int, params: dict[str, Any]) -> int:
    """What an operation's target takes once it runs: a VM its GPUs; a node group the workers
    it starts with times GPUs per worker (the autoscaler's later growth is not taken yet)."""
    if not node_group:
        return count
    if params.get("rolling_gpus"):  # a roll: the old workers stay until the new ones run
        return int(params["rolling_gpus"])
    workers = max(int(params.get("min_replicas") or 0), V11_CHART_WORKERS)
    return int(params.get("gpus_per_node") or 0) * workers


def reserved_gpus(cluster_id: int, model: GpuModel, exclude: Target | None = None) -> int:
    """GPUs of one model that operations in flight on a cluster will take beyond what the
    snapshot shows their targets holding (one count per target: its active operation, else
    its last one that succeeded since the snapshot)."""
    rows = (
        counted_operations(cluster_id=cluster_id, gpu_model=model)
        # One the scheduler cannot place (waiting for capacity) takes no free GPU: it waits
        # precisely because none fits it, and must not hold back what does fit.
        .exclude(state=OperationState.QUEUED)
        .exclude(unschedulable_since__isnull=False, state__in=ACTIVE_OPERATION_STATES)
        .order_by("finished_at", "pk")
        .values_list("tenant_id", "name", "node_group", "state", "gpu_count", "params")
    )
    wanted: dict[Target, int] = {}
    active: dict[Target, int] = {}
    for tenant_id, name, group, state, count, params in rows:
        into = active if state in ACTIVE_OPERATION_STATES else wanted
        into[(tenant_id, name, group)] = _gpus_at_start(group, count, params or {})
    wanted |= active
    if exclude is not None:
        wanted.pop(exclude, None)
    if not wanted:
        return 0
    held = {
        (t, n, g): h
        for t, n, g, h in GpuWorkload.objects.filter(
            cluster_id=cluster_id, gpu_model=model, name__in={n for _, n, _ in wanted}
        ).values_list("tenant_id", "name", "node_group", "gpus_held")
    }
    return sum(max(gpus - held.get(target, 0), 0) for target, gpus in wanted.items())


@dataclass(frozen=True)
class GroupFit:
    """Will a node group's workers fit: each worker's GPUs on one server, and all the workers
    it starts with among the free GPUs (less what it holds already, for a resize)."""

    model: GpuModel
    workers: int
    per_worker: int
    held: int
    free_total: int
    free_max_one: int

    @property
    def needed(self) -> int:
        return max(self.workers * self.per_worker - self.held, 0)

    @property
    def worker_fits(self) -> bool:
        return self.needed == 0 or self.per_worker <= self.free_max_one

    @property
    def total_fits(self) -> bool:
        return self.needed <= self.free_total

    @property
    def fits(self) -> bool:
        return self.worker_fits and self.total_fits

    def _values(self) -> dict[str, object]:
        return {
            "workers": self.workers,
            "per": self.per_worker,
            "model": self.model.display_name,
            "need": self.needed,
            "free": self.free_total,
            "one": self.free_max_one,
        }

    def worker_message(self) -> str:
        return (
            _(
                "%(per)d × %(model)s per worker, but at most %(one)d free on one server (a "
                "worker's GPUs are all on one server)."
            )
            % self._values()
        )

    def total_message(self) -> str:
        return (
            _(
                "%(workers)d workers × %(per)d %(model)s need %(need)d GPUs: only %(free)d free "
                "right now."
            )
            % self._values()
        )

    def message(self) -> str:
        if not self.worker_fits:
            return self.worker_message()
        if not self.total_fits:
            return self.total_message()
        return (
            _(
                "%(workers)d workers × %(per)d %(model)s: %(need)d more GPUs needed, %(free)d "
                "free in all, up to %(one)d on one server."
            )
            % self._values()
        )


def group_fit_for(
    model: GpuModel,
    cluster_id: int,
    tenant: Tenant,
    cluster_name: str,
    group: str,
    min_replicas: int,
    gpus_per_node: int,
    surge_workers: int = 0,
) -> GroupFit:
    """``surge_workers`` (a resize that rolls the workers): that many new workers come up
    beside the old ones, which hold their GPUs until then, so none of those count as free."""
    target = (tenant.pk, cluster_name, group)
    fit = fit_for(model, 0, cluster_id, target)
    held = GpuWorkload.objects.filter(
        cluster_id=cluster_id, tenant=tenant, name=cluster_name, node_group=group, gpu_model=model
    ).aggregate(held=Sum("gpus_held"))["held"]
    return GroupFit(
        model,
        workers=surge_workers or max(min_replicas, V11_CHART_WORKERS),
        per_worker=gpus_per_node,
        held=0 if surge_workers else int(held or 0),
        free_total=fit.free_total,
        free_max_one=fit.free_max_one,
    )


@dataclass(frozen=True)
class ResizePlan:
    """What a resize sends and what it costs: only the keys that differ from the live group;
    when one of them is in the worker template, every worker is replaced."""

    keys: tuple[str, ...]
    rolls: bool
    surge_workers: int  # new workers beside the old ones at most (v1.1: maxSurge = maxReplicas)
    surge_gpus: int
    held: int  # GPUs the old workers hold until the new ones run
    model_name: str

    @property
    def gpu_count(self) -> int:
        """What the group may hold at once while the resize runs (quota and reservations)."""
        return self.held + self.surge_gpus if self.rolls else 0

    def roll_warning(self) -> str:
        if not self.rolls:
            return ""
        return _(
            "Every worker is replaced (a new worker template); needs up to %(n)d spare "
            "%(model)s while it runs, and the pods on this group are evicted as their workers go."
        ) % {"n": self.surge_gpus, "model": self.model_name}


def live_group(workload: GpuWorkload, disk_field: str) -> dict[str, Any]:
    """The group as the snapshot read it, in the chart's keys (those the snapshot says)."""
    spec = workload.group_spec or {}
    live: dict[str, Any] = {"maxReplicas": spec.get("max_replicas", workload.max_instances)}
    if "min_replicas" in spec:
        live["minReplicas"] = spec["min_replicas"]
    if "instance_type" in spec:
        live["instanceType"] = spec["instance_type"]
    if spec.get("disk"):
        live[disk_field] = spec["disk"]
    if "roles" in spec:
        live["roles"] = list(spec["roles"])
    if "gpus" in spec:
        gpus = list(spec["gpus"])
    else:
        name = workload.gpu_model.resource_name if workload.gpu_model else ""
        gpus = [name] * workload.gpus_per_instance if name else []
    live["gpus"] = [{"name": g} for g in gpus]
    return live


def gib(quantity: str) -> int | None:
    """ "100Gi" -> 100, "1Ti" -> 1024; None for what the form cannot say in GiB."""
    match = re.fullmatch(r"(\d+)(Gi|Ti)", quantity or "")
    if not match:
        return None
    return int(match.group(1)) * (1024 if match.group(2) == "Ti" else 1)


def resize_initial(tenant: Tenant, existing: GpuWorkload) -> dict[str, Any]:
    """The group as it is: the snapshot's spec (its real maximum, minimum, instance type, disk
    and roles), else the last change the portal made to it, so a resize changes only what the
    person edits."""
    asked = last_node_group_params(tenant, existing.name, existing.node_group)
    spec = existing.group_spec or {}
    high = max(spec.get("max_replicas", existing.max_instances), 1)
    low = spec.get("min_replicas", asked.get("min_replicas", existing.instances))
    initial = {
        "cluster_name": existing.name,
        "group": existing.node_group,
        "min_replicas": min(low, high),
        "max_replicas": high,
        "gpu_model": existing.gpu_model.resource_name if existing.gpu_model else "",
        "gpus_per_node": existing.gpus_per_instance or 1,
    }
    instance_type = spec.get("instance_type") or asked.get("instance_type")
    if instance_type:
        initial["instance_type"] = instance_type
    disk = gib(spec.get("disk", "")) or asked.get("disk_size_gi")
    if disk:
        initial["disk_size_gi"] = disk
    roles = spec["roles"] if "roles" in spec else asked.get("roles")
    if roles is not None:
        initial["ingress"] = "ingress-nginx" in roles
    return initial


def with_other_roles(request: NodeGroupRequest, existing: GpuWorkload) -> NodeGroupRequest:
    """A resize asks only about ingress-nginx: the group's other roles are kept."""
    other = [r for r in (existing.group_spec or {}).get("roles", []) if r not in request.roles]
    other = [r for r in other if r != "ingress-nginx"]
    return replace(request, roles=(*request.roles, *other))


def live_node_group(cluster: Any, tenant: Tenant, request: NodeGroupRequest) -> GpuWorkload | None:
    """The snapshot's row of the group a resize changes (None before the snapshot has it)."""
    return (
        GpuWorkload.objects.filter(
            cluster=cluster,
            tenant=tenant,
            kind=WorkloadKind.NODE_GROUP,
            name=request.cluster_name,
            node_group=request.group,
        )
        .select_related("gpu_model")
        .first()
    )


def resize_plan(
    workload: GpuWorkload | None, request: NodeGroupRequest, disk_field: str
) -> ResizePlan:
    """Compare the form's group with the live one. The form never edits ``resources``: it is
    never sent. A group the snapshot does not have yet: every key, counted as a roll."""
    disk_field = disk_field or DEFAULT_NODE_GROUP_DISK
    wanted = requested_group(request, disk_field)
    wanted.pop("resources")
    live = live_group(workload, disk_field) if workload is not None else {}
    keys = tuple(changed_group_keys(wanted, live))
    rolls = bool(ROLLING_KEYS & set(keys))
    model = GpuModel.objects.filter(resource_name=request.gpu_resource).first()
    same_model = workload is not None and workload.gpu_model_id == (model.pk if model else None)
    return ResizePlan(
        keys=keys,
        rolls=rolls,
        surge_workers=request.workers_at_most,
        surge_gpus=request.gpus_per_node * request.workers_at_most,
        # Quotas and free GPUs are per model: the old workers' count only if it is the same.
        held=int(workload.gpus_held or 0) if same_model else 0,
        model_name=model.display_name if model else request.gpu_resource,
    )


def counted_operations(**filters: object) -> QuerySet[Operation]:
    """Operations whose GPUs the snapshot may not show yet: the active ones, and those that
    succeeded after the cluster's last snapshot was read (until the next sync shows them)."""
    unsynced = Q(state=OperationState.SUCCEEDED, gpu_count__gt=0) & (
        Q(cluster__last_synced_at__isnull=True) | Q(finished_at__gte=F("cluster__last_synced_at"))
    )
    return Operation.objects.filter(Q(state__in=ACTIVE_OPERATION_STATES) | unsynced, **filters)


def operation_gpus(operations: QuerySet[Operation]) -> dict[tuple[int, str, str], int]:
    """GPUs per target: the active operation's, else the last succeeded one's."""
    by_target: dict[tuple[int, str, str], int] = {}
    rows = operations.order_by("finished_at", "pk").values_list(
        "cluster_id", "name", "node_group", "state", "gpu_count"
    )
    active = {}
    for cluster_id, name, group, state, count in rows:
        target = (cluster_id, name, group)
        if state in ACTIVE_OPERATION_STATES:
            active[target] = count
        else:
            by_target[target] = count
    return {**by_target, **active}


def gpus_counted(
    tenant: Tenant,
    model: GpuModel,
    exclude: tuple[int, str, str] | None = None,
    cluster_id: int | None = None,
) -> int:
    """GPUs held (snapshot, a node group at what it may grow to) plus those of operations the
    snapshot may not show yet, without counting a target twice (on one cluster, or all)."""
    on = {"cluster_id": cluster_id} if cluster_id is not None else {}
    in_flight = operation_gpus(counted_operations(tenant=tenant, gpu_model=model, **on))
    targets = set(in_flight)
    if exclude:
        targets.add(exclude)  # the target being changed: its new size replaces what it holds
    held = 0
    for w in GpuWorkload.objects.filter(tenant=tenant, gpu_model=model, **on).only(
        "cluster", "name", "node_group", "gpus_per_instance", "instances", "max_instances"
    ):
        if (w.cluster_id, w.name, w.node_group) not in targets:
            held += w.gpus_at_most
    return held + sum(count for target, count in in_flight.items() if target != exclude)


@dataclass(frozen=True)
class QuotaRoom:
    """One quota that applies to a tenant and model: the portal's, or the tenant namespace's
    own ResourceQuota on a cluster (``cluster_quota`` names it); what counts against it; what
    is left."""

    model: GpuModel
    limit: int
    counted: int
    cluster_quota: str = ""

    @property
    def left(self) -> int:
        return max(self.limit - self.counted, 0)

    def message(self) -> str:
        if not self.cluster_quota:
            return quota_message(self.model, self.left)
        values = {"n": self.left, "model": self.model.display_name, "quota": self.cluster_quota}
        if self.left == 0:
            return _("The cluster's quota %(quota)s allows no more %(model)s.") % values
        return (
            ngettext(
                "The cluster's quota %(quota)s allows %(n)d more %(model)s.",
                "The cluster's quota %(quota)s allows %(n)d more %(model)s.",
                self.left,
            )
            % values
        )


def quota_rooms(
    tenant: Tenant,
    model: GpuModel,
    exclude: tuple[int, str, str] | None = None,
    cluster_id: int | None = None,
) -> list[QuotaRoom]:
    """Every quota on this tenant and model: the portal's (counted on every cluster) and the
    cluster's own ResourceQuotas (each counted on its cluster; on one cluster only when
    ``cluster_id`` says which the request goes to)."""
    rooms = []
    limit = (
        GpuQuota.objects.filter(tenant=tenant, gpu_model=model)
        .values_list("limit", flat=True)
        .first()
    )
    if limit is not None:
        rooms.append(QuotaRoom(model, limit, gpus_counted(tenant, model, exclude)))
    cluster_quotas = ClusterQuota.objects.filter(tenant=tenant, gpu_model=model)
    if cluster_id is not None:
        cluster_quotas = cluster_quotas.filter(cluster_id=cluster_id)
    counted: dict[int, int] = {}
    for q in cluster_quotas.order_by("cluster_id", "hard", "name"):
        if q.cluster_id not in counted:
            counted[q.cluster_id] = gpus_counted(tenant, model, exclude, q.cluster_id)
        rooms.append(QuotaRoom(model, q.hard, counted[q.cluster_id], q.name))
    return rooms


def quota_room(
    tenant: Tenant,
    model: GpuModel,
    exclude: tuple[int, str, str] | None = None,
    cluster_id: int | None = None,
) -> QuotaRoom | None:
    """The quota that binds (the least left; the portal's on a tie), None without a quota."""
    rooms = quota_rooms(tenant, model, exclude, cluster_id)
    return min(rooms, key=lambda r: (r.left, bool(r.cluster_quota))) if rooms else None


def quota_left(
    tenant: Tenant,
    model: GpuModel,
    exclude: tuple[int, str, str] | None = None,
    cluster_id: int | None = None,
) -> int | None:
    room = quota_room(tenant, model, exclude, cluster_id)
    return room.left if room is not None else None


def quota_message(model: GpuModel, left: int) -> str:
    if left == 0:
        return _("Your quota allows no more %(model)s.") % {"model": model.display_name}
    return ngettext(
        "Your quota allows %(n)d more %(model)s.",
        "Your quota allows %(n)d more %(model)s.",
        left,
    ) % {"n": left, "model": model.display_name}


def explain_workloads(workloads: list[GpuWorkload]) -> None:
    """For VMs waiting on the scheduler: why, in plain words from the snapshot (free in all
    vs on one server), so "waiting for a free GPU" is never said when GPUs are free.
    Sets ``explanation`` and ``split_capacity`` (enough free in all, not on one server)."""
    for w in workloads:
        w.explanation, w.split_capacity = "", False
        if w.state != ResourceState.UNSCHEDULABLE or w.gpu_model is None:
            continue
        total, most = free_on_servers(w.gpu_model)
        wanted = w.gpus_per_instance
        w.split_capacity = most < wanted <= total
        w.explanation = capacity_sentence(w.gpu_model.display_name, wanted, total, most)


def gpu_model_choices() -> list[tuple[str, str]]:
    """The GPU model choices of the VM and node-group forms, with what is free now."""
    return [
        (
            s.gpu_model.resource_name,
            _("%(model)s — %(free)d free, at most %(one)d on one server")
            % {"model": s.gpu_model.display_name, "free": s.free_total, "one": s.free_max_one},
        )
        for s in served_gpu_models()
    ]
