"""Sweeps of one cluster never overlap: the sweep lock in Redis (gpus.provisioning.sweeps)."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from gpus.provisioning import engine, sweeps, tasks


@pytest.fixture
def lock_redis(settings) -> redis.Redis:
    if not sweeps.lock_url():
        pytest.skip("no Redis CACHE_URL: the sweep lock lives in Redis")
    return redis.Redis.from_url(sweeps.lock_url())


def cluster_id() -> int:
    """A cluster number no other test (or xdist worker) locks."""
    return uuid.uuid4().int % 10**9


def test_a_second_sweep_of_a_cluster_is_skipped_while_one_runs(lock_redis, monkeypatch):
    cid = cluster_id()
    inside, leave = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_poll(polled: int) -> int:
        calls.append(polled)
        inside.set()
        assert leave.wait(30)
        return 7

    monkeypatch.setattr(engine, "poll_cluster", slow_poll)
    results: list[int | None] = []
    first = threading.Thread(target=lambda: results.append(sweeps.sweep(cid)))
    first.start()
    try:
        assert inside.wait(30)
        # The lock is in Redis, with an expiry (a killed worker's lock frees itself).
        key = f"{sweeps.KEY_PREFIX}:{cid}"
        assert lock_redis.exists(key)
        assert 0 < lock_redis.pttl(key) <= sweeps.settings.OPERATION_POLL_LEASE_SECONDS * 1000
        assert sweeps.sweep(cid) is None
    finally:
        leave.set()
        first.join(30)
    assert results == [7]
    assert calls.count(cid) == 1
    assert not lock_redis.exists(f"{sweeps.KEY_PREFIX}:{cid}")
    assert sweeps.sweep(cid) == 7  # free again once the first sweep ended


def test_a_lock_held_by_another_worker_skips_the_beats_sweep(lock_redis, monkeypatch):
    """Another process holds the lock (same key, its own token): the task polls nothing of that
    cluster and the other one's lock stays."""
    held, free = cluster_id(), cluster_id()
    swept: list[int] = []
    monkeypatch.setattr(engine, "clusters_with_polled_operations", lambda: [held, free])
    monkeypatch.setattr(engine, "poll_cluster", lambda cid: swept.append(cid) or 3)
    other = lock_redis.lock(f"{sweeps.KEY_PREFIX}:{held}", timeout=60)
    assert other.acquire(blocking=False)
    try:
        assert tasks.poll_operations() == 3
        assert swept == [free]
        assert other.owned()
    finally:
        other.release()
    assert tasks.poll_operations() == 6
    assert swept == [free, held, free]
