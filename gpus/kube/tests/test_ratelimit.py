"""The cluster's rate limit shared by every worker process, in a real Redis (#17 item 4)."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
import uuid

import pytest

from gpus.kube import client as kc
from gpus.kube import errors as e
from gpus.kube import ratelimit as rl
from gpus.kube.tests.fakeapi import Recorded, fake_api


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("CLUSTER_RATE_LIMIT_URL") or os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("no REDIS_URL: the shared limit needs a Redis")
    return url


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_window_is_never_looser_than_the_token_bucket():
    assert (rl.window_for(10, 20).amount, rl.window_for(10, 20).get_expiry()) == (20, 2)
    assert (rl.window_for(3, 20).amount, rl.window_for(3, 20).get_expiry()) == (18, 6)
    assert (rl.window_for(0.5, 1).amount, rl.window_for(0.5, 1).get_expiry()) == (1, 2)
    assert (rl.window_for(100, 20).amount, rl.window_for(100, 20).get_expiry()) == (100, 1)
    with pytest.raises(ValueError):
        rl.window_for(0, 1)


def test_without_a_redis_url_each_process_keeps_its_own_bucket():
    assert isinstance(rl.limiter_for(unique("embedded"), 10, 20, None), rl.TokenBucket)
    assert isinstance(rl.limiter_for(unique("embedded"), 10, 20, "memory://"), rl.TokenBucket)
    config = kc.ClusterConfig(name=unique("embedded"))
    assert kc.bucket_for(config) is kc.bucket_for(config)


def test_two_limiters_over_one_redis_share_one_window(redis_url):
    """Two processes' limiters: together they get the burst once, not once each."""
    name = unique("shared")
    first = rl.SharedLimiter(redis_url, name, rate=2, burst=4)
    second = rl.SharedLimiter(redis_url, name, rate=2, burst=4)
    try:
        granted = [first.try_acquire() is None for _ in range(3)]
        granted += [second.try_acquire() is None for _ in range(3)]
        assert granted == [True, True, True, True, False, False]
        wait = second.try_acquire()
        assert wait is not None and 0 < wait <= 2.0  # until the oldest call leaves the window
        other = rl.SharedLimiter(redis_url, unique("other-cluster"), rate=2, burst=4)
        assert other.try_acquire() is None  # another cluster has a window of its own
    finally:
        first.clear()


def test_limiter_for_is_shared_per_cluster_and_reconfigured(redis_url):
    name = unique("per-cluster")
    a1 = kc.bucket_for(kc.ClusterConfig(name=name, rate_limit_url=redis_url))
    a2 = kc.bucket_for(kc.ClusterConfig(name=name, rate_limit_url=redis_url, kubeconfig="/x"))
    assert isinstance(a1, rl.SharedLimiter) and a1 is a2
    a3 = kc.bucket_for(kc.ClusterConfig(name=name, rate_limit_url=redis_url, qps=3, burst=20))
    assert a3 is a1 and (a1.item.amount, a1.item.get_expiry()) == (18, 6)
    assert (a1.fallback.rate, a1.fallback.burst) == (3.0, 20)


def _calls(url: str, name: str, calls: int, queue: multiprocessing.Queue) -> None:
    limiter = rl.SharedLimiter(url, name, rate=10, burst=10)
    for _ in range(calls):
        limiter.acquire()
    queue.put(calls)


def test_two_processes_together_stay_under_the_cluster_qps(redis_url):
    """40 calls from two processes at 10 QPS (burst 10) cannot all go within 3 s: at most 10
    in any second. Per-process buckets would let each process send its 20 in 1 s. Slowness
    only lengthens the run, so the bound holds on a loaded machine too."""
    name = unique("two-processes")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_calls, args=(redis_url, name, 20, queue)) for _ in range(2)]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    done = [queue.get(timeout=60) for _ in procs]
    elapsed = time.monotonic() - started
    for proc in procs:
        proc.join(10)
    assert done == [20, 20]
    assert elapsed >= 3.0, f"40 calls went out in {elapsed:.2f} s: over 10 QPS"


def test_redis_down_falls_back_to_the_process_bucket(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    bucket = rl.TokenBucket(rate=5, burst=1, sleep=slept.append)
    limiter = rl.SharedLimiter(
        f"redis://127.0.0.1:{port}/0", unique("down"), rate=5, burst=1, fallback=bucket
    )
    assert limiter.acquire() == 0.0
    assert limiter.acquire() > 0  # the process's own bucket paces it now
    assert len(slept) == 1
    assert "shared rate limit is unreachable" in caplog.text


def test_a_429_still_carries_retry_after_through_the_shared_limit(tmp_path, redis_url):
    def route(rec: Recorded):
        body = {"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "slow"}
        return 429, body, {"Retry-After": "7"}

    with fake_api(tmp_path, route) as api:
        cfg = kc.ClusterConfig(
            name=unique("t429"), kubeconfig=str(api.kubeconfig), rate_limit_url=redis_url
        )
        session = kc.Session(cfg)
        assert isinstance(session.bucket, rl.SharedLimiter)
        with pytest.raises(e.TransientError) as info:
            session.call_json(session.core().list_node)
        assert info.value.retry_after == 7.0
