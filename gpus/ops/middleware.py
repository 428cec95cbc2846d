"""First in the middleware chain: every request gets an id (in its log lines and its
``X-Request-ID`` response header) and is timed by view; the probe and metrics URLs are answered
here, before host validation, HTTPS redirects, sessions and login, because the kubelet and the
scraper ask the pod's own address over plain HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

from gpus.ops import health, metrics
from gpus.web.logs import bind, new_request_id

# Request methods kept as labels; anything else is "other", so a client cannot mint series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# path -> (label, view). The same views are in the URLconf, for reverse() and for other methods.
OPS_VIEWS: dict[str, tuple[str, Callable[[HttpRequest], HttpResponse]]] = {
    "/livez": ("livez", health.livez),
    "/readyz": ("readyz", health.readyz),
    "/metrics": ("metrics", metrics.metrics_view),
}


class ObservabilityMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = new_request_id(request.headers.get("X-Request-ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        # Until the response is closed (request_finished), so django.request's own line about
        # a 4xx or 5xx, written after the middleware returns, carries it too.
        bind("request_id", request_id)
        started = time.perf_counter()
        ops = OPS_VIEWS.get(request.path_info) if request.method in ("GET", "HEAD") else None
        if ops is not None:
            view, answer = ops
            response = answer(request)
        else:
            response = self.get_response(request)
            match = getattr(request, "resolver_match", None)
            view = (match.view_name or match._func_path) if match else "<unresolved>"
        method = request.method if request.method in METHODS else "other"
        metrics.observe_request(view, method, response.status_code, time.perf_counter() - started)
        response["X-Request-ID"] = request_id
        return response


def _request_done(**kwargs: object) -> None:
    bind("request_id", None)


request_finished.connect(_request_done, dispatch_uid="gpus.ops.request_id")
