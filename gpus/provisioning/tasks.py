"""Celery tasks of provisioning: apply one operation, poll those in flight, re-send lost ones.
They take ids and are sent by name."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.utils import translation

from gpus.kube.errors import KubeError, TransientError
from gpus.kube.retry import Backoff
from gpus.provisioning import connect, engine, sweeps
from gpus.provisioning.engine import reconcile
from gpus.web.logs import logs_operation

log = logging.getLogger(__name__)


# --- operations ------------------------------------------------------------------------


@shared_task(name="provisioning.apply_operation", bind=True, acks_late=True, max_retries=None)
@logs_operation
def apply_operation(self, operation_id: int) -> str:
    """Claim the operation (conditional update), apply it idempotently, hand it to the poller.

    A transient failure puts it back to pending with its reason and retries with backoff
    (Retry-After honoured); if the retry message is lost, the reconciler enqueues it again.
    """

    op = engine.claim(operation_id)
    if op is None:
        return "not claimable"
    try:
        with translation.override(op.language):  # its messages in the asker's words
            engine.apply(op)
    except TransientError as exc:
        # 2 s after the first attempt, doubling up to OPERATION_RETRY_MAX_SECONDS.
        backoff = Backoff(2.0, settings.OPERATION_RETRY_MAX_SECONDS)
        delay = backoff.delay(op.attempts - 1, exc.retry_after)
        engine.release_for_retry(op, exc, delay)
        log.warning("Operation %s: transient failure, retrying in %ss: %s", op.pk, delay, exc)
        raise self.retry(exc=exc, countdown=delay) from exc
    except Exception as exc:
        # A bug must leave a visible failed state, not an operation stuck in "applying".
        log.exception("Operation %s failed unexpectedly", op.pk)
        engine.fail(op, "PortalError", f"{type(exc).__name__}: {exc}")
        raise
    return op.state


@shared_task(name="provisioning.clean_up_operation", bind=True, acks_late=True, max_retries=None)
def clean_up_operation(self, operation_id: int) -> str:
    """Remove what a failed create made in the cluster; a transient failure retries (and the
    reconciler sends it again if the message is lost)."""
    try:
        return engine.clean_up(operation_id)
    except TransientError as exc:
        backoff = Backoff(2.0, settings.OPERATION_RETRY_MAX_SECONDS)
        delay = backoff.delay(self.request.retries, exc.retry_after)
        raise self.retry(exc=exc, countdown=delay) from exc


@shared_task(name="provisioning.poll_operations")
def poll_operations() -> int:
    """The beat entry point: one batched poll per cluster with operations in flight, each
    skipped while another sweep of that cluster runs (``sweeps``: sweeps never overlap)."""

    polled = 0
    for cluster_id in engine.clusters_with_polled_operations():
        try:
            polled += sweeps.sweep(cluster_id) or 0
        except KubeError as exc:
            # The next beat tick polls again; operations stay as they are meanwhile.
            log.warning("Polling operations of cluster %s failed: %s", cluster_id, exc)
    return polled


@shared_task(name="provisioning.reconcile_operations")
def reconcile_operations() -> int:
    return len(reconcile())


# --- connecting ------------------------------------------------------------------------


@shared_task(name="provisioning.read_connection")
def read_connection(user_id: int, workload_id: int) -> str:
    """Read a VM's addresses or a cluster's kubeconfig as the person (see connect.py)."""
    return connect.read(user_id, workload_id)
