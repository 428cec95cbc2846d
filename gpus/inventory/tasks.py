"""Celery tasks of the inventory: sync one cluster or all, refresh the served schemas. They take
ids and are sent by name."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from gpus.inventory import sync
from gpus.inventory.models import Cluster
from gpus.inventory.schemas import refresh_served_schemas
from gpus.kube.budget import RetryBudgetSpent
from gpus.kube.errors import KubeError, TransientError

log = logging.getLogger(__name__)


@shared_task(name="inventory.sync_inventory", bind=True, max_retries=None, acks_late=True)
def sync_inventory(self, cluster_id: int) -> dict[str, object]:
    """Refresh one cluster's snapshot.

    A sync has one retry budget for all its requests (``INVENTORY_SYNC_RETRY_BUDGET``); the
    first failure is on the cluster at once. A sync that still failed for a transient reason is
    retried as a whole, after the cluster's backoff, at most ``INVENTORY_SYNC_TASK_RETRIES``
    times; then the task gives up and the beat tries again once the backoff has passed.
    Permanent errors (403, bad kubeconfig) and unexpected ones are recorded and not retried.
    """
    try:
        cluster = sync.sync_cluster(cluster_id)
    except sync.SyncInProgress:
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
        delay = sync.backoff_seconds(failures, getattr(exc, "retry_after", None))
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


@shared_task(name="inventory.sync_all_inventories")
def sync_all_inventories() -> int:
    """The beat entry point: one sync task per cluster, except clusters backing off."""
    due = Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=timezone.now())
    ids = list(Cluster.objects.filter(due).values_list("pk", flat=True))
    for cluster_id in ids:
        sync_inventory.delay(cluster_id)
    return len(ids)


@shared_task(name="inventory.refresh_all_served_schemas")
def refresh_all_served_schemas() -> int:
    done = 0
    for cluster_id in Cluster.objects.values_list("pk", flat=True):
        try:
            done += refresh_served_schemas(cluster_id)
        except KubeError as exc:
            log.warning("Reading the served schemas of cluster %s failed: %s", cluster_id, exc)
    return done
