"""Reads for the utilization pages: rollups, samples and devices, scoped to the user. No
request talks to a metric source (DESIGN rule 1)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np
from django.conf import settings
from django.db.models import Avg, Count, F, Max, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import GpuWorkload
from gpus.tenancy.models import Tenant
from gpus.utilization.charts import Series
from gpus.utilization.metrics.dcgm import THROTTLE_BITS, THROTTLING, board_power
from gpus.utilization.models import (
    Bucket,
    GpuDevice,
    GpuRollup,
    GpuSample,
    GroupRollup,
    MetricSource,
    Scope,
)
from gpus.web.access import User, is_platform_admin, require_platform_admin

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
        """Group charts: 5-minute rows up to a month (<= 8,640 a line, then downsampled)."""
        return Bucket.FIVE_MINUTES if self.seconds <= 31 * 86400 else Bucket.HOUR

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


def group_series(
    scope: str, keys: list[str] | None, tr: TimeRange, fields: tuple[str, ...]
) -> dict[str, Series]:
    """Group rollups per key on a full time axis (missing buckets are gaps, not zeros)."""
    step = _step(tr.bucket)
    first = int(tr.start.timestamp()) // step * step
    last = int(tr.end.timestamp())
    qs = GroupRollup.objects.filter(
        bucket=tr.bucket, scope=scope, epoch__gte=first, epoch__lte=last, gpus__gt=0
    )
    if keys is not None:
        qs = qs.filter(key__in=keys)
    axis = np.arange(first, last + 1, step, dtype=np.float64)
    rows: dict[str, list] = defaultdict(list)
    for row in qs.values_list("key", "epoch", *fields).iterator(chunk_size=10000):
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


def heatmap(tr: TimeRange, limit: int = 60) -> tuple[list[str], list[float], list[list]]:
    """Mean utilization per node (hostname) and bucket, from the node rollups (both modes);
    the busiest `limit` nodes first."""
    bucket = Bucket.FIVE_MINUTES if tr.seconds <= 86400 else Bucket.HOUR
    qs = GroupRollup.objects.filter(
        bucket=bucket, scope=Scope.NODE, ts__gte=tr.start, ts__lte=tr.end, gpus__gt=0
    )
    nodes = list(
        qs.values("key")
        .annotate(u=Avg("util_avg"))
        .order_by(F("u").desc(nulls_last=True), "key")
        .values_list("key", flat=True)[:limit]
    )
    axis = _axis(tr, _step(bucket))
    index = {t: i for i, t in enumerate(axis)}
    z = {n: [None] * len(axis) for n in nodes}
    for node, epoch, u in qs.filter(key__in=nodes).values_list("key", "epoch", "util_avg"):
        i = index.get(float(epoch))
        if i is not None:
            z[node][i] = u
    return nodes, axis, [z[n] for n in nodes]


def devices_for(user: User, tenant: Tenant | None) -> QuerySet[GpuDevice]:
    """Ops see every GPU; a tenant sees the GPUs it holds now."""
    qs = GpuDevice.objects.select_related("gpu_model", "tenant", "workload")
    if tenant is not None:
        return qs.filter(tenant=tenant)
    if not is_platform_admin(user):
        return qs.none()
    return qs


def device_for(user: User, uuid: str, tenant: Tenant | None) -> GpuDevice:
    """404 unless ops, or the tenant held this GPU at some point we kept."""
    device = GpuDevice.objects.filter(uuid=uuid).select_related("tenant", "workload").first()
    if device is None:
        raise Http404
    if tenant is None:
        require_platform_admin(user)
        return device
    held = (
        device.tenant_id == tenant.pk
        or GpuRollup.objects.filter(device=device, tenant=tenant).exists()
        or GpuSample.objects.filter(device=device, tenant=tenant).exists()
    )
    if not held:
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
        qs = GpuRollup.objects.filter(
            device=device, bucket=tr.bucket, ts__gte=tr.start, ts__lte=tr.end
        )
        if tenant is not None:
            qs = qs.filter(tenant=tenant)
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


def idle_gpus(user: User, tenant: Tenant | None, now: dt.datetime | None = None) -> list[GpuDevice]:
    """Allocated GPUs under the threshold for at least METRICS_IDLE_MINUTES, longest first."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(minutes=settings.METRICS_IDLE_MINUTES)
    qs = devices_for(user, tenant).filter(idle_since__lte=cutoff).order_by("idle_since")
    out = list(qs)
    for d in out:
        d.idle_hours = (now - d.idle_since).total_seconds() / 3600
    return out


def health(tr: TimeRange, tenant: Tenant | None = None) -> list[dict]:
    """GPUs that raised an XID or were throttled in the range."""
    qs = GpuRollup.objects.filter(bucket=tr.gpu_bucket, ts__gte=tr.start, ts__lte=tr.end).filter(
        Q(xid_last__isnull=False) | Q(throttle_any__gt=0)
    )
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    per: dict[int, dict] = defaultdict(lambda: {"xids": set(), "mask": 0, "buckets": 0})
    for device_id, xid, mask, ts in qs.values_list("device_id", "xid_last", "throttle_any", "ts"):
        p = per[device_id]
        if xid:
            p["xids"].add(xid)
            p["last_xid_at"] = max(ts, p.get("last_xid_at", ts))
        if mask and mask & THROTTLING:
            p["mask"] |= mask
            p["buckets"] += 1
    devices = GpuDevice.objects.in_bulk(list(per))
    out = []
    for device_id, p in per.items():
        if not p["xids"] and not p["mask"]:
            continue
        out.append(
            {
                "device": devices[device_id],
                "xids": sorted(p["xids"]),
                "last_xid_at": p.get("last_xid_at"),
                "reasons": decode_throttle(p["mask"]),
                "throttled_minutes": p["buckets"] * _step(tr.gpu_bucket) / 60,
            }
        )
    out.sort(key=lambda r: (not r["xids"], r["device"].hostname))
    return out


