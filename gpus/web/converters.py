"""URL converters."""

from __future__ import annotations


class IdConverter:
    """A database id: digits that fit a 64-bit integer (longer ones are a 404, not a 500)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)
