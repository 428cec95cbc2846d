"""The admin node list's filters (django-filter): parse query parameters into a queryset."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from .choices import NodeHealth
from .models import Cluster, GpuModel, Node


class NodeFilter(django_filters.FilterSet):
    # Node names are at most 253 characters; longer input is a field error, not a database error.
    q = django_filters.CharFilter(
        field_name="name", lookup_expr="icontains", label=_("Name contains"), max_length=253
    )
    gpu_model = django_filters.ModelChoiceFilter(
        field_name="gpus__gpu_model",
        # Models in the snapshot totals (a few rows), not a DISTINCT over every node GPU row.
        queryset=GpuModel.objects.filter(totals__isnull=False).distinct(),
        label=_("GPU model"),
        empty_label=_("Any model"),
    )
    cluster = django_filters.ModelChoiceFilter(
        queryset=Cluster.objects.all(), label=_("Cluster"), empty_label=_("Any cluster")
    )
    health = django_filters.ChoiceFilter(
        choices=NodeHealth.choices, label=_("Health"), empty_label=_("Any health")
    )
    has_free = django_filters.ChoiceFilter(
        method="filter_has_free",
        choices=(("yes", _("Yes")), ("no", _("No"))),
        label=_("Has free GPUs"),
        empty_label=_("Any"),
    )
    sort = django_filters.OrderingFilter(
        fields=(
            ("name", "name"),
            ("gpu_free", "free"),
            ("gpu_allocated", "allocated"),
            ("health", "health"),
        ),
        # Every label given here, lazily: django-filter builds "(descending)" labels once, at
        # import, in English. No empty choice: it would be a second "Name".
        field_labels={
            "name": _("Name, A to Z"),
            "-name": _("Name, Z to A"),
            "gpu_free": _("Fewest free GPUs first"),
            "-free": _("Most free GPUs first"),
            "gpu_allocated": _("Fewest allocated GPUs first"),
            "-allocated": _("Most allocated GPUs first"),
            "health": _("Health, problems first"),  # cordoned, not_ready, ready
            "-health": _("Health, ready first"),
        },
        label=_("Sort by"),
        empty_label=None,
    )

    class Meta:
        model = Node
        fields: list[str] = []

    def filter_has_free(self, queryset: QuerySet[Node], name: str, value: str) -> QuerySet[Node]:
        return queryset.filter(gpu_free__gt=0) if value == "yes" else queryset.filter(gpu_free=0)

    @property
    def qs(self) -> QuerySet[Node]:
        queryset = super().qs
        # Stable order for pagination: the chosen sort, then the name.
        ordering = list(queryset.query.order_by) or ["name"]
        if "name" not in ordering and "-name" not in ordering:
            ordering.append("name")
        return queryset.order_by(*ordering)
