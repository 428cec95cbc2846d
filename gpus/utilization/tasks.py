"""Celery tasks of utilization: collect, roll up, read one GPU's history. They take ids and are
sent by name."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.conf import settings

from gpus.inventory.models import Cluster
from gpus.kube.retry import Backoff
from gpus.utilization.collector import collect_cluster
from gpus.utilization.metrics.config import source_for
from gpus.utilization.metrics.errors import MetricsError, TransientMetricsError
from gpus.utilization.metrics.history import fill
from gpus.utilization.metrics.sources import PrometheusSource
from gpus.utilization.rollup import (
    apply_retention,
    pending_buckets,
    rollup_bucket,
    rows_from_readings,
)

log = logging.getLogger(__name__)


# --- GPU telemetry ------------------------------------------------------------------------------


@shared_task(name="utilization.collect_metrics", bind=True, max_retries=3, acks_late=True)
def collect_metrics(self, cluster_id: int) -> dict[str, object]:
    """One collection pass for one cluster. Transient source errors retry once or twice (the
    next beat tick comes soon anyway); the outcome is shown on the utilization pages."""
    try:
        return collect_cluster(cluster_id)
    except TransientMetricsError as exc:
        if self.request.retries < 2:
            # From 5 s, never past the next collection (the beat's own retry).
            backoff = Backoff(5.0, settings.METRICS_COLLECT_SECONDS)
            delay = backoff.delay(self.request.retries, exc.retry_after)
            raise self.retry(exc=exc, countdown=delay) from exc
        return {"cluster": cluster_id, "ok": False, "error": str(exc)}
    except MetricsError as exc:
        log.error("Metrics collection for cluster %s failed: %s", cluster_id, exc)
        return {"cluster": cluster_id, "ok": False, "error": str(exc)}


@shared_task(name="utilization.collect_all_metrics")
def collect_all_metrics() -> int:
    ids = list(Cluster.objects.values_list("pk", flat=True))
    for cluster_id in ids:
        collect_metrics.delay(cluster_id)
    return len(ids)


@shared_task(name="utilization.rollup_metrics", acks_late=True)
def rollup_metrics() -> dict[str, object]:
    """Roll up every closed 5-minute bucket not done yet (and hours they close), then apply
    retention. Query-API clusters are read from their source for each bucket."""
    buckets = pending_buckets()
    query_sources = [
        (cid, src)
        for cid in Cluster.objects.values_list("pk", flat=True)
        if isinstance(src := source_for(cid), PrometheusSource)
    ]
    for start in buckets:
        rows: list = []
        for cid, src in query_sources:
            end = start + dt.timedelta(seconds=300 - 1)
            try:
                found = src.readings_between(
                    start.timestamp(), end.timestamp(), settings.METRICS_COLLECT_SECONDS
                )
            except MetricsError as exc:
                log.warning("Rollup read from cluster %s failed: %s", cid, exc)
                return {"buckets": 0, "error": str(exc)}  # try the same bucket next time
            rows += rows_from_readings(found, cid)
        rollup_bucket(start, rows)
    return {"buckets": len(buckets), "deleted": apply_retention()}


@shared_task(name="utilization.read_gpu_history", acks_late=True)
def read_gpu_history(
    device_id: int, start: float, end: float, key: str, tenant: str = ""
) -> dict[str, object]:
    """One GPU's history from its query API into the cache, for the one-GPU page."""
    return fill(device_id, start, end, key, tenant)
