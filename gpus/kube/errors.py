"""The portal's own errors for everything that goes wrong talking to a cluster.

Callers (services, Celery tasks) never see ``ApiException`` or urllib3 errors: they
see one of the classes below and decide from the class alone whether to retry
(``TransientError``), re-read and re-apply (``ConflictError``), give up and show the
causes (``InvalidError``), or treat the object as gone (``NotFoundError``).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from gpus.kube.retry import parse_retry_after


@dataclass(frozen=True)
class Cause:
    """One entry of a Kubernetes ``Status.details.causes``."""

    field: str
    message: str
    reason: str


class KubeError(Exception):
    """Base class. ``message`` is plain words fit for a user; ``status`` the HTTP code.

    ``status`` is None when no HTTP response arrived (timeout, refused connection).
    ``reason`` is the machine-readable ``Status.reason`` (e.g. ``AlreadyExists``).
    """

    transient = False

    def __init__(
        self,
        message: str,
        status: int | None = None,
        reason: str = "",
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        # The raw server message, kept for logs; ``message`` is the friendly one.
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class TransientError(KubeError):
    """Worth retrying later: 429, 5xx, timeouts, refused/reset/dropped connections."""

    transient = True

    def __init__(
        self,
        message: str,
        status: int | None = None,
        reason: str = "",
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status, reason, detail)
        # Seconds the server asked us to wait (Retry-After), or None if it did not say.
        self.retry_after = retry_after


class ExpiredError(TransientError):
    """410 Gone: a list ``continue`` token expired; restart the list from scratch."""


class ConflictError(KubeError):
    """409 (or v1.1's 500 wrapping one): ``reason`` is ``AlreadyExists`` (create) or
    ``Conflict`` (stale resourceVersion)."""

    @property
    def already_exists(self) -> bool:
        return self.reason == "AlreadyExists"


class InvalidError(KubeError):
    """422 (and 400): permanent; ``causes`` says which fields were rejected."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        reason: str = "",
        detail: str = "",
        causes: list[Cause] | None = None,
    ) -> None:
        super().__init__(message, status, reason, detail)
        self.causes: list[Cause] = list(causes or [])


class ForbiddenError(KubeError):
    """403: RBAC said no (for a tenant: the cluster's own wall held)."""


class UnauthorizedError(KubeError):
    """401: the credential is missing, wrong or expired."""


class NotFoundError(KubeError):
    """404."""


# --- translation -------------------------------------------------------------


