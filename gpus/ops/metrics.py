"""The portal's own Prometheus metrics at ``/metrics``, behind a bearer token.

Two kinds of figures:

- request latency by view, a histogram each process keeps; under gunicorn with several workers set
  ``PROMETHEUS_MULTIPROC_DIR`` (an emptyDir in deploy/) so a scrape sums every worker;
- what the database and the broker say at scrape time (``PortalCollector``): each cluster's sync
  age, duration, failures and skipped objects, operations by state, the Celery queue length,
  and how far behind GPU telemetry collection and rollup are.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator

from celery import current_app
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from kombu.exceptions import ChannelError
from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gpus.ops import health, selectors

log = logging.getLogger(__name__)
PREFIX = "hikube_portal"

# Per process. In multiprocess mode the values live in files under PROMETHEUS_MULTIPROC_DIR and
# this registry is not read (MultiProcessCollector reads the files), so nothing counts twice.
REQUEST_REGISTRY = CollectorRegistry(auto_describe=True)
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time to answer an HTTP request, by view (URL name), method and status class.",
    ["view", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REQUEST_REGISTRY,
)


def observe_request(view: str, method: str, status: int, seconds: float) -> None:
    REQUEST_SECONDS.labels(view, method, f"{status // 100}xx").observe(seconds)


def _age(now: float, at: object) -> float:
    """Seconds since ``at`` (a datetime), NaN when it never happened."""
    return now - at.timestamp() if at is not None else float("nan")  # type: ignore[attr-defined]


def _num(value: float | None) -> float:
    return float("nan") if value is None else float(value)


class PortalCollector(Collector):
    """Reads the database (and the broker's queue length) each time it is scraped."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_scrape_source_up",
            "Whether a source of these figures answered this scrape (database, broker).",
            labels=["source"],
        )
        try:
            yield from self._database_figures()
            up.add_metric(["database"], 1)
        except DatabaseError as exc:
            log.warning("/metrics: database unreadable: %s", exc)
            up.add_metric(["database"], 0)
        try:
            yield self._queue_lengths()
            up.add_metric(["broker"], 1)
        except Exception as exc:
            log.warning("/metrics: broker unreadable: %s: %s", type(exc).__name__, exc)
            up.add_metric(["broker"], 0)
        yield up

    def _database_figures(self) -> Iterator[Metric]:
        now = time.time()
        clusters = selectors.cluster_figures()
        label = ["cluster"]

        def family(name: str, doc: str, values: list[tuple[str, float]]) -> GaugeMetricFamily:
            metric = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=label)
            for cluster, value in values:
                metric.add_metric([cluster], value)
            return metric

        yield family(
            "cluster_sync_age_seconds",
            "Seconds since the cluster's last successful inventory sync (NaN: never synced).",
            [(c.name, _age(now, c.last_synced_at)) for c in clusters],
        )
        yield family(
            "cluster_sync_duration_seconds",
            "How long the cluster's last inventory sync took.",
            [(c.name, _num(c.last_sync_seconds)) for c in clusters],
        )
        yield family(
            "cluster_sync_failing",
            "1 when the cluster's last inventory sync failed, else 0.",
            [(c.name, float(c.failing)) for c in clusters],
        )
        yield family(
            "cluster_sync_consecutive_failures",
            "Failed inventory syncs of the cluster in a row.",
            [(c.name, float(c.consecutive_failures)) for c in clusters],
        )
        yield family(
            "cluster_sync_skipped_objects",
            "Objects the last sync of the cluster could not store (sync issues).",
            [(c.name, float(c.sync_issues)) for c in clusters],
        )
        yield family(
            "metrics_collection_lag_seconds",
            "Seconds since GPU telemetry of the cluster was last collected (NaN: never).",
            [(c.name, _age(now, c.collected_at)) for c in clusters],
        )
        yield family(
            "metrics_collection_duration_seconds",
            "How long the cluster's last GPU telemetry collection took.",
            [(c.name, _num(c.collection_seconds)) for c in clusters],
        )
        yield family(
            "metrics_collection_failing",
            "1 when the cluster's last GPU telemetry collection reported an error, else 0.",
            [(c.name, float(c.collection_failing)) for c in clusters],
        )
        yield family(
            "metrics_rollup_lag_seconds",
            "Seconds since the start of the cluster's newest 5-minute rollup (NaN: none yet).",
            [(c.name, _age(now, c.rolled_up_to)) for c in clusters],
        )
        operations = GaugeMetricFamily(
            f"{PREFIX}_operations", "Operations (provisioning requests) by state.", labels=["state"]
        )
        for state, count in selectors.operations_by_state().items():
            operations.add_metric([state], float(count))
        yield operations
        yield GaugeMetricFamily(
            f"{PREFIX}_operation_oldest_active_age_seconds",
            "Seconds since the oldest operation still in flight was submitted (0: none).",
            value=max(0.0, _age(now, oldest))
            if (oldest := selectors.oldest_active_operation())
            else 0.0,
        )

    def _queue_lengths(self) -> GaugeMetricFamily:
        metric = GaugeMetricFamily(
            f"{PREFIX}_celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        names = sorted(set(current_app.amqp.queues) or {current_app.conf.task_default_queue})
        with health.broker_connection() as conn:
            channel = conn.default_channel
            for name in names:
                try:
                    waiting = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:
                    waiting = 0  # Redis drops an empty queue's key: nothing waits
                metric.add_metric([name], float(waiting))
        return metric


def registry() -> CollectorRegistry:
    """What one scrape answers: request latency (every worker's) and the portal's figures."""
    out = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(out)
    else:
        out.register(_RegistryCollector(REQUEST_REGISTRY))
    out.register(PortalCollector())
    return out


class _RegistryCollector(Collector):
    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()


def authorized(request: HttpRequest) -> bool:
    expected = settings.PORTAL_METRICS_TOKEN
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. No token configured: 404 (the page does not exist); a missing or
    wrong bearer token: 401."""
    if not settings.PORTAL_METRICS_TOKEN:
        return HttpResponseNotFound("not found\n", content_type="text/plain")
    if not authorized(request):
        response = HttpResponse("bearer token required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
