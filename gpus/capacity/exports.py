"""CSV exports of the capacity history and of GPU-hours per tenant (for billing); the API
serves the same rows as JSON."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator

from django.http import StreamingHttpResponse

from gpus.capacity import selectors

HISTORY_COLUMNS = [
    "ts",
    "cluster_name",
    "gpu_model_name",
    "samples",
    "installed",
    "allocated",
    "allocated_max",
    "free",
    "free_min",
    "unavailable",
    "queued_max",
    "refused",
]
USAGE_COLUMNS = ["tenant", "cluster", "gpu_model", "gpu_hours", "gpus_max"]

# A cell a spreadsheet would run as a formula (CSV injection, OWASP): prefixed with a quote.
# Issue 20 item 7 brings a shared CSV helper; until it is on main, this one small function.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    text = value.isoformat() if isinstance(value, dt.datetime) else str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return text  # numbers (negative ones too) are data, not formulas
    return "'" + text if text.startswith(FORMULA_START) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def _stream(
    header: list[str], rows: Iterable[list[object]], filename: str
) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        # A few hundred rows a chunk: one write per row is a system call per row in gunicorn.
        chunk = [writer.writerow(header)]
        for row in rows:
            chunk.append(writer.writerow([cell(v) for v in row]))
            if len(chunk) >= 500:
                yield "".join(chunk)
                chunk = []
        yield "".join(chunk)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


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
    for r in selectors.get_tenant_usage_rows(start, end).iterator(chunk_size=2000):
        yield {
            "tenant": r["tenant__namespace"],
            "cluster": r["cluster__name"],
            "gpu_model": r["gpu_model__resource_name"],
            "gpu_hours": round(r["gpu_hours"], 3),
            "gpus_max": r["gpus_max"],
        }


def history_csv(start: dt.datetime, end: dt.datetime, bucket: str) -> StreamingHttpResponse:
    rows = (
        [round(v, 3) if isinstance(v, float) else v for v in r]
        for r in selectors.history_rows(start, end, bucket)
        .values_list(*HISTORY_COLUMNS)
        .iterator(chunk_size=2000)
    )
    return _stream(HISTORY_COLUMNS, rows, f"capacity-{start:%Y%m%d}-{end:%Y%m%d}.csv")


def gpu_hours_csv(start: dt.datetime, end: dt.datetime) -> StreamingHttpResponse:
    rows = ([r[c] for c in USAGE_COLUMNS] for r in usage_dicts(start, end))
    return _stream(USAGE_COLUMNS, rows, f"gpu-hours-{start:%Y%m%d}-{end:%Y%m%d}.csv")
