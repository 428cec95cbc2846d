"""Content-Security-Policy and Permissions-Policy on every response (Django 5.2 has neither).

The policy is static: the templates carry no inline script or event handler (htmx, Plotly, charts
and copy are files under /static/), so scripts come from the portal's own origin only and nothing
may be evaluated. Styles allow 'unsafe-inline': Plotly and htmx insert <style> elements at run time
and a few templates set a width in a style attribute; style cannot run code.

Off under DEBUG: Django's technical error pages use inline scripts.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.DEBUG:
            return response
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        if settings.PERMISSIONS_POLICY:
            response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        return response
