"""Reads for the utilization pages: rollups, samples and devices, scoped to the user. No
request talks to a metric source (DESIGN rule 1)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np
from django.conf import settings
from django.db.models import (
    Aggregate,
    Avg,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    JSONField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber
from django.db.models.lookups import GreaterThan
from django.http import Http404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import GpuWorkload, ModelInventory
from gpus.tenancy.models import Tenant
from gpus.utilization.charts import Series
from gpus.utilization.metrics.dcgm import (
    HOT_C,
    POWER_CAP_SHARE,
    THROTTLE_BITS,
    THROTTLING,
    board_power,
)
from gpus.utilization.metrics.parse import BUSY_METRICS
from gpus.utilization.models import (
    Bucket,
    GpuDevice,
    GpuRollup,
    GpuSample,
    GroupRollup,
    MetricSource,
    Scope,
    XidEvent,
)
from gpus.web.access import User, is_platform_admin, require_platform_admin
from gpus.web.paging import (
    AFTER,
    BEFORE,
    FIRST,
    LAST,
    KeysetPage,
    PageRequest,
    encode_cursor,
    keyset_page,
)

# Every list on a utilization page is a page of this many rows (or the top this many), and
# every count stops at COUNT_CAP: a page costs the same at 1,000 and at 1,000,000 GPUs.
PAGE_SIZE = 50
COUNT_CAP = 1000
# The health page counts flagged GPUs up to this many: its count reads every incident row of
# the GPUs it counts (grouped per GPU), so a lower cap keeps it cheap while the fleet's
# incidents grow (900 flagged GPUs at 1,000,000: 17 ms of the page at a cap of 1,000).
HEALTH_COUNT_CAP = 100


def capped_count(qs: QuerySet) -> tuple[int, bool]:
    """Rows of `qs` up to COUNT_CAP, and whether there are more (then say "1,000+")."""
    n = qs.order_by()[: COUNT_CAP + 1].count()
    return min(n, COUNT_CAP), n > COUNT_CAP


RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
REFRESH_UP_TO = 6 * 3600


def range_labels() -> dict[str, str]:
    return {
        "1h": _("1 h"),
        "6h": _("6 h"),
        "24h": _("24 h"),
        "7d": _("7 d"),
        "30d": _("30 d"),
    }


# ranges this short refresh themselves
MAX_CUSTOM_DAYS = 366


def throttle_labels() -> dict[str, str]:
    return {
        "gpu_idle": _("idle"),
        "app_clocks": _("application clocks"),
        "sw_power_cap": _("power cap"),
        "hw_slowdown": _("hardware slowdown"),
        "sync_boost": _("sync boost"),
        "sw_thermal": _("thermal (software)"),
        "hw_thermal": _("thermal (hardware)"),
        "hw_power_brake": _("power brake"),
        "display_clocks": _("display clocks"),
    }


def decode_throttle(mask: int | None) -> list[str]:
    if not mask:
        return []
    labels = throttle_labels()
    return [labels[name] for bit, name in THROTTLE_BITS.items() if mask & bit & THROTTLING]


@dataclass
class TimeRange:
    start: dt.datetime
    end: dt.datetime
    key: str
    error: str = ""

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def refresh(self) -> bool:
        return self.key != "custom" and self.seconds <= REFRESH_UP_TO

    @property
    def bucket(self) -> str:
        """Group charts: 5-minute rows up to a week (<= 2,016 a line), hourly rows past it (720
        a line for 30 days: about a chart's width in pixels). Reading 8,640 5-minute rows a line
        to downsample them on every request was most of a 30-day chart's time; the hourly rows
        are already there (the rollup task writes them as each hour closes)."""
        return Bucket.FIVE_MINUTES if self.seconds <= 7 * 86400 + 3600 else Bucket.HOUR

    @property
    def gpu_bucket(self) -> str:
        """Per-GPU reads (lists over the fleet): hourly rows past two days."""
        return Bucket.FIVE_MINUTES if self.seconds <= 2 * 86400 else Bucket.HOUR

    def query(self) -> str:
        if self.key == "custom":
            return urlencode(
                {"range": "custom", "start": self.start.isoformat(), "end": self.end.isoformat()}
            )
        return urlencode({"range": self.key})


def parse_range(params: dict, now: dt.datetime | None = None) -> TimeRange:
    """1h, 6h, 24h (default), 7d, 30d, or custom start/end; a bad custom range says why."""
    now = now or timezone.now()
    key = params.get("range") or "24h"
    if key == "custom":
        start = parse_datetime(params.get("start") or "")
        end = parse_datetime(params.get("end") or "") or now
        if start is not None and timezone.is_naive(start):
            start = timezone.make_aware(start)
        if timezone.is_naive(end):
            end = timezone.make_aware(end)
        error = ""
        if start is None:
            error = _("Enter a start date and time.")
        elif start >= end:
            error = _("The start must be before the end.")
        elif (end - start).days > MAX_CUSTOM_DAYS:
            error = _("A custom range can span at most a year.")
        if not error:
            return TimeRange(start, min(end, now), "custom")
        return TimeRange(now - dt.timedelta(days=1), now, "24h", error)
    seconds = RANGES.get(key, RANGES["24h"])
    return TimeRange(now - dt.timedelta(seconds=seconds), now, key if key in RANGES else "24h")


def _axis(tr: TimeRange, step: int) -> list[float]:
    first = int(tr.start.timestamp()) // step * step
    return [float(t) for t in range(first, int(tr.end.timestamp()) + 1, step)]


def _step(bucket: str) -> int:
    return 300 if bucket == Bucket.FIVE_MINUTES else 3600


def finer_if_empty(bucket: str, rows_of: Callable[[str], QuerySet]) -> str:
    """Hourly rows exist only once an hour has closed: a 7-day view of a fleet installed 40
    minutes ago read none and stayed empty. Then read the 5-minute rows (one more query)."""
    if bucket == Bucket.HOUR and not rows_of(Bucket.HOUR).exists():
        return Bucket.FIVE_MINUTES
    return bucket


def group_series(
    scope: str, keys: list[str] | None, tr: TimeRange, fields: tuple[str, ...]
) -> dict[str, Series]:
    """Group rollups per key on a full time axis (missing buckets are gaps, not zeros)."""
    first_s, last_s = int(tr.start.timestamp()), int(tr.end.timestamp())

    def rows_of(b: str) -> QuerySet:
        qs = GroupRollup.objects.filter(
            bucket=b, scope=scope, epoch__gte=first_s, epoch__lte=last_s, gpus__gt=0
        )
        return qs.filter(key__in=keys) if keys is not None else qs

    bucket = finer_if_empty(tr.bucket, rows_of)
    step = _step(bucket)
    first = int(tr.start.timestamp()) // step * step
    last = int(tr.end.timestamp())
    qs = GroupRollup.objects.filter(
        bucket=bucket, scope=scope, epoch__gte=first, epoch__lte=last, gpus__gt=0
    )
    if keys is not None:
        qs = qs.filter(key__in=keys)
    axis = np.arange(first, last + 1, step, dtype=np.float64)
    rows: dict[str, list] = defaultdict(list)
    # A few thousand rows at most (see TimeRange.bucket): one fetch, no server-side cursor.
    for row in qs.values_list("key", "epoch", *fields):
        rows[row[0]].append(row[1:])
    out: dict[str, Series] = {}
    for key, rs in rows.items():
        data = np.array(rs, dtype=np.float64)  # None becomes NaN
        idx = ((data[:, 0] - first) // step).astype(np.int64)
        lines = {}
        for j, f in enumerate(fields, start=1):
            col = np.full(axis.size, np.nan)
            col[idx] = data[:, j]
            lines[f] = col
        out[key] = Series(axis, lines)
    return out


def fleet_models(tr: TimeRange) -> dict[str, Series]:
    return group_series(Scope.MODEL, None, tr, ("util_avg", "util_p05", "util_p95"))


def allocation(tr: TimeRange, tenant: Tenant | None = None) -> Series | None:
    scope, key = (Scope.TENANT, tenant.namespace) if tenant else (Scope.FLEET, "")
    found = group_series(scope, [key], tr, ("gpus", "allocated", "busy")).get(key)
    return found


HEATMAP_SCOPES = (Scope.NODE, Scope.HOST)


def heatmap(
    tr: TimeRange, scope: str = Scope.NODE, limit: int = 60, offset: int = 0
) -> tuple[list[str], list[float], list[list], bool]:
    """Mean utilization per node and bucket, from the node rollups (both modes): per tenant
    worker (the exporter's Hostname) or per host node (Scope.HOST, through the inventory's GPU
    holders). The `limit` busiest nodes of the range's latest bucket, from `offset` on, read
    through the (bucket, scope, epoch, util_avg) index: a fixed cost whatever the fleet. Also
    whether more nodes follow."""
    start_s, end_s = int(tr.start.timestamp()), int(tr.end.timestamp())
    bucket = finer_if_empty(
        Bucket.FIVE_MINUTES if tr.seconds <= 86400 else Bucket.HOUR,
        lambda b: GroupRollup.objects.filter(
            bucket=b, scope=scope, epoch__gte=start_s, epoch__lte=end_s
        ),
    )
    rows = GroupRollup.objects.filter(bucket=bucket, scope=scope, gpus__gt=0)
    latest = (
        rows.filter(epoch__lte=int(tr.end.timestamp()), epoch__gte=int(tr.start.timestamp()))
        .order_by("-epoch")
        .values_list("epoch", flat=True)
        .first()
    )
    if latest is None:
        return [], [], [], False
    ranked = list(
        rows.filter(epoch=latest, util_avg__isnull=False)
        .order_by("-util_avg", "key")
        .values_list("key", flat=True)[offset : offset + limit + 1]
    )
    more = len(ranked) > limit
    nodes = ranked[:limit]
    axis = _axis(tr, _step(bucket))
    index = {t: i for i, t in enumerate(axis)}
    z = {n: [None] * len(axis) for n in nodes}
    in_range = rows.filter(
        key__in=nodes, epoch__gte=int(axis[0]) if axis else 0, epoch__lte=int(tr.end.timestamp())
    )
    for node, epoch, u in in_range.values_list("key", "epoch", "util_avg"):
        i = index.get(float(epoch))
        if i is not None:
            z[node][i] = u
    return nodes, axis, [z[n] for n in nodes], more


def devices_for(user: User, tenant: Tenant | None) -> QuerySet[GpuDevice]:
    """Ops see every GPU; a tenant sees the GPUs the inventory allocates to its workloads now
    (never through a sample: a guest agent could name any UUID)."""
    qs = GpuDevice.objects.select_related("gpu_model", "tenant", "workload")
    if tenant is not None:
        return qs.filter(workload__tenant=tenant)
    if not is_platform_admin(user):
        return qs.none()
    return qs


def device_for(user: User, uuid: str, tenant: Tenant | None) -> GpuDevice:
    """404 unless ops, or the GPU is allocated to one of the tenant's workloads in the
    inventory now. A past sample or rollup grants nothing."""
    device = GpuDevice.objects.filter(uuid=uuid).select_related("tenant", "workload").first()
    if device is None:
        raise Http404
    if tenant is None:
        require_platform_admin(user)
        return device
    if device.workload is None or device.workload.tenant_id != tenant.pk:
        raise Http404
    return device


DETAIL_FIELDS = ("util", "busy", "tensor", "mem_used", "mem_total", "power", "temp", "sm_clock")
ROLLUP_FIELDS = {
    "util": "util_avg",
    "busy": "busy_avg",
    "tensor": "tensor_avg",
    "mem_used": "mem_used_avg",
    "mem_total": "mem_total",
    "power": "power_avg",
    "temp": "temp_avg",
    "sm_clock": "sm_clock_avg",
}


def gpu_series(device: GpuDevice, tr: TimeRange, tenant: Tenant | None) -> Series:
    """Raw samples while they are kept (direct mode, agents), else the rollups; a tenant sees
    only the time the GPU was theirs."""
    raw_from = timezone.now() - dt.timedelta(hours=settings.METRICS_RAW_RETENTION_HOURS)
    samples = GpuSample.objects.filter(device=device, ts__gte=tr.start, ts__lte=tr.end)
    if tenant is not None:
        samples = samples.filter(tenant=tenant)
    if tr.start >= raw_from and samples.exists():
        rows = list(samples.order_by("ts").values_list("ts", *DETAIL_FIELDS))
    else:

        def rows_of(b: str) -> QuerySet:
            qs = GpuRollup.objects.filter(device=device, bucket=b, ts__gte=tr.start, ts__lte=tr.end)
            return qs.filter(tenant=tenant) if tenant is not None else qs

        qs = rows_of(finer_if_empty(tr.bucket, rows_of))
        cols = [ROLLUP_FIELDS[f] for f in DETAIL_FIELDS]
        rows = list(qs.order_by("ts").values_list("ts", *cols))
    ts = [r[0].timestamp() for r in rows]
    # Mark gaps: a missing reading between two far-apart samples must not draw a line.
    lines = {f: [r[i + 1] for r in rows] for i, f in enumerate(DETAIL_FIELDS)}
    step = settings.METRICS_COLLECT_SECONDS if rows and len(rows) > 1 else 0
    out_ts: list[float] = []
    out_lines: dict[str, list] = {f: [] for f in DETAIL_FIELDS}
    for i, t in enumerate(ts):
        if i and step and t - ts[i - 1] > 3 * max(step, ts[1] - ts[0] if len(ts) > 1 else step):
            out_ts.append((t + ts[i - 1]) / 2)
            for f in DETAIL_FIELDS:
                out_lines[f].append(None)
        out_ts.append(t)
        for f in DETAIL_FIELDS:
            out_lines[f].append(lines[f][i])
    return Series(out_ts, out_lines)


def idle_queryset(user: User, tenant: Tenant | None, now: dt.datetime | None = None) -> QuerySet:
    """Allocated GPUs under the threshold for at least METRICS_IDLE_MINUTES."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(minutes=settings.METRICS_IDLE_MINUTES)
    return devices_for(user, tenant).filter(idle_since__lte=cutoff)


IDLE_KEY = ("idle_since", "id")


def _idle_hours(rows: list[GpuDevice], now: dt.datetime) -> list[GpuDevice]:
    for d in rows:
        d.idle_hours = (now - d.idle_since).total_seconds() / 3600
    return rows


def idle_gpus(
    user: User,
    tenant: Tenant | None,
    page: PageRequest | None = None,
    per_page: int = PAGE_SIZE,
    now: dt.datetime | None = None,
) -> KeysetPage[GpuDevice]:
    """One page of idle GPUs, longest idle first (the idle_since index)."""
    now = now or timezone.now()
    result = keyset_page(
        idle_queryset(user, tenant, now), IDLE_KEY, page or PageRequest(), per_page
    )
    _idle_hours(result.rows, now)
    return result


def idle_export(user: User, tenant: Tenant | None, now: dt.datetime | None = None):
    """Every idle GPU for the CSV, streamed in chunks (constant memory)."""
    now = now or timezone.now()
    for d in idle_queryset(user, tenant, now).order_by(*IDLE_KEY).iterator(chunk_size=2000):
        d.idle_hours = (now - d.idle_since).total_seconds() / 3600
        yield d


def _gpu_bucket(tr: TimeRange) -> str:
    return finer_if_empty(
        tr.gpu_bucket,
        lambda b: GpuRollup.objects.filter(bucket=b, ts__gte=tr.start, ts__lte=tr.end),
    )


class _DistinctList(Aggregate):
    """The distinct values of a group as a JSON array: jsonb_agg on PostgreSQL,
    json_group_array on SQLite (Django 5.2 has no portable one)."""

    function = "JSONB_AGG"
    allow_distinct = True
    output_field = JSONField()

    def as_sqlite(self, compiler, connection, **extra):  # type: ignore[no-untyped-def]
        return super().as_sql(compiler, connection, function="JSON_GROUP_ARRAY", **extra)


# The columns of a flagged GPU the health page shows, read with its incidents (no query more).
HEALTH_DEVICE = (
    "device_id",
    "device__uuid",
    "device__model_name",
    "device__hostname",
    "device__power_limit_w",
    "device__tenant_id",
    "device__tenant__namespace",
)


def _health_sides(tr: TimeRange, tenant: Tenant | None) -> tuple[QuerySet, QuerySet, str]:
    """Per flagged GPU of the range, grouped by GPU: its flagged rollups (throttled, at its cap,
    hot) and its XID events. Both are walked in GPU order on the rollups' (bucket, device, ts)
    and the events' (device, ts, xid) unique indexes: incident rows, never the devices."""
    bucket = _gpu_bucket(tr)
    rollups = GpuRollup.objects.filter(bucket=bucket, ts__gte=tr.start, ts__lte=tr.end)
    events = XidEvent.objects.filter(ts__gte=tr.start, ts__lte=tr.end)
    if tenant is not None:
        rollups = rollups.filter(tenant=tenant)
        events = events.filter(tenant=tenant)
    # The GPU's cap: the limit it reports, else its model's board power.
    board = Case(
        *(When(device__model_name__iexact=m, then=Value(w)) for m, w in _power_limits()),
        default=Value(None),
        output_field=FloatField(),
    )
    cap = Coalesce(F("device__power_limit_w"), board)
    throttled = Q(GreaterThan(F("throttle_any").bitand(THROTTLING), 0))
    capped = Q(power_max__gte=cap * POWER_CAP_SHARE)
    hot = Q(temp_max__gte=HOT_C)
    bits = {  # the OR of the bitmasks, one reason at a time (no portable bit_or)
        f"bit_{bit}": Max(F("throttle_any").bitand(bit))
        for bit in THROTTLE_BITS
        if bit & THROTTLING
    }
    flagged = (
        rollups.values(*HEALTH_DEVICE)
        .annotate(
            throttle_buckets=Count("id", filter=throttled),
            capped_buckets=Count("id", filter=capped),
            hot_buckets=Count("id", filter=hot),
            peak_power=Max("power_max"),
            peak_temp=Max("temp_max"),
            **bits,
        )
        .filter(Q(throttle_buckets__gt=0) | Q(capped_buckets__gt=0) | Q(hot_buckets__gt=0))
    )
    xids = events.values(*HEALTH_DEVICE).annotate(
        xid_count=Count("id"), last_xid_at=Max("ts"), xid_list=_DistinctList("xid", distinct=True)
    )
    return flagged, xids, bucket


def _merged_page(
    sides: tuple[QuerySet, ...], request: PageRequest, per_page: int
) -> KeysetPage[dict]:
    """One keyset page (by GPU id) of the union of `sides`, grouped querysets of one row per
    GPU: each side reads its first per_page + 1 GPUs after the cursor (any GPU of the page is
    among them), and a GPU's rows from both sides make one."""
    values = request.values
    if request.where in (AFTER, BEFORE) and not (
        len(values) == 1 and isinstance(values[0], int) and not isinstance(values[0], bool)
    ):
        request = PageRequest()
    forward = request.where in (FIRST, AFTER)
    merged: dict[int, dict] = {}
    for side in sides:
        if request.where == AFTER:
            side = side.filter(device_id__gt=request.values[0])
        elif request.where == BEFORE:
            side = side.filter(device_id__lt=request.values[0])
        for row in side.order_by("device_id" if forward else "-device_id")[: per_page + 1]:
            merged.setdefault(row["device_id"], {}).update(row)
    ids = sorted(merged, reverse=not forward)[: per_page + 1]
    more = len(ids) > per_page
    ids = ids[:per_page]
    if request.where == BEFORE and not more:  # back at the start: a full first page instead
        return _merged_page(sides, PageRequest(), per_page)
    if not forward:
        ids.reverse()
    has_previous = request.where in (AFTER, BEFORE) or (request.where == LAST and more)
    has_next = request.where == BEFORE or (forward and more)
    if not ids:
        return KeysetPage([], False, False)
    return KeysetPage(
        [merged[i] for i in ids],
        has_previous,
        has_next,
        previous_cursor=encode_cursor([ids[0]]) if has_previous else "",
        next_cursor=encode_cursor([ids[-1]]) if has_next else "",
    )


def health(
    tr: TimeRange,
    tenant: Tenant | None = None,
    limit: int = PAGE_SIZE,
    page: PageRequest | None = None,
) -> dict:
    """GPUs that raised an XID, were throttled, ran at their power cap or ran hot in the range:
    one keyset page of them in the order the portal first saw them (the GPU's id), each with
    its incidents over the range, and how many there are (up to HEALTH_COUNT_CAP).

    Four queries whatever the fleet and whatever the page holds (issue 17.1): the page's GPUs
    from the flagged rollups and from the XID events, each grouped per GPU with the GPU's
    columns and its counts; and the first HEALTH_COUNT_CAP + 1 GPUs of each for the count.
    Each reads the incident rows of at most that many GPUs from an index in GPU order, never
    the devices.

    At the cap: a bucket's peak power at POWER_CAP_SHARE of the GPU's reported limit or its
    board power (dcgm.BOARD_POWER_W); hot: a bucket's peak temperature at HOT_C or more. A
    capped or hot GPU is flagged even when the exporter sends no throttle reasons (the
    default DCGM set has none)."""
    flagged, xids, bucket = _health_sides(tr, tenant)
    result = _merged_page((flagged, xids), page or PageRequest(), limit)
    counted: set[int] = set()
    for side in (flagged, xids):
        counted.update(
            side.order_by("device_id").values_list("device_id", flat=True)[: HEALTH_COUNT_CAP + 1]
        )
    step_minutes = _step(bucket) / 60
    out = []
    for r in result.rows:
        mask = sum(v or 0 for k, v in r.items() if k.startswith("bit_"))
        throttled = r.get("throttle_buckets", 0)
        out.append(
            {
                "device": _health_device(r),
                "xids": sorted(r.get("xid_list") or []),
                "xid_count": r.get("xid_count", 0),
                "last_xid_at": r.get("last_xid_at"),
                "reasons": decode_throttle(mask),
                "throttled_minutes": throttled * step_minutes,
                "capped_minutes": r.get("capped_buckets", 0) * step_minutes,
                "hot_minutes": r.get("hot_buckets", 0) * step_minutes,
                "peak_power": r.get("peak_power"),
                "peak_temp": r.get("peak_temp"),
                "power_limit": board_power(r["device__model_name"], r["device__power_limit_w"]),
            }
        )
    return {
        "rows": out,
        "count": min(len(counted), HEALTH_COUNT_CAP),
        "more": len(counted) > HEALTH_COUNT_CAP,
        "page": result,
    }


def _health_device(r: dict) -> GpuDevice:
    """The GPU of a health row from the columns read with its incidents (no query more)."""
    tenant_id = r["device__tenant_id"]
    tenant = Tenant(pk=tenant_id, namespace=r["device__tenant__namespace"]) if tenant_id else None
    return GpuDevice(
        pk=r["device_id"],
        uuid=r["device__uuid"],
        model_name=r["device__model_name"],
        hostname=r["device__hostname"],
        power_limit_w=r["device__power_limit_w"],
        tenant=tenant,
    )


def _power_limits() -> list[tuple[str, float]]:
    """(model name, board watts) as DCGM names the model ("NVIDIA " first), matched whole."""
    from gpus.utilization.metrics.dcgm import BOARD_POWER_W

    return [(f"nvidia {k}", w) for k, w in BOARD_POWER_W.items()] + list(BOARD_POWER_W.items())


ENERGY_GROUPS = {
    "gpu": "device__uuid",
    "node": "device__hostname",
    "tenant": "tenant__namespace",
    "model": "device__model_name",
}


GROUP_ENERGY = {"node": Scope.NODE, "tenant": Scope.TENANT, "model": Scope.MODEL}


def energy(tr: TimeRange, by: str, tenant: Tenant | None = None, limit: int = PAGE_SIZE) -> dict:
    """kWh per GPU, node, tenant or model from the power samples, with the mean power per GPU
    and the share of the boards' power it ran at: the `limit` largest consumers, the total over
    every group, and how many groups there are. Node, tenant and model read the group rollups
    (query-API mode keeps no per-GPU rows); per GPU reads the per-GPU rollups."""
    if by in GROUP_ENERGY and tenant is None:
        return _group_energy(tr, GROUP_ENERGY[by], limit)
    field = ENERGY_GROUPS.get(by, "device__model_name")
    qs = GpuRollup.objects.filter(
        bucket=_gpu_bucket(tr), ts__gte=tr.start, ts__lt=tr.end, energy_wh__isnull=False
    )
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    rows = (
        qs.values(field)
        .annotate(
            wh=Sum("energy_wh"),
            power=Avg("power_avg"),
            gpus=Count("device", distinct=True),
            model=Max("device__model_name"),
            limit=Max("device__power_limit_w"),
        )
        .order_by("-wh", field)
    )
    out = []
    for r in rows[:limit]:
        # Share of the board's power limit (reported, else the model's board power; groups
        # mixing models use their largest).
        limit_w = board_power(r["model"] or "", r["limit"])
        out.append(
            {
                "key": r[field] or "—",
                "kwh": r["wh"] / 1000,
                "power": r["power"],
                "share": r["power"] / limit_w * 100 if r["power"] is not None and limit_w else None,
                "gpus": r["gpus"],
            }
        )
    total = qs.aggregate(wh=Sum("energy_wh"))["wh"] or 0
    count, more = capped_count(qs.values(field).distinct())
    return {"rows": out, "total_kwh": total / 1000, "count": count, "more": more}


def _group_energy(tr: TimeRange, scope: str, limit: int) -> dict:
    bucket = finer_if_empty(
        tr.gpu_bucket,
        lambda b: GroupRollup.objects.filter(
            bucket=b, scope=Scope.FLEET, key="", ts__gte=tr.start, ts__lt=tr.end
        ),
    )
    qs = GroupRollup.objects.filter(
        bucket=bucket, scope=scope, ts__gte=tr.start, ts__lt=tr.end, energy_wh__isnull=False
    )
    # Summing every group over the range grew with the fleet (68,000 worker nodes x 288
    # buckets at 1,000,000 GPUs): the groups shown are the `limit` largest consumers of the
    # range's latest bucket (a walk of grouprollup_energy_rank_idx), each with its energy over
    # the whole range; the count is the latest bucket's groups (capped).
    latest = qs.order_by("-epoch").values_list("epoch", flat=True).first()
    at_latest = GroupRollup.objects.filter(
        bucket=bucket, scope=scope, epoch=latest, energy_wh__isnull=False
    )
    shown = list(at_latest.order_by("-energy_wh", "key").values_list("key", flat=True)[:limit])
    rows = (
        qs.filter(key__in=shown)
        .values("key")
        .annotate(
            wh=Sum("energy_wh"),
            power=Sum("power_sum"),
            limit=Sum("power_limit_sum"),
            gpu_buckets=Sum("gpus"),
            gpus=Max("gpus"),
        )
        .order_by("-wh", "key")
    )
    out = []
    for r in rows[:limit]:
        power = (
            r["power"] / r["gpu_buckets"] if r["power"] is not None and r["gpu_buckets"] else None
        )
        out.append(
            {
                "key": r["key"] or "—",
                "kwh": r["wh"] / 1000,
                "power": power,
                "share": r["power"] / r["limit"] * 100 if r["power"] and r["limit"] else None,
                "gpus": r["gpus"],
            }
        )
    # The fleet's own rows hold the total (one row a bucket), whatever the number of groups.
    total = (
        GroupRollup.objects.filter(
            bucket=bucket, scope=Scope.FLEET, key="", ts__gte=tr.start, ts__lt=tr.end
        ).aggregate(wh=Sum("energy_wh"))["wh"]
        or 0
    )
    count, more = capped_count(at_latest) if latest is not None else (0, False)
    return {"rows": out, "total_kwh": total / 1000, "count": count, "more": more}


DEVICES_PER_WORKLOAD = 16
TENANT_WORKLOAD_KEY = ("name", "node_group", "id")


def tenant_workloads(
    tenant: Tenant, page: PageRequest | None = None, per_page: int = 20
) -> tuple[list[dict], KeysetPage]:
    """One page of the tenant's GPU VMs and node groups (the workload_tenant_key index), each
    with up to DEVICES_PER_WORKLOAD of its GPUs now and how many it has: what telemetry each
    has."""
    workloads = GpuWorkload.objects.filter(tenant=tenant, gpus_per_instance__gt=0).select_related(
        "gpu_model", "cluster"
    )
    result = keyset_page(workloads, TENANT_WORKLOAD_KEY, page or PageRequest(), per_page)
    ids = [w.pk for w in result.rows]
    devices: dict[int | None, list] = defaultdict(list)
    counts = dict(
        GpuDevice.objects.filter(workload_id__in=ids)
        .values("workload_id")
        .annotate(n=Count("id"))
        .values_list("workload_id", "n")
    )
    # Each workload's first GPUs in one query (a window per workload), whatever the number of
    # workloads on the page: a query per workload made a tenant with 20 workloads cost 20.
    first = (
        GpuDevice.objects.filter(workload_id__in=ids)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("workload_id")],
                order_by=[F("hostname").asc(), F("index").asc(), F("id").asc()],
            )
        )
        .filter(rank__lte=DEVICES_PER_WORKLOAD)
        .order_by("workload_id", "hostname", "index", "id")
    )
    for d in first:
        devices[d.workload_id].append(d)
    out = [
        {
            "workload": w,
            "devices": devices.get(w.pk, []),
            "device_count": counts.get(w.pk, 0),
            "is_vm": w.kind == WorkloadKind.VM,
        }
        for w in result.rows
    ]
    # GPUs seen in telemetry but tied to none of the tenant's workloads in the inventory are
    # not shown: only the inventory's allocation grants a tenant a GPU.
    return out, result


