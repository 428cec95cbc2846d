"""5-minute and hourly rollups per GPU and per fleet, cluster, model, node, workload and
tenant, and retention.

Direct mode rolls up the stored samples; query-API mode reads each closed bucket from the
source (per-GPU history stays there) and keeps only the group rollups, and per-GPU rows only for
incidents (an XID or a throttle). Re-running a bucket rewrites the same rows (upserts), so the
task may run twice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Min
from django.db.models.functions import Coalesce
from django.utils import timezone

from gpus.inventory.models import GpuWorkload, Node
from gpus.tenancy.models import Tenant
from gpus.utilization.collector import Owners
from gpus.utilization.metrics.dcgm import THROTTLING, board_power
from gpus.utilization.models import Bucket, GpuDevice, GpuRollup, GpuSample, GroupRollup, Scope

SECONDS = {Bucket.FIVE_MINUTES: 300, Bucket.HOUR: 3600}
MAX_BUCKETS_PER_RUN = 288  # one day of 5-minute buckets: catch up in steps
# A sample row: what both modes feed the per-GPU rollup.
Row = tuple[Any, ...]  # device_id, ts, tenant, workload, allocated, util, busy, tensor, mem_used,
# mem_total, power, temp, sm_clock, xid, throttle
SAMPLE_FIELDS = (
    "device_id",
    "ts",
    "tenant_id",
    "workload_id",
    "allocated",
    "util",
    "busy",
    "tensor",
    "mem_used",
    "mem_total",
    "power",
    "temp",
    "sm_clock",
    "xid",
    "throttle",
)


def floor_ts(t: dt.datetime, seconds: int) -> dt.datetime:
    epoch = int(t.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, tz=dt.UTC)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def gpu_rollups(
    rows: Iterable[Row], bucket: str, start: dt.datetime, interval: float
) -> list[GpuRollup]:
    """Per-GPU aggregates of one bucket from its sample rows."""
    by_device: dict[int, list[Row]] = defaultdict(list)
    for row in rows:
        by_device[row[0]].append(row)
    size = SECONDS[bucket]
    out = []
    for device_id, rs in by_device.items():
        rs.sort(key=lambda r: r[1])
        col = {name: [r[i] for r in rs if r[i] is not None] for i, name in enumerate(SAMPLE_FIELDS)}
        last = rs[-1]
        power_avg = _mean(col["power"])
        covered = min(size, len(rs) * interval)
        xids = [x for x in col["xid"] if x]
        throttle = 0
        for t in col["throttle"]:
            throttle |= int(t)
        out.append(
            GpuRollup(
                bucket=bucket,
                ts=start,
                device_id=device_id,
                tenant_id=last[2],
                workload_id=last[3],
                samples=len(rs),
                allocated=any(r[4] for r in rs),
                util_avg=_mean(col["util"]),
                util_max=max(col["util"], default=None),
                util_min=min(col["util"], default=None),
                busy_avg=_mean(col["busy"]),
                tensor_avg=_mean(col["tensor"]),
                mem_used_avg=_mean(col["mem_used"]),
                mem_used_max=max(col["mem_used"], default=None),
                mem_total=max(col["mem_total"], default=None),
                power_avg=power_avg,
                power_max=max(col["power"], default=None),
                temp_avg=_mean(col["temp"]),
                temp_max=max(col["temp"], default=None),
                sm_clock_avg=_mean(col["sm_clock"]),
                # Energy from the power samples: mean power over the time the samples cover.
                energy_wh=power_avg * covered / 3600 if power_avg is not None else None,
                xid_last=xids[-1] if xids else None,
                throttle_any=throttle if col["throttle"] else None,
            )
        )
    return out


def hourly_from_5m(rollups: Sequence[GpuRollup], start: dt.datetime) -> list[GpuRollup]:
    """Per-GPU hourly rows from the 5-minute rows of that hour (weighted by samples)."""
    by_device: dict[int, list[GpuRollup]] = defaultdict(list)
    for r in rollups:
        by_device[r.device_id].append(r)
    out = []
    for device_id, rs in by_device.items():
        rs.sort(key=lambda r: r.ts)

        def wmean(attr: str, rs: list[GpuRollup] = rs) -> float | None:
            pairs = [(getattr(r, attr), r.samples) for r in rs if getattr(r, attr) is not None]
            total = sum(w for _, w in pairs)
            return sum(v * w for v, w in pairs) / total if total else None

        def agg(attr: str, f: Any, rs: list[GpuRollup] = rs) -> Any:
            vals = [getattr(r, attr) for r in rs if getattr(r, attr) is not None]
            return f(vals) if vals else None

        throttles = [r.throttle_any for r in rs if r.throttle_any is not None]
        xids = [r.xid_last for r in rs if r.xid_last]
        out.append(
            GpuRollup(
                bucket=Bucket.HOUR,
                ts=start,
                device_id=device_id,
                tenant_id=rs[-1].tenant_id,
                workload_id=rs[-1].workload_id,
                samples=sum(r.samples for r in rs),
                allocated=any(r.allocated for r in rs),
                util_avg=wmean("util_avg"),
                util_max=agg("util_max", max),
                util_min=agg("util_min", min),
                busy_avg=wmean("busy_avg"),
                tensor_avg=wmean("tensor_avg"),
                mem_used_avg=wmean("mem_used_avg"),
                mem_used_max=agg("mem_used_max", max),
                mem_total=agg("mem_total", max),
                power_avg=wmean("power_avg"),
                power_max=agg("power_max", max),
                temp_avg=wmean("temp_avg"),
                temp_max=agg("temp_max", max),
                sm_clock_avg=wmean("sm_clock_avg"),
                energy_wh=agg("energy_wh", sum),
                xid_last=xids[-1] if xids else None,
                throttle_any=int(np.bitwise_or.reduce(throttles)) if throttles else None,
            )
        )
    return out


def _unstored_rows(rollups: Sequence[GpuRollup]) -> list[tuple]:
    """Per-GPU rows kept only in memory (query-API mode) as group_rollups reads stored ones."""
    if not rollups:
        return []
    # Every device in one read: an IN list of 100,000 ids would exceed SQLite's variable limit.
    devices = {
        pk: rest
        for pk, *rest in GpuDevice.objects.values_list(
            "pk", "model_name", "cluster__name", "power_limit_w", "hostname", "kube_cluster"
        ).iterator(chunk_size=10000)
    }
    tenants = dict(Tenant.objects.values_list("pk", "namespace"))
    workloads = {
        pk: rest for pk, *rest in GpuWorkload.objects.values_list("pk", "name", "node_group")
    }
    out = []
    for r in rollups:
        model, cluster, limit, host, kube = devices.get(r.device_id, ("", "", None, "", ""))
        name, group = workloads.get(r.workload_id, (None, None))
        out.append(
            (
                r.util_avg,
                r.busy_avg,
                r.allocated,
                r.power_avg,
                r.energy_wh,
                model,
                cluster,
                tenants.get(r.tenant_id),
                limit,
                host,
                name,
                group,
                kube,
                r.mem_used_max if r.mem_used_max is not None else r.mem_used_avg,
            )
        )
    return out


def workload_label(name: str | None, node_group: str | None, kube_cluster: str | None) -> str:
    """How the tenant page names a VM or node group (the cluster when not in the inventory)."""
    label = name or kube_cluster or "?"
    return f"{label}/{node_group}" if node_group else label


def host_nodes() -> dict[str, str]:
    """The exporter's Hostname of a tenant worker (or a GPU VM) -> the host node whose GPUs its
    virt-launcher pod holds, from the inventory's GPU holders (`vm.kubevirt.io/name`: the
    worker's KubeVirt VM, which is also its node name in the tenant cluster)."""
    out: dict[str, str] = {}
    nodes = Node.objects.filter(gpu_allocated__gt=0).values_list("name", "holders")
    for name, holders in nodes.iterator(chunk_size=2000):
        for h in holders or []:
            vm = h.get("workload") if isinstance(h, dict) else None
            if vm:
                out[str(vm)] = name
    return out


