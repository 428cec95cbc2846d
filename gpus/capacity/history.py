"""The capacity history: one sample per GPU model per cluster at each sync, per-tenant
GPU-hours, and the hourly and daily rollups with their retention."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import Avg, Count, Max, Min, Q, Subquery, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from gpus.capacity.models import (
    ROLLUP_FIELDS,
    Bucket,
    CapacityRollup,
    CapacitySample,
    RefusedRequest,
    TenantUsage,
)
from gpus.capacity.pricing import held_resources
from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import GpuWorkload, ModelInventory, NodeGpu
from gpus.provisioning.choices import ACTIVE_OPERATION_STATES, OperationState
from gpus.provisioning.models import Operation
from gpus.utilization.models import Bucket as UtilBucket
from gpus.utilization.models import GpuRollup

UTC = dt.UTC
# A tenant's usage row: the most GPUs held, and GPU-, vCPU-, memory- and disk-GiB-hours.
USAGE_FIELDS = ["gpus_max", "gpu_hours", "vcpu_hours", "memory_gib_hours", "disk_gib_hours"]


def hour_of(t: dt.datetime) -> dt.datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def record_samples(cluster_id: int, at: dt.datetime) -> int:
    """Append this sync's samples: one row per GPU model the cluster serves or is asked for,
    read from the stored snapshot (a few grouped queries, whatever the fleet size). Returns
    the rows written. A second call for the same time writes nothing."""
    samples = CapacitySample.objects.filter(cluster_id=cluster_id)
    previous = samples.aggregate(last=Max("at"))["last"]
    if previous is not None and previous >= at:
        return 0
    rows: dict[int, dict[str, int]] = defaultdict(dict)
    for r in ModelInventory.objects.filter(cluster_id=cluster_id).values(
        "gpu_model_id", "installed", "allocated", "free", "unavailable"
    ):
        rows[r.pop("gpu_model_id")].update(r)
    held = (
        GpuWorkload.objects.filter(cluster_id=cluster_id, gpu_model__isnull=False)
        .values("gpu_model_id", "kind")
        .annotate(n=Sum("gpus_held"))
    )
    for r in held:
        field = "allocated_vms" if r["kind"] == WorkloadKind.VM else "allocated_node_groups"
        rows[r["gpu_model_id"]][field] = rows[r["gpu_model_id"]].get(field, 0) + (r["n"] or 0)
    free_one = (
        NodeGpu.objects.filter(
            node__cluster_id=cluster_id, node__ready=True, node__unschedulable=False
        )
        .values("gpu_model_id")
        .annotate(most=Max("free"))
    )
    for r in free_one:
        rows[r["gpu_model_id"]]["free_max_one"] = r["most"] or 0
    # Demand: GPUs waiting for capacity now, and refused since the previous sample (at submit,
    # or failed after waiting unschedulable past the grace period).
    waiting = (
        Operation.objects.filter(
            Q(state=OperationState.QUEUED)
            | Q(state__in=ACTIVE_OPERATION_STATES, unschedulable_since__isnull=False),
            cluster_id=cluster_id,
            gpu_model__isnull=False,
        )
        .values("gpu_model_id")
        .annotate(n=Sum("gpu_count"))
    )
    for r in waiting:
        rows[r["gpu_model_id"]]["queued"] = r["n"] or 0
    since = Q(at__gt=previous) if previous else Q()
    for r in (
        RefusedRequest.objects.filter(since, cluster_id=cluster_id, at__lte=at)
        .values("gpu_model_id")
        .annotate(n=Sum("gpus"))
    ):
        rows[r["gpu_model_id"]]["refused"] = r["n"] or 0
    failed_since = Q(finished_at__gt=previous) if previous else Q()
    for r in (
        Operation.objects.filter(
            failed_since,
            cluster_id=cluster_id,
            state=OperationState.FAILED,
            unschedulable_since__isnull=False,
            gpu_model__isnull=False,
            finished_at__lte=at,
        )
        .values("gpu_model_id")
        .annotate(n=Sum("gpu_count"))
    ):
        rows[r["gpu_model_id"]]["refused"] = rows[r["gpu_model_id"]].get("refused", 0) + r["n"]
    for model_id, busy in _busy(cluster_id).items():
        if model_id in rows:
            rows[model_id].update(busy)
    with transaction.atomic():
        CapacitySample.objects.bulk_create(
            CapacitySample(cluster_id=cluster_id, gpu_model_id=model_id, at=at, **values)
            for model_id, values in rows.items()
        )
        _add_tenant_usage(cluster_id, at, previous)
    return len(rows)


def _busy(cluster_id: int) -> dict[int, dict]:
    """Per GPU model of the cluster: how many allocated GPUs report in the latest 5-minute
    utilization rollups, and their mean busy %: 1 query, at the sync rather than on each view
    of the capacity page (which then reads one sample per cluster and model)."""
    latest = (
        GpuRollup.objects.filter(bucket=UtilBucket.FIVE_MINUTES).order_by("-ts").values("ts")[:1]
    )
    return {
        r["device__gpu_model_id"]: {"reporting": r["n"], "busy_pct": r["busy"]}
        for r in GpuRollup.objects.filter(
            bucket=UtilBucket.FIVE_MINUTES,
            ts=Subquery(latest),
            allocated=True,
            device__cluster_id=cluster_id,
            device__gpu_model__isnull=False,
        )
        .values("device__gpu_model_id")
        .annotate(n=Count("id"), busy=Avg("busy_avg"))
        .order_by()
    }


def _add_tenant_usage(cluster_id: int, at: dt.datetime, previous: dt.datetime | None) -> None:
    """GPU-hours since the previous sample, credited to what each tenant holds now (capped, so
    a cluster unreachable for a day is not billed a day of what it held before), and the vCPU-,
    memory- and disk-GiB-hours of the workloads holding those GPUs (what spend prices)."""
    cap = settings.CAPACITY_USAGE_GAP_SECONDS
    seconds = min((at - previous).total_seconds(), cap) if previous else 0.0
    held = held_resources(cluster_id=cluster_id)
    if not held:
        return
    hour = hour_of(at)
    existing = {
        (r[0], r[1]): r[2:]
        for r in TenantUsage.objects.filter(
            bucket=Bucket.HOUR, cluster_id=cluster_id, ts=hour
        ).values_list("tenant_id", "gpu_model_id", *USAGE_FIELDS)
    }
    hours = seconds / 3600
    rows = []
    for (tenant_id, model_id), h in held.items():
        old_max, old_gpu, old_vcpu, old_memory, old_disk = existing.get(
            (tenant_id, model_id), (0, 0.0, 0.0, 0.0, 0.0)
        )
        rows.append(
            TenantUsage(
                bucket=Bucket.HOUR,
                ts=hour,
                cluster_id=cluster_id,
                tenant_id=tenant_id,
                gpu_model_id=model_id,
                gpus_max=max(old_max, h.gpus),
                gpu_hours=old_gpu + h.gpus * hours,
                vcpu_hours=old_vcpu + h.vcpus * hours,
                memory_gib_hours=old_memory + h.memory_gib * hours,
                disk_gib_hours=old_disk + h.disk_gib * hours,
            )
        )
    # One writer per cluster (the sync's lease), so read-then-upsert is safe.
    TenantUsage.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["bucket", "cluster", "tenant", "gpu_model", "ts"],
        update_fields=USAGE_FIELDS,
    )


def rollup(now: dt.datetime | None = None) -> dict[str, int]:
    """(Re)compute the hourly and daily rollups of the samples since the last complete bucket
    (the current bucket too: it is rewritten until it ends), then apply retention."""
    now = now or timezone.now()
    written = {}
    for bucket, trunc, width in (
        (Bucket.HOUR, TruncHour, dt.timedelta(hours=1)),
        (Bucket.DAY, TruncDay, dt.timedelta(days=1)),
    ):
        last = CapacityRollup.objects.filter(bucket=bucket).aggregate(t=Max("ts"))["t"]
        # The bucket before the last one too: a cluster whose sync finished late may have
        # added a sample to it after it was rolled up.
        start = (
            last - width
            if last is not None
            else now - dt.timedelta(days=settings.CAPACITY_RAW_RETENTION_DAYS)
        )
        groups = (
            CapacitySample.objects.filter(at__gte=start)
            .annotate(bts=trunc("at", tzinfo=UTC))
            .values("bts", "cluster_id", "gpu_model_id")
            .annotate(
                n=Count("id"),
                installed_avg=Avg("installed"),
                allocated_avg=Avg("allocated"),
                allocated_top=Max("allocated"),
                free_avg=Avg("free"),
                free_low=Min("free"),
                unavailable_avg=Avg("unavailable"),
                queued_top=Max("queued"),
                refused_sum=Sum("refused"),
            )
        )
        rows = [
            CapacityRollup(
                bucket=bucket,
                ts=g["bts"],
                cluster_id=g["cluster_id"],
                gpu_model_id=g["gpu_model_id"],
                samples=g["n"],
                installed=g["installed_avg"] or 0,
                allocated=g["allocated_avg"] or 0,
                allocated_max=g["allocated_top"] or 0,
                free=g["free_avg"] or 0,
                free_min=g["free_low"] or 0,
                unavailable=g["unavailable_avg"] or 0,
                queued_max=g["queued_top"] or 0,
                refused=g["refused_sum"] or 0,
            )
            for g in groups
        ]
        CapacityRollup.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["bucket", "cluster", "gpu_model", "ts"],
            update_fields=ROLLUP_FIELDS,
        )
        written[bucket] = len(rows)
    written["tenant_days"] = _tenant_days(now)
    written.update(apply_retention(now))
    return written


def _tenant_days(now: dt.datetime) -> int:
    last = TenantUsage.objects.filter(bucket=Bucket.DAY).aggregate(t=Max("ts"))["t"]
    start = (
        last
        if last is not None
        else now - dt.timedelta(days=settings.CAPACITY_HOURLY_RETENTION_DAYS)
    )
    groups = (
        TenantUsage.objects.filter(bucket=Bucket.HOUR, ts__gte=start)
        .annotate(day=TruncDay("ts", tzinfo=UTC))
        .values("day", "cluster_id", "tenant_id", "gpu_model_id")
        .annotate(
            top=Max("gpus_max"),
            hours=Sum("gpu_hours"),
            vcpu=Sum("vcpu_hours"),
            memory=Sum("memory_gib_hours"),
            disk=Sum("disk_gib_hours"),
        )
    )
    rows = [
        TenantUsage(
            bucket=Bucket.DAY,
            ts=g["day"],
            cluster_id=g["cluster_id"],
            tenant_id=g["tenant_id"],
            gpu_model_id=g["gpu_model_id"],
            gpus_max=g["top"] or 0,
            gpu_hours=g["hours"] or 0.0,
            vcpu_hours=g["vcpu"] or 0.0,
            memory_gib_hours=g["memory"] or 0.0,
            disk_gib_hours=g["disk"] or 0.0,
        )
        for g in groups
    ]
    TenantUsage.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["bucket", "cluster", "tenant", "gpu_model", "ts"],
        update_fields=USAGE_FIELDS,
    )
    return len(rows)


def apply_retention(now: dt.datetime) -> dict[str, int]:
    days = dt.timedelta(days=1)
    raw = now - settings.CAPACITY_RAW_RETENTION_DAYS * days
    hourly = now - settings.CAPACITY_HOURLY_RETENTION_DAYS * days
    daily = now - settings.CAPACITY_DAILY_RETENTION_DAYS * days
    return {
        "samples_deleted": CapacitySample.objects.filter(at__lt=raw).delete()[0],
        "hours_deleted": CapacityRollup.objects.filter(bucket=Bucket.HOUR, ts__lt=hourly).delete()[
            0
        ]
        + TenantUsage.objects.filter(bucket=Bucket.HOUR, ts__lt=hourly).delete()[0],
        "days_deleted": CapacityRollup.objects.filter(bucket=Bucket.DAY, ts__lt=daily).delete()[0]
        + TenantUsage.objects.filter(bucket=Bucket.DAY, ts__lt=daily).delete()[0],
        "refusals_deleted": RefusedRequest.objects.filter(at__lt=hourly).delete()[0],
    }
