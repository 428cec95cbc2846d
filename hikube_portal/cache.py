"""Django's Redis cache, but an outage is a miss, not a 500: the cache only saves work (counts,
chart reads, sign-in claims), so while Redis is down pages compute afresh (issue 20 item 13).
``incr``/``decr``/``clear`` still raise: their callers decide (the rate limiter lets hits
through)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
OUTAGE = (RedisConnectionError, RedisTimeoutError, OSError)
T = TypeVar("T")


def _tolerate(call: Callable[[], T], fallback: T, what: str) -> T:
    try:
        return call()
    except OUTAGE as exc:
        log.warning("Cache %s skipped, Redis unreachable: %s", what, exc)
        return fallback


class TolerantRedisCache(RedisCache):
    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        parent = super()
        return _tolerate(lambda: parent.get(key, default, version), default, "get")

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        parent = super()
        return _tolerate(lambda: parent.get_many(keys, version), {}, "get")

    def has_key(self, key: Any, version: int | None = None) -> bool:
        parent = super()
        return _tolerate(lambda: parent.has_key(key, version), False, "get")

    def add(self, key: Any, value: Any, timeout: Any = None, version: int | None = None) -> bool:
        parent = super()
        return _tolerate(lambda: parent.add(key, value, timeout, version), False, "add")

    def set(self, key: Any, value: Any, timeout: Any = None, version: int | None = None) -> None:
        parent = super()
        _tolerate(lambda: parent.set(key, value, timeout, version), None, "set")

    def touch(self, key: Any, timeout: Any = None, version: int | None = None) -> bool:
        parent = super()
        return _tolerate(lambda: parent.touch(key, timeout, version), False, "touch")

    def set_many(
        self, data: dict[Any, Any], timeout: Any = None, version: int | None = None
    ) -> list[Any]:
        parent = super()
        return _tolerate(lambda: parent.set_many(data, timeout, version), list(data), "set")

    def delete(self, key: Any, version: int | None = None) -> bool:
        parent = super()
        return _tolerate(lambda: parent.delete(key, version), False, "delete")

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        parent = super()
        _tolerate(lambda: parent.delete_many(keys, version), None, "delete")