def _parse_status(body: Any) -> dict[str, Any]:
    """Return the Kubernetes ``Status`` dict from an error body, or {} if it is not one."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    try:
        value = headers.get(name)
        if value is None:
            # Plain dicts are case-sensitive; urllib3's HTTPHeaderDict is not.
            lowered = {str(k).lower(): v for k, v in dict(headers).items()}
            value = lowered.get(name.lower())
    except (AttributeError, TypeError):
        return None
    return None if value is None else str(value)


def _causes(status: dict[str, Any]) -> list[Cause]:
    details = status.get("details") or {}
    out = []
    for cause in details.get("causes") or []:
        if isinstance(cause, dict):
            out.append(
                Cause(
                    field=str(cause.get("field", "")),
                    message=str(cause.get("message", "")),
                    reason=str(cause.get("reason", "")),
                )
            )
    return out


def _where(cluster: str | None) -> str:
    return f"cluster {cluster}" if cluster else "the cluster"


def from_api_exception(exc: ApiException, cluster: str | None = None) -> KubeError:
    code = int(exc.status or 0)
    status = _parse_status(exc.body)
    server_msg = str(status.get("message") or exc.reason or "").strip()
    reason = str(status.get("reason") or "")
    where = _where(cluster)

    if code == 0:
        # The client raises status 0 for TLS failures: a configuration problem, not load.
        return KubeError(
            f"Could not talk to {where} securely: {server_msg}", None, reason, server_msg
        )

    if code == 500 and not reason:
        # cozystack-api v1.1 wraps HelmRelease errors with fmt.Errorf, so the apiserver answers
        # 500 with no reason (ErrorToAPIStatus). Two of them are conflicts, not outages.
        if "already exists" in server_msg:
            return ConflictError(
                f"It already exists: {server_msg}", code, "AlreadyExists", server_msg
            )
        if "the object has been modified" in server_msg:
            return ConflictError(
                f"It was changed by someone else at the same time; read it again: {server_msg}",
                code,
                "Conflict",
                server_msg,
            )
    if code == 429 or code >= 500 or code in (408, 410):
        header = parse_retry_after(_header(exc.headers, "Retry-After"))
        details_after = (status.get("details") or {}).get("retryAfterSeconds")
        retry_after = (
            header
            if header is not None
            else (float(details_after) if isinstance(details_after, (int, float)) else None)
        )
        if code == 410:
            return ExpiredError(
                f"The list from {where} expired while paging; it must start again.",
                code,
                reason or "Expired",
                server_msg,
                retry_after=0.0,
            )
        if code == 429:
            wait = f" retry in {retry_after:g} s." if retry_after is not None else " retry later."
            msg = f"{where.capitalize()} is busy (too many requests);{wait}"
        elif code in (408, 504):
            msg = f"{where.capitalize()} did not answer in time ({code})."
        else:
            detail = server_msg or "no details"
            msg = f"{where.capitalize()} had an internal error ({code}): {detail}."
        return TransientError(msg, code, reason, server_msg, retry_after=retry_after)

    if code in (400, 422):
        causes = _causes(status)
        if causes:
            text = "; ".join(f"{c.field}: {c.message}" if c.field else c.message for c in causes)
        else:
            text = server_msg or "invalid request"
        return InvalidError(
            f"The cluster rejected the request: {text}",
            code,
            reason or "Invalid",
            server_msg,
            causes,
        )
    if code == 409:
        reason = reason or "Conflict"
        if reason == "AlreadyExists":
            msg = f"It already exists: {server_msg}"
        else:
            msg = f"It was changed by someone else at the same time; read it again: {server_msg}"
        return ConflictError(msg, code, reason, server_msg)
    if code == 403:
        return ForbiddenError(
            f"{where.capitalize()} refused this action: {server_msg}",
            code,
            reason or "Forbidden",
            server_msg,
        )
    if code == 401:
        return UnauthorizedError(
            f"{where.capitalize()} did not accept the portal's credentials "
            "(expired or wrong token).",
            code,
            reason or "Unauthorized",
            server_msg,
        )
    if code == 404:
        return NotFoundError(
            f"Not found: {server_msg or 'no such object'}", code, reason or "NotFound", server_msg
        )
    return KubeError(
        f"{where.capitalize()} answered {code}: {server_msg}", code, reason, server_msg
    )


def _connection_words(exc: BaseException) -> str:
    text = str(exc).lower()
    # Order matters: urllib3's NewConnectionError subclasses ConnectTimeoutError.
    if isinstance(exc, ConnectionRefusedError) or "refused" in text:
        return "refused the connection"
    if isinstance(exc, ConnectionResetError) or "reset" in text:
        return "reset the connection"
    if "remote end closed" in text or "aborted" in text or "incomplete" in text:
        return "dropped the connection"
    timeouts = (socket.timeout, TimeoutError, urllib3.exceptions.TimeoutError)
    if isinstance(exc, timeouts) or "timed out" in text:
        return "did not answer in time"
    return "could not be reached"


def is_translatable(exc: BaseException) -> bool:
    """True for the transport and API errors ``translate`` knows; False for bugs."""
    return isinstance(exc, (KubeError, ApiException, urllib3.exceptions.HTTPError, OSError))


def translate(exc: BaseException, cluster: str | None = None) -> KubeError:
    """Map any transport/API exception to the portal's own error.

    Programming errors (TypeError, pydantic validation...) are not passed here: see
    ``is_translatable``; if one is, it becomes a plain KubeError so nothing leaks.
    """
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        return from_api_exception(exc, cluster)
    where = _where(cluster)
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        # urllib3 wraps the real cause (refused, timeout...) in MaxRetryError.
        inner = exc.reason
        if isinstance(inner, urllib3.exceptions.SSLError):
            return KubeError(
                f"Could not talk to {where} securely: {inner}", None, "SSLError", str(inner)
            )
        return TransientError(
            f"{where.capitalize()} {_connection_words(inner)}.",
            None,
            type(inner).__name__,
            str(inner),
        )
    if isinstance(exc, urllib3.exceptions.SSLError):
        return KubeError(f"Could not talk to {where} securely: {exc}", None, "SSLError", str(exc))
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return TransientError(
            f"{where.capitalize()} {_connection_words(exc)}.", None, type(exc).__name__, str(exc)
        )
    return KubeError(
        f"Unexpected error talking to {where}: {exc}", None, type(exc).__name__, str(exc)
    )


# --- what kind of failure, for people ------------------------------------------------------

# Codes stored on the cluster after a failed sync; the portal words each in the reader's
# language (gpus.choices.SyncErrorKind) and keeps the raw English detail for admins.
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
SERVER_ERROR = "server_error"
RATE_LIMITED = "rate_limited"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
INVALID = "invalid"
NOT_FOUND = "not_found"
INSECURE = "tls"
UNEXPECTED = "unexpected"


def failure_kind(exc: BaseException) -> str:
    """The kind of a failed call, as one of the codes above (``UNEXPECTED`` for anything else,
    e.g. a bug or a database error while storing)."""
    exc = getattr(exc, "cause", None) or exc  # RetryBudgetSpent carries the last failure
    if not isinstance(exc, KubeError):
        return UNEXPECTED
    if isinstance(exc, TransientError):
        if exc.status == 429:
            return RATE_LIMITED
        timed_out = "timeout" in exc.reason.lower() or "in time" in exc.message
        if exc.status in (408, 504) or (exc.status is None and timed_out):
            return TIMEOUT
        return UNREACHABLE if exc.status is None else SERVER_ERROR
    kinds: list[tuple[type[KubeError], str]] = [
        (UnauthorizedError, UNAUTHORIZED),
        (ForbiddenError, FORBIDDEN),
        (InvalidError, INVALID),
        (NotFoundError, NOT_FOUND),
    ]
    for cls, kind in kinds:
        if isinstance(exc, cls):
            return kind
    if exc.reason == "SSLError" or "securely" in exc.message:
        return INSECURE
    return UNEXPECTED
