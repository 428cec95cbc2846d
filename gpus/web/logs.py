"""Log lines that say which request or operation they belong to, as text or as JSON lines.

A request's id (``X-Request-ID`` from the proxy when it is sane, else a new one) and the
operation or Celery task being worked on live in context variables; ``ContextFilter`` copies them
onto every record, and ``JsonFormatter`` writes one JSON object per line (``LOG_FORMAT=json``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

# The fields a record may carry; each is a context variable and a JSON key.
CONTEXT_FIELDS = ("request_id", "operation_id", "task_id")
_vars: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"hikube_portal_{name}", default=None) for name in CONTEXT_FIELDS
}
# What a proxy's X-Request-ID may be before we trust it into our logs (no newlines, no JSON).
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id(offered: str | None = None) -> str:
    """The proxy's id if it looks like one, else a fresh UUID (hex)."""
    if offered and _SANE_ID.match(offered):
        return offered
    return uuid.uuid4().hex


def current(name: str) -> str | None:
    return _vars[name].get()


@contextlib.contextmanager
def log_context(**values: object) -> Iterator[None]:
    """Within the block, log records carry these ids (``request_id``, ``operation_id``,
    ``task_id``); the previous values come back after it."""
    tokens = []
    try:
        for name, value in values.items():
            tokens.append((_vars[name], _vars[name].set(None if value is None else str(value))))
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Puts the current ids on every record (``%(request_id)s`` works in any format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, _vars[name].get())
        return True


# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the context ids
    that are set, ``extra=`` fields, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or _vars[name].get()
            if value:
                out[name] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and key not in CONTEXT_FIELDS:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def bind(name: str, value: object) -> None:
    """Set one id until it is set again (Celery's task signals: prerun sets, postrun clears)."""
    _vars[name].set(None if value is None else str(value))


F = TypeVar("F", bound=Callable[..., Any])


def logs_operation(fn: F) -> F:
    """For a bound task whose first argument is an operation id: its log lines carry it."""

    @functools.wraps(fn)
    def wrapper(task: Any, operation_id: int, *args: Any, **kwargs: Any) -> Any:
        with log_context(operation_id=operation_id):
            return fn(task, operation_id, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
