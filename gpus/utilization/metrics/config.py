"""Which source serves a cluster: its MetricSource row, else the settings."""

from __future__ import annotations

from django.conf import settings

from gpus.utilization.metrics.sources import DirectSource, Http, PrometheusSource
from gpus.utilization.models import MetricSource, SourceKind

Source = PrometheusSource | DirectSource


def source_for(cluster_id: int) -> Source:
    row = MetricSource.objects.filter(cluster_id=cluster_id).first()
    if row is None or not row.kind:
        http = Http(
            timeout=settings.METRICS_TIMEOUT_SECONDS,
            bearer_token=settings.METRICS_BEARER_TOKEN,
            username=settings.METRICS_USERNAME,
            password=settings.METRICS_PASSWORD,
        )
        if settings.METRICS_SOURCE == SourceKind.PROMETHEUS:
            return PrometheusSource(settings.PROMETHEUS_URL, http)
        targets = [t for t in settings.METRICS_TARGETS.split(",") if t.strip()]
        return DirectSource(http, settings.METRICS_SD_URL, targets)
    http = Http(row.timeout_seconds, row.bearer_token, row.username, row.password)
    if row.kind == SourceKind.PROMETHEUS:
        return PrometheusSource(row.url, http)
    return DirectSource(http, row.sd_url, [t for t in row.targets.split() if t])
