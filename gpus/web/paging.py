"""Keyset pagination: pages are index ranges, never an OFFSET walk.

A page is asked for by a cursor (the sort key of the row it starts after or ends before) or as
the first or last page. Each costs one query reading `per_page + 1` rows, whatever the table
size, provided an index matches the key. The key must be unique (end it with the primary key).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import models
from django.db.models import F, QuerySet
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan, TupleLessThan

T = TypeVar("T")

FIRST, LAST, AFTER, BEFORE = "first", "last", "after", "before"


@dataclass(frozen=True)
class PageRequest:
    """Which page: the first, the last, or the one after/before a cursor."""

    where: str = FIRST
    values: tuple[Any, ...] = ()

    @classmethod
    def from_query(cls, query: Mapping[str, str], prefix: str = "") -> PageRequest:
        """Read `page=last`, `after=<cursor>` or `before=<cursor>`; anything else is page one."""
        if query.get(f"{prefix}page") == LAST:
            return cls(LAST)
        for where in (AFTER, BEFORE):
            values = decode_cursor(query.get(f"{prefix}{where}", ""))
            if values is not None:
                return cls(where, values)
        return cls()


def _plain(value: Any) -> str:
    """A date or time in a cursor travels as ISO 8601 text (the lookup parses it back)."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} in a cursor")


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps(list(values), separators=(",", ":"), default=_plain).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, ...] | None:
    if not cursor or len(cursor) > 2000:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(values, list) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in values
    ):
        return None
    return tuple(values)


@dataclass
class KeysetPage(Generic[T]):
    rows: list[T]
    has_previous: bool
    has_next: bool
    previous_cursor: str = ""
    next_cursor: str = ""

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def is_paged(self) -> bool:
        return self.has_previous or self.has_next


def _valid(queryset: QuerySet[Any], keys: Sequence[str], values: tuple[Any, ...]) -> bool:
    """A cursor must match the key's shape: as many values, each of its column's type."""
    if len(values) != len(keys):
        return False
    for key, value in zip(keys, values, strict=True):
        field = queryset.model._meta.get_field(key.removesuffix("_id"))
        if isinstance(field, models.ForeignKey):
            field = field.target_field
        numeric = isinstance(field, models.IntegerField | models.AutoField)
        if numeric != isinstance(value, int):
            return False
    return True


def _key_of(row: Any, keys: Sequence[str]) -> str:
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    return encode_cursor([get(k) for k in keys])


def keyset_page(
    queryset: QuerySet[T],
    keys: Sequence[str],
    request: PageRequest,
    per_page: int,
    descending: bool = False,
) -> KeysetPage[T]:
    """One page of `queryset` ordered by `keys` (all ascending, or all descending)."""
    if request.where in (AFTER, BEFORE) and not _valid(queryset, keys, request.values):
        request = PageRequest()
    forward = [F(k).desc() if descending else F(k).asc() for k in keys]
    backward = [F(k).asc() if descending else F(k).desc() for k in keys]
    key = Tuple(*(F(k) for k in keys))
    # "After" in the page order: greater when ascending, smaller when descending.
    after, before = (
        (TupleLessThan, TupleGreaterThan) if descending else (TupleGreaterThan, TupleLessThan)
    )
    if request.where == AFTER:
        rows = list(
            queryset.filter(after(key, list(request.values))).order_by(*forward)[: per_page + 1]
        )
        has_previous, has_next = True, len(rows) > per_page
        rows = rows[:per_page]
    elif request.where == BEFORE:
        rows = list(
            queryset.filter(before(key, list(request.values))).order_by(*backward)[: per_page + 1]
        )
        if len(rows) <= per_page:  # back at the start: show a full first page instead
            return keyset_page(queryset, keys, PageRequest(), per_page, descending)
        has_previous, has_next = True, True
        rows = rows[:per_page][::-1]
    elif request.where == LAST:
        rows = list(queryset.order_by(*backward)[: per_page + 1])
        has_previous, has_next = len(rows) > per_page, False
        rows = rows[:per_page][::-1]
    else:
        rows = list(queryset.order_by(*forward)[: per_page + 1])
        has_previous, has_next = False, len(rows) > per_page
        rows = rows[:per_page]
    if not rows:
        return KeysetPage(rows, False, False)
    return KeysetPage(
        rows,
        has_previous,
        has_next,
        previous_cursor=_key_of(rows[0], keys) if has_previous else "",
        next_cursor=_key_of(rows[-1], keys) if has_next else "",
    )
