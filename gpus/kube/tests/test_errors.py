"""Translation of crafted ApiException bodies and transport errors."""

from __future__ import annotations

import json

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from gpus.kube import errors as e


def api_exc(
    status: int, body: dict | str | None = None, headers: dict | None = None
) -> ApiException:
    exc = ApiException(status=status, reason="Reason Phrase")
    exc.body = json.dumps(body) if isinstance(body, dict) else body
    exc.headers = headers
    return exc


def status_body(code: int, reason: str, message: str, causes: list | None = None, **details):
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
        "details": dict(details),
    }
    if causes is not None:
        body["details"]["causes"] = causes
    return body


def test_422_causes_in_plain_words():
    body = status_body(
        422,
        "Invalid",
        'VMInstance.apps.cozystack.io "gpu-ws" is invalid: spec.runStrategy: Unsupported value',
        causes=[
            {
                "reason": "FieldValueNotSupported",
                "message": 'Unsupported value: "Sometimes": supported values: "Always", "Halted"',
                "field": "spec.runStrategy",
            }
        ],
        name="gpu-ws",
        kind="VMInstance",
    )
    err = e.translate(api_exc(422, body))
    assert isinstance(err, e.InvalidError)
    assert not err.transient
    assert err.status == 422
    assert err.causes == [
        e.Cause(
            "spec.runStrategy",
            'Unsupported value: "Sometimes": supported values: "Always", "Halted"',
            "FieldValueNotSupported",
        )
    ]
    assert err.message.startswith("The cluster rejected the request: spec.runStrategy: Unsupported")


def test_422_without_causes_uses_message():
    err = e.translate(api_exc(422, status_body(422, "Invalid", "name too long")))
    assert isinstance(err, e.InvalidError)
    assert err.causes == []
    assert err.message == "The cluster rejected the request: name too long"


def test_409_already_exists_vs_conflict():
    exists = e.translate(api_exc(409, status_body(409, "AlreadyExists", 'vminstances "a" exists')))
    assert isinstance(exists, e.ConflictError) and exists.already_exists
    conflict = e.translate(
        api_exc(409, status_body(409, "Conflict", "the object has been modified"))
    )
    assert isinstance(conflict, e.ConflictError)
    assert conflict.reason == "Conflict" and not conflict.already_exists


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (401, e.UnauthorizedError),
        (403, e.ForbiddenError),
        (404, e.NotFoundError),
        (400, e.InvalidError),
        (418, e.KubeError),
    ],
)
def test_permanent_codes(code, cls):
    err = e.translate(api_exc(code, status_body(code, "X", "nope")), cluster="hikube-gva")
    assert type(err) is cls
    assert not err.transient
    assert err.status == code


def test_403_message_names_cluster():
    body = status_body(
        403, "Forbidden", 'nodes is forbidden: User "acme" cannot list resource "nodes"'
    )
    err = e.translate(api_exc(403, body), cluster="gva1")
    assert err.message.startswith("Cluster gva1 refused this action: nodes is forbidden")


def test_429_retry_after_header():
    err = e.translate(
        api_exc(429, status_body(429, "TooManyRequests", "slow down"), {"Retry-After": "7"})
    )
    assert isinstance(err, e.TransientError)
    assert err.retry_after == 7.0
    assert "retry in 7 s" in err.message


def test_429_retry_after_header_case_insensitive_and_details():
    err = e.translate(api_exc(429, None, {"retry-after": "2"}))
    assert err.retry_after == 2.0
    body = status_body(429, "TooManyRequests", "slow", retryAfterSeconds=4)
    assert e.translate(api_exc(429, body)).retry_after == 4.0
    assert e.translate(api_exc(429, None)).retry_after is None


def test_retry_after_http_date():
    assert e.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert e.parse_retry_after("garbage") is None


@pytest.mark.parametrize("code", [500, 502, 503, 504, 408])
def test_5xx_transient(code):
    err = e.translate(api_exc(code, "<html>oops</html>"))
    assert isinstance(err, e.TransientError)
    assert err.transient
    assert err.status == code


def test_non_json_body_falls_back_to_reason():
    err = e.translate(api_exc(404, "not json"))
    assert isinstance(err, e.NotFoundError)
    assert "Reason Phrase" in err.message


def test_410_expired_is_transient():
    err = e.translate(api_exc(410, status_body(410, "Expired", "continue token expired")))
    assert isinstance(err, e.ExpiredError) and isinstance(err, e.TransientError)


