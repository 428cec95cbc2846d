"""Reads. Everything tenant-owned is fetched here, scoped to the user asking."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
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


# --- detail pages ----------------------------------------------------------------------


def tenants_overview(user: User) -> QuerySet[Tenant]:
    """The tenants a user may see, with member, workload and held-GPU counts (one query)."""
    held = (
        TenantAllocation.objects.filter(tenant=OuterRef("pk"))
        .values("tenant")
        .annotate(n=Sum("allocated"))
        .values("n")
    )
    workloads = (
        GpuWorkload.objects.filter(tenant=OuterRef("pk"))
        .values("tenant")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        tenants_for_user(user)
        .annotate(
            member_count=Count("memberships", distinct=True),
            gpus_held=Coalesce(Subquery(held), 0),
            workload_count=Coalesce(Subquery(workloads), 0),
        )
        .order_by("namespace")
    )


def tenant_gpus_held(tenant: Tenant) -> list[dict[str, object]]:
    """GPUs the tenant's pods hold per model, over all clusters."""
    return list(
        TenantAllocation.objects.filter(tenant=tenant)
        .values("gpu_model__display_name", "gpu_model__resource_name")
        .annotate(n=Sum("allocated"))
        .order_by("gpu_model__display_name")
    )


def get_node_for_user(user: User, pk: int) -> Node:
    """One host node with its GPUs: platform admins only, like the node list."""
    node = node_queryset(user).filter(pk=pk).first()
    if node is None:
        raise Http404("No such node.")
    return node


def node_holder_tenants(node: Node) -> dict[str, Tenant]:
    """The tenants (by namespace) holding GPUs on a node, for links."""
    namespaces = {str(h.get("namespace", "")) for h in node.holders}
    return {t.namespace: t for t in Tenant.objects.filter(namespace__in=namespaces)}


def get_tenant_workload(user: User, tenant: Tenant, pk: int) -> GpuWorkload:
    """One of the tenant's GPU VMs or node groups; another tenant's is a 404."""
    workload = tenant_workloads(user, tenant).filter(pk=pk).first()
    if workload is None:
        raise Http404("No such workload.")
    return workload
