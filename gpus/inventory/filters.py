"""The node list's filters (django-filter): query parameters into a queryset and a keyset sort."""

from __future__ import annotations

import django_filters
from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.utils.translation import gettext_lazy as _

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import NodeHealth
from gpus.inventory.models import Cluster, Node, NodeGpu
from gpus.web.choices import ListedModelChoiceFilter

# The sorts the keyset pager serves (see selectors.NODE_SORT_KEYS); "-x" is x descending.
NODE_SORTS = (
    ("name", _("Name, A to Z")),
    ("-name", _("Name, Z to A")),
    ("cluster", _("Cluster")),
    ("health", _("Health, problems first")),  # cordoned, not_ready, ready
    ("-health", _("Health, ready first")),
    ("-free", _("Most free GPUs first")),
    ("free", _("Fewest free GPUs first")),
    ("-allocated", _("Most allocated GPUs first")),
    ("allocated", _("Fewest allocated GPUs first")),
    ("-installed", _("Most GPUs installed first")),
    ("installed", _("Fewest GPUs installed first")),
)


class NodeFilter(django_filters.FilterSet):
    # Node names are at most 253 characters; longer input is a field error, not a database error.
    # Three characters at least: every term the form accepts has a three-character piece, which
    # the search walks (selectors.name_gram_matches). The search itself is the pager's
    # (selectors.node_page): this field only parses it.
    q = django_filters.CharFilter(
        method="keep", label=_("Name contains"), min_length=3, max_length=253
    )
    gpu_model = ListedModelChoiceFilter(
        method="filter_gpu_model",
        # Models in the snapshot totals (a few rows), not a DISTINCT over every node GPU row;
        # with how many nodes serve each beside another model (usually none).
        queryset=GpuModel.objects.annotate(mixed_nodes=Sum("totals__mixed_nodes")).filter(
            mixed_nodes__isnull=False
        ),
        label=_("GPU model"),
        empty_label=_("Any model"),
    )
    cluster = ListedModelChoiceFilter(
        queryset=Cluster.objects.all(),
        to_field_name="name",
        label=_("Cluster"),
        empty_label=_("Any cluster"),
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
    # Ordering is the pager's business (selectors.node_page): this field only parses it.
    sort = django_filters.ChoiceFilter(
        method="keep", choices=NODE_SORTS, label=_("Sort by"), empty_label=None
    )

    class Meta:
        model = Node
        fields: list[str] = []

    def filter_has_free(self, queryset: QuerySet[Node], name: str, value: str) -> QuerySet[Node]:
        return queryset.filter(gpu_free__gt=0) if value == "yes" else queryset.filter(gpu_free=0)

    def filter_gpu_model(
        self, queryset: QuerySet[Node], name: str, value: GpuModel
    ) -> QuerySet[Node]:
        # Nodes serving one model carry it (Node.gpu_model): each sort is then a range of a
        # (gpu_model, sort key) index, whatever the fleet. Nodes serving several models (the
        # snapshot totals count them) are found through their GPU rows as well.
        single = Q(gpu_model=value)
        if not getattr(value, "mixed_nodes", 1):
            return queryset.filter(single)
        mixed = Q(gpu_model__isnull=True) & Exists(
            NodeGpu.objects.filter(node=OuterRef("pk"), gpu_model=value)
        )
        return queryset.filter(single | mixed)

    def keep(self, queryset: QuerySet[Node], name: str, value: str) -> QuerySet[Node]:
        return queryset

    @property
    def sort_key(self) -> str:
        """The chosen sort, or by name when none (or an invalid one) was asked for."""
        if self.is_bound and self.is_valid():
            return self.form.cleaned_data.get("sort") or "name"
        return "name"

    @property
    def name_term(self) -> str:
        """The name search term, or "" when none (or an invalid one) was given."""
        if self.is_bound and self.is_valid():
            return self.form.cleaned_data.get("q") or ""
        return ""

    @property
    def narrowed_to(self) -> Cluster | None:
        if self.is_bound and self.is_valid():
            return self.form.cleaned_data.get("cluster")
        return None
