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
