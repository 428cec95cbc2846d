"""Reads of capacity: the admin page's cards, history, forecast and tables (a fixed number of
queries whatever the fleet size), a tenant's headroom, its waitlist and notifications."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import F, FilteredRelation, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, Greatest, TruncDay
from django.http import Http404
from django.utils import timezone

from gpus.capacity.forecast import WINDOW_DAYS, Exhaustion, days_to_exhaustion
from gpus.capacity.models import (
    ROLLUP_FIELDS,
    Bucket,
    CapacityRollup,
    CapacitySample,
    Notification,
    RefusedRequest,
    TenantUsage,
    WaitlistEntry,
)
from gpus.catalog.models import GpuModel
from gpus.inventory.models import (
    Cluster,
    ClusterQuota,
    ModelInventory,
)
from gpus.provisioning.capacity import QuotaRoom, quota_rooms
from gpus.provisioning.choices import ACTIVE_OPERATION_STATES, OperationState
from gpus.provisioning.models import GpuQuota, Operation
from gpus.tenancy.models import Tenant
from gpus.tenancy.selectors import tenant_id_of
from gpus.utilization.models import Bucket as UtilBucket
from gpus.utilization.models import GroupRollup, Scope
from gpus.web.access import User
from gpus.web.paging import KeysetPage, PageRequest, keyset_page

# The history chart's ranges (days) and the rollup each reads (at most ~2,000 points a line).
RANGES = {
    "7": (7, Bucket.HOUR),
    "30": (30, Bucket.HOUR),
    "90": (90, Bucket.DAY),
    "365": (365, Bucket.DAY),
}
NEAR_QUOTA = 0.8  # a tenant holding this share of its quota is "near"
TABLE_ROWS = 20


@dataclass
class ModelCard:
    model_id: int
    name: str
    installed: int = 0
    allocated: int = 0
    allocated_vms: int = 0
    allocated_node_groups: int = 0
    free: int = 0
    free_max_one: int = 0
    unavailable: int = 0
    queued: int = 0
    refused_24h: int = 0
    reporting: int = 0  # allocated GPUs that report telemetry
    busy_pct: float | None = None  # mean busy % of those
    forecast: Exhaustion = field(default_factory=lambda: Exhaustion(enough_history=False))

    @property
    def demand(self) -> int:
        return self.queued + self.refused_24h

    @property
    def unmet(self) -> bool:
        return self.demand > 0


def model_cards(now: dt.datetime | None = None) -> list[ModelCard]:
    """One card per GPU model with GPUs installed or asked for: 6 queries, none reading a row
    per GPU, server or workload (how busy the GPUs are comes with each cluster's latest
    sample, written at its sync from the utilization rollups)."""
    now = now or timezone.now()
    cards: dict[int, ModelCard] = {}

    def card(model_id: int, name: str) -> ModelCard:
        if model_id not in cards:
            cards[model_id] = ModelCard(model_id, name)
        return cards[model_id]

    for r in (
        ModelInventory.objects.values("gpu_model_id", "gpu_model__display_name")
        .annotate(i=Sum("installed"), a=Sum("allocated"), f=Sum("free"), u=Sum("unavailable"))
        .order_by("gpu_model__sort_order", "gpu_model__display_name")
    ):
        c = card(r["gpu_model_id"], r["gpu_model__display_name"])
        c.installed, c.allocated, c.free, c.unavailable = r["i"], r["a"], r["f"], r["u"]
    for r in latest_samples().values(
        "gpu_model_id",
        "gpu_model__display_name",
        "allocated_vms",
        "allocated_node_groups",
        "free_max_one",
        "reporting",
        "busy_pct",
    ):
        c = card(r["gpu_model_id"], r["gpu_model__display_name"])
        c.allocated_vms += r["allocated_vms"]
        c.allocated_node_groups += r["allocated_node_groups"]
        c.free_max_one = max(c.free_max_one, r["free_max_one"])
        if r["reporting"] and r["busy_pct"] is not None:
            # The mean over every cluster's reporting GPUs: each cluster weighs its count.
            busy_sum = (c.busy_pct or 0.0) * c.reporting + r["busy_pct"] * r["reporting"]
            c.reporting += r["reporting"]
            c.busy_pct = busy_sum / c.reporting
    for r in (
        waiting_operations()
        .values("gpu_model_id", "gpu_model__display_name")
        .annotate(n=Sum("gpu_count"))
    ):
        card(r["gpu_model_id"], r["gpu_model__display_name"]).queued = r["n"] or 0
    for r in (
        RefusedRequest.objects.filter(at__gte=now - dt.timedelta(days=1))
        .values("gpu_model_id", "gpu_model__display_name")
        .annotate(n=Sum("gpus"))
    ):
        card(r["gpu_model_id"], r["gpu_model__display_name"]).refused_24h = r["n"] or 0
    forecasts = forecasts_by_model(now)
    for model_id, c in cards.items():
        if model_id in forecasts:
            c.forecast = forecasts[model_id]
    return list(cards.values())


def latest_samples() -> QuerySet[CapacitySample]:
    """Each cluster's latest capacity sample per GPU model, as its last sync wrote it (held by
    VMs and node groups, the most free on one ready server): one row per cluster and model,
    read from the (cluster, at) index, however many servers and workloads the fleet has."""
    last = dict(
        Cluster.objects.annotate(
            last=Subquery(
                CapacitySample.objects.filter(cluster_id=OuterRef("pk"))
                .order_by("-at")
                .values("at")[:1]
            )
        )
        .filter(last__isnull=False)
        .values_list("pk", "last")
    )
    if not last:
        return CapacitySample.objects.none()
    match = Q()
    for cluster_id, at in last.items():
        match |= Q(cluster_id=cluster_id, at=at)
    return CapacitySample.objects.filter(match)


def forecasts_by_model(now: dt.datetime) -> dict[int, Exhaustion]:
    """Days to exhaustion per model, kept in the cache until the next rollup can change them
    (the fit over 20 models costs more than the rest of the page)."""
    step = int(settings.CAPACITY_ROLLUP_SECONDS) or 300
    key = f"capacity:forecasts:{int(now.timestamp()) // step}"
    cached = cache.get(key)
    if cached is None:
        cached = _forecasts(now)
        cache.set(key, cached, step)
    return cached


def _forecasts(now: dt.datetime) -> dict[int, Exhaustion]:
    """From the hourly rollups of the last 14 days summed over clusters (1 query), every
    second hour: 168 points a model are plenty for a robust slope."""
    start = now - dt.timedelta(days=WINDOW_DAYS)
    series: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    for r in (
        CapacityRollup.objects.filter(bucket=Bucket.HOUR, ts__gte=start)
        .values("gpu_model_id", "ts")
        .annotate(a=Sum("allocated"), i=Sum("installed"))
        .order_by("gpu_model_id", "ts")
    ):
        t = (r["ts"] - now).total_seconds() / 86400
        series[r["gpu_model_id"]].append((t, r["a"], r["i"]))
    out = {}
    for model_id, all_points in series.items():
        points = all_points[::-2][::-1]  # every second hour, ending with the latest
        out[model_id] = days_to_exhaustion(
            [p[0] for p in points], [p[1] for p in points], installed=points[-1][2]
        )
    return out


def history_points(days: int, bucket: str, model_id: int | None, now: dt.datetime) -> list[dict]:
    """Allocated, free and demand over time, summed over clusters (and models unless one)."""
    rows = CapacityRollup.objects.filter(bucket=bucket, ts__gte=now - dt.timedelta(days=days))
    if model_id is not None:
        rows = rows.filter(gpu_model_id=model_id)
    return list(
        rows.values("ts")
        .annotate(
            allocated=Sum("allocated"),
            free=Sum("free"),
            installed=Sum("installed"),
            queued=Sum("queued_max"),
            refused=Sum("refused"),
        )
        .order_by("ts")
    )


def waiting_operations() -> QuerySet[Operation]:
    """Requests waiting for capacity now: queued, or active and unschedulable."""
    return Operation.objects.filter(
        Q(state=OperationState.QUEUED)
        | Q(state__in=ACTIVE_OPERATION_STATES, unschedulable_since__isnull=False),
        gpu_model__isnull=False,
    )


def waiting_requests() -> list[Operation]:
    return list(
        waiting_operations()
        .select_related("tenant", "gpu_model", "cluster")
        .order_by("created_at")[:TABLE_ROWS]
    )


def refused_requests(now: dt.datetime | None = None) -> list[Any]:
    """Refused at submit, and failed after waiting unschedulable, in the last 7 days."""
    since = (now or timezone.now()) - dt.timedelta(days=7)
    at_submit = list(
        RefusedRequest.objects.filter(at__gte=since).select_related(
            "tenant", "gpu_model", "cluster"
        )[:TABLE_ROWS]
    )
    failed = list(
        Operation.objects.filter(
            state=OperationState.FAILED,
            unschedulable_since__isnull=False,
            gpu_model__isnull=False,
            finished_at__gte=since,
        )
        .select_related("tenant", "gpu_model", "cluster")
        .order_by("-finished_at")[:TABLE_ROWS]
    )
    rows = [
        {
            "at": r.at,
            "tenant": r.tenant,
            "model": r.gpu_model,
            "gpus": r.gpus,
            "who": r.actor_name,
            "how": "submit",
            "cluster": r.cluster,
        }
        for r in at_submit
    ] + [
        {
            "at": o.finished_at,
            "tenant": o.tenant,
            "model": o.gpu_model,
            "gpus": o.gpu_count,
            "who": o.actor_name,
            "how": "unschedulable",
            "cluster": o.cluster,
        }
        for o in failed
    ]
    return sorted(rows, key=lambda r: r["at"], reverse=True)[:TABLE_ROWS]


def top_tenants(days: int = 30, now: dt.datetime | None = None) -> list[dict]:
    """Top tenants by GPU-hours, from the daily usage rows (kept in the cache until the next
    rollup can change them)."""
    now = now or timezone.now()
    step = int(settings.CAPACITY_ROLLUP_SECONDS) or 300
    key = f"capacity:top-tenants:{days}:{int(now.timestamp()) // step}"
    rows = cache.get(key)
    if rows is None:
        rows = _top_tenants(days, now)
        cache.set(key, rows, step)
    return rows


def _top_tenants(days: int, now: dt.datetime) -> list[dict]:
    since = now - dt.timedelta(days=days)
    return list(
        TenantUsage.objects.filter(bucket=Bucket.DAY, ts__gte=since)
        .values("tenant__namespace", "tenant__display_name")
        .annotate(gpu_hours=Sum("gpu_hours"), gpus_max=Max("gpus_max"))
        .order_by("-gpu_hours")[:TABLE_ROWS]
    )


def quota_pressure() -> list[dict]:
    """Tenants holding at least 80 % of a quota, fullest first: the portal's (the snapshot's
    GPUs held; 1 query, the sums in the database) and the cluster's own (1 query). The held
    GPUs are a join grouped by quota: a subquery per quota was a scan of the allocations per
    quota (a tenth of the page's time with 500 tenants)."""
    held = FilteredRelation(
        "tenant__allocations", condition=Q(tenant__allocations__gpu_model=F("gpu_model"))
    )
    rows = (
        GpuQuota.objects.annotate(held_rows=held)
        .annotate(held=Coalesce(Sum("held_rows__allocated"), 0))
        .filter(held__gte=F("limit") * NEAR_QUOTA)
        .annotate(share=F("held") * 1.0 / Greatest(F("limit"), 1))
        .select_related("tenant", "gpu_model")
        .order_by("-share", "tenant__namespace")[:TABLE_ROWS]
    )
    portal = [
        {
            "tenant": q.tenant,
            "model": q.gpu_model,
            "held": q.held,
            "limit": q.limit,
            "over": q.held > q.limit,
            "cluster_quota": "",
        }
        for q in rows
    ]
    # The tenants' own ResourceQuotas, with what the cluster's quota controller counts: 1 query.
    cluster = [
        {
            "tenant": q.tenant,
            "model": q.gpu_model,
            "held": q.used,
            "limit": q.hard,
            "over": q.used > q.hard,
            "cluster_quota": q.name,
        }
        for q in ClusterQuota.objects.filter(used__gte=F("hard") * NEAR_QUOTA)
        .annotate(share=F("used") * 1.0 / Greatest(F("hard"), 1))
        .select_related("tenant", "gpu_model")
        .order_by("-share", "tenant__namespace")[:TABLE_ROWS]
    ]
    both = portal + cluster
    both.sort(key=lambda r: (-r["held"] / max(r["limit"], 1), r["tenant"].namespace))
    return both[:TABLE_ROWS]


# --- a tenant's headroom ------------------------------------------------------------------


@dataclass(frozen=True)
class Headroom:
    """A tenant's room on one model: the portal's quota and the cluster's own ResourceQuota
    (where one exists) side by side; the lower one wins."""

    model: GpuModel
    rooms: tuple[QuotaRoom, ...]

    @property
    def portal(self) -> QuotaRoom | None:
        return next((r for r in self.rooms if not r.cluster_quota), None)

    @property
    def cluster(self) -> QuotaRoom | None:
        """The cluster quota with the least left (several clusters, several quotas)."""
        found = [r for r in self.rooms if r.cluster_quota]
        return min(found, key=lambda r: r.left) if found else None

    @property
    def binding(self) -> QuotaRoom:
        return min(self.rooms, key=lambda r: (r.left, bool(r.cluster_quota)))

    @property
    def limit(self) -> int:
        return self.binding.limit

    @property
    def counted(self) -> int:
        return self.binding.counted

    @property
    def left(self) -> int:
        return self.binding.left

    @property
    def by_cluster(self) -> bool:
        return bool(self.binding.cluster_quota)


def headroom(tenant: Tenant) -> list[Headroom]:
    """Per model with a quota (the portal's, the cluster's, or both): each limit, what counts
    against it (held, a node group at what it may grow to, and operations in flight), what is
    left under the lower one."""
    ids = set(GpuQuota.objects.filter(tenant=tenant).values_list("gpu_model_id", flat=True))
    ids |= set(ClusterQuota.objects.filter(tenant=tenant).values_list("gpu_model_id", flat=True))
    out = []
    for model in GpuModel.objects.filter(pk__in=ids).order_by("sort_order", "display_name"):
        rooms = quota_rooms(tenant, model)
        if rooms:
            out.append(Headroom(model, tuple(rooms)))
    return out


def quotas_of(tenant: Tenant) -> dict[int, int]:
    return dict(GpuQuota.objects.filter(tenant=tenant).values_list("gpu_model_id", "limit"))


# --- waitlist and notifications -----------------------------------------------------------


def waitlist_of(tenant: Tenant) -> list[WaitlistEntry]:
    return list(
        WaitlistEntry.objects.filter(tenant=tenant, expires_at__gt=timezone.now()).select_related(
            "gpu_model", "user"
        )
    )


def unread_notifications(user: User) -> list[Notification]:
    if not user.is_authenticated:
        return []
    return list(Notification.objects.filter(user=user, read_at__isnull=True)[:5])


def notifications_of(user: User) -> list[Notification]:
    return list(Notification.objects.filter(user=user).select_related("tenant")[:50])


def get_tenant_usage_rows(start: dt.datetime, end: dt.datetime) -> list[dict]:
    """GPU-hours per tenant, cluster and model over [start, end) from the daily rollups,
    summed by ids (an integer GROUP BY) and named after: 4 queries."""
    rows = list(
        TenantUsage.objects.filter(bucket=Bucket.DAY, ts__gte=start, ts__lt=end)
        .values("tenant_id", "cluster_id", "gpu_model_id")
        .annotate(gpu_hours=Sum("gpu_hours"), gpus_max=Max("gpus_max"))
        .order_by("tenant_id", "cluster_id", "gpu_model_id")
    )
    tenants = dict(
        Tenant.objects.filter(pk__in={r["tenant_id"] for r in rows}).values_list("pk", "namespace")
    )
    clusters = dict(Cluster.objects.values_list("pk", "name"))
    models = dict(GpuModel.objects.values_list("pk", "resource_name"))
    return [
        {
            "tenant": tenants.get(r["tenant_id"], ""),
            "cluster": clusters.get(r["cluster_id"], ""),
            "gpu_model": models.get(r["gpu_model_id"], ""),
            "gpu_hours": r["gpu_hours"],
            "gpus_max": r["gpus_max"],
        }
        for r in rows
    ]


def history_between(start: dt.datetime, end: dt.datetime, bucket: str) -> QuerySet:
    """The capacity history's rollups over [start, end), in the exports' order."""
    return CapacityRollup.objects.filter(bucket=bucket, ts__gte=start, ts__lt=end).order_by(
        "ts", "cluster_id", "gpu_model_id"
    )


def history_rows(start: dt.datetime, end: dt.datetime, bucket: str) -> QuerySet:
    """The capacity history per cluster and model over [start, end), with their names."""
    return history_between(start, end, bucket).values(
        "ts",
        *ROLLUP_FIELDS,
        cluster_name=F("cluster__name"),
        gpu_model_name=F("gpu_model__resource_name"),
    )


def get_waitlist_entry(tenant: Tenant, pk: int) -> WaitlistEntry:
    entry = WaitlistEntry.objects.filter(tenant=tenant, pk=pk).first()
    if entry is None:
        raise Http404("No such wish.")
    return entry


def tenant_gpu_hours(tenant: Tenant, now: dt.datetime | None = None) -> list[dict]:
    """The tenant's GPU-hours per model this month (UTC), from the hourly usage rows."""
    now = now or timezone.now()
    month = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return list(
        TenantUsage.objects.filter(tenant=tenant, bucket=Bucket.HOUR, ts__gte=month)
        .values("gpu_model__display_name")
        .annotate(gpu_hours=Sum("gpu_hours"), gpus_max=Max("gpus_max"))
        .order_by("gpu_model__display_name")
    )


# The fleet-wide operations list, newest first. Ids grow with submission time, so the primary
# key's index serves the whole fleet without a sort; one tenant's operations are read from its
# own index (tenant, -created_at) instead, or a small tenant would walk the whole fleet's key.
OPERATIONS_KEY = ("id",)
TENANT_OPERATIONS_KEY = ("created_at", "id")
OPERATIONS_PER_PAGE = 50


def fleet_operations(filters: dict[str, Any], page: PageRequest) -> KeysetPage[Operation]:
    """One page of every tenant's operations, narrowed by the valid filters; one query."""
    qs = Operation.objects.select_related("tenant", "cluster", "gpu_model")
    key = OPERATIONS_KEY
    if "tenant" in filters:
        qs = qs.filter(tenant_id=tenant_id_of(filters["tenant"]))
        key = TENANT_OPERATIONS_KEY
    if "kind" in filters:
        qs = qs.filter(kind=filters["kind"])
    if "state" in filters:
        qs = qs.filter(state=filters["state"])
    if "gpu_model" in filters:
        qs = qs.filter(gpu_model=filters["gpu_model"])

    def midnight(d: dt.date) -> dt.datetime:
        return timezone.make_aware(dt.datetime.combine(d, dt.time.min))

    if ("start" in filters or "end" in filters) and not filters.keys() & {
        "kind",
        "state",
        "gpu_model",
    }:
        # Dates alone: the (created_at, id) index walks from the range's end; ids in id order
        # would walk every operation newer than an "until" day first.
        key = TENANT_OPERATIONS_KEY
    if "start" in filters:
        qs = qs.filter(created_at__gte=midnight(filters["start"]))
    if "end" in filters:
        qs = qs.filter(created_at__lt=midnight(filters["end"] + dt.timedelta(days=1)))
    return keyset_page(qs, key, page, OPERATIONS_PER_PAGE, descending=True)


# --- a tenant's energy ------------------------------------------------------------------


def tenant_energy(
    tenant: Tenant, since: dt.datetime, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """kWh per UTC day of the tenant's GPUs that report telemetry, from the tenant's hourly
    utilization rollups (the 5-minute ones while no hour has closed): 1 query for both."""
    qs = GroupRollup.objects.filter(
        bucket__in=[UtilBucket.HOUR, UtilBucket.FIVE_MINUTES],
        scope=Scope.TENANT,
        key=tenant.namespace,
        ts__gte=since,
    )
    if until is not None:
        qs = qs.filter(ts__lt=until)
    rows = list(
        qs.annotate(day=TruncDay("ts", tzinfo=dt.UTC))
        .values("bucket", "day")
        .annotate(wh=Sum("energy_wh"), gpu_hours=Sum("gpu_hours"))
        .order_by("day")
    )
    bucket = (
        UtilBucket.HOUR
        if any(r["bucket"] == UtilBucket.HOUR for r in rows)
        else UtilBucket.FIVE_MINUTES
    )
    return [
        {"day": r["day"], "kwh": (r["wh"] or 0) / 1000, "gpu_hours": r["gpu_hours"] or 0}
        for r in rows
        if r["bucket"] == bucket
    ]
