"""Template context for every page: the header's navigation."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from gpus.web.access import is_platform_admin


def navigation(request: HttpRequest) -> dict[str, object]:
    """The header links: only what this user may open. An htmx fragment has no header, so a
    poll costs no navigation query; a history restore is a whole page and gets them."""
    htmx = getattr(request, "htmx", None)  # None without HtmxMiddleware (RequestFactory)
    if htmx and not htmx.history_restore_request:
        return {}
    user = request.user
    if not user.is_authenticated:
        return {"nav_items": []}
    items = [
        (reverse("gpus:catalog"), _("Catalog")),
        (reverse("gpus:compare"), _("Compare")),
        (reverse("gpus:advisor"), _("Which GPU?")),
    ]
    items.append((reverse("gpus:inventory"), _("Inventory")))
    # The person's own first tenant (through Tenant.members), admins included.
    tenant = user.tenants.first()
    if tenant is not None:
        items.append((reverse("gpus:my_gpus", args=[tenant.namespace]), _("My GPUs")))
    admin = is_platform_admin(user)
    if admin:
        items.append((reverse("gpus:util_fleet"), _("Utilization")))
    elif tenant is not None:
        items.append((reverse("gpus:util_tenant", args=[tenant.namespace]), _("Utilization")))
    if admin:
        items.append((reverse("gpus:capacity"), _("Capacity")))
        items.append((reverse("gpus:nodes"), _("Nodes")))
        items.append((reverse("gpus:tenants"), _("Tenants")))
        items.append((reverse("gpus:audit"), _("Audit log")))
        items.append((reverse("admin:index"), _("Admin")))
    # The current item is the longest link the path starts with ("/" only matches itself).
    path = request.path
    matches = [url for url, _label in items if path == url or (url != "/" and path.startswith(url))]
    current = max(matches, key=len, default=None)
    return {
        "nav_items": [
            {"url": url, "label": label, "current": url == current} for url, label in items
        ]
    }
