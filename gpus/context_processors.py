from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from . import selectors


def navigation(request: HttpRequest) -> dict[str, object]:
    """The header links: only what this user may open."""
    user = request.user
    if not user.is_authenticated:
        return {"nav_items": []}
    items = [
        (reverse("gpus:catalog"), _("Catalog")),
        (reverse("gpus:compare"), _("Compare")),
        (reverse("gpus:advisor"), _("Which GPU?")),
    ]
    tenant = selectors.tenants_for_user(user).first()
    if tenant is not None and not user.is_staff:
        items.append((reverse("gpus:tenant", args=[tenant.namespace]), _("My tenant")))
    if user.is_staff:
        items.append((reverse("admin:index"), _("Admin")))
    path = request.path
    return {
        "nav_items": [
            {"url": url, "label": label, "current": path == url or (url != "/" and path.startswith(url))}
            for url, label in items
        ]
    }
