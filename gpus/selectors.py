"""Reads. Everything tenant-owned is fetched here, scoped to the user asking."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Prefetch, QuerySet, Sum
from django.http import Http404

from .models import (
    Cluster,
    GpuModel,
    GpuWorkload,
    Membership,
    ModelInventory,
    Node,
    NodeGpu,
    SyncIssue,
    Tenant,
    TenantAllocation,
)

User = AbstractBaseUser | AnonymousUser


def catalog_models() -> QuerySet[GpuModel]:
    return GpuModel.objects.all()


def offered_models() -> QuerySet[GpuModel]:
    return GpuModel.objects.filter(offered=True)


def tenants_for_user(user: User) -> QuerySet[Tenant]:
    """The tenants a user belongs to. Platform admins see every tenant."""
    if not user.is_authenticated:
        return Tenant.objects.none()
    if user.is_staff:
        return Tenant.objects.all()
    return Tenant.objects.filter(memberships__user=user)


def get_tenant_for_user(user: User, namespace: str) -> Tenant:
    """A tenant the user may see, or 404: never a 403 that would confirm the tenant exists."""
    tenant = tenants_for_user(user).filter(namespace=namespace).first()
    if tenant is None:
        raise Http404("No such tenant.")
    return tenant


def memberships_of(tenant: Tenant) -> QuerySet[Membership]:
    return tenant.memberships.select_related("user").order_by("user__username")


def membership_of(user: User, tenant: Tenant) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, tenant=tenant).first()


# --- inventory -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelTotals:
    gpu_model: GpuModel
    installed: int
    allocated: int
    free: int
    unavailable: int
    held_by_me: int = 0

    def percent(self, part: int) -> float:
        return round(100.0 * part / self.installed, 1) if self.installed else 0.0

    @property
    def allocated_pct(self) -> float:
        return self.percent(self.allocated)

    @property
    def free_pct(self) -> float:
        return self.percent(self.free)

    @property
    def unavailable_pct(self) -> float:
        return self.percent(self.unavailable)


def model_totals(user: User) -> list[ModelTotals]:
    """Per GPU model, summed over clusters; with what the user's tenants hold."""
    held: dict[int, int] = dict(
        TenantAllocation.objects.filter(tenant__memberships__user=user)
        .values("gpu_model")
        .annotate(n=Sum("allocated"))
        .values_list("gpu_model", "n")
    )
    rows = list(
        ModelInventory.objects.values("gpu_model")
        .annotate(
            installed_sum=Sum("installed"),
            allocated_sum=Sum("allocated"),
            free_sum=Sum("free"),
            unavailable_sum=Sum("unavailable"),
        )
        .order_by()
    )
    models = GpuModel.objects.in_bulk([r["gpu_model"] for r in rows] + list(held))
    totals = [
        ModelTotals(
            models[r["gpu_model"]],
            r["installed_sum"],
            r["allocated_sum"],
            r["free_sum"],
            r["unavailable_sum"],
            held.get(r["gpu_model"], 0),
        )
        for r in rows
    ]
    known = {t.gpu_model.pk for t in totals}
    # A tenant may hold a model no node advertises any more: still show it.
    totals += [ModelTotals(models[pk], 0, 0, 0, 0, n) for pk, n in held.items() if pk not in known]
    return sorted(
        totals,
        key=lambda t: (not t.gpu_model.offered, t.gpu_model.sort_order, t.gpu_model.display_name),
    )


def free_by_model() -> dict[int, int]:
    """Live free count per catalog model (from the last snapshot)."""
    return dict(
        ModelInventory.objects.values("gpu_model")
        .annotate(n=Sum("free"))
        .order_by()
        .values_list("gpu_model", "n")
    )


def allocations_by_tenant() -> list[dict[str, object]]:
    """For platform admins: GPUs held per tenant namespace and model."""
    return list(
        TenantAllocation.objects.values(
            "namespace", "tenant__display_name", "gpu_model__display_name"
        )
        .annotate(n=Sum("allocated"))
        .order_by("namespace", "gpu_model__display_name")
    )


def clusters_status() -> QuerySet[Cluster]:
    return Cluster.objects.all()


def sync_issues(user: User, limit: int = 50) -> list[SyncIssue]:
    """Objects the last syncs skipped: platform admins only (they name tenants' objects)."""
    if not user.is_staff:
        return []
    return list(SyncIssue.objects.select_related("cluster")[:limit])


def node_queryset(user: User) -> QuerySet[Node]:
    """Host nodes: platform admins only (tenants never see host names)."""
    if not user.is_staff:
        raise Http404("No such page.")
    return Node.objects.select_related("cluster").prefetch_related(
        Prefetch("gpus", queryset=NodeGpu.objects.select_related("gpu_model"))
    )


def tenant_workloads(user: User, tenant: Tenant) -> QuerySet[GpuWorkload]:
    """The tenant's GPU VMs and node groups; the tenant must be one the user may see."""
    get_tenant_for_user(user, tenant.namespace)
    return GpuWorkload.objects.filter(tenant=tenant).select_related("gpu_model", "cluster")
