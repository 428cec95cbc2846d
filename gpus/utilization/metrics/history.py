"""One GPU's history in query-API mode: it stays in Prometheus/VictoriaMetrics. A task reads it
with `query_range` (a step that keeps at most 2,000 points a line) and leaves it in Django's
cache for METRICS_RANGE_CACHE_SECONDS; pages read only the cache (no request calls a source)."""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.core.cache import cache
from kombu.exceptions import OperationalError

from gpus.utilization.metrics.config import source_for
from gpus.utilization.metrics.errors import MetricsError
from gpus.utilization.metrics.parse import METRIC_NAMES, Reading, add_sample
from gpus.utilization.metrics.sources import PrometheusSource, step_for
from gpus.utilization.models import GpuDevice, MetricSource, SourceKind
from gpus.web import queue

DETAIL_FIELDS = ("util", "busy", "tensor", "mem_used", "mem_total", "power", "temp", "sm_clock")
LOCK_SECONDS = 120  # a dead worker's lock expires; the next view enqueues again


def is_query_api(device: GpuDevice) -> bool:
    """The GPU's history lives in a query API (not guest-agent samples the portal keeps)."""
    if device.cluster_id is None or device.source == "guest-agent":
        return False
    kind = MetricSource.objects.filter(cluster_id=device.cluster_id).values_list("kind", flat=True)
    row_kind = next(iter(kind), "")
    return (row_kind or settings.METRICS_SOURCE) == SourceKind.PROMETHEUS


def cache_key(uuid: str, range_key: str, tenant: str) -> str:
    digest = hashlib.sha256(f"{uuid}|{range_key}|{tenant}".encode()).hexdigest()[:32]
    return f"gpu-history:{digest}"


def cached(key: str) -> dict[str, Any] | None:
    """{"ts", "lines", "power_limit"} or {"error"}; None while not read yet."""
    return cache.get(key)


def request(key: str, device_id: int, start: float, end: float, tenant: str) -> None:
    """Enqueue the read once however many pages ask (the add() is atomic in Redis and files)."""
    if cache.add(f"{key}:lock", 1, timeout=LOCK_SECONDS):
        try:
            queue.enqueue("utilization.read_gpu_history", device_id, start, end, key, tenant)
        except OperationalError as exc:  # the broker is down: say so, do not 500
            cache.set(key, {"error": f"task queue unreachable: {exc}"}, timeout=15)
            cache.delete(f"{key}:lock")


def _selector(uuid_label: str, uuid: str, cluster: str) -> str:
    names = "|".join(METRIC_NAMES)
    cluster_match = f',cluster="{_quote(cluster)}"' if cluster else ""
    return f'{{__name__=~"{names}",{uuid_label}="{_quote(uuid)}"{cluster_match}}}'


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def read(
    source: PrometheusSource, uuid: str, cluster: str, start: float, end: float, tenant: str = ""
) -> dict[str, Any]:
    """The GPU's lines over [start, end] on the query's own time axis (a missing step is None,
    drawn as a gap). A tenant gets only the series that carried its namespace."""
    step = step_for(start, end)
    matrix = source.query_range(_selector("UUID", uuid, cluster), start, end, step)
    if not matrix:  # older exporters spell the label in lower case
        matrix = source.query_range(_selector("uuid", uuid, cluster), start, end, step)
    by_ts: dict[float, dict[str, Reading]] = {}
    for labels, points in matrix:
        if tenant and labels.get("tenant") != tenant:
            continue
        for ts, value in points:
            add_sample(by_ts.setdefault(ts, {}), labels.get("__name__", ""), labels, value, ts)
    axis = [start + i * step for i in range(int((end - start) // step) + 1)]
    lines: dict[str, list[float | None]] = {f: [None] * len(axis) for f in DETAIL_FIELDS}
    power_limit = None
    for ts, at in by_ts.items():
        i = round((ts - start) / step)
        if not 0 <= i < len(axis):
            continue
        for r in at.values():
            values = {**r.values, "busy": r.busy()[0], "mem_total": r.mem_total()}
            for f in DETAIL_FIELDS:
                if values.get(f) is not None:
                    lines[f][i] = values[f]
            power_limit = r.values.get("power_limit", power_limit)
    return {"ts": axis, "lines": lines, "power_limit": power_limit, "step": step}


def fill(device_id: int, start: float, end: float, key: str, tenant: str) -> dict[str, Any]:
    """The task's work: read the source, leave the result (or the error, in plain words) in the
    cache, release the lock."""
    try:
        device = GpuDevice.objects.get(pk=device_id)
        source = source_for(device.cluster_id)
        if not isinstance(source, PrometheusSource):
            raise MetricsError("this cluster's metrics are not read from a query API")
        result = read(source, device.uuid, device.kube_cluster, start, end, tenant)
        cache.set(key, result, timeout=settings.METRICS_RANGE_CACHE_SECONDS)
    except (MetricsError, GpuDevice.DoesNotExist) as exc:
        result = {"error": str(exc)}
        # An error is kept briefly too, so a page shows it instead of polling forever.
        cache.set(key, result, timeout=min(15, settings.METRICS_RANGE_CACHE_SECONDS))
    finally:
        cache.delete(f"{key}:lock")
    return {"points": len(result.get("ts", [])), "error": result.get("error", "")}
