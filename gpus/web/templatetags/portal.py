"""Template filters of the portal."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.translation import gettext as _

register = template.Library()


@register.filter
def ago(value: datetime | None) -> str:
    """ "just now" under a minute (never "0 minutes ago"), else humanize's "5 minutes ago",
    whose catalogs get each language's grammar right ("vor 5 Minuten", "il y a 5 minutes")."""
    if not value:
        return ""
    if timezone.now() - value < timedelta(minutes=1):
        return _("just now")
    return str(naturaltime(value))