def group_rollups(
    bucket: str, start: dt.datetime, unstored: Sequence[GpuRollup] = ()
) -> list[GroupRollup]:
    """Fleet, cluster, model, tenant, node and workload rows from the per-GPU rows of one
    bucket: the stored ones plus `unstored` (query-API mode: per-GPU history stays in the
    source)."""
    threshold = settings.METRICS_IDLE_THRESHOLD
    hours = SECONDS[bucket] / 3600
    # An unstored GPU's incident row (health) is in the table too: count the GPU once.
    skip = {r.device_id for r in unstored}
    stored = GpuRollup.objects.filter(bucket=bucket, ts=start).values_list(
        "device_id",
        "util_avg",
        "busy_avg",
        "allocated",
        "power_avg",
        "energy_wh",
        "device__model_name",
        "device__cluster__name",
        "tenant__namespace",
        "device__power_limit_w",
        "device__hostname",
        "workload__name",
        "workload__node_group",
        "device__kube_cluster",
        Coalesce("mem_used_max", "mem_used_avg"),
    )
    rows = [r[1:] for r in stored if r[0] not in skip] + _unstored_rows(unstored)
    hosts = host_nodes()
    groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for row in rows:
        groups[(Scope.FLEET, "")].append(row)
        groups[(Scope.CLUSTER, row[6] or "")].append(row)
        groups[(Scope.MODEL, row[5] or "")].append(row)
        if row[9]:
            groups[(Scope.NODE, row[9])].append(row)
            if row[9] in hosts:
                groups[(Scope.HOST, hosts[row[9]])].append(row)
        if row[7]:
            groups[(Scope.TENANT, row[7])].append(row)
            label = workload_label(row[10], row[11], row[12])
            groups[(Scope.WORKLOAD, f"{row[7]}|{label}")].append(row)
    epoch = int(start.timestamp())
    out = [GroupRollup(bucket=bucket, scope=Scope.FLEET, key="", ts=start, epoch=epoch, gpus=0)]
    for (scope, key), rs in groups.items():
        utils = np.array([r[0] for r in rs if r[0] is not None], dtype=float)
        # Busy as right-sizing reads a GPU's: its best busy metric, else its utilization.
        busies = [r[1] if r[1] is not None else r[0] for r in rs]
        busies = [b for b in busies if b is not None]
        mems = [r[13] for r in rs if r[13] is not None]
        powers = [r[3] for r in rs if r[3] is not None]
        limits = [board_power(r[5] or "", r[8]) for r in rs if r[3] is not None]
        allocated = sum(1 for r in rs if r[2])
        g = GroupRollup(
            bucket=bucket,
            scope=scope,
            key=key,
            ts=start,
            epoch=epoch,
            gpus=len(rs),
            allocated=allocated,
            busy=sum(1 for r in rs if r[1] is not None and r[1] >= threshold),
            util_avg=float(utils.mean()) if utils.size else None,
            util_p95=float(np.percentile(utils, 95)) if utils.size else None,
            util_p05=float(np.percentile(utils, 5)) if utils.size else None,
            busy_avg=sum(busies) / len(busies) if busies else None,
            mem_used_max=max(mems, default=None),
            power_sum=sum(powers) if powers else None,
            power_limit_sum=sum(x for x in limits if x) if all(limits) and limits else None,
            energy_wh=sum(r[4] for r in rs if r[4] is not None) if powers else None,
            gpu_hours=allocated * hours,
        )
        if scope == Scope.FLEET:
            out[0] = g
        else:
            out.append(g)
    return out


