"""Each row its own values, in one statement: ``UPDATE ... FROM (VALUES ...)``.

Django's ``bulk_update`` builds a ``CASE WHEN pk = ... THEN ...`` per field and row and resolves
every one of those expressions in Python: 1,000 rows of five fields take about 1.5 s of CPU,
longer than the rows take to write. Here the values travel as one ``VALUES`` list joined on the
primary key (PostgreSQL, and SQLite since 3.33), and only the rows given are touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import connections, models, router

# Rows per statement: 200 rows of a handful of fields stay far below SQLite's 32,766 variables.
BATCH = 200


def update_rows(
    model: type[models.Model],
    rows: Mapping[Any, Mapping[str, Any]],
    only_where: Mapping[str, Iterable[Any]] | None = None,
    batch: int = BATCH,
) -> int:
    """Write ``rows`` (primary key -> {field name: value}): one statement per set of fields and
    ``batch`` rows. ``only_where`` ({field name: allowed values}) skips rows that moved on
    meanwhile, e.g. ``{"state": POLLED}``. Returns how many rows were written."""
    groups: dict[tuple[str, ...], list[tuple[Any, Mapping[str, Any]]]] = {}
    for pk, values in rows.items():
        if values:
            groups.setdefault(tuple(sorted(values)), []).append((pk, values))
    written = 0
    for names, members in groups.items():
        for start in range(0, len(members), batch):
            written += _update(model, names, members[start : start + batch], only_where or {})
    return written


def _update(
    model: type[models.Model],
    names: tuple[str, ...],
    members: list[tuple[Any, Mapping[str, Any]]],
    only_where: Mapping[str, Iterable[Any]],
) -> int:
    connection = connections[router.db_for_write(model)]
    qn = connection.ops.quote_name
    meta = model._meta
    table = qn(meta.db_table)
    pk = meta.pk
    fields = [meta.get_field(name) for name in names]
    # PostgreSQL types a VALUES column from its literals (text): cast to the column's type.
    # SQLite stores what it is given (a cast there would change JSON text into a number).
    typed = connection.vendor == "postgresql"

    def value(i: int, field: models.Field) -> str:
        ref = f"v.column{i}"
        return f"CAST({ref} AS {field.db_type(connection)})" if typed else ref

    row = "(" + ", ".join(["%s"] * (len(fields) + 1)) + ")"
    sets = ", ".join(f"{qn(f.column)} = {value(i + 2, f)}" for i, f in enumerate(fields))
    where = [f"{table}.{qn(pk.column)} = {value(1, pk)}"]
    params: list[Any] = []
    for key, values in members:
        params.append(pk.get_db_prep_value(key, connection))
        params.extend(f.get_db_prep_save(values[f.name], connection) for f in fields)
    for name, allowed in only_where.items():
        field = meta.get_field(name)
        allowed = [field.get_db_prep_value(a, connection) for a in allowed]
        if not allowed:
            return 0
        where.append(f"{table}.{qn(field.column)} IN ({', '.join(['%s'] * len(allowed))})")
        params.extend(allowed)
    # Names come from the model's meta and every value is a parameter.
    sql = (
        f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([row] * len(members))}) AS v "  # noqa: S608
        f"WHERE {' AND '.join(where)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
