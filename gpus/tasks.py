"""Celery tasks: take ids, call a service, decide retries."""

from __future__ import annotations

import logging

from celery import shared_task

from . import inventory
from .kube.errors import KubeError, TransientError
from .models import Cluster

log = logging.getLogger(__name__)

MAX_SYNC_RETRIES = 5


@shared_task(bind=True, max_retries=MAX_SYNC_RETRIES, acks_late=True)
def sync_inventory(self, cluster_id: int) -> dict[str, object]:
    """Refresh one cluster's snapshot. Transient failures are retried with backoff (honouring
    Retry-After); permanent ones are recorded on the cluster and shown by the pages."""
    try:
        cluster = inventory.sync_cluster(cluster_id)
    except TransientError as exc:
        delay = exc.retry_after or min(2**self.request.retries, 30)
        log.warning(
            "Inventory sync of cluster %s failed, retrying in %ss: %s", cluster_id, delay, exc
        )
        raise self.retry(exc=exc, countdown=delay) from exc
    except KubeError as exc:
        log.error("Inventory sync of cluster %s failed: %s", cluster_id, exc)
        return {"cluster": cluster_id, "ok": False, "error": str(exc)}
    return {"cluster": cluster.pk, "ok": True, "seconds": cluster.last_sync_seconds}


@shared_task
def sync_all_inventories() -> int:
    """The beat entry point: one sync task per cluster."""
    ids = list(Cluster.objects.values_list("pk", flat=True))
    for cluster_id in ids:
        sync_inventory.delay(cluster_id)
    return len(ids)


# --- GPU telemetry ------------------------------------------------------------------------------


@shared_task(bind=True, max_retries=3, acks_late=True)
def collect_metrics(self, cluster_id: int) -> dict[str, object]:
    """One collection pass for one cluster. Transient source errors retry once or twice (the
    next beat tick comes soon anyway); the outcome is shown on the utilization pages."""
    from .metrics.collector import collect_cluster
    from .metrics.errors import MetricsError, TransientMetricsError

    try:
        return collect_cluster(cluster_id)
    except TransientMetricsError as exc:
        if self.request.retries < 2:
            raise self.retry(exc=exc, countdown=exc.retry_after or 5) from exc
        return {"cluster": cluster_id, "ok": False, "error": str(exc)}
    except MetricsError as exc:
        log.error("Metrics collection for cluster %s failed: %s", cluster_id, exc)
        return {"cluster": cluster_id, "ok": False, "error": str(exc)}


@shared_task
def collect_all_metrics() -> int:
    ids = list(Cluster.objects.values_list("pk", flat=True))
    for cluster_id in ids:
        collect_metrics.delay(cluster_id)
    return len(ids)


@shared_task(acks_late=True)
def rollup_metrics() -> dict[str, object]:
    """Roll up every closed 5-minute bucket not done yet (and hours they close), then apply
    retention. Query-API clusters are read from their source for each bucket."""
    import datetime as dt

    from django.conf import settings

    from .metrics.config import source_for
    from .metrics.errors import MetricsError
    from .metrics.rollup import apply_retention, pending_buckets, rollup_bucket, rows_from_readings
    from .metrics.sources import PrometheusSource

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
