"""Which source serves a cluster: its MetricSource row, else the settings.

A row's credentials (bearer token, user name, password) may name an environment variable instead
of holding the secret: ``env:ACME_VM_TOKEN`` is read from ``ACME_VM_TOKEN``, which the deployment
fills from a Kubernetes Secret (deploy/), so the database never holds it in clear.
"""

from __future__ import annotations

import os
import re

from django.conf import settings

from gpus.utilization.metrics.errors import PermanentMetricsError
from gpus.utilization.metrics.sources import DirectSource, Http, PrometheusSource
from gpus.utilization.models import MetricSource, SourceKind

Source = PrometheusSource | DirectSource

SECRET_REFERENCE = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")


def credential(value: str) -> str:
    """The value itself, or the environment variable an ``env:NAME`` reference names."""
    match = SECRET_REFERENCE.match(value.strip())
    if match is None:
        return value
    name = match.group(1)
    secret = os.environ.get(name)
    if secret is None:
        raise PermanentMetricsError(
            f"the metric source's credential refers to the environment variable {name}, "
            "which is not set in the portal's worker"
        )
    return secret


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
    http = Http(
        row.timeout_seconds,
        credential(row.bearer_token),
        credential(row.username),
        credential(row.password),
    )
    if row.kind == SourceKind.PROMETHEUS:
        return PrometheusSource(row.url, http)
    return DirectSource(http, row.sd_url, [t for t in row.targets.split() if t])
