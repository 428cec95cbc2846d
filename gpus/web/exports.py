"""CSV exports: the one writer every CSV of the portal goes through.

Spreadsheets run a cell that starts with = + - @ (or a tab or carriage return before one) as a
formula: an agent-posted GPU name "=HYPERLINK(...)" reached the admin's spreadsheet as one. Every
text cell starting so is written with a leading apostrophe (OWASP "CSV injection"), which
spreadsheets show as text. Numbers are written as they are: they are never formulas.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Sequence
from decimal import Decimal
from itertools import islice

from django.http import StreamingHttpResponse

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """A cell a spreadsheet shows as written, never runs."""
    if value is None:
        return ""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return value
    text = value.isoformat() if isinstance(value, dt.datetime) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _Echo:
    """A file-like object whose write returns the line: csv.writer then yields lines to stream."""

    def write(self, value: str) -> str:
        return value


# Cells written as they are: numbers (bool is not one of them: type(), not isinstance()).
NUMBERS = frozenset({int, float, Decimal})
# Distinct text cells remembered per export: the same cluster, model and time come back on
# every row of a history, and each is made safe once; past this many, the rest are not kept.
REMEMBERED = 4096


def csv_lines(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, made_safe: bool = False
) -> Iterable[str]:
    """The header then each row as CSV lines, every cell made safe, a few hundred rows a chunk
    (one write per row would be a system call per row in gunicorn). `made_safe`: the caller
    already passed every text cell through safe_cell (once per distinct value, e.g. per cluster
    or per bucket), and the rows are written as they come, without a look at each cell."""
    writer = csv.writer(_Echo())
    if made_safe:
        yield writer.writerow([safe_cell(c) for c in header])
        rows = iter(rows)
        while chunk := list(islice(rows, 500)):
            yield "".join(map(writer.writerow, chunk))
        return
    safe: dict[object, object] = {}

    def text(value: object) -> object:
        try:
            return safe[value]
        except KeyError:
            cell = safe_cell(value)
            if len(safe) < REMEMBERED:
                safe[value] = cell
            return cell
        except TypeError:  # unhashable: made safe each time
            return safe_cell(value)

    chunk = [writer.writerow([safe_cell(c) for c in header])]
    for row in rows:
        chunk.append(writer.writerow([c if type(c) in NUMBERS else text(c) for c in row]))
        if len(chunk) >= 500:
            yield "".join(chunk)
            chunk = []
    yield "".join(chunk)


def csv_response(
    filename: str,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    made_safe: bool = False,
) -> StreamingHttpResponse:
    """A CSV download streamed row by row: memory stays flat whatever the number of rows."""
    response = StreamingHttpResponse(
        csv_lines(header, rows, made_safe=made_safe), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
