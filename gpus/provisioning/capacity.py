"""Will it fit, and may the tenant have it: free GPUs in all vs on one server, and quotas, in
one set of sentences."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Sum
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState
from gpus.inventory.models import (
    GpuWorkload,
)
from gpus.inventory.selectors import free_on_servers
from gpus.provisioning.choices import (
    ACTIVE_OPERATION_STATES,
)
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


def explain_workloads(workloads: list[GpuWorkload]) -> None:
    """For VMs waiting on the scheduler: why, in plain words from the snapshot (free in all
    vs on one server), so "waiting for a free GPU" is never said when GPUs are free.
    Sets ``explanation`` and ``split_capacity`` on each workload."""
    for w in workloads:
        w.explanation, w.split_capacity = "", False
        if w.state != ResourceState.UNSCHEDULABLE or w.gpu_model is None:
            continue
        total, most = free_on_servers(w.gpu_model)
        wanted = w.gpus_per_instance
        w.split_capacity = total >= wanted
        if w.split_capacity:
            w.explanation = _(
                "%(n)d x %(model)s wanted: %(total)d free in all, but at most %(most)d on one "
                "server; it starts when one server has enough."
            ) % {"n": wanted, "model": w.gpu_model.display_name, "total": total, "most": most}
        else:
            w.explanation = _(
                "Waiting for a free GPU: %(n)d x %(model)s wanted, %(total)d free right now."
            ) % {"n": wanted, "model": w.gpu_model.display_name, "total": total}
