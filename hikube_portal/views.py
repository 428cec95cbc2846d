"""Site-level views that need no login: the health check and the favicon."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.views.decorators.cache import never_cache


@login_not_required
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """200 "ok" when the portal can serve pages (its database answers), else 503."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return HttpResponse("database unavailable\n", status=503, content_type="text/plain")
    return HttpResponse("ok\n", content_type="text/plain")


@login_not_required
def favicon(request: HttpRequest) -> HttpResponse:
    # Browsers ask for /favicon.ico before reading the page's <link rel="icon">.
    return HttpResponsePermanentRedirect(static("favicon.svg"))
