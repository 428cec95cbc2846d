"""Celery tasks: take ids, call a service, decide retries."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from . import inventory
from .kube.budget import RetryBudgetSpent
from .kube.errors import KubeError, TransientError
from .models import Cluster

log = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=None, acks_late=True)
def sync_inventory(self, cluster_id: int) -> dict[str, object]:
    """Refresh one cluster's snapshot.

    A sync has one retry budget for all its requests (``INVENTORY_SYNC_RETRY_BUDGET``); the
    first failure is on the cluster at once. A sync that still failed for a transient reason is
    retried as a whole, after the cluster's backoff, at most ``INVENTORY_SYNC_TASK_RETRIES``
    times; then the task gives up and the beat tries again once the backoff has passed.
    Permanent errors (403, bad kubeconfig) and unexpected ones are recorded and not retried.
    """
    try:
        cluster = inventory.sync_cluster(cluster_id)
    except inventory.SyncInProgress:
        log.info("Inventory sync of cluster %s skipped: another one is running", cluster_id)
        return {"cluster": cluster_id, "ok": False, "skipped": True}
    except (TransientError, RetryBudgetSpent) as exc:
        failures, next_sync_at = Cluster.objects.values_list(
            "consecutive_failures", "next_sync_at"
        ).get(pk=cluster_id)
        if self.request.retries >= settings.INVENTORY_SYNC_TASK_RETRIES:
            log.error(
                "Inventory sync of cluster %s failed %s times, giving up until %s: %s",
                cluster_id,
                failures,
                next_sync_at,
                exc,
            )
            return {"cluster": cluster_id, "ok": False, "gave_up": True, "error": str(exc)}
        delay = inventory.backoff_seconds(failures, getattr(exc, "retry_after", None))
        # The retry is this cluster's next sync: the beat leaves it alone until then.
        Cluster.objects.filter(pk=cluster_id).update(
            next_sync_at=timezone.now() + timedelta(seconds=delay + settings.INVENTORY_SYNC_SECONDS)
        )
        log.warning(
            "Inventory sync of cluster %s failed, retrying in %ss: %s", cluster_id, delay, exc
        )
        raise self.retry(exc=exc, countdown=delay) from exc
    except KubeError as exc:
        log.error("Inventory sync of cluster %s failed: %s", cluster_id, exc)
        return {"cluster": cluster_id, "ok": False, "error": str(exc)}
    except Exception as exc:
        # Recorded on the cluster by the service; the task ends cleanly so the worker goes on.
        log.exception("Inventory sync of cluster %s failed unexpectedly", cluster_id)
        return {"cluster": cluster_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "cluster": cluster.pk,
        "ok": True,
        "seconds": cluster.last_sync_seconds,
        "rows_written": cluster.last_sync_rows,
    }


@shared_task
def sync_all_inventories() -> int:
    """The beat entry point: one sync task per cluster, except clusters backing off."""
    due = Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=timezone.now())
    ids = list(Cluster.objects.filter(due).values_list("pk", flat=True))
    for cluster_id in ids:
        sync_inventory.delay(cluster_id)
    return len(ids)


# --- operations ------------------------------------------------------------------------


@shared_task(bind=True, acks_late=True, max_retries=None)
def apply_operation(self, operation_id: int) -> str:
    """Claim the operation (conditional update), apply it idempotently, hand it to the poller.

    A transient failure puts it back to pending with its reason and retries with backoff
    (Retry-After honoured); if the retry message is lost, the reconciler enqueues it again.
    """
    from . import provisioning

    op = provisioning.claim(operation_id)
    if op is None:
        return "not claimable"
    try:
        provisioning.apply(op)
    except TransientError as exc:
        if exc.retry_after is not None:
            delay = exc.retry_after  # the cluster said when (429 Retry-After)
        else:
            delay = min(2 ** min(op.attempts, 6), settings.OPERATION_RETRY_MAX_SECONDS)
        provisioning.release_for_retry(op, exc, delay)
        log.warning("Operation %s: transient failure, retrying in %ss: %s", op.pk, delay, exc)
        raise self.retry(exc=exc, countdown=delay) from exc
    except Exception as exc:
        # A bug must leave a visible failed state, not an operation stuck in "applying".
        log.exception("Operation %s failed unexpectedly", op.pk)
        provisioning.fail(op, "PortalError", f"{type(exc).__name__}: {exc}")
        raise
    return op.state


@shared_task
def poll_operations() -> int:
    """The beat entry point: one batched poll per cluster with operations in flight."""
    from . import provisioning

    polled = 0
    for cluster_id in provisioning.clusters_with_polled_operations():
        try:
            polled += provisioning.poll_cluster(cluster_id)
        except KubeError as exc:
            # The next beat tick polls again; operations stay as they are meanwhile.
            log.warning("Polling operations of cluster %s failed: %s", cluster_id, exc)
    return polled


@shared_task
def reconcile_operations() -> int:
    from . import provisioning

    return len(provisioning.reconcile())


@shared_task
def refresh_all_served_schemas() -> int:
    from . import provisioning

    done = 0
    for cluster_id in Cluster.objects.values_list("pk", flat=True):
        try:
            done += provisioning.refresh_served_schemas(cluster_id)
        except KubeError as exc:
            log.warning("Reading the served schemas of cluster %s failed: %s", cluster_id, exc)
    return done


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


@shared_task(acks_late=True)
def read_gpu_history(
    device_id: int, start: float, end: float, key: str, tenant: str = ""
) -> dict[str, object]:
    """One GPU's history from its query API into the cache, for the one-GPU page."""
    from .metrics.history import fill

    return fill(device_id, start, end, key, tenant)
