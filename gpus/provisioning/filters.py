"""The audit log's filters (django-filter)."""

from __future__ import annotations

import django_filters
from django.utils.translation import gettext_lazy as _

from gpus.provisioning.choices import OperationKind
from gpus.provisioning.models import AuditEvent
from gpus.tenancy.models import Tenant


class AuditFilter(django_filters.FilterSet):
    """The audit log (platform admins): by tenant, actor, kind of action and time."""

    tenant = django_filters.ModelChoiceFilter(
        queryset=Tenant.objects.all(), label=_("Tenant"), empty_label=_("Any tenant")
    )
    actor = django_filters.CharFilter(
        field_name="actor_name", lookup_expr="icontains", label=_("Actor"), max_length=150
    )
    action = django_filters.ChoiceFilter(
        field_name="operation__kind",
        choices=OperationKind.choices,
        label=_("Operation"),
        empty_label=_("Any operation"),
    )
    since = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__gte", label=_("From (date)")
    )
    until = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__lte", label=_("Until (date)")
    )

    class Meta:
        model = AuditEvent
        fields: list[str] = []
