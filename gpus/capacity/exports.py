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
from gpus.catalog.models import GpuModel
from gpus.inventory.models import Cluster
from gpus.tenancy.models import Tenant
from gpus.web.exports import csv_response, safe_cell

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


# The history's fields that are means (floats), rounded to 3 places as the API rounds them.
_MEANS = {
    name
    for name in ROLLUP_FIELDS
    if isinstance(CapacityRollup._meta.get_field(name), models.FloatField)
}


def history_csv(start: dt.datetime, end: dt.datetime, bucket: str) -> StreamingHttpResponse:
    """The history's rows as the page and the API read them. The rows are read without their
    cluster and model (ids, named from two small queries) and the time as text: each name and
    each bucket's time is made a safe cell once, not once per row (the driver's time
    zone-aware parse of every row and the per-cell checks were most of the export's time)."""
    clusters = {pk: safe_cell(name) for pk, name in Cluster.objects.values_list("pk", "name")}
    models_ = {
        pk: safe_cell(name) for pk, name in GpuModel.objects.values_list("pk", "resource_name")
    }
    seen: dict[str, object] = {}

    def when(text: str) -> object:
        cell = seen.get(text)
        if cell is None:
            parsed = dt.datetime.fromisoformat(text)
            cell = seen[text] = safe_cell(
                parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
            )
        return cell

    means = [i + 3 for i, name in enumerate(ROLLUP_FIELDS) if name in _MEANS]

    def row(values: tuple) -> list:
        cells = [
            when(values[0]),
            clusters.get(values[1], ""),
            models_.get(values[2], ""),
            *values[3:],
        ]
        for i in means:
            cells[i] = round(cells[i], 3)
        return cells

    rows = map(
        row,
        selectors.history_between(start, end, bucket)
        .annotate(ts_text=Cast("ts", models.CharField()))
        .values_list("ts_text", "cluster_id", "gpu_model_id", *ROLLUP_FIELDS)
        .iterator(chunk_size=5000),
    )
    return csv_response(
        f"capacity-{start:%Y%m%d}-{end:%Y%m%d}.csv", HISTORY_COLUMNS, rows, made_safe=True
    )


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
