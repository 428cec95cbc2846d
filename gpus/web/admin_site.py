"""The portal's Django admin site: its own name, and one rule for every model's search box."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.apps import AdminConfig
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

# Longer terms are never a real search, and SQLite refuses LIKE patterns over 50,000 bytes.
SEARCH_MAX_CHARS = 200


class BoundedSearchMixin:
    """Refuses over-long search terms with a message instead of sending them to the database."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        if len(search_term) > SEARCH_MAX_CHARS:
            messages.error(
                request,
                gettext("Search for at most %(max)d characters (you typed %(count)d).")
                % {"max": SEARCH_MAX_CHARS, "count": len(search_term)},
            )
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]


class PortalAdminSite(admin.AdminSite):
    site_header = _("Hikube Portal administration")
    site_title = _("Hikube Portal administration")
    index_title = _("Portal records")

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        # Every ModelAdmin, ours and the libraries' (users, groups, axes), gets the bounded search.
        base = admin_class or admin.ModelAdmin
        if not issubclass(base, BoundedSearchMixin):
            base = type(base.__name__, (BoundedSearchMixin, base), {"__module__": base.__module__})
        super().register(model_or_iterable, base, **options)


class PortalAdminConfig(AdminConfig):
    """django.contrib.admin with the portal's site: listed in INSTALLED_APPS in its place."""

    default_site = "gpus.web.admin_site.PortalAdminSite"
