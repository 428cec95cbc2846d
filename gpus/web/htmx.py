"""htmx helpers: a page or its fragment, and query strings for pagers."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers


def render_page_or_fragment(
    request: HttpRequest, page: str, fragment: str, context: dict[str, Any]
) -> HttpResponse:
    """The fragment for an htmx swap; the whole page otherwise, including htmx's history
    restore (the back button after htmx's history cache is gone), which replaces the body.
    Vary: HX-Request keeps the two apart in any cache."""
    partial = bool(request.htmx) and not request.htmx.history_restore_request
    response = render(request, fragment if partial else page, {**context, "partial": partial})
    patch_vary_headers(response, ("HX-Request",))
    return response


def _query_without(request: HttpRequest, *names: str) -> str:
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()
