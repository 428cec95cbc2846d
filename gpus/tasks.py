"""Celery tasks: take ids, call a service, decide retries."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

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
