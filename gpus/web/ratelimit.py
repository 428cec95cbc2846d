"""Counting hits per key and per time window in Django's cache: Redis in production, so every
gunicorn worker (and every web replica) shares the counts."""

from __future__ import annotations

import logging
import time

from django.core.cache import cache

log = logging.getLogger(__name__)


def hit(key: str, limit: int, window: int = 60) -> int:
    """Count one hit on ``key`` and return 0 while the hits of the last ``window`` seconds stay
    within ``limit``, else the seconds until they will (when to try again).

    A sliding window over two fixed ones: the previous window's count weighs as much as it still
    overlaps the last ``window`` seconds. A plain fixed window would let twice the limit through
    around a window's end (and make "the third submit is refused" depend on the clock).
    The cache being down allows the hit: a limiter must not turn an outage into refusals."""
    now = time.time()
    start = int(now // window) * window
    name = f"rate:{key}:{start}"
    try:
        cache.add(name, 0, timeout=2 * window + 5)
        try:
            current = cache.incr(name)
        except ValueError:  # expired between add and incr
            cache.set(name, 1, timeout=2 * window + 5)
            current = 1
        previous = int(cache.get(f"rate:{key}:{start - window}") or 0)
    except Exception:  # the cache's own connection errors (redis, files)
        log.warning("Rate limit not counted for %s: the cache is unreachable", key)
        return 0
    elapsed = now - start
    if previous * (window - elapsed) / window + current <= limit:
        return 0
    if current <= limit:
        # previous * (window - t) / window + current <= limit once t reaches this.
        ready_at = window - (limit - current) * window / previous
        return max(int(ready_at - elapsed) + 1, 1)
    return max(int(start + window - now) + 1, 1)