# The tenant chart's lines: the busiest workloads one each, the others as one.
TENANT_CHART_TOP = 10
OTHERS = ""  # the key of the others' line (no workload has an empty name)


def workload_series(
    tenant: Tenant, tr: TimeRange, top: int = TENANT_CHART_TOP
) -> dict[str, Series]:
    """Mean utilization of a tenant's `top` busiest VMs and node groups (the most busy GPUs in
    the range's latest bucket, then the name), a line each in name order, from the workload
    rollups; then, under OTHERS, the mean of all the others: the tenant's own rollup less the
    lines shown, weighted by GPUs (omitted when nothing is left).

    Three queries whatever the tenant's workloads (issue 17.1): the latest bucket (the tenant's
    rollups), the ranking (that bucket's workload rows of the tenant, an index-only read of
    grouprollup_epoch_key_idx on PostgreSQL), and the range's rows of the lines shown and of the
    tenant. Before, every workload of the tenant was a line: 5,000 workloads were 5,000 lines."""
    prefix = f"{tenant.namespace}|"
    end_s = int(tr.end.timestamp())

    def tenant_rows(b: str) -> QuerySet:
        return GroupRollup.objects.filter(
            bucket=b, scope=Scope.TENANT, key=tenant.namespace, ts__gte=tr.start, ts__lte=tr.end
        )

    bucket = finer_if_empty(tr.gpu_bucket, tenant_rows)
    axis = np.array(_axis(tr, _step(bucket)), dtype=np.float64)
    if not axis.size:
        return {}
    first = int(axis[0])
    in_range = GroupRollup.objects.filter(
        bucket=bucket, epoch__gte=first, epoch__lte=end_s, gpus__gt=0
    )
    latest = (
        in_range.filter(scope=Scope.TENANT, key=tenant.namespace)
        .order_by("-epoch")
        .values_list("epoch", flat=True)
        .first()
    )
    if latest is None:
        return {}
    shown = sorted(
        GroupRollup.objects.filter(
            bucket=bucket, scope=Scope.WORKLOAD, epoch=latest, key__startswith=prefix
        )
        .order_by("-busy", "key")
        .values_list("key", flat=True)[:top]
    )
    rows = in_range.filter(
        Q(scope=Scope.WORKLOAD, key__in=shown) | Q(scope=Scope.TENANT, key=tenant.namespace)
    ).values_list("scope", "key", "epoch", "gpus", "util_avg")
    util = {k: np.full(axis.size, np.nan) for k in shown}
    gpus = {k: np.zeros(axis.size) for k in shown}
    total_util, total_gpus = np.full(axis.size, np.nan), np.zeros(axis.size)
    for scope, key, epoch, n, u in rows:
        i = int((epoch - first) // _step(bucket))
        if not 0 <= i < axis.size:
            continue
        if scope == Scope.TENANT:
            total_util[i], total_gpus[i] = np.nan if u is None else u, n
        elif u is not None:
            util[key][i], gpus[key][i] = u, n
    out = {k.removeprefix(prefix): Series(axis, {"util": util[k]}) for k in shown}
    # The others: what the tenant's GPUs did beyond the lines shown (GPU-weighted means).
    shown_gpus = sum(gpus.values(), np.zeros(axis.size))
    shown_sum = sum((np.nan_to_num(util[k]) * gpus[k] for k in shown), np.zeros(axis.size))
    rest = total_gpus - shown_gpus
    with np.errstate(invalid="ignore", divide="ignore"):
        others = np.where(rest >= 0.5, (total_util * total_gpus - shown_sum) / rest, np.nan)
    others = np.clip(others, 0, 100)
    if not np.isnan(others).all():
        out[OTHERS] = Series(axis, {"util": others})
    return out


def sources_status() -> list[MetricSource]:
    """One row per cluster (a few): the clusters, not the GPUs."""
    return list(
        MetricSource.objects.select_related("cluster").order_by("cluster__name")[:PAGE_SIZE]
    )


def fleet_summary() -> dict:
    """The fleet now, at a fixed cost: the latest fleet rollup (GPUs reporting, allocated ones
    among them), the inventory's allocated GPUs (with or without telemetry), the idle count
    (capped), the last collection and the busy metrics in use (an index probe each)."""
    now = timezone.now()
    latest = (
        GroupRollup.objects.filter(bucket=Bucket.FIVE_MINUTES, scope=Scope.FLEET, key="")
        .order_by("-epoch")
        .values("ts", "gpus", "allocated")
        .first()
    ) or {"ts": None, "gpus": 0, "allocated": 0}
    inventory = ModelInventory.objects.aggregate(
        installed=Sum("installed"), allocated=Sum("allocated")
    )
    cutoff = now - dt.timedelta(minutes=settings.METRICS_IDLE_MINUTES)
    idle, idle_more = capped_count(GpuDevice.objects.filter(idle_since__lte=cutoff))
    with_telemetry = round(latest["allocated"] or 0)
    in_inventory = inventory["allocated"] or 0
    return {
        "gpus": latest["gpus"],
        "allocated": with_telemetry,
        "as_of": latest["ts"],
        "inventory_installed": inventory["installed"] or 0,
        "inventory_allocated": in_inventory,
        "without_telemetry": max(in_inventory - with_telemetry, 0),
        "idle": idle,
        "idle_more": idle_more,
        "last": _latest_reading(latest["ts"]),
        "busy_metrics": [
            name for _, name in BUSY_METRICS if GpuDevice.objects.filter(busy_metric=name).exists()
        ],
    }


def _latest_reading(latest_bucket: dt.datetime | None) -> dt.datetime | None:
    """The last collection, or (guest agents push without one) the end of the latest rolled-up
    bucket: no scan of the devices."""
    collected = MetricSource.objects.aggregate(last=Max("last_collected_at"))["last"]
    rolled = latest_bucket + dt.timedelta(minutes=5) if latest_bucket else None
    return max((t for t in (collected, rolled) if t), default=None)


def silent_workloads(
    tenant: Tenant | None = None, page: PageRequest | None = None, per_page: int = PAGE_SIZE
) -> KeysetPage[GpuWorkload]:
    """One page of the workloads holding GPUs with no telemetry: passthrough VMs without an
    agent, node groups of clusters whose exporter is not scraped."""
    fresh = timezone.now() - dt.timedelta(seconds=3 * settings.METRICS_COLLECT_SECONDS)
    reporting = GpuDevice.objects.filter(workload=OuterRef("pk"), last_seen_at__gte=fresh)
    qs = (
        GpuWorkload.objects.filter(gpus_held__gt=0)
        .filter(~Exists(reporting))
        .select_related("tenant", "gpu_model")
    )
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    # Discovery order (the primary key): a page stops after per_page matches, no sort of them all.
    return keyset_page(qs, ("id",), page or PageRequest(), per_page)