def _upsert_gpu(rows: list[GpuRollup]) -> None:
    fields = [f.name for f in GpuRollup._meta.concrete_fields if f.name not in ("id",)]
    update = [f for f in fields if f not in ("bucket", "ts", "device")]
    GpuRollup.objects.bulk_create(
        rows,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["bucket", "device", "ts"],
        update_fields=update,
    )


def _upsert_group(rows: list[GroupRollup]) -> None:
    update = [
        f.name
        for f in GroupRollup._meta.concrete_fields
        if f.name not in ("id", "bucket", "scope", "key", "ts")
    ]
    GroupRollup.objects.bulk_create(
        rows,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["bucket", "scope", "key", "ts"],
        update_fields=update,
    )


def sample_rows(start: dt.datetime, end: dt.datetime) -> list[Row]:
    return list(GpuSample.objects.filter(ts__gte=start, ts__lt=end).values_list(*SAMPLE_FIELDS))


def rows_from_readings(readings: Iterable[Any], cluster_id: int | None) -> list[Row]:
    """Query-API mode: readings from the source as sample rows (devices must exist: the
    collector creates them)."""
    readings = list(readings)
    owners = Owners(cluster_id)
    ids = dict(
        GpuDevice.objects.filter(uuid__in={r.uuid for r in readings}).values_list("uuid", "pk")
    )
    out = []
    for r in readings:
        if r.uuid not in ids:
            continue
        tenant, workload = owners.of(r)
        v = r.values
        busy, _ = r.busy()
        ts = dt.datetime.fromtimestamp(r.ts, tz=dt.UTC)
        out.append(
            (
                ids[r.uuid],
                ts,
                tenant,
                workload,
                r.allocated,
                v.get("util"),
                busy,
                v.get("tensor"),
                v.get("mem_used"),
                r.mem_total(),
                v.get("power"),
                v.get("temp"),
                v.get("sm_clock"),
                int(v["xid"]) if "xid" in v else None,
                int(v["throttle"]) if "throttle" in v else None,
            )
        )
    return out


