"""Objects, the global resourceVersion, serialized-JSON cache and the bounded watch history.

One re-entrant lock guards everything; the reconciler and the HTTP threads both take it.
Stored object dicts are never mutated in place: every write stores a fresh dict, so readers
may keep references and the cached JSON stays valid.
"""

from __future__ import annotations

import bisect
import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


def now_rfc3339(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


def time_micro(ts: float) -> str:
    """metav1.MicroTime as events.k8s.io writes `eventTime` / `series.lastObservedTime`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def parse_ts(value: str | None) -> float:
    """RFC 3339 (with or without microseconds) to epoch seconds; 0 when missing."""
    if not value:
        return 0.0
    import calendar

    base, _, frac = value.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class WatchEvent:
    rv: int
    res: str
    ns: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    raw: bytes


class Store:
    def __init__(self, history: int = 20000) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 0
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {}
        self._json: dict[str, dict[Key, bytes]] = {}
        self._sorted: dict[str, list[Key] | None] = {}
        self.history: list[WatchEvent] = []
        self._history_rvs: list[int] = []
        self.history_max = history
        self.compacted_rv = 0  # watches from a resourceVersion below this get 410 Gone
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self.closed = False
        self.dirty = threading.Event()  # set on every write, for the state saver
        # res -> how a stored object is shown to clients (apps: cozystack-api applies the
        # schema's defaults when it converts a HelmRelease on read; what is stored stays raw).
        self.views: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

    # --- reads -------------------------------------------------------------------------
    def get(self, res: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(res, {}).get((ns, name))

    def shown(self, res: str, obj: dict[str, Any]) -> bytes:
        """`obj` serialized as clients see it (through the resource's view, if any)."""
        view = self.views.get(res)
        return dumps(view(obj) if view else obj)

    def raw(self, res: str, key: Key) -> bytes:
        """The stored object as clients see it (cached)."""
        cache = self._json.setdefault(res, {})
        b = cache.get(key)
        if b is None:
            b = self.shown(res, self.objects[res][key])
            cache[key] = b
        return b

    def stored_raw(self, res: str, key: Key) -> bytes:
        """The stored object itself (state files keep what was stored, not the view)."""
        if res in self.views:
            return dumps(self.objects[res][key])
        return self.raw(res, key)

    def sorted_keys(self, res: str) -> list[Key]:
        keys = self._sorted.get(res)
        if keys is None:
            keys = sorted(self.objects.get(res, {}))
            self._sorted[res] = keys
        return keys

    def iter_objects(self, res: str, ns: str | None = None) -> Iterator[tuple[Key, dict[str, Any]]]:
        objs = self.objects.get(res, {})
        keys = self.sorted_keys(res)
        if ns is None:
            for key in keys:
                yield key, objs[key]
            return
        # Keys are sorted (namespace, name): the namespace's run starts where bisect says.
        for key in keys[bisect.bisect_left(keys, (ns,)) :]:
            if key[0] != ns:
                return
            yield key, objs[key]

    def count(self, res: str) -> int:
        return len(self.objects.get(res, {}))

    # --- writes ------------------------------------------------------------------------
    # The sorted key list is replaced, never changed in place (a reader may be iterating the
    # old one): a copy per added or deleted key, instead of a sort per read after each write.
    def _sorted_add(self, res: str, key: Key) -> None:
        keys = self._sorted.get(res)
        if keys is not None:
            i = bisect.bisect_left(keys, key)
            self._sorted[res] = [*keys[:i], key, *keys[i:]]

    def _sorted_remove(self, res: str, key: Key) -> None:
        keys = self._sorted.get(res)
        if keys is not None:
            i = bisect.bisect_left(keys, key)
            if i < len(keys) and keys[i] == key:
                self._sorted[res] = keys[:i] + keys[i + 1 :]
            else:
                self._sorted[res] = None

    def _bump(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, res: str, obj: dict[str, Any], event: str | None = None) -> dict[str, Any]:
        """Store `obj` (taking ownership) with a fresh resourceVersion; emits ADDED/MODIFIED."""
        with self.lock:
            md = obj.setdefault("metadata", {})
            key = (md.get("namespace", ""), md["name"])
            bucket = self.objects.setdefault(res, {})
            existed = key in bucket
            md["resourceVersion"] = str(self._bump())
            bucket[key] = obj
            if not existed:
                self._sorted_add(res, key)
            raw = self.shown(res, obj)
            self._json.setdefault(res, {})[key] = raw
            self._record(
                WatchEvent(
                    self.rv, res, key[0], event or ("MODIFIED" if existed else "ADDED"), obj, raw
                )
            )
            return obj

    def delete(self, res: str, ns: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            bucket = self.objects.get(res, {})
            old = bucket.pop((ns, name), None)
            if old is None:
                return None
            self._sorted_remove(res, (ns, name))
            self._json.get(res, {}).pop((ns, name), None)
            gone = copy.copy(old)
            gone["metadata"] = dict(old["metadata"], resourceVersion=str(self._bump()))
            self._record(WatchEvent(self.rv, res, ns, "DELETED", gone, self.shown(res, gone)))
            return gone

    def load_raw(self, res: str, obj: dict[str, Any]) -> None:
        """Insert without an event or a new resourceVersion (state restore, fleet bootstrap)."""
        md = obj["metadata"]
        key = (md.get("namespace", ""), md["name"])
        self.objects.setdefault(res, {})[key] = obj
        self._sorted[res] = None
        self._json.get(res, {}).pop(key, None)

    def _record(self, ev: WatchEvent) -> None:
        self.history.append(ev)
        self._history_rvs.append(ev.rv)
        if len(self.history) > self.history_max * 2:
            cut = len(self.history) - self.history_max
            self.compacted_rv = self._history_rvs[cut - 1]
            del self.history[:cut]
            del self._history_rvs[:cut]
        self.dirty.set()
        for listener in self.listeners:
            listener(ev.res, ev.type, ev.obj)
        self.cond.notify_all()

    def events_since(self, rv: int) -> list[WatchEvent]:
        """History entries with resourceVersion > rv (caller holds the lock)."""
        i = bisect.bisect_right(self._history_rvs, rv)
        return self.history[i:]

    # --- persistence -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "rv": self.rv,
                "objects": {res: list(b.values()) for res, b in self.objects.items()},
            }

    def restore(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.objects.clear()
            self._json.clear()
            self._sorted.clear()
            for res, objs in data.get("objects", {}).items():
                for obj in objs:
                    self.load_raw(res, obj)
            self.rv = int(data.get("rv", 0))
            # Events before a restart are gone: any older watch resourceVersion is expired.
            self.compacted_rv = self.rv
