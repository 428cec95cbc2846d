"""Reads of the snapshot: model totals, nodes, tenants' workloads, data age. Tenant-owned rows
are fetched scoped to the user asking."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Case,
    Count,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest
from django.utils import timezone
from django.utils.timesince import timesince

from gpus.catalog.models import GpuModel
from gpus.catalog.sizing import instance_series, os_family
from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import (
    CatalogueEntry,
    Cluster,
    GpuWorkload,
    ModelInventory,
    Node,
    NodeGpu,
    NodeNameGram,
    ServedSchema,
    SyncIssue,
    TenantAllocation,
)
from gpus.tenancy.models import Membership, Tenant
from gpus.tenancy.selectors import get_tenant_for_user, tenants_for_user
from gpus.web.access import User, is_platform_admin, require_platform_admin
from gpus.web.paging import KeysetPage, PageRequest, keyset_page

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
    if not is_platform_admin(user):
        return []
    return list(SyncIssue.objects.select_related("cluster")[:limit])


def node_queryset(user: User) -> QuerySet[Node]:
    """Host nodes: platform admins only (tenants never see host names)."""
    require_platform_admin(user)
    return Node.objects.only(*NODE_LIST_COLUMNS)


def name_matches(nodes: QuerySet[Node], term: str) -> QuerySet[Node]:
    """Nodes whose name contains ``term`` (any case): ``UPPER(name) LIKE UPPER('%term%')``, the
    expression the trigram index of migration 0002 is built on."""
    return nodes.filter(name__icontains=term)


# The piece of the term whose nodes the search walks: the rarest by the table's statistics
# (ANALYZE's most common values; a piece not among them is rarer than those that are), ties
# broken by how many nodes hold it, counted up to 256 in its index range. Pieces are cut
# as the triggers of migration 0008 cut names: upper case, three characters.
RAREST_GRAM = """(
    SELECT t.gram
    FROM (SELECT DISTINCT substr(upper(%s), i, 3) AS gram
          FROM generate_series(1, length(%s) - 2) AS i) AS t
    LEFT JOIN (
        SELECT unnest(most_common_vals::text::text[]) AS gram, unnest(most_common_freqs) AS freq
        FROM pg_stats WHERE schemaname = current_schema()
        AND tablename = 'inventory_nodenamegram' AND attname = 'gram'
    ) AS s ON s.gram = t.gram
    ORDER BY coalesce(s.freq, 0),
             (SELECT count(*) FROM (SELECT 1 FROM inventory_nodenamegram g
                                    WHERE g.gram = t.gram LIMIT 256) AS p),
             t.gram
    LIMIT 1
)"""


def uses_name_grams(sort: str) -> bool:
    """Whether a name search in this sort walks the node name pieces (NodeNameGram): the name
    sort on PostgreSQL. Other sorts, and SQLite, filter the sort's own order."""
    return sort.removeprefix("-") == "name" and connection.vendor == "postgresql"


