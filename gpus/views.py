"""Thin views: read through selectors, render one page or fragment each.

No view calls the cluster: pages read the snapshot the inventory sync keeps fresh.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
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


def render_page_or_fragment(
    request: HttpRequest, page: str, fragment: str, context: dict[str, Any]
) -> HttpResponse:
    """The fragment for an htmx swap; the whole page otherwise, including htmx's history
    restore (the back button after htmx's history cache is gone), which replaces the body.
    Vary: HX-Request keeps the two apart in any cache."""
    partial = bool(request.htmx) and not request.htmx.history_restore_request
    response = render(request, fragment if partial else page, {**context, "partial": partial})
    patch_vary_headers(response, ("HX-Request",))
    return response


def catalog(request: HttpRequest) -> HttpResponse:
    context = _live_context(request)
    models = list(selectors.catalog_models())
    free = selectors.free_by_model(context["narrowed"])
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
    return render(request, "gpus/catalog.html", context)


def compare(request: HttpRequest) -> HttpResponse:
    offered = list(selectors.offered_models())
    if "models" in request.GET:
        form = CompareForm(request.GET)
        chosen = form.cleaned_data["models"] if form.is_valid() else []
    else:
        chosen = offered[:3]
        form = CompareForm(initial={"models": chosen})
    context = {
        "form": form,
        "chosen": chosen,
        # Offered models (and any chosen one) are the checkboxes; the rest wait behind "more".
        "primary_ids": {m.pk for m in offered} | {m.pk for m in chosen},
        "rows": compare_rows(chosen) if chosen else [],
        "approach_rows": APPROACH_ROWS,
    }
    return render_page_or_fragment(
        request, "gpus/compare.html", "gpus/_compare_table.html", context
    )


def advisor(request: HttpRequest) -> HttpResponse:
    form = AdvisorForm(request.GET or None)
    recommendation = None
    if form.is_valid():
        recommendation = recommend(form.cleaned_data["workload"], selectors.catalog_models())
    context = {"form": form, "recommendation": recommendation}
    return render_page_or_fragment(request, "gpus/advisor.html", "gpus/_advice.html", context)


def tenant_list(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise Http404("No such page.")
    page = selectors.tenants_overview(request.user, PageRequest.from_query(request.GET))
    return render(
        request,
        "gpus/tenants.html",
        {"tenants": page, "query": _query_without(request, "page", "after", "before")},
    )


def tenant_detail(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    return render(
        request,
        "gpus/tenant.html",
        {
            "tenant": tenant,
            "memberships": selectors.memberships_of(tenant),
            "membership": selectors.membership_of(request.user, tenant),
            "gpus_held": selectors.tenant_gpus_held(tenant),
            "workload_count": selectors.tenant_workloads(request.user, tenant).count(),
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
    context["sync_issues"] = selectors.sync_issues(user)
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
    return render_page_or_fragment(request, "gpus/nodes.html", "gpus/_node_table.html", context)


def node_detail(request: HttpRequest, pk: int) -> HttpResponse:
    node = selectors.get_node_for_user(request.user, pk)
    tenants = selectors.node_holder_tenants(node)
    names = {g.gpu_model.resource_name: g.gpu_model.display_name for g in node.gpus.all()}
    holders = [
        {
            **h,
            "tenant": tenants.get(str(h.get("namespace"))),
            "model": names.get(str(h.get("resource")), h.get("resource")),
        }
        for h in node.holders
    ]
    return render(request, "gpus/node.html", {"node": node, "holders": holders})


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
    return render_page_or_fragment(
        request, "gpus/my_gpus.html", "gpus/_my_gpus_table.html", context
    )


def workload_detail(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    workload = selectors.get_tenant_workload(request.user, tenant, pk)
    return render(request, "gpus/workload.html", {"tenant": tenant, "workload": workload})