def rollup_bucket(start: dt.datetime, extra_rows: Sequence[Row] = ()) -> None:
    """One 5-minute bucket: per-GPU rows from stored samples (direct mode, agents) and the group
    rows; and the hourly rows when the bucket closes an hour. `extra_rows`, read from query
    APIs, count in the group rows only: per-GPU history in query-API mode stays in the source
    (the one-GPU page reads it from there through the cache)."""
    end = start + dt.timedelta(seconds=300)
    interval = settings.METRICS_COLLECT_SECONDS
    stored = gpu_rollups(sample_rows(start, end), Bucket.FIVE_MINUTES, start, interval)
    unstored = gpu_rollups(extra_rows, Bucket.FIVE_MINUTES, start, interval) if extra_rows else []
    with transaction.atomic():
        _upsert_gpu(stored + _events(unstored))
        _upsert_group(group_rollups(Bucket.FIVE_MINUTES, start, unstored))
        if end.timestamp() % 3600 == 0:
            hour = end - dt.timedelta(hours=1)
            fives = list(
                GpuRollup.objects.filter(bucket=Bucket.FIVE_MINUTES, ts__gte=hour, ts__lt=end)
            )
            _upsert_gpu(hourly_from_5m(fives, hour))
            if extra_rows or _has_unstored(hour, end):
                _upsert_group(hourly_groups_from_5m(hour))
            else:
                _upsert_group(group_rollups(Bucket.HOUR, hour))


def _events(rollups: Sequence[GpuRollup]) -> list[GpuRollup]:
    """Of the query-API per-GPU rows, only the buckets with an XID or a throttle, for the health
    list: incidents, not history (no utilization, power or energy kept)."""
    out = []
    for r in rollups:
        if r.xid_last or (r.throttle_any or 0) & THROTTLING:
            out.append(
                GpuRollup(
                    bucket=r.bucket,
                    ts=r.ts,
                    device_id=r.device_id,
                    tenant_id=r.tenant_id,
                    workload_id=r.workload_id,
                    samples=r.samples,
                    allocated=r.allocated,
                    xid_last=r.xid_last,
                    throttle_any=r.throttle_any,
                )
            )
    return out


def _has_unstored(hour: dt.datetime, end: dt.datetime) -> bool:
    """Some 5-minute group row of the hour counted GPUs whose per-GPU rows were not stored."""
    stored = GpuRollup.objects.filter(bucket=Bucket.FIVE_MINUTES, ts__gte=hour, ts__lt=end)
    counted = GroupRollup.objects.filter(
        bucket=Bucket.FIVE_MINUTES, scope=Scope.FLEET, ts__gte=hour, ts__lt=end
    )
    per_bucket = dict(stored.values("ts").annotate(n=Count("id")).values_list("ts", "n"))
    return any(g.gpus > per_bucket.get(g.ts, 0) for g in counted)


