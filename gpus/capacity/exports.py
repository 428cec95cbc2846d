"""CSV exports of the capacity history, of GPU-hours and of spend per tenant (for billing); the
API serves the same rows as JSON."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from django.db import models
from django.db.models.functions import Cast
from django.http import StreamingHttpResponse

from gpus.capacity import pricing, selectors
from gpus.capacity.models import ROLLUP_FIELDS, CapacityRollup
from gpus.tenancy.models import Tenant
from gpus.web.exports import csv_response

HISTORY_COLUMNS = ["ts", "cluster_name", "gpu_model_name", *ROLLUP_FIELDS]
USAGE_COLUMNS = ["tenant", "cluster", "gpu_model", "gpu_hours", "gpus_max"]
SPEND_COLUMNS = [
    "tenant",
    "cluster",
    "gpu_model",
    "currency",
    "gpu_hours",
    "vcpu_hours",
    "memory_gib_hours",
    "disk_gib_hours",
    "amount",
]


def _stream(
    header: list[str], rows: Iterable[list[object]], filename: str
) -> StreamingHttpResponse:
    return csv_response(filename, header, rows)


def history_dicts(start: dt.datetime, end: dt.datetime, bucket: str) -> Iterator[dict]:
    for r in selectors.history_rows(start, end, bucket).iterator(chunk_size=2000):
        yield {
            **r,
            "installed": round(r["installed"], 3),
            "allocated": round(r["allocated"], 3),
            "free": round(r["free"], 3),
            "unavailable": round(r["unavailable"], 3),
        }


def usage_dicts(start: dt.datetime, end: dt.datetime) -> Iterator[dict]:
    for r in selectors.get_tenant_usage_rows(start, end):
        yield {**r, "gpu_hours": round(r["gpu_hours"], 3)}


# The history's columns that are means (floats), rounded to 3 places as the API rounds them.
HISTORY_MEANS = [
    i
    for i, name in enumerate(HISTORY_COLUMNS)
    if name in ROLLUP_FIELDS and isinstance(CapacityRollup._meta.get_field(name), models.FloatField)
]


def _when(text: str, seen: dict[str, dt.datetime]) -> dt.datetime:
    """A bucket's time from its text (UTC): parsed once per bucket, not once per row."""
    when = seen.get(text)
    if when is None:
        when = dt.datetime.fromisoformat(text)
        seen[text] = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        when = seen[text]
    return when


def history_csv(start: dt.datetime, end: dt.datetime, bucket: str) -> StreamingHttpResponse:
    """The history's rows as the page and the API read them. The time comes as text and is
    parsed once per bucket (a row per cluster and model shares it): the database driver's
    time zone-aware parse of every row was a third of the export's time."""
    seen: dict[str, dt.datetime] = {}

    def row(values: tuple) -> list:
        cells = list(values)
        cells[0] = _when(cells[0], seen)
        for i in HISTORY_MEANS:
            cells[i] = round(cells[i], 3)
        return cells

    rows = map(
        row,
        selectors.history_rows(start, end, bucket)
        .annotate(ts_text=Cast("ts", models.CharField()))
        .values_list("ts_text", *HISTORY_COLUMNS[1:])
        .iterator(chunk_size=5000),
    )
    return _stream(HISTORY_COLUMNS, rows, f"capacity-{start:%Y%m%d}-{end:%Y%m%d}.csv")


def gpu_hours_csv(start: dt.datetime, end: dt.datetime) -> StreamingHttpResponse:
    rows = ([r[c] for c in USAGE_COLUMNS] for r in usage_dicts(start, end))
    return _stream(USAGE_COLUMNS, rows, f"gpu-hours-{start:%Y%m%d}-{end:%Y%m%d}.csv")


def spend_csv(
    start: dt.datetime, end: dt.datetime, tenant: Tenant | None = None
) -> StreamingHttpResponse:
    """Spend per tenant, cluster and model (pricing.spend_rows): one tenant's, or everyone's."""
    rows = ([r[c] for c in SPEND_COLUMNS] for r in pricing.spend_rows(start, end, tenant))
    who = tenant.namespace if tenant is not None else "tenants"
    return _stream(SPEND_COLUMNS, rows, f"spend-{who}-{start:%Y%m%d}-{end:%Y%m%d}.csv")
