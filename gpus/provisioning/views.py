"""Self-service pages: My GPUs, new GPU VMs and node groups, day-2 actions, operations, the
audit log. Thin: selectors read, services write."""

from __future__ import annotations

from typing import Any

import yaml
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from gpus.catalog.models import GpuModel
from gpus.catalog.sizing import FAMILY_USERS, os_family
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import Cluster
from gpus.inventory.schemas import served_schema_causes
from gpus.inventory.selectors import (
    _live_context,
    catalogue_for,
    default_cluster,
    get_kubernetes_cluster_for_user,
    get_node_group_for_user,
    get_tenant_workload,
    get_vm_for_user,
    tenant_kubernetes_clusters,
    tenant_workload_page,
)
from gpus.kube.apps import VmRequest, node_group_manifests, vm_manifests
from gpus.provisioning import connect
from gpus.provisioning.capacity import (
    explain_workloads,
    fit_for,
    gpu_model_choices,
    group_fit_for,
    quota_room,
    resize_initial,
    resize_plan,
    with_other_roles,
)
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.filters import AuditFilter
from gpus.provisioning.forms import GpuVmForm, NodeGroupForm
from gpus.provisioning.models import Operation
from gpus.provisioning.presenters import describe, overlay_operations
from gpus.provisioning.selectors import (
    active_operation,
    audit_events,
    audit_page,
    capped_count,
    get_operation_for_user,
    operations_in_flight,
    target_operations,
    tenant_operations_page,
    vm_image,
)
from gpus.provisioning.services import (
    OperationRefused,
    cancel,
    check_served_schema,
    no_monitoring_warning,
    queue_down_message,
    retry,
    submit_cluster_delete,
    submit_node_group,
    submit_node_group_delete,
    submit_vm,
    submit_vm_action,
    with_monitoring,
)
from gpus.provisioning.signals import Sizing, checked_extras
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
    in_flight = overlay_operations(page.rows, list(operations_in_flight(request.user, tenant)))
    context.update(
        tenant=tenant,
        workloads=page,
        query=_query_without(request, "page", "after", "before"),
        in_flight=in_flight,
        can_operate=may_operate(request.user, tenant),
    )
    return render_page_or_fragment(
        request, "provisioning/my_gpus.html", "provisioning/_my_gpus_table.html", context
    )


