"""Thin views: read through selectors, render one page or fragment each.

No view calls the cluster: pages read the snapshot the inventory sync keeps fresh.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from . import selectors, services
from .advisor import recommend
from .compare import APPROACH_ROWS, compare_rows
from .filters import NodeFilter
from .forms import AdvisorForm, CompareForm
from .paging import PageRequest


def _live_context(request: HttpRequest) -> dict[str, object]:
    """What every page with live figures needs: the clusters, the one it is narrowed to
    (`?cluster=<name>`), and how old each cluster's data is."""
    clusters = list(selectors.clusters_status())
    narrowed = selectors.pick_cluster(clusters, request.GET.get("cluster"))
    return {
        "clusters": clusters,
        "narrowed": narrowed,
        "sync": selectors.sync_summary(clusters, narrowed),
        "refresh_seconds": settings.PAGE_REFRESH_SECONDS,
    }


def catalog(request: HttpRequest) -> HttpResponse:
    context = _live_context(request)
    models = list(selectors.catalog_models())
    free = selectors.free_by_model(context["narrowed"])
    for model in models:
        model.free_now = free.get(model.pk)  # None: not in the fleet (or no sync yet)
    context.update(
        offered=[m for m in models if m.offered],
        others=[m for m in models if not m.offered],
        synced=any(c.last_synced_at for c in context["clusters"]),
    )
    return render(request, "gpus/catalog.html", context)


def compare(request: HttpRequest) -> HttpResponse:
    if "models" in request.GET:
        form = CompareForm(request.GET)
        chosen = form.cleaned_data["models"] if form.is_valid() else []
    else:
        chosen = list(selectors.offered_models())[:3]
        form = CompareForm(initial={"models": chosen})
    context = {
        "form": form,
        "chosen": chosen,
        "rows": compare_rows(chosen) if chosen else [],
        "approach_rows": APPROACH_ROWS,
    }
    template = "gpus/_compare_table.html" if request.htmx else "gpus/compare.html"
    return render(request, template, context)


def advisor(request: HttpRequest) -> HttpResponse:
    form = AdvisorForm(request.GET or None)
    recommendation = None
    if form.is_valid():
        recommendation = recommend(form.cleaned_data["workload"], selectors.catalog_models())
    template = "gpus/_advice.html" if request.htmx else "gpus/advisor.html"
    return render(request, template, {"form": form, "recommendation": recommendation})


def tenant_detail(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    return render(
        request,
        "gpus/tenant.html",
        {
            "tenant": tenant,
            "memberships": selectors.memberships_of(tenant),
            "membership": selectors.membership_of(request.user, tenant),
        },
    )


def _inventory_context(request: HttpRequest) -> dict[str, object]:
    user = request.user
    context = _live_context(request)
    narrowed = context["narrowed"]
    context["totals"] = selectors.model_totals(user, narrowed)
    if user.is_staff:
        page = PageRequest.from_query(request.GET, prefix="tenants_")
        context["tenant_allocations"] = selectors.allocations_by_tenant(page, narrowed)
    context["query"] = _query_without(request, "tenants_page", "tenants_after", "tenants_before")
    return context


def _query_without(request: HttpRequest, *names: str) -> str:
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


def inventory(request: HttpRequest) -> HttpResponse:
    return render(request, "gpus/inventory.html", _inventory_context(request))


def inventory_summary(request: HttpRequest) -> HttpResponse:
    """The overview's body alone: htmx polls it so the page refreshes without a reload."""
    return render(request, "gpus/_inventory_summary.html", _inventory_context(request))


@require_POST
def inventory_sync(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise Http404("No such page.")
    for cluster in selectors.clusters_status():
        services.request_inventory_sync(cluster)
    messages.success(request, _("Inventory sync queued. The page refreshes by itself."))
    return redirect("gpus:inventory")


def node_list(request: HttpRequest) -> HttpResponse:
    node_filter = NodeFilter(request.GET or None, queryset=selectors.node_queryset(request.user))
    clusters = list(selectors.clusters_status())
    narrowed = node_filter.narrowed_to
    sync = selectors.sync_summary(clusters, narrowed)
    nodes = node_filter.qs
    filters = {k: v for k, v in request.GET.items() if k in node_filter.filters and k != "sort"}
    names = {c.pk: c.name for c in clusters}
    page = selectors.node_page(nodes, node_filter.sort_key, PageRequest.from_query(request.GET))
    for node in page.rows:
        node.cluster_name = names.get(node.cluster_id, "")
    context = {
        "filter": node_filter,
        "page": page,
        "count": selectors.cached_count(nodes, sync.version, filters, "nodes"),
        "query": _query_without(request, "page", "after", "before"),
        "clusters": clusters,
        "narrowed": narrowed,
        "sync": sync,
    }
    template = "gpus/_node_table.html" if request.htmx else "gpus/nodes.html"
    return render(request, template, context)


def my_gpus(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    context = _live_context(request)
    page = selectors.tenant_workload_page(
        request.user, tenant, PageRequest.from_query(request.GET), context["narrowed"]
    )
    names = {c.pk: c.name for c in context["clusters"]}
    for workload in page.rows:
        workload.cluster_name = names.get(workload.cluster_id, "")
    context.update(
        tenant=tenant, workloads=page, query=_query_without(request, "page", "after", "before")
    )
    template = "gpus/_my_gpus_table.html" if request.htmx else "gpus/my_gpus.html"
    return render(request, template, context)