def rarest_gram(term: str) -> str:
    """The term's piece whose nodes a search walks (RAREST_GRAM), read on its own so that the
    page's query names it: the planner then sees how many nodes hold it (its statistics) and
    walks its index range in order instead of gathering and sorting a range it misjudged."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {RAREST_GRAM}", [term, term])
        return cursor.fetchone()[0] or ""


def name_gram_matches(
    nodes: QuerySet[Node], term: str, gram: str | None = None
) -> QuerySet[NodeNameGram]:
    """The matches of ``term`` among ``nodes`` as rows of NodeNameGram for the term's rarest
    piece (``gram``, or found within this query when not given): in name order, a range of its
    primary key (gram, name, node), the name compared on the index entry itself. A page reads
    the range until it holds a page of matches: its cost is the page and the nodes holding the
    piece without the whole term in between, not the fleet (for every term the form accepts:
    three characters make a piece)."""
    piece = gram if gram is not None else RawSQL(RAREST_GRAM, [term, term])  # noqa: S611
    grams = NodeNameGram.objects.filter(gram=piece, name__icontains=term)
    if nodes.query.where:  # other filters (health, model, cluster...): the node must pass them
        grams = grams.filter(node__in=nodes.order_by().values("pk"))
    return grams


def name_search_page(
    nodes: QuerySet[Node], term: str, page: PageRequest, per_page: int, descending: bool
) -> KeysetPage[Node]:
    """A page of the nodes whose name contains ``term``, by name: two queries, the term's rarest
    piece and a keyset page of ``name_gram_matches`` (the same cursor as the name sort's)."""
    grams = (
        name_gram_matches(nodes, term, rarest_gram(term))
        .select_related("node")
        .only("gram", "name", "node", *(f"node__{c}" for c in NODE_LIST_COLUMNS))
    )
    result = keyset_page(grams, ("name", "node_id"), page, per_page, descending=descending)
    return KeysetPage(
        [g.node for g in result.rows],
        result.has_previous,
        result.has_next,
        previous_cursor=result.previous_cursor,
        next_cursor=result.next_cursor,
    )


def node_page(
    nodes: QuerySet[Node],
    sort: str,
    page: PageRequest,
    per_page: int = NODES_PER_PAGE,
    term: str = "",
) -> KeysetPage[Node]:
    """One page of (filtered) nodes in the chosen order, with their GPUs per model; with
    ``term``, of the nodes whose name contains it. The same queries whatever the fleet and
    the term: two, and one more for a name search by name on PostgreSQL.

    A search by name (the default sort) on PostgreSQL walks the term's rarest name piece
    (``name_search_page``): its cost does not grow with the fleet, broad terms included. In
    other sorts the search filters the sort's order (PostgreSQL may read the trigram index of
    migration 0002 instead): it costs what the matches before the page cost. SQLite has neither
    index: it scans (embedded fleets are small).
    """
    descending = sort.startswith("-")
    if term and uses_name_grams(sort):
        result = name_search_page(nodes, term, page, per_page, descending)
    else:
        keys = NODE_SORT_KEYS.get(sort.removeprefix("-"), NODE_SORT_KEYS["name"])
        matches = name_matches(nodes, term) if term else nodes
        result = keyset_page(matches.order_by(), keys, page, per_page, descending=descending)
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


def search_matches(nodes: QuerySet[Node], term: str, sort: str) -> QuerySet[object]:
    """What a search's count counts: the rows its pages read."""
    return name_gram_matches(nodes, term) if uses_name_grams(sort) else name_matches(nodes, term)


# A name search counts its matches up to this many and then says "more than": a broad term
# ("gpu") on a fleet of 125,000 nodes would otherwise count every one of them.
SEARCH_COUNT_CAP = 1000


def cached_count(
    queryset: QuerySet[object],
    version: str,
    query: Mapping[str, object],
    what: str,
    cap: int | None = None,
) -> int:
    """A count that costs a scan once per snapshot and filter, not once per request; with
    ``cap``, it stops at ``cap + 1`` rows (more than ``cap``: the caller says so).

    The key holds the snapshot version (every cluster's last sync time) and the filter, so a
    sync, or another filter, counts afresh.
    """
    digest = hashlib.sha256(repr(sorted(query.items())).encode()).hexdigest()[:16]
    key = f"count:{what}:{version}:{digest}:{cap}"
    rows = queryset.order_by()
    count: Callable[[], int] = (rows if cap is None else rows[: cap + 1]).count
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


def get_kubernetes_cluster_for_user(user: User, namespace: str, name: str) -> list[GpuWorkload]:
    """A tenant Kubernetes cluster the snapshot knows, as its node groups; 404 if none."""
    tenant = get_tenant_for_user(user, namespace)
    groups = list(
        GpuWorkload.objects.filter(tenant=tenant, kind=WorkloadKind.NODE_GROUP, name=name)
        .select_related("cluster", "tenant", "gpu_model")
        .order_by("node_group")
    )
    if not groups:
        raise Http404("No such cluster.")
    return groups


def free_on_servers(model: GpuModel, cluster_id: int | None = None) -> tuple[int, int]:
    """(free in all, most free on one server) for a model, from the last snapshot (of one
    cluster when given)."""
    rows = NodeGpu.objects.filter(gpu_model=model, node__ready=True, node__unschedulable=False)
    if cluster_id is not None:
        rows = rows.filter(node__cluster_id=cluster_id)
    row = rows.aggregate(total=Sum("free"), most=Max("free"))
    return int(row["total"] or 0), int(row["most"] or 0)


# --- recording -----------------------------------------------------------------------


def served_instance_types() -> dict[str, int]:
    """The default cluster's instance types (name -> vCPU) as its last sync read them: one
    query (the advisor sizes from these)."""
    default = Cluster.objects.order_by(
        Case(When(last_synced_at__isnull=True, then=1), default=0), "pk"
    ).values("pk")[:1]
    rows = CatalogueEntry.objects.filter(
        kind=CatalogueEntry.Kind.INSTANCE_TYPE, cluster=Subquery(default)
    )
    return dict(rows.values_list("name", "vcpu"))


def default_cluster() -> Cluster | None:
    return (
        Cluster.objects.filter(last_synced_at__isnull=False).order_by("pk").first()
        or Cluster.objects.order_by("pk").first()
    )


def _live_context(request: HttpRequest) -> dict[str, object]:
    """What every page with live figures needs: the clusters, the one it is narrowed to
    (`?cluster=<name>`), and how old each cluster's data is."""
    clusters = list(clusters_status())
    narrowed = pick_cluster(clusters, request.GET.get("cluster"))
    return {
        "clusters": clusters,
        "narrowed": narrowed,
        "sync": sync_summary(clusters, narrowed),
        "refresh_seconds": settings.PAGE_REFRESH_SECONDS,
    }


# --- what the forms may offer: the cluster's catalogues as the last sync read them -----------


@dataclass(frozen=True)
class Catalogue:
    """Instance types, OS profiles, images, storage classes and Kubernetes versions the cluster
    serves (no cluster call: the sync's CatalogueEntry rows and the served schemas)."""

    instance_types: list[CatalogueEntry] = field(default_factory=list)
    profiles: list[CatalogueEntry] = field(default_factory=list)
    images: list[CatalogueEntry] = field(default_factory=list)
    storage_classes: list[CatalogueEntry] = field(default_factory=list)
    kubernetes_versions: list[str] = field(default_factory=list)
    kubernetes_default: str = ""

    def instance_type(self, name: str) -> CatalogueEntry | None:
        return next((t for t in self.instance_types if t.name == name), None)

    def image(self, name: str) -> CatalogueEntry | None:
        return next((i for i in self.images if i.name == name), None)

    def profile(self, name: str) -> CatalogueEntry | None:
        return next((p for p in self.profiles if p.name == name), None)

    @property
    def default_storage_class(self) -> str:
        chosen = next((c for c in self.storage_classes if c.is_default), None)
        return chosen.name if chosen else ""


def _schema_at(schema: Mapping[str, object], *path: str) -> Mapping[str, object]:
    """The schema of ``spec.<path>`` ({} when the served schema does not describe it)."""
    node: object = schema
    for key in path:
        props = node.get("properties") if isinstance(node, Mapping) else None
        node = props.get(key) if isinstance(props, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def catalogue_for(cluster: Cluster | None) -> Catalogue:
    """What the cluster offers the forms, read from the last sync (empty before the first)."""
    if cluster is None:
        return Catalogue()
    rows: dict[str, list[CatalogueEntry]] = {}
    for row in CatalogueEntry.objects.filter(cluster=cluster).order_by("kind", "name"):
        rows.setdefault(row.kind, []).append(row)
    schemas = dict(ServedSchema.objects.filter(cluster=cluster).values_list("app_kind", "schema"))
    vm_kind = cluster.vm_kind or "VMInstance"
    vm_schema = schemas.get(vm_kind) or {}
    profiles = rows.get(CatalogueEntry.Kind.PREFERENCE, [])
    # A profile the served schema's enum leaves out would fail Helm's schema check.
    allowed = _schema_at(vm_schema, "instanceProfile").get("enum")
    if isinstance(allowed, list):
        profiles = [p for p in profiles if p.name in allowed]
    images = rows.get(CatalogueEntry.Kind.IMAGE, [])
    if vm_kind == "VirtualMachine":
        # The legacy chart takes an image name from its schema's enum (it downloads the ones
        # that have no golden image).
        enum = _schema_at(vm_schema, "systemDisk", "image").get("enum")
        images = [
            CatalogueEntry(
                kind=CatalogueEntry.Kind.IMAGE, name=str(name), os_family=os_family(str(name))
            )
            for name in (enum if isinstance(enum, list) else [])
            if name
        ]
    version = _schema_at(schemas.get("Kubernetes") or {}, "version")
    versions = version.get("enum")
    return Catalogue(
        instance_types=sorted(
            rows.get(CatalogueEntry.Kind.INSTANCE_TYPE, []),
            key=lambda t: (instance_series(t.name), t.vcpu, t.memory_mib, t.name),
        ),
        profiles=profiles,
        images=images,
        storage_classes=rows.get(CatalogueEntry.Kind.STORAGE_CLASS, []),
        kubernetes_versions=[str(v) for v in versions] if isinstance(versions, list) else [],
        kubernetes_default=str(version.get("default") or ""),
    )


def most_gpus_on_one_server(gpu_model: GpuModel) -> int:
    """The most GPUs of `gpu_model` one server has, over every cluster (0 when no server of a
    single model has it): a VM's GPUs are all on one server, so no more can ever be free there.
    One index read, the (gpu_model, gpu_installed, ...) index's last entry for the model."""
    most = Node.objects.filter(gpu_model=gpu_model).aggregate(most=Max("gpu_installed"))["most"]
    return int(most or 0)
