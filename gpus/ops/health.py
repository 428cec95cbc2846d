"""Liveness and readiness, answered before sessions, login, host checks or HTTPS redirects (see
``middleware``): the kubelet asks the pod's address over plain HTTP.

- ``/livez``: the process answers requests. It checks nothing else, so a database outage does not
  make Kubernetes restart every web pod at once.
- ``/readyz``: the database and the Celery broker answer, each within
  ``HEALTH_CHECK_TIMEOUT_SECONDS``; otherwise 503 and the pod leaves the Service's endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import current_app
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse

log = logging.getLogger(__name__)


def check_database() -> None:
    """A round trip to the default database; raises if it does not answer."""
    connection = connections["default"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Short, and local to this transaction (no effect on the pooled connection after).
            ms = int(settings.HEALTH_CHECK_TIMEOUT_SECONDS * 1000)
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(ms)])
        cursor.execute("SELECT 1")


def broker_connection():  # type: ignore[no-untyped-def]
    """A kombu connection to the broker with short timeouts and no retry loop."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    return current_app.connection_for_write(
        connect_timeout=timeout,
        transport_options={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "max_retries": 0,
        },
    )


def check_broker() -> None:
    """Connect to the broker (Redis: a PING) once; raises if it does not answer in time."""
    with broker_connection() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=None)
        conn.default_channel  # noqa: B018 - opening the channel is what talks to Redis


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "broker": check_broker}


def run_checks() -> dict[str, str]:
    """Each check's outcome: "ok", or the error's class and message."""
    out = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:
            log.warning("Readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            out[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        else:
            out[name] = "ok"
    return out


def _plain(text: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


def livez(request: HttpRequest) -> HttpResponse:
    return _plain("ok\n")


def readyz(request: HttpRequest) -> HttpResponse:
    results = run_checks()
    body = "".join(f"{name}: {outcome}\n" for name, outcome in results.items())
    ready = all(outcome == "ok" for outcome in results.values())
    return _plain(body, 200 if ready else 503)
