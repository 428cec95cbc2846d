"""Thin views: read through selectors, render one page or fragment each.

No view calls the cluster: pages read the snapshot the inventory sync keeps fresh.
"""

from __future__ import annotations

from typing import Any

import yaml
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from . import provisioning, selectors, services
from .advisor import recommend
from .choices import OperationKind, ResourceState, WorkloadKind
from .compare import APPROACH_ROWS, compare_rows
from .filters import AuditFilter, NodeFilter
from .forms import AdvisorForm, CompareForm, GpuVmForm, NodeGroupForm
from .models import Cluster, GpuModel, Tenant
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
    selectors.explain_workloads(page.rows)
    context.update(
        tenant=tenant,
        workloads=page,
        query=_query_without(request, "page", "after", "before"),
        in_flight=list(selectors.operations_in_flight(request.user, tenant)),
        can_operate=selectors.can_operate(request.user, tenant),
    )
    return render_page_or_fragment(
        request, "gpus/my_gpus.html", "gpus/_my_gpus_table.html", context
    )


def workload_detail(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    workload = selectors.get_tenant_workload(request.user, tenant, pk)
    return render(
        request,
        "gpus/workload.html",
        {
            "tenant": tenant,
            "workload": workload,
            # Asked only when there is something to offer (the page's query count stays pinned).
            "offer_restart": workload.kind == WorkloadKind.VM
            and workload.reason == "RestartRequired"
            and workload.state != ResourceState.DELETING
            and selectors.can_operate(request.user, tenant),
        },
    )


# --- GPU VMs and operations -------------------------------------------------------------

HTMX_STOP_POLLING = 286  # htmx stops polling on this status


def _vm_form(request: HttpRequest, data: Any = None) -> tuple[GpuVmForm, Cluster | None]:
    cluster = provisioning.default_cluster()
    vm_kind = (cluster.vm_kind if cluster else "") or "VMInstance"
    choices = [
        (
            s.gpu_model.resource_name,
            _("%(model)s — %(free)d free, at most %(one)d on one server")
            % {"model": s.gpu_model.display_name, "free": s.free_total, "one": s.free_max_one},
        )
        for s in selectors.served_gpu_models()
    ]
    return GpuVmForm(data, vm_kind=vm_kind, gpu_choices=choices), cluster


def _vm_request(form: GpuVmForm) -> provisioning.VmRequest:
    d = form.cleaned_data
    return provisioning.VmRequest(
        name=d["name"],
        gpu_resource=d["gpu_model"],
        gpu_count=d["gpu_count"],
        instance_type=d["instance_type"],
        instance_profile=d["instance_profile"],
        image=d["image"],
        disk_size_gi=d["disk_size_gi"],
        storage_class=d["storage_class"],
        ssh_keys=tuple(d["ssh_keys"]),
        external=d["external"],
        external_ports=tuple(d["external_ports"]) or (22,),
        cloud_init=form.cloud_init_text(),
        run_strategy=d["run_strategy"],
        queue_until_capacity=d["queue_until_capacity"],
    )


def _vm_checks(form: GpuVmForm, tenant: Tenant, cluster: Cluster | None) -> dict[str, Any]:
    """Fit, quota, schema and the YAML preview, from the database only (no cluster call)."""
    checks: dict[str, Any] = {"warnings": list(form.warnings)}
    data = getattr(form, "cleaned_data", {}) or {}
    model = GpuModel.objects.filter(resource_name=data.get("gpu_model", "")).first()
    if model and data.get("gpu_count"):
        fit = provisioning.fit_for(model, data["gpu_count"])
        checks["fit"] = fit
        left = provisioning.quota_left(tenant, model)
        if left is not None:
            checks["quota"] = provisioning.quota_message(model, left)
            checks["quota_ok"] = data["gpu_count"] <= left
    if form.is_valid() and cluster is not None:
        request_ = _vm_request(form)
        docs = provisioning.vm_manifests(request_, tenant.namespace, form.vm_kind)
        checks["causes"] = provisioning.served_schema_causes(cluster, docs)
        checks["preview"] = yaml.safe_dump_all(docs, sort_keys=False, width=100)
        checks["kubectl"] = (
            f"kubectl --kubeconfig {tenant.namespace}.kubeconfig apply -f {request_.name}.yaml"
        )
        checks["filename"] = f"{request_.name}.yaml"
    return checks


def vm_new(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    allowed = selectors.can_operate(request.user, tenant)
    if request.method == "POST":
        if not allowed:
            raise Http404("No such page.")
        form, cluster = _vm_form(request, request.POST)
        if form.is_valid():
            if cluster is None:
                form.add_error(None, _("No cluster is registered yet."))
            else:
                try:
                    op = provisioning.submit_vm(request.user, tenant, cluster, _vm_request(form))
                except provisioning.OperationRefused as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    return redirect("gpus:operation", namespace, op.pk)
    else:
        form, cluster = _vm_form(request)
    context = {
        "tenant": tenant,
        "form": form,
        "allowed": allowed,
        "cluster": cluster,
        "checks": _vm_checks(form, tenant, cluster) if form.is_bound else {},
    }
    return render(request, "gpus/vm_new.html", context)


@require_POST
def vm_check(request: HttpRequest, namespace: str) -> HttpResponse:
    """htmx, as the user types: field errors (out of band, next to each field), fit, quota and
    the preview. Nothing is recorded or sent."""
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    if not selectors.can_operate(request.user, tenant):
        raise Http404("No such page.")
    form, cluster = _vm_form(request, request.POST)
    form.is_valid()
    # While typing, an empty field is not an error yet: say so only on submit.
    errors = {
        name: [e for e in form.errors.get(name, []) if request.POST.get(name) or e == ""]
        for name in form.fields
    }
    return render(
        request,
        "gpus/_vm_checks.html",
        {
            "tenant": tenant,
            "form": form,
            "field_errors": errors,
            "checks": _vm_checks(form, tenant, cluster),
            "live": True,
        },
    )


def operation_list(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    paginator = Paginator(selectors.tenant_operations(request.user, tenant), 50)
    return render(
        request,
        "gpus/operations.html",
        {"tenant": tenant, "page": paginator.get_page(request.GET.get("page"))},
    )


def _operation_context(request: HttpRequest, namespace: str, pk: int) -> dict[str, Any]:
    op = selectors.get_operation_for_user(request.user, namespace, pk)
    return {
        "tenant": op.tenant,
        "op": op,
        "view": provisioning.describe(op),
        "can_operate": selectors.can_operate(request.user, op.tenant),
        "poll_seconds": settings.OPERATION_PAGE_POLL_SECONDS,
        "preview": yaml.safe_dump_all(op.manifests, sort_keys=False, width=100),
    }


def operation_detail(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    return render(request, "gpus/operation.html", _operation_context(request, namespace, pk))


def operation_status(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    """The live part of the operation page; tells htmx to stop polling once terminal."""
    context = _operation_context(request, namespace, pk)
    response = render(request, "gpus/_operation_status.html", context)
    if context["op"].is_terminal:
        response.status_code = HTMX_STOP_POLLING
    return response


@require_POST
def operation_retry(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    op = selectors.get_operation_for_user(request.user, namespace, pk)
    if not selectors.can_operate(request.user, op.tenant):
        raise Http404("No such page.")
    try:
        new = provisioning.retry(request.user, op)
    except provisioning.OperationRefused as exc:
        messages.error(request, exc.message)
        return redirect("gpus:operation", namespace, op.pk)
    return redirect("gpus:operation", namespace, new.pk)


ACTIONS = {
    "start": OperationKind.START,
    "stop": OperationKind.STOP,
    "delete": OperationKind.DELETE,
    "restart": OperationKind.RESTART,
}


def vm_action(request: HttpRequest, namespace: str, name: str, action: str) -> HttpResponse:
    """GET: ask for confirmation; POST: record the start/stop/delete/restart operation."""
    vm = selectors.get_vm_for_user(request.user, namespace, name)
    kind = ACTIONS.get(action)
    if kind is None or not selectors.can_operate(request.user, vm.tenant):
        raise Http404("No such page.")
    error = ""
    if request.method == "POST":
        try:
            op = provisioning.submit_vm_action(request.user, vm, kind)
        except provisioning.OperationRefused as exc:
            error = exc.message
        else:
            return redirect("gpus:operation", namespace, op.pk)
    return render(
        request,
        "gpus/vm_action.html",
        {"tenant": vm.tenant, "vm": vm, "action": action, "kind": kind, "error": error},
    )


def _node_group_form(
    tenant: Tenant, data: Any = None, initial: dict[str, Any] | None = None
) -> NodeGroupForm:
    clusters = selectors.tenant_kubernetes_clusters(tenant)
    choices = [
        (
            s.gpu_model.resource_name,
            _("%(model)s — %(free)d free, at most %(one)d on one server")
            % {"model": s.gpu_model.display_name, "free": s.free_total, "one": s.free_max_one},
        )
        for s in selectors.served_gpu_models()
    ]
    return NodeGroupForm(data, initial=initial, clusters=clusters, gpu_choices=choices)


def node_group_edit(
    request: HttpRequest, namespace: str, name: str | None = None, group: str | None = None
) -> HttpResponse:
    """Add a GPU node group to a tenant cluster, or resize one (prefilled from the snapshot)."""
    tenant = selectors.get_tenant_for_user(request.user, namespace)
    if not selectors.can_operate(request.user, tenant):
        raise Http404("No such page.")
    existing = (
        selectors.get_node_group_for_user(request.user, namespace, name, group) if group else None
    )
    initial = None
    if existing is not None:
        initial = {
            "cluster_name": existing.name,
            "group": existing.node_group,
            "min_replicas": existing.instances,
            "max_replicas": max(existing.instances, 1) * 2,
            "gpu_model": existing.gpu_model.resource_name if existing.gpu_model else "",
            "gpus_per_node": existing.gpus_per_instance or 1,
        }
    form = _node_group_form(tenant, request.POST or None, initial)
    if existing is not None:
        # A resize changes this group only: its cluster and name are not up for editing.
        form.fields["cluster_name"].disabled = True
        form.fields["group"].disabled = True
    cluster = provisioning.default_cluster()
    preview = ""
    if form.is_bound and form.is_valid() and cluster is not None:
        d = form.cleaned_data
        ng = provisioning.NodeGroupRequest(
            cluster_name=d["new_cluster"] or d["cluster_name"],
            new_cluster_version=(d["version"] or "v1.33") if d["new_cluster"] else "",
            group=d["group"],
            min_replicas=d["min_replicas"],
            max_replicas=d["max_replicas"],
            instance_type=d["instance_type"],
            disk_size_gi=d["disk_size_gi"],
            gpu_resource=d["gpu_model"],
            gpus_per_node=d["gpus_per_node"],
            roles=("ingress-nginx",) if d["ingress"] else (),
        )
        if request.POST.get("confirm"):
            try:
                op = provisioning.submit_node_group(
                    request.user, tenant, cluster, ng, resize=existing is not None
                )
            except provisioning.OperationRefused as exc:
                form.add_error(exc.field, exc.message)
            else:
                return redirect("gpus:operation", namespace, op.pk)
        preview = yaml.safe_dump_all(
            provisioning.node_group_manifests(ng, namespace, cluster.node_group_disk_field),
            sort_keys=False,
        )
    return render(
        request,
        "gpus/node_group.html",
        {"tenant": tenant, "form": form, "existing": existing, "preview": preview},
    )


def audit_log(request: HttpRequest) -> HttpResponse:
    audit_filter = AuditFilter(request.GET or None, queryset=selectors.audit_events(request.user))
    page = Paginator(audit_filter.qs, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "gpus/audit.html",
        {"filter": audit_filter, "page": page, "query": query.urlencode()},
    )
