"""Will it fit, and may the tenant have it: free GPUs in all vs on one server, and quotas, in
one set of sentences."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, Q, QuerySet
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState
from gpus.inventory.models import GpuWorkload
from gpus.inventory.selectors import free_on_servers, served_gpu_models
from gpus.provisioning.choices import ACTIVE_OPERATION_STATES, OperationState
from gpus.provisioning.models import GpuQuota, Operation
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
            _("%(n)d x %(model)s requested: %(free)d free in all, up to %(one)d on one server.")
            % values
        )
    if requested <= free_total:
        return (
            _(
                "%(n)d x %(model)s requested: %(free)d free in all, but at most %(one)d on one "
                "server."
            )
            % values
        )
    return _("%(n)d x %(model)s requested: only %(free)d free right now.") % values


def fit_for(model: GpuModel, count: int) -> Fit:
    total, most = free_on_servers(model)
    return Fit(model, count, total, most)


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
    tenant: Tenant, model: GpuModel, exclude: tuple[int, str, str] | None = None
) -> int:
    """GPUs held (snapshot, a node group at what it may grow to) plus those of operations the
    snapshot may not show yet, without counting a target twice."""
    in_flight = operation_gpus(counted_operations(tenant=tenant, gpu_model=model))
    targets = set(in_flight)
    if exclude:
        targets.add(exclude)  # the target being changed: its new size replaces what it holds
    held = 0
    for w in GpuWorkload.objects.filter(tenant=tenant, gpu_model=model).only(
        "cluster", "name", "node_group", "gpus_per_instance", "instances", "max_instances"
    ):
        if (w.cluster_id, w.name, w.node_group) not in targets:
            held += w.gpus_at_most
    return held + sum(count for target, count in in_flight.items() if target != exclude)


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
