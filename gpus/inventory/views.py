"""Pages of the fleet: the catalog with what is free now, the inventory overview, nodes, tenants.
Thin: they read through selectors; no view calls the cluster."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from gpus.catalog.advisor import recommend
from gpus.catalog.forms import AdvisorForm
from gpus.catalog.selectors import catalog_models
from gpus.inventory.filters import NodeFilter
from gpus.inventory.selectors import (
    SEARCH_COUNT_CAP,
    _live_context,
    allocations_by_tenant,
    cached_count,
    clusters_status,
    free_by_model,
    get_node_for_user,
    model_totals,
    node_holder_tenants,
    node_page,
    node_queryset,
    search_matches,
    served_instance_types,
    sync_issues,
    sync_summary,
    tenant_gpus_held,
    tenant_workloads,
    tenants_overview,
)
from gpus.inventory.services import request_inventory_sync
from gpus.tenancy.selectors import get_tenant_for_user, membership_of, memberships_of
from gpus.web.access import is_platform_admin, require_platform_admin
from gpus.web.htmx import _query_without, render_page_or_fragment
from gpus.web.paging import PageRequest


def catalog(request: HttpRequest) -> HttpResponse:
    context = _live_context(request)
    models = list(catalog_models())
    free = free_by_model(context["narrowed"])
    for model in models:
        model.free_now = free.get(model.pk)  # None: not in the fleet (or no sync yet)
    offered = [m for m in models if m.offered]
    # What a tenant can rent now comes first: offered models with free GPUs, then the others.
    offered.sort(key=lambda m: not m.free_now)
    others = [m for m in models if not m.offered]
    context.update(
        offered=offered,
        others_in_fleet=[m for m in others if m.free_now is not None],
        others_elsewhere=[m for m in others if m.free_now is None],
        offered_ids=[m.pk for m in offered],
        synced=any(c.last_synced_at for c in context["clusters"]),
    )
    return render(request, "inventory/catalog.html", context)


def advisor(request: HttpRequest) -> HttpResponse:
    """Which GPU and which way; the size among the instance types the default cluster (the
    forms' own) serves, as its last sync read them."""
    form = AdvisorForm(request.GET or None)
    recommendation = None
    if form.is_valid():
        served = served_instance_types()
        recommendation = recommend(form.cleaned_data["workload"], catalog_models(), served)
    context = {"form": form, "recommendation": recommendation}
    return render_page_or_fragment(request, "catalog/advisor.html", "catalog/_advice.html", context)


def tenant_list(request: HttpRequest) -> HttpResponse:
    require_platform_admin(request.user)
    page = tenants_overview(request.user, PageRequest.from_query(request.GET))
    return render(
        request,
        "inventory/tenants.html",
        {"tenants": page, "query": _query_without(request, "page", "after", "before")},
    )


def tenant_detail(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = get_tenant_for_user(request.user, namespace)
    return render(
        request,
        "inventory/tenant.html",
        {
            "tenant": tenant,
            "memberships": memberships_of(tenant),
            "membership": membership_of(request.user, tenant),
            "gpus_held": tenant_gpus_held(tenant),
            "workload_count": tenant_workloads(request.user, tenant).count(),
        },
    )


def _inventory_context(request: HttpRequest) -> dict[str, object]:
    user = request.user
    context = _live_context(request)
    narrowed = context["narrowed"]
    context["totals"] = model_totals(user, narrowed)
    if is_platform_admin(user):
        page = PageRequest.from_query(request.GET, prefix="tenants_")
        context["tenant_allocations"] = allocations_by_tenant(page, narrowed)
    context["sync_issues"] = sync_issues(user)
    context["query"] = _query_without(request, "tenants_page", "tenants_after", "tenants_before")
    return context


def inventory(request: HttpRequest) -> HttpResponse:
    return render(request, "inventory/inventory.html", _inventory_context(request))


def inventory_summary(request: HttpRequest) -> HttpResponse:
    """The overview's body alone: htmx polls it so the page refreshes without a reload."""
    return render(request, "inventory/_inventory_summary.html", _inventory_context(request))


@require_POST
def inventory_sync(request: HttpRequest) -> HttpResponse:
    require_platform_admin(request.user)
    for cluster in clusters_status():
        request_inventory_sync(cluster)
    messages.success(request, _("Inventory sync queued. The page refreshes by itself."))
    return redirect("gpus:inventory")


def node_list(request: HttpRequest) -> HttpResponse:
    node_filter = NodeFilter(request.GET or None, queryset=node_queryset(request.user))
    clusters = list(clusters_status())
    narrowed = node_filter.narrowed_to
    sync = sync_summary(clusters, narrowed)
    nodes = node_filter.qs
    term = node_filter.name_term
    filters = {k: v for k, v in request.GET.items() if k in node_filter.filters and k != "sort"}
    names = {c.pk: c.name for c in clusters}
    sort = node_filter.sort_key
    page = node_page(nodes, sort, PageRequest.from_query(request.GET), term=term)
    for node in page.rows:
        node.cluster_name = names.get(node.cluster_id, "")
    cap = SEARCH_COUNT_CAP if term else None
    counted = search_matches(nodes, term, sort) if term else nodes
    count = cached_count(counted, sync.version, filters, "nodes", cap)
    context = {
        "filter": node_filter,
        "page": page,
        "count": min(count, cap) if cap else count,
        "count_more": bool(cap and count > cap),
        "query": _query_without(request, "page", "after", "before"),
        "clusters": clusters,
        "narrowed": narrowed,
        "sync": sync,
    }
    return render_page_or_fragment(
        request, "inventory/nodes.html", "inventory/_node_table.html", context
    )


def node_detail(request: HttpRequest, pk: int) -> HttpResponse:
    node = get_node_for_user(request.user, pk)
    tenants = node_holder_tenants(node)
    names = {g.gpu_model.resource_name: g.gpu_model.display_name for g in node.gpus.all()}
    holders = [
        {
            **h,
            "tenant": tenants.get(str(h.get("namespace"))),
            "model": names.get(str(h.get("resource")), h.get("resource")),
        }
        for h in node.holders
    ]
    return render(request, "inventory/node.html", {"node": node, "holders": holders})
