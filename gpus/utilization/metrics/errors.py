"""Metric-source errors, split like gpus/kube's: transient ones are retried, permanent ones are
shown on the source."""

from __future__ import annotations


class MetricsError(Exception):
    """Base class: something went wrong talking to a metric source."""


class TransientMetricsError(MetricsError):
    """Timeouts, refused connections, 429 and 5xx: try again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentMetricsError(MetricsError):
    """Bad URL, bad credentials (401/403), a query the server rejects (400/422)."""