def hourly_groups_from_5m(hour: dt.datetime) -> list[GroupRollup]:
    """Hourly group rows from the 5-minute group rows of that hour, when per-GPU rows are not
    all kept (query-API mode). Sums (energy, GPU-hours) are exact; the mean is weighted by
    GPUs (busy too); the memory peak is the hour's highest; percentiles and counts are the hour's
    mean of the 5-minute ones."""
    end = hour + dt.timedelta(hours=1)
    fives = GroupRollup.objects.filter(bucket=Bucket.FIVE_MINUTES, ts__gte=hour, ts__lt=end)
    groups: dict[tuple[str, str], list[GroupRollup]] = defaultdict(list)
    for g in fives:
        groups[(g.scope, g.key)].append(g)

    def mean(rs: list[GroupRollup], attr: str) -> float | None:
        vals = [getattr(r, attr) for r in rs if getattr(r, attr) is not None]
        return sum(vals) / len(vals) if vals else None

    out = []
    for (scope, key), rs in groups.items():
        weighted = [(r.util_avg, r.gpus) for r in rs if r.util_avg is not None and r.gpus]
        total = sum(w for _, w in weighted)
        busy = [(r.busy_avg, r.gpus) for r in rs if r.busy_avg is not None and r.gpus]
        busy_total = sum(w for _, w in busy)
        mems = [r.mem_used_max for r in rs if r.mem_used_max is not None]
        energies = [r.energy_wh for r in rs if r.energy_wh is not None]
        out.append(
            GroupRollup(
                bucket=Bucket.HOUR,
                scope=scope,
                key=key,
                ts=hour,
                epoch=int(hour.timestamp()),
                gpus=max(r.gpus for r in rs),
                allocated=mean(rs, "allocated") or 0,
                busy=mean(rs, "busy") or 0,
                util_avg=sum(v * w for v, w in weighted) / total if total else None,
                util_p95=mean(rs, "util_p95"),
                util_p05=mean(rs, "util_p05"),
                busy_avg=sum(v * w for v, w in busy) / busy_total if busy_total else None,
                mem_used_max=max(mems, default=None),
                power_sum=mean(rs, "power_sum"),
                power_limit_sum=mean(rs, "power_limit_sum"),
                energy_wh=sum(energies) if energies else None,
                gpu_hours=sum(r.gpu_hours or 0 for r in rs),
            )
        )
    return out


def pending_buckets(now: dt.datetime | None = None) -> list[dt.datetime]:
    """Closed 5-minute buckets not rolled up yet (from the first sample on)."""
    now = now or timezone.now()
    last_closed = floor_ts(now, 300) - dt.timedelta(seconds=300)
    done = GroupRollup.objects.filter(bucket=Bucket.FIVE_MINUTES, scope=Scope.FLEET).aggregate(
        m=Max("ts")
    )["m"]
    if done is None:
        first = (
            GpuSample.objects.aggregate(m=Min("ts"))["m"]
            or GpuDevice.objects.aggregate(m=Min("last_seen_at"))["m"]
        )
        if first is None:
            return []
        start = floor_ts(first, 300)
    else:
        start = done + dt.timedelta(seconds=300)
    out = []
    while start <= last_closed and len(out) < MAX_BUCKETS_PER_RUN:
        out.append(start)
        start += dt.timedelta(seconds=300)
    return out


def apply_retention(now: dt.datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    raw = now - dt.timedelta(hours=settings.METRICS_RAW_RETENTION_HOURS)
    five = now - dt.timedelta(days=settings.METRICS_5M_RETENTION_DAYS)
    hour = now - dt.timedelta(days=settings.METRICS_1H_RETENTION_DAYS)
    # 5-minute node and workload rows serve ranges up to two days only (longer ranges read the
    # hourly rows): keep them as long as raw samples, not 30 days (12,500 nodes at 100,000 GPUs).
    fine = GroupRollup.objects.filter(
        bucket=Bucket.FIVE_MINUTES, scope__in=[Scope.NODE, Scope.WORKLOAD], ts__lt=raw
    )
    return {
        "samples": GpuSample.objects.filter(ts__lt=raw).delete()[0],
        "5m_node_workload": fine.delete()[0],
        "5m": GpuRollup.objects.filter(bucket=Bucket.FIVE_MINUTES, ts__lt=five).delete()[0]
        + GroupRollup.objects.filter(bucket=Bucket.FIVE_MINUTES, ts__lt=five).delete()[0],
        "1h": GpuRollup.objects.filter(bucket=Bucket.HOUR, ts__lt=hour).delete()[0]
        + GroupRollup.objects.filter(bucket=Bucket.HOUR, ts__lt=hour).delete()[0],
    }
