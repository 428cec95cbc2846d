"""Metric sources: a Prometheus-compatible query API and DCGM exporters scraped directly.

Every call has a timeout; failures become TransientMetricsError (retry) or
PermanentMetricsError (show it), as gpus/kube does for the cluster.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import urllib3

from gpus.kube.retry import parse_retry_after
from gpus.utilization.metrics.errors import (
    MetricsError,
    PermanentMetricsError,
    TransientMetricsError,
)
from gpus.utilization.metrics.parse import METRIC_NAMES, Reading, add_sample, parse_exposition

MAX_POINTS = 2000  # per line, whatever the range
# The labels a reading uses (every dialect); `max by` them drops the rest server-side.
KEEP_BY = ",".join(
    (
        "UUID",
        "uuid",
        "gpu",
        "modelName",
        "Hostname",
        "hostname",
        "namespace",
        "pod",
        "exported_namespace",
        "exported_pod",
        "cluster",
        "tenant",
        "vm",
        "source",
    )
)
# Target labels the portal keeps from service discovery; the exporter pod's own namespace/pod
# are not the workload's (Prometheus would rename the series' to exported_* on a clash).
KEPT_TARGET_LABELS = ("cluster", "tenant", "vm", "source")


@dataclass
class Http:
    timeout: float = 10.0
    bearer_token: str = ""
    username: str = ""
    password: str = ""
    pool: urllib3.PoolManager = field(init=False)

    def __post_init__(self) -> None:
        self.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=16,
            retries=False,
            timeout=urllib3.Timeout(connect=min(self.timeout, 5.0), read=self.timeout),
        )

    def headers(self) -> dict[str, str]:
        if self.bearer_token:
            return {"Authorization": f"Bearer {self.bearer_token}"}
        if self.username:
            return urllib3.make_headers(basic_auth=f"{self.username}:{self.password}")
        return {}

    def get(self, url: str, fields: Mapping[str, Any] | None = None) -> bytes:
        try:
            resp = self.pool.request(
                "GET", url, fields=dict(fields or {}), headers=self.headers(), preload_content=True
            )
        except urllib3.exceptions.HTTPError as exc:  # timeouts, refused, reset, DNS
            raise TransientMetricsError(f"{url}: {exc.__class__.__name__}: {exc}") from exc
        if resp.status == 200:
            return resp.data
        text = resp.data[:300].decode("utf-8", "replace")
        if resp.status == 429 or resp.status >= 500:
            raise TransientMetricsError(
                f"{url}: HTTP {resp.status}: {text}",
                parse_retry_after(resp.headers.get("Retry-After")),
            )
        raise PermanentMetricsError(f"{url}: HTTP {resp.status}: {text}")


def step_for(start: float, end: float, max_points: int = MAX_POINTS, minimum: float = 15) -> float:
    """The smallest whole-second step that keeps a range under max_points points."""
    return float(max(minimum, math.ceil((end - start) / (max_points - 1))))


class PrometheusSource:
    """Prometheus, VictoriaMetrics single-node or vmselect (`.../select/0/prometheus`)."""

    kind = "prometheus"

    def __init__(self, url: str, http: Http) -> None:
        self.url = url.rstrip("/")
        self.http = http

    def _api(self, path: str, params: Mapping[str, Any]) -> Any:
        body = self.http.get(f"{self.url}/api/v1/{path}", params)
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise PermanentMetricsError(f"{self.url}: not a Prometheus API answer") from exc
        if doc.get("status") != "success":
            raise PermanentMetricsError(f"{self.url}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict, float, float]]:
        """Instant vector: (labels, ts, value) per series."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("query", params)
        if data["resultType"] != "vector":
            raise PermanentMetricsError(f"expected a vector, got {data['resultType']}")
        return [(r["metric"], float(r["value"][0]), float(r["value"][1])) for r in data["result"]]

    def query_range(
        self, promql: str, start: float, end: float, step: float | None = None
    ) -> list[tuple[dict, list[tuple[float, float]]]]:
        """Matrix: (labels, [(ts, value)]) per series, never more than MAX_POINTS a series."""
        step = max(step or 0, step_for(start, end, minimum=1))
        data = self._api(
            "query_range",
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        return [
            (r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]
        ]

    @staticmethod
    def selector() -> str:
        return '{__name__=~"' + "|".join(METRIC_NAMES) + '"}'

    def collect(self, now: float | None = None) -> list[Reading]:
        """The latest value of every DCGM field we use, for every GPU: one query per field,
        keeping only the labels a reading needs (a 100,000-GPU answer stays small)."""
        readings: dict[str, Reading] = {}
        for name in METRIC_NAMES:
            for labels, ts, value in self.query(f"max by ({KEEP_BY}) ({name})", now):
                add_sample(readings, name, labels, value, ts)
        return list(readings.values())

    def readings_between(self, start: float, end: float, step: float) -> list[Reading]:
        """Per-GPU readings at each step in [start, end]: what rollups need in query-API mode
        (per-GPU history stays in the source)."""
        by_ts: dict[float, dict[str, Reading]] = {}
        for labels, points in self.query_range(self.selector(), start, end, step):
            name = labels.get("__name__", "")
            for ts, value in points:
                add_sample(by_ts.setdefault(ts, {}), name, labels, value, ts)
        return [r for at in by_ts.values() for r in at.values()]


@dataclass
class Target:
    url: str
    labels: dict[str, str]


class DirectSource:
    """DCGM exporters scraped by the portal itself, targets from HTTP SD or a fixed list."""

    kind = "direct"

    def __init__(
        self, http: Http, sd_url: str = "", targets: list[str] | None = None, workers: int = 8
    ) -> None:
        self.http = http
        self.sd_url = sd_url
        self.static = targets or []
        self.workers = workers
        self.errors: list[str] = []

    def targets(self) -> list[Target]:
        if not self.sd_url:
            return [Target(u, {}) for u in self.static]
        try:
            groups = json.loads(self.http.get(self.sd_url))
        except ValueError as exc:
            raise PermanentMetricsError(f"{self.sd_url}: not an HTTP SD answer") from exc
        out = []
        for group in groups:
            labels = group.get("labels") or {}
            path = labels.get("__metrics_path__", "/metrics")
            scheme = labels.get("__scheme__", "http")
            kept = {k: labels[k] for k in KEPT_TARGET_LABELS if labels.get(k)}
            out += [Target(f"{scheme}://{host}{path}", kept) for host in group.get("targets", [])]
        return out

    def _scrape(self, target: Target, now: float) -> list[Reading]:
        text = self.http.get(target.url).decode("utf-8", "replace")
        return parse_exposition(text, now, target.labels)

    def collect(self, now: float | None = None) -> list[Reading]:
        """Scrape every target concurrently. One dead exporter does not stop the others; if
        every target fails, the pass fails."""
        now = now or time.time()
        targets = self.targets()
        self.errors = []
        out: list[Reading] = []

        def one(t: Target) -> list[Reading] | MetricsError:
            try:
                return self._scrape(t, now)
            except MetricsError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(targets)))) as pool:
            for result in pool.map(one, targets):
                if isinstance(result, MetricsError):
                    self.errors.append(str(result))
                else:
                    out += result
        if targets and len(self.errors) == len(targets):
            raise TransientMetricsError("; ".join(self.errors[:3]))
        return out
