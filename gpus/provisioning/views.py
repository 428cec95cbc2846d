"""Self-service pages: My GPUs, new GPU VMs and node groups, day-2 actions, operations, the
audit log. Thin: selectors read, services write."""

from __future__ import annotations

from typing import Any

import yaml
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import Cluster
from gpus.inventory.schemas import served_schema_causes
from gpus.inventory.selectors import (
    _live_context,
    default_cluster,
    get_kubernetes_cluster_for_user,
    get_node_group_for_user,
    get_tenant_workload,
    get_vm_for_user,
    tenant_kubernetes_clusters,
    tenant_workload_page,
)
from gpus.kube.apps import DEFAULT_NODE_GROUP, VmRequest, node_group_manifests, vm_manifests
from gpus.provisioning.capacity import (
    explain_workloads,
    fit_for,
    gpu_model_choices,
    group_fit_for,
    quota_left,
    quota_message,
)
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.filters import AuditFilter
from gpus.provisioning.forms import GpuVmForm, NodeGroupForm
from gpus.provisioning.models import Operation
from gpus.provisioning.presenters import describe
from gpus.provisioning.selectors import (
    audit_events,
    get_operation_for_user,
    operations_in_flight,
    tenant_operations,
)
from gpus.provisioning.services import (
    OperationRefused,
    queue_down_message,
    retry,
    submit_kubernetes_delete,
    submit_node_group,
    submit_node_group_delete,
    submit_vm,
    submit_vm_action,
)
from gpus.tenancy.models import Tenant
from gpus.tenancy.selectors import get_tenant_for_user
from gpus.web.access import may_operate, require_may_operate
from gpus.web.htmx import _query_without, render_page_or_fragment
from gpus.web.paging import PageRequest


def _refused(form: GpuVmForm | NodeGroupForm, exc: OperationRefused) -> None:
    """The refusal next to its field, or above the form when the form has no such field."""
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


def _recorded(request: HttpRequest, op: Operation) -> HttpResponse:
    """To the new operation's page, saying so when its task could not be queued yet."""
    if op.queued is False:
        messages.warning(request, queue_down_message())
    return redirect("gpus:operation", op.namespace, op.pk)


