"""One poll sweep of a cluster at a time, whatever the number of beats and workers.

The beat sends ``provisioning.poll_operations`` every OPERATION_POLL_SECONDS. A sweep that
outlasts the interval, a second beat, or several workers would otherwise sweep one cluster at
once: twice the requests for the same answer, and sweeps piling up behind a slow cluster. The
sweep therefore takes the cluster's lock in Redis (redis-py's ``Lock``: a token set with NX and
an expiry, released only by its owner) without waiting: a sweep that finds it taken is skipped,
since the sweep running now will see what this one would have. The lock expires after
OPERATION_POLL_LEASE_SECONDS, so a worker killed mid-sweep does not stop polling for good.

Without Redis (embedded mode: one ``--pool=solo`` worker) a lock of this process does the same.
If Redis stops answering, the sweep falls back to that process lock rather than stopping polls:
two sweeps at once cost requests, not correctness (each write is conditional on the state).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import redis
from django.conf import settings
from redis.exceptions import RedisError

from gpus.provisioning import engine

log = logging.getLogger(__name__)

KEY_PREFIX = "hikube-portal:poll-sweep"
# Redis must answer fast or be passed over: a stuck lock would stall every sweep.
REDIS_TIMEOUT_SECONDS = 1.0

_local_locks: dict[int, threading.Lock] = {}
_local_guard = threading.Lock()


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


def _local_lock(cluster_id: int) -> threading.Lock:
    with _local_guard:
        return _local_locks.setdefault(cluster_id, threading.Lock())


def lock_url() -> str:
    """The Redis every worker shares (the cache's); "" in embedded mode."""
    url = settings.CACHE_URL
    return url if url.startswith(("redis://", "rediss://", "unix://")) else ""


@contextmanager
def _process_lock(cluster_id: int) -> Iterator[bool]:
    lock = _local_lock(cluster_id)
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


@contextmanager
def sweep_lock(cluster_id: int) -> Iterator[bool]:
    """Hold the cluster's sweep lock for the block: yields True if this sweep may run, False
    if another holds it (then do nothing)."""
    url = lock_url()
    if not url:
        with _process_lock(cluster_id) as held:
            yield held
        return
    lock = _client(url).lock(
        f"{KEY_PREFIX}:{cluster_id}",
        timeout=settings.OPERATION_POLL_LEASE_SECONDS,
        blocking=False,
    )
    try:
        held = lock.acquire()
    except RedisError as exc:
        log.warning(
            "cluster %s: the sweep lock is unreachable (%s); this process sweeps alone",
            cluster_id,
            exc,
        )
        with _process_lock(cluster_id) as local:
            yield local
        return
    if not held:
        yield False
        return
    try:
        yield True
    finally:
        try:
            lock.release()
        except RedisError as exc:  # expired (a sweep past its lease) or Redis gone: it frees itself
            log.warning("cluster %s: sweep lock not released: %s", cluster_id, exc)


def sweep(cluster_id: int) -> int | None:
    """Poll the cluster's operations in flight (``engine.poll_cluster``) under its sweep lock:
    how many were polled, or None when another sweep of the cluster is running."""
    with sweep_lock(cluster_id) as held:
        if not held:
            return None
        return engine.poll_cluster(cluster_id)