def test_status_zero_tls_is_permanent():
    err = e.translate(ApiException(status=0, reason="SSLError\ncertificate verify failed"))
    assert type(err) is e.KubeError
    assert "securely" in err.message


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (
            urllib3.exceptions.MaxRetryError(
                None,
                "/api",
                urllib3.exceptions.NewConnectionError(None, "[Errno 111] Connection refused"),
            ),
            "refused",
        ),
        (urllib3.exceptions.ReadTimeoutError(None, "/api", "Read timed out."), "in time"),
        (
            urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError()),
            "aborted",
        ),
        (ConnectionResetError(104, "Connection reset by peer"), "reset"),
        (TimeoutError("timed out"), "in time"),
        (ConnectionRefusedError(111, "Connection refused"), "refused"),
    ],
)
def test_transport_errors_are_transient(exc, words):
    err = e.translate(exc, cluster="c1")
    assert isinstance(err, e.TransientError)
    assert err.status is None
    assert err.message.startswith("Cluster c1 ")
    # the friendly words, or the raw detail kept for logs, mention what happened
    assert words in (err.message + " " + err.detail).lower()


def test_ssl_error_is_permanent():
    err = e.translate(urllib3.exceptions.SSLError("bad cert"))
    assert type(err) is e.KubeError


def test_translate_is_identity_on_kube_errors_and_flags_bugs():
    original = e.NotFoundError("gone", 404)
    assert e.translate(original) is original
    assert not e.is_translatable(TypeError("bug"))
    assert e.is_translatable(ApiException(status=500))


def test_v11_500_wrapping_already_exists_is_a_conflict():
    body = {
        "kind": "Status",
        "status": "Failure",
        "code": 500,
        "message": "failed to create HelmRelease: "
        'helmreleases.helm.toolkit.fluxcd.io "vm-instance-a" already exists',
    }
    err = e.translate(api_exc(500, body))
    assert isinstance(err, e.ConflictError) and err.already_exists and err.status == 500


def test_v11_500_wrapping_a_stale_update_is_a_conflict():
    body = {
        "kind": "Status",
        "status": "Failure",
        "code": 500,
        "message": "failed to update HelmRelease: Operation cannot be fulfilled on "
        'helmreleases.helm.toolkit.fluxcd.io "vm-instance-a": the object has been modified; '
        "please apply your changes to the latest version and try again",
    }
    err = e.translate(api_exc(500, body))
    assert isinstance(err, e.ConflictError) and not err.already_exists
    assert err.reason == "Conflict" and not err.transient


def test_other_500s_stay_transient():
    body = {"kind": "Status", "code": 500, "reason": "InternalError", "message": "etcd is down"}
    assert isinstance(e.translate(api_exc(500, body)), e.TransientError)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (api_exc(429, status_body(429, "TooManyRequests", "slow down")), e.RATE_LIMITED),
        (api_exc(503, "down"), e.SERVER_ERROR),
        (api_exc(504, "gateway timeout"), e.TIMEOUT),
        (api_exc(401, status_body(401, "Unauthorized", "token expired")), e.UNAUTHORIZED),
        (api_exc(403, status_body(403, "Forbidden", "nodes is forbidden")), e.FORBIDDEN),
        (api_exc(422, status_body(422, "Invalid", "bad")), e.INVALID),
        (api_exc(404, status_body(404, "NotFound", "no such API")), e.NOT_FOUND),
        (ApiException(status=0, reason="SSLError\ncertificate verify failed"), e.INSECURE),
        (ConnectionRefusedError("[Errno 111] Connection refused"), e.UNREACHABLE),
        (urllib3.exceptions.ReadTimeoutError(None, "/api", "Read timed out."), e.TIMEOUT),
    ],
)
def test_failure_kind_of_translated_errors(exc, kind):
    assert e.failure_kind(e.translate(exc, "c1")) == kind


def test_failure_kind_unexpected_and_through_a_spent_budget():
    from gpus.kube.budget import RetryBudgetSpent

    assert e.failure_kind(RuntimeError("disk full")) == e.UNEXPECTED
    assert e.failure_kind(e.KubeError("odd")) == e.UNEXPECTED
    spent = RetryBudgetSpent(e.TransientError("HTTP 429", status=429), 5)
    assert e.failure_kind(spent) == e.RATE_LIMITED