def my_gpus(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = get_tenant_for_user(request.user, namespace)
    context = _live_context(request)
    page = tenant_workload_page(
        request.user, tenant, PageRequest.from_query(request.GET), context["narrowed"]
    )
    names = {c.pk: c.name for c in context["clusters"]}
    for workload in page.rows:
        workload.cluster_name = names.get(workload.cluster_id, "")
    explain_workloads(page.rows)
    context.update(
        tenant=tenant,
        workloads=page,
        query=_query_without(request, "page", "after", "before"),
        in_flight=list(operations_in_flight(request.user, tenant)),
        can_operate=may_operate(request.user, tenant),
        # Cozystack v1.1 merges md0 back into every cluster: it is never offered for deletion.
        default_node_group=DEFAULT_NODE_GROUP,
    )
    return render_page_or_fragment(
        request, "provisioning/my_gpus.html", "provisioning/_my_gpus_table.html", context
    )


def workload_detail(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    tenant = get_tenant_for_user(request.user, namespace)
    workload = get_tenant_workload(request.user, tenant, pk)
    return render(
        request,
        "provisioning/workload.html",
        {
            "tenant": tenant,
            "workload": workload,
            # Asked only when there is something to offer (the page's query count stays pinned).
            "offer_restart": workload.kind == WorkloadKind.VM
            and workload.reason == "RestartRequired"
            and workload.state != ResourceState.DELETING
            and may_operate(request.user, tenant),
        },
    )


# --- GPU VMs and operations -------------------------------------------------------------


def _vm_form(request: HttpRequest, data: Any = None) -> tuple[GpuVmForm, Cluster | None]:
    cluster = default_cluster()
    vm_kind = (cluster.vm_kind if cluster else "") or "VMInstance"
    return GpuVmForm(data, vm_kind=vm_kind, gpu_choices=gpu_model_choices()), cluster


def _vm_request(form: GpuVmForm) -> VmRequest:
    return form.vm_request()


def _vm_checks(form: GpuVmForm, tenant: Tenant, cluster: Cluster | None) -> dict[str, Any]:
    """Fit, quota, schema and the YAML preview, from the database only (no cluster call)."""
    checks: dict[str, Any] = {"warnings": list(form.warnings)}
    data = getattr(form, "cleaned_data", {}) or {}
    model = GpuModel.objects.filter(resource_name=data.get("gpu_model", "")).first()
    if model and data.get("gpu_count"):
        fit = fit_for(model, data["gpu_count"], cluster.pk if cluster else None)
        checks["fit"] = fit
        left = quota_left(tenant, model)
        if left is not None:
            checks["quota"] = quota_message(model, left)
            checks["quota_ok"] = data["gpu_count"] <= left
    if form.is_valid() and cluster is not None:
        request_ = _vm_request(form)
        docs = vm_manifests(request_, tenant.namespace, form.vm_kind)
        checks["causes"] = served_schema_causes(cluster, docs)
        checks["preview"] = yaml.safe_dump_all(docs, sort_keys=False, width=100)
        checks["kubectl"] = (
            f"kubectl --kubeconfig {tenant.namespace}.kubeconfig apply -f {request_.name}.yaml"
        )
        checks["filename"] = f"{request_.name}.yaml"
    return checks


def vm_new(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = get_tenant_for_user(request.user, namespace)
    allowed = may_operate(request.user, tenant)
    if request.method == "POST":
        if not allowed:
            raise Http404("No such page.")
        form, cluster = _vm_form(request, request.POST)
        if form.is_valid():
            if cluster is None:
                form.add_error(None, _("No cluster is registered yet."))
            else:
                try:
                    op = submit_vm(request.user, tenant, cluster, _vm_request(form))
                except OperationRefused as exc:
                    _refused(form, exc)
                else:
                    return _recorded(request, op)
    else:
        form, cluster = _vm_form(request)
    context = {
        "tenant": tenant,
        "form": form,
        "allowed": allowed,
        "cluster": cluster,
        "checks": _vm_checks(form, tenant, cluster) if form.is_bound else {},
    }
    return render(request, "provisioning/vm_new.html", context)


@require_POST
def vm_check(request: HttpRequest, namespace: str) -> HttpResponse:
    """htmx, as the user types: field errors (out of band, next to each field), fit, quota and
    the preview. Nothing is recorded or sent."""
    tenant = get_tenant_for_user(request.user, namespace)
    require_may_operate(request.user, tenant)
    form, cluster = _vm_form(request, request.POST)
    form.is_valid()
    # While typing, an empty field is not an error yet: say so only on submit.
    errors = {
        name: [e for e in form.errors.get(name, []) if request.POST.get(name) or e == ""]
        for name in form.fields
    }
    return render(
        request,
        "provisioning/_vm_checks.html",
        {
            "tenant": tenant,
            "form": form,
            "field_errors": errors,
            "checks": _vm_checks(form, tenant, cluster),
            "live": True,
        },
    )


def operation_list(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = get_tenant_for_user(request.user, namespace)
    paginator = Paginator(tenant_operations(request.user, tenant), 50)
    return render(
        request,
        "provisioning/operations.html",
        {"tenant": tenant, "page": paginator.get_page(request.GET.get("page"))},
    )


def _operation_status_context(request: HttpRequest, namespace: str, pk: int) -> dict[str, Any]:
    """What the status part shows: polled every few seconds, so only what it needs."""
    op = get_operation_for_user(request.user, namespace, pk)
    return {
        "tenant": op.tenant,
        "op": op,
        "view": describe(op),
        # Only a failed operation offers "Try again": no membership query for the others.
        "can_operate": op.state == OperationState.FAILED and may_operate(request.user, op.tenant),
        "poll_seconds": settings.OPERATION_PAGE_POLL_SECONDS,
    }


def operation_detail(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    context = _operation_status_context(request, namespace, pk)
    context["preview"] = yaml.safe_dump_all(context["op"].manifests, sort_keys=False, width=100)
    return render(request, "provisioning/operation.html", context)


def operation_status(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    """The live part of the operation page; tells htmx to stop polling once terminal."""
    context = _operation_status_context(request, namespace, pk)
    html = render_to_string("provisioning/_operation_status.html", context, request)
    if context["op"].is_terminal:
        return HttpResponseStopPolling(html)
    return HttpResponse(html)


@require_POST
def operation_retry(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    op = get_operation_for_user(request.user, namespace, pk)
    require_may_operate(request.user, op.tenant)
    try:
        new = retry(request.user, op)
    except OperationRefused as exc:
        messages.error(request, exc.message)
        return redirect("gpus:operation", namespace, op.pk)
    return _recorded(request, new)


ACTIONS = {
    "start": OperationKind.START,
    "stop": OperationKind.STOP,
    "delete": OperationKind.DELETE,
    "restart": OperationKind.RESTART,
}


def vm_action(request: HttpRequest, namespace: str, name: str, action: str) -> HttpResponse:
    """GET: ask for confirmation; POST: record the start/stop/delete/restart operation."""
    vm = get_vm_for_user(request.user, namespace, name)
    kind = ACTIONS.get(action)
    if kind is None:
        raise Http404("No such page.")
    require_may_operate(request.user, vm.tenant)
    error = ""
    if request.method == "POST":
        try:
            op = submit_vm_action(request.user, vm, kind)
        except OperationRefused as exc:
            error = exc.message
        else:
            return _recorded(request, op)
    return render(
        request,
        "provisioning/vm_action.html",
        {"tenant": vm.tenant, "vm": vm, "action": action, "kind": kind, "error": error},
    )


def kubernetes_delete(
    request: HttpRequest, namespace: str, name: str, group: str | None = None
) -> HttpResponse:
    """GET: ask for confirmation; POST: record the delete of one node group (``group``) or of
    the whole tenant Kubernetes cluster, the way a VM delete is asked."""
    if group is None:
        target = get_kubernetes_cluster_for_user(request.user, namespace, name)
    else:
        target = get_node_group_for_user(request.user, namespace, name, group)
    require_may_operate(request.user, target.tenant)
    error = ""
    if request.method == "POST":
        try:
            if group is None:
                op = submit_kubernetes_delete(request.user, target)
            else:
                op = submit_node_group_delete(request.user, target)
        except OperationRefused as exc:
            error = exc.message
        else:
            return _recorded(request, op)
    return render(
        request,
        "provisioning/kubernetes_delete.html",
        {"tenant": target.tenant, "target": target, "group": group, "error": error},
    )


def _node_group_form(
    tenant: Tenant, data: Any = None, initial: dict[str, Any] | None = None
) -> NodeGroupForm:
    clusters = tenant_kubernetes_clusters(tenant)
    return NodeGroupForm(data, initial=initial, clusters=clusters, gpu_choices=gpu_model_choices())


def _node_group_setup(
    request: HttpRequest, namespace: str, name: str | None, group: str | None
) -> tuple[Tenant, Any, NodeGroupForm]:
    """The tenant, the group being resized (None for a new one) and the bound form."""
    tenant = get_tenant_for_user(request.user, namespace)
    require_may_operate(request.user, tenant)
    existing = get_node_group_for_user(request.user, namespace, name, group) if group else None
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
    return tenant, existing, form


def _node_group_checks(
    form: NodeGroupForm, tenant: Tenant, cluster: Cluster | None
) -> dict[str, Any]:
    """The VM form's checks for a group, from the database only: will its workers fit (per
    worker on one server, all of them among the free GPUs), and the quota at its maximum."""
    checks: dict[str, Any] = {"warnings": list(form.warnings)}
    data = getattr(form, "cleaned_data", {}) or {}
    model = GpuModel.objects.filter(resource_name=data.get("gpu_model", "")).first()
    per, low, high = data.get("gpus_per_node"), data.get("min_replicas"), data.get("max_replicas")
    name = data.get("new_cluster") or data.get("cluster_name") or ""
    if model is None or not per or low is None or cluster is None:
        return checks
    fit = group_fit_for(model, cluster.pk, tenant, name, data.get("group", ""), low, per)
    checks["group_fit"] = fit
    left = quota_left(tenant, model, (cluster.pk, name, data.get("group", "")))
    if left is not None and high:
        checks["quota"] = quota_message(model, left)
        checks["quota_ok"] = per * max(high, fit.workers) <= left
    return checks


def node_group_edit(
    request: HttpRequest, namespace: str, name: str | None = None, group: str | None = None
) -> HttpResponse:
    """Add a GPU node group to a tenant cluster, or resize one (prefilled from the snapshot)."""
    tenant, existing, form = _node_group_setup(request, namespace, name, group)
    cluster = default_cluster()
    preview = ""
    if form.is_bound and form.is_valid() and cluster is not None:
        ng = form.node_group_request()
        if request.POST.get("confirm"):
            try:
                op = submit_node_group(
                    request.user, tenant, cluster, ng, resize=existing is not None
                )
            except OperationRefused as exc:
                _refused(form, exc)
            else:
                return _recorded(request, op)
        preview = yaml.safe_dump_all(
            node_group_manifests(ng, namespace, cluster.node_group_disk_field),
            sort_keys=False,
        )
    return render(
        request,
        "provisioning/node_group.html",
        {
            "tenant": tenant,
            "form": form,
            "existing": existing,
            "preview": preview,
            "checks": _node_group_checks(form, tenant, cluster) if form.is_bound else {},
        },
    )


@require_POST
def node_group_check(
    request: HttpRequest, namespace: str, name: str | None = None, group: str | None = None
) -> HttpResponse:
    """htmx, as the user types: field errors next to each field, fit and quota. Nothing is
    recorded or sent."""
    tenant, _existing, form = _node_group_setup(request, namespace, name, group)
    form.is_valid()
    errors = {
        field: [e for e in form.errors.get(field, []) if request.POST.get(field)]
        for field in form.fields
    }
    return render(
        request,
        "provisioning/_node_group_checks.html",
        {
            "form": form,
            "field_errors": errors,
            "checks": _node_group_checks(form, tenant, default_cluster()),
        },
    )


def audit_log(request: HttpRequest) -> HttpResponse:
    audit_filter = AuditFilter(request.GET or None, queryset=audit_events(request.user))
    page = Paginator(audit_filter.qs, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "provisioning/audit.html",
        {"filter": audit_filter, "page": page, "query": query.urlencode()},
    )
