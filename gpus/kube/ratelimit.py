"""The client-side rate limit of a cluster: one limit for every process that calls it.

A token bucket in each process would let N Celery workers send N times the QPS meant for one
cluster. With a Redis URL (``ClusterConfig.rate_limit_url``) the limit lives in Redis, through
``limits``' moving window (a Lua script, so every process sees one count): at most ``burst``
calls in any ``burst / qps`` seconds, never looser than a token bucket of ``qps`` and ``burst``
over any interval. Without one (embedded mode: no Redis), the process's ``TokenBucket`` is the
limit, as there is only one worker process. If Redis stops answering, each process falls back
to its own bucket rather than stopping every call to the cluster.

A limiter only paces the portal; a 429 from the cluster is still a ``TransientError`` carrying
the server's ``Retry-After``, which the caller's backoff honours (``gpus.kube.retry``).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

# Redis must answer fast or be passed over: a stuck limiter would stall every call.
REDIS_TIMEOUT_SECONDS = 1.0
KEY_PREFIX = "hikube-portal:cluster-rate"


class Limiter(Protocol):
    def acquire(self) -> float:
        """Block until the call may go; return the seconds waited."""
        ...


class TokenBucket:
    """Thread-safe token bucket: ``rate`` tokens/s, at most ``burst`` banked.

    ``acquire`` reserves a token under the lock (the balance may go negative) and
    sleeps outside it, so waiting threads queue fairly without holding the lock.
    ``clock``/``sleep`` are injectable so tests use a fake clock, never wall time.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._last = now

    def reserve(self) -> float:
        """Take one token; return how many seconds the caller must wait before using it."""
        with self._lock:
            self._refill(self._clock())
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> float:
        """Block until a token is available; return the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def configure(self, rate: float, burst: int) -> None:
        with self._lock:
            self._refill(self._clock())
            self.rate = float(rate)
            self.burst = int(burst)
            self._tokens = min(self._tokens, float(self.burst))


def window_for(rate: float, burst: int) -> RateLimitItemPerSecond:
    """``burst`` calls per ``burst / rate`` seconds, in whole seconds (``limits``' granularity).

    The window is rounded down and its count to what the rate allows in it, so the limit is
    never looser than asked: 20 per 2 s for 10 QPS and a burst of 20; 18 per 6 s for 3 QPS
    and 20. A burst below the QPS cannot be kept in whole seconds: the window is then one
    second of ``rate`` calls.
    """
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")
    seconds = max(1, math.floor(burst / rate))
    return RateLimitItemPerSecond(max(1, math.floor(rate * seconds)), seconds)


class SharedLimiter:
    """A cluster's rate limit in Redis, shared by every process and thread that calls it."""

    def __init__(
        self,
        url: str,
        name: str,
        rate: float,
        burst: int,
        fallback: TokenBucket | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.url = url
        self.storage = storage_from_string(
            url,
            key_prefix=KEY_PREFIX,
            wrap_exceptions=True,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.fallback = fallback or TokenBucket(rate, burst)
        self._sleep = sleep
        self.configure(rate, burst)

    def configure(self, rate: float, burst: int) -> None:
        self.rate, self.burst = float(rate), int(burst)
        self.item = window_for(rate, burst)
        self.fallback.configure(rate, burst)

    def try_acquire(self) -> float | None:
        """Take a place in the window: None if taken, else seconds until one may free up."""
        if self.limiter.hit(self.item, self.name):
            return None
        reset = self.limiter.get_window_stats(self.item, self.name).reset_time
        return max(0.0, reset - time.time())

    def acquire(self) -> float:
        waited = 0.0
        while True:
            try:
                wait = self.try_acquire()
            except StorageError as exc:
                log.warning(
                    "cluster %s: the shared rate limit is unreachable (%s); "
                    "this process paces itself alone",
                    self.name,
                    exc,
                )
                return waited + self.fallback.acquire()
            if wait is None:
                return waited
            # Waiters wake when the oldest call leaves the window; a few ms of jitter spreads
            # the processes that race for that one place.
            wait += random.uniform(0.001, 0.01)  # noqa: S311 - jitter, not a secret
            self._sleep(wait)
            waited += wait

    def clear(self) -> None:
        """Forget the calls in the window (tests)."""
        self.limiter.clear(self.item, self.name)


_limiters: dict[tuple[str, str], TokenBucket | SharedLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(
    name: str, rate: float, burst: int, url: str | None = None
) -> TokenBucket | SharedLimiter:
    """The one limiter of the cluster ``name`` in this process: shared through Redis when
    ``url`` is a Redis URL, else this process's token bucket."""
    shared = bool(url) and not str(url).startswith("memory://")
    key = (name, str(url) if shared else "")
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            if shared:
                limiter = SharedLimiter(str(url), name, rate, burst)
            else:
                limiter = TokenBucket(rate, burst)
            _limiters[key] = limiter
        elif (limiter.rate, limiter.burst) != (float(rate), int(burst)):
            # Settings changed (admin edited the Cluster row): adopt the new limits.
            limiter.configure(rate, burst)
        return limiter