ENERGY_GROUPS = {
    "gpu": "device__uuid",
    "node": "device__hostname",
    "tenant": "tenant__namespace",
    "model": "device__model_name",
}


GROUP_ENERGY = {"node": Scope.NODE, "tenant": Scope.TENANT, "model": Scope.MODEL}


def energy(tr: TimeRange, by: str, tenant: Tenant | None = None) -> list[dict]:
    """kWh per GPU, node, tenant or model from the power samples, with the mean power per GPU
    and the share of the boards' power it ran at. Node, tenant and model read the group
    rollups (query-API mode keeps no per-GPU rows); per GPU reads the per-GPU rollups."""
    if by in GROUP_ENERGY and tenant is None:
        return _group_energy(tr, GROUP_ENERGY[by])
    field = ENERGY_GROUPS.get(by, "device__model_name")
    qs = GpuRollup.objects.filter(
        bucket=tr.gpu_bucket, ts__gte=tr.start, ts__lt=tr.end, energy_wh__isnull=False
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
        .order_by("-wh")
    )
    out = []
    for r in rows:
        # Share of the board's power limit (reported, else the model's board power; groups
        # mixing models use their largest).
        limit = board_power(r["model"] or "", r["limit"])
        out.append(
            {
                "key": r[field] or "—",
                "kwh": r["wh"] / 1000,
                "power": r["power"],
                "share": r["power"] / limit * 100 if r["power"] is not None and limit else None,
                "gpus": r["gpus"],
            }
        )
    return out


def _group_energy(tr: TimeRange, scope: str) -> list[dict]:
    qs = GroupRollup.objects.filter(
        bucket=tr.gpu_bucket, scope=scope, ts__gte=tr.start, ts__lt=tr.end, energy_wh__isnull=False
    )
    rows = (
        qs.values("key")
        .annotate(
            wh=Sum("energy_wh"),
            power=Sum("power_sum"),
            limit=Sum("power_limit_sum"),
            gpu_buckets=Sum("gpus"),
            gpus=Max("gpus"),
        )
        .order_by("-wh")
    )
    out = []
    for r in rows:
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
    return out


def tenant_workloads(tenant: Tenant) -> list[dict]:
    """The tenant's GPU VMs and node groups with their GPUs now, and what telemetry each has."""
    devices = defaultdict(list)
    for d in GpuDevice.objects.filter(tenant=tenant).select_related("gpu_model"):
        devices[d.workload_id].append(d)
    out = []
    for w in GpuWorkload.objects.filter(tenant=tenant).select_related("gpu_model", "cluster"):
        if not w.gpus_per_instance:
            continue
        gpus = devices.pop(w.pk, [])
        out.append({"workload": w, "devices": gpus, "is_vm": w.kind == WorkloadKind.VM})
    if devices:  # seen in telemetry, not (yet) in the inventory
        out.append({"workload": None, "devices": [d for ds in devices.values() for d in ds]})
    return out


def workload_series(tenant: Tenant, tr: TimeRange) -> dict[str, Series]:
    """Mean utilization per VM / node group of a tenant, from the workload rollups."""
    prefix = f"{tenant.namespace}|"
    qs = GroupRollup.objects.filter(
        bucket=tr.gpu_bucket,
        scope=Scope.WORKLOAD,
        key__startswith=prefix,
        ts__gte=tr.start,
        ts__lte=tr.end,
        gpus__gt=0,
    )
    axis = _axis(tr, _step(tr.gpu_bucket))
    index = {t: i for i, t in enumerate(axis)}
    out: dict[str, Series] = {}
    for key, epoch, u in qs.values_list("key", "epoch", "util_avg"):
        s = out.setdefault(key.removeprefix(prefix), Series(axis, {"util": [None] * len(axis)}))
        i = index.get(float(epoch))
        if i is not None:
            s.lines["util"][i] = u
    return out


def sources_status() -> list[MetricSource]:
    return list(MetricSource.objects.select_related("cluster"))


def fleet_summary() -> dict:
    now = timezone.now()
    fresh = now - dt.timedelta(seconds=3 * settings.METRICS_COLLECT_SECONDS)
    qs = GpuDevice.objects.filter(last_seen_at__gte=fresh)
    agg = qs.aggregate(
        gpus=Count("id"),
        allocated=Count("id", filter=Q(tenant__isnull=False) | ~Q(pod="")),
        idle=Count(
            "id",
            filter=Q(idle_since__lte=now - dt.timedelta(minutes=settings.METRICS_IDLE_MINUTES)),
        ),
        last=Max("last_seen_at"),
    )
    agg["busy_metrics"] = sorted(set(qs.values_list("busy_metric", flat=True)) - {""})
    return agg


def silent_workloads(tenant: Tenant | None = None) -> list[GpuWorkload]:
    """Workloads holding GPUs with no telemetry: passthrough VMs without an agent, node groups
    of clusters whose exporter is not scraped."""
    fresh = timezone.now() - dt.timedelta(seconds=3 * settings.METRICS_COLLECT_SECONDS)
    seen = set(
        GpuDevice.objects.filter(last_seen_at__gte=fresh, workload__isnull=False).values_list(
            "workload_id", flat=True
        )
    )
    qs = GpuWorkload.objects.filter(gpus_held__gt=0).select_related("tenant", "gpu_model")
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    return [w for w in qs.order_by("tenant__namespace", "name") if w.pk not in seen]
