"""Counting hits per key and per time window in Django's cache: Redis in production, so every
gunicorn worker (and every web replica) shares the counts."""

from __future__ import annotations

import logging
import time

from django.core.cache import cache

log = logging.getLogger(__name__)


def hit(key: str, limit: int, window: int = 60) -> int:
    """Count one hit on ``key`` in the current window of ``window`` seconds. Returns 0 while
    within ``limit``, else the seconds until the window ends (when to try again).

    The cache being down allows the hit: a limiter must not turn an outage into refusals."""
    now = time.time()
    start = int(now // window) * window
    name = f"rate:{key}:{start}"
    try:
        cache.add(name, 0, timeout=window + 5)
        try:
            count = cache.incr(name)
        except ValueError:  # expired between add and incr
            cache.set(name, 1, timeout=window + 5)
            count = 1
    except Exception:  # the cache's own connection errors (redis, files)
        log.warning("Rate limit not counted for %s: the cache is unreachable", key)
        return 0
    if count > limit:
        return max(int(start + window - now) + 1, 1)
    return 0