def workload_detail(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    tenant = get_tenant_for_user(request.user, namespace)
    workload = get_tenant_workload(request.user, tenant, pk)
    operations = list(
        target_operations(
            request.user, tenant, workload.cluster_id, workload.name, workload.node_group
        )[:10]
    )
    # The page agrees with the latest operation until a sync confirms it, as My GPUs does.
    overlay_operations([workload], [op for op in operations if op.in_flight])
    can_operate = may_operate(request.user, tenant)
    return render(
        request,
        "provisioning/workload.html",
        {
            "tenant": tenant,
            "workload": workload,
            "w": workload,
            "operations": operations,
            "can_operate": can_operate,
            "connect_what": connect.what_for(workload),
            # Asked only when there is something to offer (the page's query count stays pinned).
            "offer_restart": workload.kind == WorkloadKind.VM
            and workload.reason == "RestartRequired"
            and workload.state != ResourceState.DELETING
            and can_operate,
        },
    )


def workload_connect(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    """htmx: how to connect (a VM's addresses and SSH command, a cluster's kubeconfig). POST
    asks for a read as the person (a task); GET shows the answer, polled until there is one."""
    tenant = get_tenant_for_user(request.user, namespace)
    workload = get_tenant_workload(request.user, tenant, pk)
    if request.method == "POST":
        found = connect.ask(request.user, workload, again=bool(request.POST.get("again")))
    else:
        found = connect.answer(request.user, workload)
    context: dict[str, Any] = {
        "tenant": tenant,
        "workload": workload,
        "found": found,
        "what": connect.what_for(workload),
    }
    if found and found["state"] == "ready" and context["what"] == "vm":
        user = FAMILY_USERS.get(os_family(vm_image(tenant, workload.name)), "")
        # Not made by the portal: its image (and so its user) is unknown. The command gets a
        # placeholder in capitals that reads as one in every language ("ssh utilisateur@..."
        # looked like a real French user name).
        context["login"] = user or "USER"
        context["login_known"] = bool(user)
        ips, ports = found["ips"], found["ports"]
        if ips and (found["whole_ip"] or 22 in ports):
            context["ssh"] = f"ssh {context['login']}@{ips[0]}"
        context["ssh_inside"] = f"ssh {context['login']}@{found['dns']}"
    html = render_to_string("provisioning/_connect.html", context, request)
    if found and found["state"] != "pending":
        return HttpResponseStopPolling(html)
    return HttpResponse(html)


def workload_kubeconfig(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    """The kubeconfig read for this person, as a file, once; 404 when there is none (any
    more)."""
    tenant = get_tenant_for_user(request.user, namespace)
    workload = get_tenant_workload(request.user, tenant, pk)
    config = connect.take_kubeconfig(request.user, workload)
    if config is None or connect.what_for(workload) != "kubeconfig":
        raise Http404("No kubeconfig to download: ask for it again.")
    response = HttpResponse(config, content_type="application/yaml")
    response["Content-Disposition"] = f'attachment; filename="{workload.name}.kubeconfig"'
    response["Cache-Control"] = "no-store"
    return response


# --- GPU VMs and operations -------------------------------------------------------------


def _vm_form(request: HttpRequest, data: Any = None) -> tuple[GpuVmForm, Cluster | None]:
    cluster = default_cluster()
    vm_kind = (cluster.vm_kind if cluster else "") or "VMInstance"
    form = GpuVmForm(
        data, vm_kind=vm_kind, gpu_choices=gpu_model_choices(), catalogue=catalogue_for(cluster)
    )
    return form, cluster


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
        room = quota_room(tenant, model, cluster_id=cluster.pk if cluster else None)
        if room is not None:
            checks["quota"] = room.message()
            checks["quota_ok"] = data["gpu_count"] <= room.left
        if data.get("instance_type") and data.get("disk_size_gi"):
            sizing = Sizing(
                model, data["gpu_count"], data["instance_type"], data["disk_size_gi"], 1
            )
            checks["extras"] = checked_extras(GpuVmForm, tenant, sizing)
    if form.is_valid() and cluster is not None:
        request_ = _vm_request(form)
        docs = vm_manifests(request_, tenant.namespace, form.vm_kind)
        checks["causes"] = served_schema_causes(cluster, docs)
        checks["preview"] = yaml.safe_dump_all(docs, sort_keys=False, width=100)
        # No file the portal never gave: kubectl as the person has it set up for the tenant.
        checks["kubectl"] = f"kubectl -n {tenant.namespace} apply -f {request_.name}.yaml"
        checks["filename"] = f"{request_.name}.yaml"
    return checks


def vm_new(request: HttpRequest, namespace: str) -> HttpResponse:
    tenant = get_tenant_for_user(request.user, namespace)
    allowed = may_operate(request.user, tenant)
    busy = None
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
                    name = form.cleaned_data["name"]  # a refusal of the name takes it out
                    _refused(form, exc)
                    busy = active_operation(tenant, name)
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
        "busy": busy,
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
    page = tenant_operations_page(request.user, tenant, PageRequest.from_query(request.GET))
    return render(request, "provisioning/operations.html", {"tenant": tenant, "page": page})


def _operation_status_context(request: HttpRequest, namespace: str, pk: int) -> dict[str, Any]:
    """What the status part shows: polled every few seconds, so only what it needs."""
    op = get_operation_for_user(request.user, namespace, pk)
    return {
        "tenant": op.tenant,
        "op": op,
        "view": describe(op),
        # Only a failed operation offers "Try again", and one never started "Cancel": no
        # membership query for the others.
        "can_operate": (op.state == OperationState.FAILED or _cancellable(op))
        and may_operate(request.user, op.tenant),
        "cancellable": _cancellable(op),
        "poll_seconds": settings.OPERATION_PAGE_POLL_SECONDS,
    }


def _cancellable(op: Any) -> bool:
    """Submitted and not yet taken by a worker: nothing was sent to the cluster."""
    return op.state == OperationState.PENDING and op.attempts == 0


def operation_detail(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    context = _operation_status_context(request, namespace, pk)
    op = context["op"]
    context["preview"] = yaml.safe_dump_all(op.manifests, sort_keys=False, width=100)
    # Another change in flight on the same target (e.g. why "Try again" was refused).
    busy = active_operation(op.tenant, op.name, op.node_group)
    context["busy"] = busy if busy is not None and busy.pk != op.pk else None
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


@require_POST
def operation_cancel(request: HttpRequest, namespace: str, pk: int) -> HttpResponse:
    op = get_operation_for_user(request.user, namespace, pk)
    require_may_operate(request.user, op.tenant)
    try:
        cancel(request.user, op)
    except OperationRefused as exc:
        messages.error(request, exc.message)
    return redirect("gpus:operation", namespace, op.pk)


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
    error, busy = "", None
    if request.method == "POST":
        try:
            op = submit_vm_action(request.user, vm, kind)
        except OperationRefused as exc:
            error, busy = exc.message, active_operation(vm.tenant, vm.name)
        else:
            return _recorded(request, op)
    return render(
        request,
        "provisioning/vm_action.html",
        {
            "tenant": vm.tenant,
            "vm": vm,
            "action": action,
            "kind": kind,
            "error": error,
            "busy": busy,
        },
    )


def cluster_delete(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """GET: ask to confirm by typing the cluster's name; POST: record the delete."""
    groups = get_kubernetes_cluster_for_user(request.user, namespace, name)
    tenant = groups[0].tenant
    require_may_operate(request.user, tenant)
    error, busy = "", None
    if request.method == "POST":
        if request.POST.get("confirm_name", "").strip() != name:
            error = _("Type the cluster's name, %(name)s, to confirm.") % {"name": name}
        else:
            try:
                op = submit_cluster_delete(request.user, groups)
            except OperationRefused as exc:
                error = exc.message
                busy = active_operation(tenant, name, node_group=None)
            else:
                return redirect("gpus:operation", namespace, op.pk)
    return render(
        request,
        "provisioning/cluster_delete.html",
        {"tenant": tenant, "name": name, "groups": groups, "error": error, "busy": busy},
    )


def node_group_delete(request: HttpRequest, namespace: str, name: str, group: str) -> HttpResponse:
    """GET: ask to confirm; POST: record the removal of this one group."""
    workload = get_node_group_for_user(request.user, namespace, name, group)
    tenant = workload.tenant
    require_may_operate(request.user, tenant)
    error, busy = "", None
    if request.method == "POST":
        try:
            op = submit_node_group_delete(request.user, workload)
        except OperationRefused as exc:
            error, busy = exc.message, active_operation(tenant, name, group)
        else:
            return redirect("gpus:operation", namespace, op.pk)
    return render(
        request,
        "provisioning/node_group_delete.html",
        {"tenant": tenant, "w": workload, "error": error, "busy": busy},
    )


def _node_group_form(
    tenant: Tenant, data: Any = None, initial: dict[str, Any] | None = None, resize: bool = False
) -> NodeGroupForm:
    clusters = tenant_kubernetes_clusters(tenant)
    return NodeGroupForm(
        data,
        initial=initial,
        clusters=clusters,
        gpu_choices=gpu_model_choices(),
        resize=resize,
        catalogue=catalogue_for(default_cluster()),
    )


def _node_group_setup(
    request: HttpRequest, namespace: str, name: str | None, group: str | None
) -> tuple[Tenant, Any, NodeGroupForm]:
    """The tenant, the group being resized (None for a new one) and the bound form."""
    tenant = get_tenant_for_user(request.user, namespace)
    require_may_operate(request.user, tenant)
    existing = get_node_group_for_user(request.user, namespace, name, group) if group else None
    initial = resize_initial(tenant, existing) if existing is not None else None
    form = _node_group_form(tenant, request.POST or None, initial, resize=existing is not None)
    return tenant, existing, form


def _node_group_checks(
    form: NodeGroupForm, tenant: Tenant, cluster: Cluster | None, existing: Any = None
) -> dict[str, Any]:
    """The VM form's checks for a group, from the database only: will its workers fit (per
    worker on one server, all of them among the free GPUs), and the quota at its maximum. A
    resize that rolls the workers says so, and counts the new workers beside the old ones."""
    checks: dict[str, Any] = {"warnings": list(form.warnings)}
    data = getattr(form, "cleaned_data", {}) or {}
    model = GpuModel.objects.filter(resource_name=data.get("gpu_model", "")).first()
    per, low, high = data.get("gpus_per_node"), data.get("min_replicas"), data.get("max_replicas")
    name = data.get("new_cluster") or data.get("cluster_name") or ""
    if model is None or not per or low is None or cluster is None:
        return checks
    plan = None
    if existing is not None and form.is_valid():
        plan = resize_plan(
            existing,
            with_other_roles(form.node_group_request(), existing),
            cluster.node_group_disk_field,
        )
        checks["rolls"] = plan.rolls
        if plan.rolls:
            checks["roll_warning"] = plan.roll_warning()
        elif not plan.keys:
            checks["unchanged"] = True
    surge = plan.surge_workers if plan is not None and plan.rolls else 0
    group = data.get("group", "")
    fit = group_fit_for(model, cluster.pk, tenant, name, group, low, per, surge_workers=surge)
    checks["group_fit"] = fit
    room = quota_room(tenant, model, (cluster.pk, name, group), cluster.pk)
    if room is not None and high:
        checks["quota"] = room.message()
        counted = per * max(high, fit.workers)
        if plan is not None and plan.rolls:
            counted = max(counted, plan.gpu_count)
        checks["quota_ok"] = counted <= room.left
    if high and data.get("instance_type") and data.get("disk_size_gi"):
        old = None
        if surge and existing is not None:
            # The workers it has run at their old size until the new ones replace them.
            was = form.initial
            old = Sizing(
                existing.gpu_model,
                was.get("gpus_per_node", per),
                was.get("instance_type", ""),
                was.get("disk_size_gi", 0),
                existing.instances,
            )
        itype, disk = data["instance_type"], data["disk_size_gi"]
        sizing = Sizing(model, per, itype, disk, low, high, surge, rolling_from=old)
        checks["extras"] = checked_extras(NodeGroupForm, tenant, sizing)
    return checks


def node_group_edit(
    request: HttpRequest, namespace: str, name: str | None = None, group: str | None = None
) -> HttpResponse:
    """Add a GPU node group to a tenant cluster, or resize one (prefilled from the snapshot)."""
    tenant, existing, form = _node_group_setup(request, namespace, name, group)
    cluster = default_cluster()
    preview, busy = "", None
    if form.is_bound and form.is_valid() and cluster is not None:
        ng = with_monitoring(form.node_group_request(), tenant, cluster)
        if warning := no_monitoring_warning(ng):
            form.warnings.append(warning)
        if existing is not None:
            ng = with_other_roles(form.node_group_request(), existing)
            plan = resize_plan(existing, ng, cluster.node_group_disk_field)
            keys: list[str] | None = list(plan.keys)
        else:
            keys = None
        docs = node_group_manifests(ng, namespace, cluster.node_group_disk_field, keys=keys)
        if request.POST.get("confirm"):
            try:
                op = submit_node_group(
                    request.user, tenant, cluster, ng, resize=existing is not None
                )
            except OperationRefused as exc:
                _refused(form, exc)
                busy = active_operation(tenant, ng.cluster_name, ng.group)
            else:
                return _recorded(request, op)
        else:
            try:  # what the served schema refuses is said before the confirm button, not after
                check_served_schema(cluster, docs, partial=keys is not None)
            except OperationRefused as exc:
                _refused(form, exc)
        if not form.errors:  # a refused group (capacity, quota, schema): no preview, no button
            preview = yaml.safe_dump_all(docs, sort_keys=False)
    return render(
        request,
        "provisioning/node_group.html",
        {
            "tenant": tenant,
            "form": form,
            "existing": existing,
            "preview": preview,
            "checks": _node_group_checks(form, tenant, cluster, existing) if form.is_bound else {},
            "busy": busy,
        },
    )


@require_POST
def node_group_check(
    request: HttpRequest, namespace: str, name: str | None = None, group: str | None = None
) -> HttpResponse:
    """htmx, as the user types: field errors next to each field, fit and quota. Nothing is
    recorded or sent."""
    tenant, existing, form = _node_group_setup(request, namespace, name, group)
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
            "checks": _node_group_checks(form, tenant, default_cluster(), existing),
        },
    )


def audit_log(request: HttpRequest) -> HttpResponse:
    audit_filter = AuditFilter(request.GET or None, queryset=audit_events(request.user))
    page = audit_page(audit_filter.qs, PageRequest.from_query(request.GET))
    count, more = capped_count(audit_filter.qs)
    # The pager's links keep the filters (and drop the previous cursor).
    query = request.GET.copy()
    for key in ("after", "before", "page"):
        query.pop(key, None)
    return render(
        request,
        "provisioning/audit.html",
        {
            "filter": audit_filter,
            "page": page,
            "count": count,
            "more": more,
            "query": query.urlencode(),
        },
    )
