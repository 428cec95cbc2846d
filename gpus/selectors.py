"""Reads. Everything tenant-owned is fetched here, scoped to the user asking."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.db.models import Count, F, Max, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

from .choices import ACTIVE_OPERATION_STATES, ResourceState, WorkloadKind
from .models import (
    AuditEvent,
    Cluster,
    GpuModel,
    GpuWorkload,
    Membership,
    ModelInventory,
    Node,
    NodeGpu,
    Operation,
    SyncIssue,
    Tenant,
    TenantAllocation,
)
from .paging import KeysetPage, PageRequest, keyset_page

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


def model_totals(user: User, cluster: Cluster | None = None) -> list[ModelTotals]:
    """Per GPU model, summed over clusters (or one); with what the user's tenants hold."""
    allocations = TenantAllocation.objects.filter(tenant__memberships__user=user)
    inventory = ModelInventory.objects.all()
    if cluster is not None:
        allocations = allocations.filter(cluster=cluster)
        inventory = inventory.filter(cluster=cluster)
    held: dict[int, int] = dict(
        allocations.values("gpu_model").annotate(n=Sum("allocated")).values_list("gpu_model", "n")
    )
    rows = list(
        inventory.values("gpu_model")
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


def free_by_model(cluster: Cluster | None = None) -> dict[int, int]:
    """Live free count per catalog model (from the last snapshot), over clusters or in one."""
    inventory = ModelInventory.objects.all()
    if cluster is not None:
        inventory = inventory.filter(cluster=cluster)
    return dict(
        inventory.values("gpu_model")
        .annotate(n=Sum("free"))
        .order_by()
        .values_list("gpu_model", "n")
    )


TENANTS_PER_PAGE = 50
ALLOCATION_KEY = ("namespace", "gpu_model")


def allocations_by_tenant(
    page: PageRequest, cluster: Cluster | None = None, per_page: int = TENANTS_PER_PAGE
) -> KeysetPage[dict[str, object]]:
    """For platform admins: GPUs held per tenant namespace and model, a page at a time.

    Grouped in the order of the (namespace, gpu_model) index, so a page reads its own rows
    only. Model and tenant names are looked up for the page's rows alone.
    """
    allocations = TenantAllocation.objects.all()
    if cluster is not None:
        allocations = allocations.filter(cluster=cluster)
    grouped = allocations.values(*ALLOCATION_KEY).annotate(n=Sum("allocated"))
    result = keyset_page(grouped, ALLOCATION_KEY, page, per_page)
    names = dict(
        GpuModel.objects.filter(pk__in={r["gpu_model"] for r in result.rows}).values_list(
            "pk", "display_name"
        )
    )
    tenants = dict(
        Tenant.objects.filter(namespace__in={r["namespace"] for r in result.rows}).values_list(
            "namespace", "display_name"
        )
    )
    for row in result.rows:
        row["gpu_model__display_name"] = names.get(row["gpu_model"], "")
        row["tenant__display_name"] = tenants.get(row["namespace"], "")
    return result


def clusters_status() -> QuerySet[Cluster]:
    return Cluster.objects.all()


def pick_cluster(clusters: list[Cluster], name: str | None) -> Cluster | None:
    """The cluster a page is narrowed to (`?cluster=<name>`), or None for all of them."""
    return next((c for c in clusters if c.name == name), None) if name else None


# --- data age ------------------------------------------------------------------------

# Past this many clusters the notices are summarised (with the full list one click away).
SUMMARISE_AFTER = 3


@dataclass(frozen=True)
class ClusterFreshness:
    cluster: Cluster
    state: str  # "fresh", "stale" (older than INVENTORY_STALE_SECONDS), "unreachable", "never"


@dataclass
class SyncSummary:
    """How old the live figures on a page are, per cluster and in one line."""

    clusters: list[ClusterFreshness]
    stale_after: timedelta
    unreachable: list[Cluster] = field(default_factory=list)
    stale: list[Cluster] = field(default_factory=list)
    never: list[Cluster] = field(default_factory=list)

    def __post_init__(self) -> None:
        for entry in self.clusters:
            getattr(self, entry.state, []).append(entry.cluster)

    @property
    def summarised(self) -> bool:
        return len(self.clusters) > SUMMARISE_AFTER

    @property
    def oldest(self) -> datetime | None:
        times = [c.cluster.last_synced_at for c in self.clusters if c.cluster.last_synced_at]
        return min(times, default=None)

    @property
    def newest(self) -> datetime | None:
        times = [c.cluster.last_synced_at for c in self.clusters if c.cluster.last_synced_at]
        return max(times, default=None)

    @property
    def stale_age(self) -> str:
        """The staleness threshold in words ("1 minute"), in the active language."""
        now = timezone.now()
        return timesince(now - self.stale_after, now)

    @property
    def version(self) -> str:
        """Changes whenever any shown cluster syncs: a key for caches of snapshot figures."""
        parts = [f"{c.cluster.pk}@{c.cluster.last_synced_at}" for c in self.clusters]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def sync_summary(
    clusters: list[Cluster], only: Cluster | None = None, now: datetime | None = None
) -> SyncSummary:
    now = now or timezone.now()
    stale_after = timedelta(seconds=settings.INVENTORY_STALE_SECONDS)
    entries = []
    for cluster in [only] if only else clusters:
        if cluster.unreachable_since:
            state = "unreachable"
        elif cluster.last_synced_at is None:
            state = "never"
        elif now - cluster.last_synced_at > stale_after:
            state = "stale"
        else:
            state = "fresh"
        entries.append(ClusterFreshness(cluster, state))
    return SyncSummary(entries, stale_after)


# --- host nodes ----------------------------------------------------------------------

NODES_PER_PAGE = 50
# Sort choice -> keyset (each matches an index of Node; see its Meta).
NODE_SORT_KEYS: dict[str, tuple[str, ...]] = {
    "name": ("name", "id"),
    # Clusters in registration order; names are unique per cluster (its unique index).
    "cluster": ("cluster_id", "name"),
    "health": ("health", "name", "id"),
    "installed": ("gpu_installed", "name", "id"),
    "allocated": ("gpu_allocated", "name", "id"),
    "free": ("gpu_free", "name", "id"),
}
# Only what the node list shows: no labels JSON, no sync bookkeeping.
NODE_LIST_COLUMNS = (
    "id",
    "name",
    "cluster_id",
    "health",
    "taints",
    "gpu_installed",
    "gpu_allocated",
    "gpu_free",
)


def sync_issues(user: User, limit: int = 50) -> list[SyncIssue]:
    """Objects the last syncs skipped: platform admins only (they name tenants' objects)."""
    if not user.is_staff:
        return []
    return list(SyncIssue.objects.select_related("cluster")[:limit])


def node_queryset(user: User) -> QuerySet[Node]:
    """Host nodes: platform admins only (tenants never see host names)."""
    if not user.is_staff:
        raise Http404("No such page.")
    return Node.objects.only(*NODE_LIST_COLUMNS)


def node_page(
    nodes: QuerySet[Node], sort: str, page: PageRequest, per_page: int = NODES_PER_PAGE
) -> KeysetPage[Node]:
    """One page of (filtered) nodes in the chosen order, with their GPUs per model."""
    keys = NODE_SORT_KEYS.get(sort.removeprefix("-"), NODE_SORT_KEYS["name"])
    result = keyset_page(nodes.order_by(), keys, page, per_page, descending=sort.startswith("-"))
    gpus = (
        NodeGpu.objects.filter(node__in=[n.pk for n in result.rows])
        .select_related("gpu_model")
        .only("node_id", "installed", "gpu_model__display_name")
        .order_by("gpu_model__display_name")
    )
    by_node: dict[int, list[NodeGpu]] = {}
    for gpu in gpus if result.rows else []:
        by_node.setdefault(gpu.node_id, []).append(gpu)
    for node in result.rows:
        node.gpu_list = by_node.get(node.pk, [])
    return result


def cached_count(
    queryset: QuerySet[object], version: str, query: Mapping[str, object], what: str
) -> int:
    """A count that costs a scan once per snapshot and filter, not once per request.

    The key holds the snapshot version (every cluster's last sync time) and the filter, so a
    sync, or another filter, counts afresh.
    """
    digest = hashlib.sha256(repr(sorted(query.items())).encode()).hexdigest()[:16]
    key = f"count:{what}:{version}:{digest}"
    count: Callable[[], int] = queryset.order_by().count
    return cache.get_or_set(key, count, timeout=settings.INVENTORY_STALE_SECONDS * 10)


# --- tenants' workloads --------------------------------------------------------------

WORKLOADS_PER_PAGE = 50
WORKLOAD_KEY = ("name", "node_group", "id")


def tenant_workloads(user: User, tenant: Tenant) -> QuerySet[GpuWorkload]:
    """The tenant's GPU VMs and node groups; the tenant must be one the user may see."""
    get_tenant_for_user(user, tenant.namespace)
    return GpuWorkload.objects.filter(tenant=tenant).select_related("gpu_model")


def tenant_workload_page(
    user: User,
    tenant: Tenant,
    page: PageRequest,
    cluster: Cluster | None = None,
    per_page: int = WORKLOADS_PER_PAGE,
) -> KeysetPage[GpuWorkload]:
    """One page of the tenant's workloads (in one cluster or all), by name."""
    workloads = tenant_workloads(user, tenant)
    if cluster is not None:
        workloads = workloads.filter(cluster=cluster)
    return keyset_page(workloads, WORKLOAD_KEY, page, per_page)


# --- operations ------------------------------------------------------------------------


def can_operate(user: User, tenant: Tenant) -> bool:
    """Operators of the tenant and platform admins may change things; viewers only look."""
    if not user.is_authenticated:
        return False
    if user.is_staff:
        return True
    membership = membership_of(user, tenant)
    return bool(membership and membership.can_operate)


def tenant_operations(user: User, tenant: Tenant) -> QuerySet[Operation]:
    """The tenant's operations; ``tenant`` comes from ``get_tenant_for_user`` (already checked)."""
    return Operation.objects.filter(tenant=tenant).select_related("gpu_model", "cluster")


def get_operation_for_user(user: User, namespace: str, pk: int) -> Operation:
    """An operation of a tenant the user may see, or 404 (never 403)."""
    tenant = get_tenant_for_user(user, namespace)
    op = (
        Operation.objects.filter(tenant=tenant, pk=pk)
        .select_related("gpu_model", "cluster", "tenant")
        .first()
    )
    if op is None:
        raise Http404("No such operation.")
    return op


def operations_in_flight(user: User, tenant: Tenant) -> QuerySet[Operation]:
    """Active operations, and those finished after their cluster's last sync: the snapshot does
    not show their result yet, so the page shows the operation instead (DESIGN rule 8)."""
    return tenant_operations(user, tenant).filter(
        Q(state__in=ACTIVE_OPERATION_STATES)
        | Q(finished_at__gt=F("cluster__last_synced_at"))
        | Q(finished_at__isnull=False, cluster__last_synced_at__isnull=True)
    )


@dataclass(frozen=True)
class ServedModel:
    gpu_model: GpuModel
    free_total: int
    free_max_one: int


def served_gpu_models() -> list[ServedModel]:
    """Models the cluster serves (some node advertises them), with live free counts."""
    rows = (
        NodeGpu.objects.filter(installed__gt=0)
        .values("gpu_model")
        .annotate(
            free_total=Sum("free", filter=Q(node__ready=True, node__unschedulable=False)),
            free_max_one=Max("free", filter=Q(node__ready=True, node__unschedulable=False)),
        )
        .order_by()
    )
    models = GpuModel.objects.in_bulk([r["gpu_model"] for r in rows])
    served = [
        ServedModel(models[r["gpu_model"]], r["free_total"] or 0, r["free_max_one"] or 0)
        for r in rows
    ]
    return sorted(
        served,
        key=lambda s: (not s.gpu_model.offered, s.gpu_model.sort_order, s.gpu_model.display_name),
    )


def explain_workloads(workloads: list[GpuWorkload]) -> None:
    """For VMs waiting on the scheduler: why, in plain words from the snapshot (free in all
    vs on one server), so "waiting for a free GPU" is never said when GPUs are free.
    Sets ``explanation`` and ``split_capacity`` on each workload."""
    from .provisioning import free_on_servers

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


def get_vm_for_user(user: User, namespace: str, name: str) -> GpuWorkload:
    """A GPU VM of a tenant the user may see, by name as the snapshot shows it; else 404."""
    tenant = get_tenant_for_user(user, namespace)
    vm = (
        GpuWorkload.objects.filter(tenant=tenant, kind=WorkloadKind.VM, name=name)
        .select_related("cluster", "tenant", "gpu_model")
        .first()
    )
    if vm is None:
        raise Http404("No such VM.")
    return vm


# --- detail pages ----------------------------------------------------------------------


TENANT_KEY = ("namespace",)  # unique: its index is the keyset


def tenants_overview(
    user: User, page: PageRequest, per_page: int = TENANTS_PER_PAGE
) -> KeysetPage[Tenant]:
    """A page of the tenants a user may see, with member, workload and held-GPU counts.

    One query: counts are per-row subqueries (no GROUP BY over every tenant), so the page is a
    range of the namespace index whatever the number of tenants.
    """
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
    members = (
        Membership.objects.filter(tenant=OuterRef("pk"))
        .values("tenant")
        .annotate(n=Count("pk"))
        .values("n")
    )
    tenants = tenants_for_user(user).annotate(
        member_count=Coalesce(Subquery(members), 0),
        gpus_held=Coalesce(Subquery(held), 0),
        workload_count=Coalesce(Subquery(workloads), 0),
    )
    return keyset_page(tenants, TENANT_KEY, page, per_page)


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
    node = (
        node_queryset(user)
        .defer(None)  # the detail page shows every column, labels and conditions included
        .select_related("cluster")
        .prefetch_related(Prefetch("gpus", queryset=NodeGpu.objects.select_related("gpu_model")))
        .filter(pk=pk)
        .first()
    )
    if node is None:
        raise Http404("No such node.")
    return node


def node_holder_tenants(node: Node) -> dict[str, Tenant]:
    """The tenants (by namespace) holding GPUs on a node, for links."""
    namespaces = {str(h.get("namespace", "")) for h in node.holders}
    return {t.namespace: t for t in Tenant.objects.filter(namespace__in=namespaces)}


def get_tenant_workload(user: User, tenant: Tenant, pk: int) -> GpuWorkload:
    """One of the tenant's GPU VMs or node groups; another tenant's is a 404."""
    workload = tenant_workloads(user, tenant).select_related("cluster").filter(pk=pk).first()
    if workload is None:
        raise Http404("No such workload.")
    return workload


def tenant_kubernetes_clusters(tenant: Tenant) -> list[str]:
    """Names of the tenant's Kubernetes clusters the snapshot knows (from their node groups)."""
    return sorted(
        set(
            GpuWorkload.objects.filter(tenant=tenant, kind=WorkloadKind.NODE_GROUP).values_list(
                "name", flat=True
            )
        )
    )


def get_node_group_for_user(user: User, namespace: str, name: str, group: str) -> GpuWorkload:
    tenant = get_tenant_for_user(user, namespace)
    row = (
        GpuWorkload.objects.filter(
            tenant=tenant, kind=WorkloadKind.NODE_GROUP, name=name, node_group=group
        )
        .select_related("cluster", "gpu_model")
        .first()
    )
    if row is None:
        raise Http404("No such node group.")
    return row


def audit_events(user: User) -> QuerySet[AuditEvent]:
    """Every audit event, newest first: platform admins only (tenants see their operations)."""
    if not user.is_staff:
        raise Http404("No such page.")
    return AuditEvent.objects.select_related("tenant", "operation").order_by("-created_at", "-pk")
