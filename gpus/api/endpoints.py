"""The JSON API for scripts, with the pages' rules: the same selectors (another tenant's object
is a 404), the same forms (same validation and messages), the same services (quota, capacity;
the operation is recorded before anything is sent to the cluster). Thin: no rule lives here."""

from __future__ import annotations

from typing import Any

from django.db.models import Avg
from django.http import Http404, HttpRequest, QueryDict
from django.urls import reverse
from django.utils.translation import gettext as _
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.responses import Status

from gpus.api.auth import BearerToken
from gpus.api.schemas import (
    ActionIn,
    CapacityHistoryOut,
    GpuHoursOut,
    GpuModelOut,
    NodeGroupIn,
    OperationOut,
    Problem,
    SpendOut,
    TenantOut,
    UtilizationOut,
    VmIn,
    WorkloadOut,
)
from gpus.capacity import exports, pricing
from gpus.capacity.forms import ExportForm
from gpus.inventory.choices import WorkloadKind
from gpus.inventory.selectors import (
    catalogue_for,
    default_cluster,
    get_kubernetes_cluster_for_user,
    get_node_group_for_user,
    get_vm_for_user,
    served_gpu_models,
    tenant_kubernetes_clusters,
    tenant_workloads,
)
from gpus.provisioning.capacity import gpu_model_choices, resize_initial, with_other_roles
from gpus.provisioning.choices import OperationKind
from gpus.provisioning.forms import GpuVmForm, NodeGroupForm
from gpus.provisioning.models import Operation
from gpus.provisioning.presenters import plain_reason
from gpus.provisioning.selectors import get_operation_for_user
from gpus.provisioning.services import (
    OperationRefused,
    queue_down_message,
    submit_cluster_delete,
    submit_node_group,
    submit_node_group_delete,
    submit_vm,
    submit_vm_action,
)
from gpus.tenancy.models import Tenant
from gpus.tenancy.selectors import get_tenant_for_user, tenants_for_user
from gpus.utilization.models import GpuRollup, GpuSample
from gpus.utilization.selectors import devices_for, parse_range
from gpus.web.access import may_operate, require_may_operate, require_platform_admin

api = NinjaAPI(
    title="Hikube Portal API",
    version="1",
    description=(
        "GPU self-service for scripts. Authenticate with `Authorization: Bearer <token>`: a "
        "personal API token (made on the portal's token page) or an access token of the "
        "platform's OpenID Connect provider. Writes return the recorded operation (202); "
        "follow it at its URL until `terminal` is true."
    ),
    auth=BearerToken(),
    urls_namespace="api",
)


class Refused(HttpError):
    def __init__(
        self,
        status: int,
        detail: str,
        errors: dict[str, list[str]] | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(status, detail)
        self.errors = errors or {}
        self.retry_after = retry_after


@api.exception_handler(Refused)
def _refused(request: HttpRequest, exc: Refused) -> Any:
    response = api.create_response(
        request, {"detail": str(exc), "errors": exc.errors}, status=exc.status_code
    )
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    return response


def _form_errors(form: Any) -> Refused:
    errors = {k or "__all__": [str(m) for m in v] for k, v in form.errors.items()}
    return Refused(422, _("The request is not valid: see errors."), errors)


def _refusal(exc: OperationRefused) -> Refused:
    # Too many requests: 429 with Retry-After, what a script's HTTP client knows to wait on.
    status = 429 if exc.retry_after else 422
    return Refused(status, exc.message, {exc.field or "__all__": [exc.message]}, exc.retry_after)


def _operation(op: Operation) -> dict[str, Any]:
    return {
        "id": op.pk,
        "url": reverse("api:operation", args=[op.namespace, op.pk]),
        "kind": op.kind,
        "state": op.state,
        "terminal": op.is_terminal,
        "target": f"{op.app_kind}/{op.name}",
        "node_group": op.node_group,
        "gpu_model": op.gpu_model.resource_name if op.gpu_model else None,
        "gpu_count": op.gpu_count,
        "requested_by": op.actor_name,
        "reason": op.reason,
        "explanation": plain_reason(op.reason, op.message, op.gpu_count) if op.reason else "",
        # Just recorded while the broker is down: say it runs once the queue is back.
        "message": op.message or (queue_down_message() if op.queued is False else ""),
        "created_at": op.created_at,
        "finished_at": op.finished_at,
    }


def _workload(w: Any) -> dict[str, Any]:
    return {
        "name": w.name,
        "kind": w.kind,
        "node_group": w.node_group,
        "app_kind": w.app_kind,
        "gpu_model": w.gpu_model.resource_name if w.gpu_model else None,
        "gpus_per_instance": w.gpus_per_instance,
        "instances": w.instances,
        "gpus_held": w.gpus_held,
        "state": w.state,
        "reason": w.reason,
        "message": w.message,
    }


def _operable_tenant(request: HttpRequest, namespace: str) -> Tenant:
    tenant = get_tenant_for_user(request.user, namespace)
    require_may_operate(request.user, tenant)
    return tenant


def _cluster() -> Any:
    cluster = default_cluster()
    if cluster is None:
        raise Refused(409, _("No cluster is registered yet."))
    return cluster


@api.get("/models", response=list[GpuModelOut], tags=["catalog"])
def list_models(request: HttpRequest) -> list[dict[str, Any]]:
    """The GPU models the cluster serves, with what is free now (from the last sync)."""
    return [
        {
            "resource_name": s.gpu_model.resource_name,
            "display_name": s.gpu_model.display_name,
            "memory_gb": float(s.gpu_model.memory_gb) if s.gpu_model.memory_gb else None,
            "offered": s.gpu_model.offered,
            "free": s.free_total,
            "free_on_one_server": s.free_max_one,
        }
        for s in served_gpu_models()
    ]


@api.get("/tenants", response=list[TenantOut], tags=["tenants"])
def list_tenants(request: HttpRequest) -> list[dict[str, Any]]:
    return [
        {
            "namespace": t.namespace,
            "display_name": t.display_name,
            "may_operate": may_operate(request.user, t),
        }
        for t in tenants_for_user(request.user)
    ]


@api.get("/tenants/{namespace}/vms", response={200: list[WorkloadOut], 404: Problem}, tags=["vms"])
def list_vms(request: HttpRequest, namespace: str) -> list[dict[str, Any]]:
    tenant = get_tenant_for_user(request.user, namespace)
    return [
        _workload(w) for w in tenant_workloads(request.user, tenant).filter(kind=WorkloadKind.VM)
    ]


@api.post(
    "/tenants/{namespace}/vms",
    response={202: OperationOut, 404: Problem, 409: Problem, 422: Problem},
    tags=["vms"],
)
def create_vm(request: HttpRequest, namespace: str, payload: VmIn) -> Status:
    """Create a GPU VM: validated like the page's form, quota and capacity checked, recorded."""
    tenant = _operable_tenant(request, namespace)
    cluster = _cluster()
    data = payload.dict(exclude_none=True)
    if "ssh_keys" in data:
        data["ssh_keys"] = "\n".join(data["ssh_keys"])
    if "external_ports" in data:
        data["external_ports"] = ",".join(str(p) for p in data["external_ports"])
    catalogue = catalogue_for(cluster)
    blank = GpuVmForm(
        vm_kind=cluster.vm_kind or "VMInstance",
        gpu_choices=gpu_model_choices(),
        catalogue=catalogue,
    )
    form = GpuVmForm(
        _form_data(blank, data),
        vm_kind=cluster.vm_kind or "VMInstance",
        gpu_choices=gpu_model_choices(),
        catalogue=catalogue,
    )
    if not form.is_valid():
        raise _form_errors(form)
    try:
        op = submit_vm(request.user, tenant, cluster, form.vm_request())
    except OperationRefused as exc:
        raise _refusal(exc) from None
    return Status(202, _operation(op))


VM_ACTIONS = {
    "start": OperationKind.START,
    "stop": OperationKind.STOP,
    "restart": OperationKind.RESTART,
}


@api.post(
    "/tenants/{namespace}/vms/{name}/actions",
    response={202: OperationOut, 404: Problem, 422: Problem},
    tags=["vms"],
)
def act_on_vm(request: HttpRequest, namespace: str, name: str, payload: ActionIn) -> Status:
    vm = get_vm_for_user(request.user, namespace, name)
    require_may_operate(request.user, vm.tenant)
    kind = VM_ACTIONS.get(payload.action)
    if kind is None:
        raise Refused(422, _("Unknown action."), {"action": [_("Use start, stop or restart.")]})
    try:
        op = submit_vm_action(request.user, vm, kind)
    except OperationRefused as exc:
        raise _refusal(exc) from None
    return Status(202, _operation(op))


@api.delete(
    "/tenants/{namespace}/vms/{name}",
    response={202: OperationOut, 404: Problem, 422: Problem},
    tags=["vms"],
)
def delete_vm(request: HttpRequest, namespace: str, name: str) -> Status:
    vm = get_vm_for_user(request.user, namespace, name)
    require_may_operate(request.user, vm.tenant)
    try:
        op = submit_vm_action(request.user, vm, OperationKind.DELETE)
    except OperationRefused as exc:
        raise _refusal(exc) from None
    return Status(202, _operation(op))


@api.get(
    "/tenants/{namespace}/node-groups",
    response={200: list[WorkloadOut], 404: Problem},
    tags=["node groups"],
)
def list_node_groups(request: HttpRequest, namespace: str) -> list[dict[str, Any]]:
    tenant = get_tenant_for_user(request.user, namespace)
    workloads = tenant_workloads(request.user, tenant).filter(kind=WorkloadKind.NODE_GROUP)
    return [_workload(w) for w in workloads]


@api.put(
    "/tenants/{namespace}/node-groups",
    response={202: OperationOut, 404: Problem, 409: Problem, 422: Problem},
    tags=["node groups"],
)
def put_node_group(request: HttpRequest, namespace: str, payload: NodeGroupIn) -> Status:
    """Add a GPU node group to a tenant cluster (or a new cluster), or resize an existing one."""
    tenant = _operable_tenant(request, namespace)
    cluster = _cluster()
    clusters = tenant_kubernetes_clusters(tenant)
    catalogue = catalogue_for(cluster)
    blank = NodeGroupForm(clusters=clusters, gpu_choices=gpu_model_choices(), catalogue=catalogue)
    data = payload.dict(exclude_none=True)
    existing = None
    if payload.cluster_name and not payload.new_cluster:
        try:
            existing = get_node_group_for_user(
                request.user, namespace, payload.cluster_name, payload.group
            )
        except Http404:  # a new group in an existing cluster
            existing = None
    if existing is not None:
        # A resize: a field left out keeps the live group's value, never the form's default
        # (a default instance type, disk or roles would roll every worker).
        live = resize_initial(tenant, existing)
        data = {**{k: v for k, v in live.items() if k not in ("cluster_name", "group")}, **data}
    form = NodeGroupForm(
        _form_data(blank, data),
        clusters=clusters,
        gpu_choices=gpu_model_choices(),
        catalogue=catalogue,
    )
    if not form.is_valid():
        raise _form_errors(form)
    ng = form.node_group_request()
    if existing is not None:
        ng = with_other_roles(ng, existing)
    try:
        op = submit_node_group(request.user, tenant, cluster, ng, resize=existing is not None)
    except OperationRefused as exc:
        raise _refusal(exc) from None
    return Status(202, _operation(op))


@api.delete(
    "/tenants/{namespace}/node-groups/{cluster}/{group}",
    response={202: OperationOut, 404: Problem, 422: Problem},
    tags=["node groups"],
)
def delete_node_group(request: HttpRequest, namespace: str, cluster: str, group: str) -> Status:
    """Remove one node group from a tenant Kubernetes cluster; the other groups stay."""
    target = get_node_group_for_user(request.user, namespace, cluster, group)
    require_may_operate(request.user, target.tenant)
    try:
        op = submit_node_group_delete(request.user, target)
    except OperationRefused as exc:
        raise _refusal(exc) from None
    return Status(202, _operation(op))


@api.delete(
    "/tenants/{namespace}/kubernetes/{cluster}",
    response={202: OperationOut, 404: Problem, 422: Problem},
    tags=["node groups"],
)
def delete_kubernetes(request: HttpRequest, namespace: str, cluster: str) -> Status:
    """Delete a whole tenant Kubernetes cluster, every node group with it."""
    groups = get_kubernetes_cluster_for_user(request.user, namespace, cluster)
    require_may_operate(request.user, groups[0].tenant)
    try:
        op = submit_cluster_delete(request.user, groups)
    except OperationRefused as exc:
        raise _refusal(exc) from None
    return Status(202, _operation(op))


@api.get(
    "/tenants/{namespace}/operations/{pk}",
    response={200: OperationOut, 404: Problem},
    tags=["operations"],
    url_name="operation",
)
def get_operation(request: HttpRequest, namespace: str, pk: int) -> dict[str, Any]:
    """Follow an operation: poll until ``terminal``."""
    return _operation(get_operation_for_user(request.user, namespace, pk))


@api.get(
    "/tenants/{namespace}/utilization",
    response={200: UtilizationOut, 404: Problem, 422: Problem},
    tags=["utilization"],
)
def utilization(
    request: HttpRequest, namespace: str, range: str = "24h", start: str = "", end: str = ""
) -> dict[str, Any]:
    """The tenant's GPUs now (last reading) and their mean utilization over the range."""
    tenant = get_tenant_for_user(request.user, namespace)
    tr = parse_range({"range": range, "start": start, "end": end})
    if tr.error:
        raise Refused(422, str(tr.error), {"start": [str(tr.error)]})
    devices = list(devices_for(request.user, tenant))
    averages = dict(
        GpuRollup.objects.filter(device__in=devices, tenant=tenant, ts__gte=tr.start, ts__lt=tr.end)
        .values("device")
        .annotate(avg=Avg("util_avg"))
        .values_list("device", "avg")
    )
    out = []
    for device in devices:
        last = GpuSample.objects.filter(device=device).order_by("-ts").first()
        out.append(
            {
                "uuid": device.uuid,
                "model": device.gpu_model.display_name if device.gpu_model else device.model_name,
                "node": device.hostname,
                "workload": device.workload.name if device.workload else None,
                "telemetry": last is not None,
                "at": last.ts if last else None,
                "util": last.util if last else None,
                "mem_used_mib": last.mem_used if last else None,
                "mem_total_mib": last.mem_total if last else None,
                "power_w": last.power if last else None,
                "temp_c": last.temp if last else None,
                "util_avg": averages.get(device.pk),
            }
        )
    return {
        "tenant": tenant.namespace,
        "range": tr.key,
        "start": tr.start,
        "end": tr.end,
        "devices": out,
    }


def _form_data(blank: Any, data: dict[str, Any]) -> QueryDict:
    """JSON as a post of ``blank``'s form: a field left out takes the form's initial value,
    booleans are present only when true."""
    values = {
        name: field.initial
        for name, field in blank.fields.items()
        if field.initial is not None and not callable(field.initial)
    }
    values.update(data)
    q = QueryDict(mutable=True)
    for key, value in values.items():
        if isinstance(value, bool):
            if value:
                q[key] = "on"
        elif value is not None:
            q[key] = str(value)
    return q


def urls() -> tuple[list[Any], str, str]:
    """The API's URL patterns; they answer for themselves (bearer token), not the login page."""
    from django.contrib.auth.decorators import login_not_required

    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        login_not_required(pattern.callback)
    return patterns, app_name, namespace


def _export_period(request: HttpRequest, **params: str) -> tuple[Any, Any, str]:
    """Platform admins only (404 for anyone else); the same parsing as the CSV exports."""
    require_platform_admin(request.user)
    form = ExportForm({k: v for k, v in params.items() if v})
    if not form.is_valid():
        raise _form_errors(form)
    start, end = form.period()
    return start, end, form.cleaned_data["bucket"]


@api.get(
    "/capacity/history",
    response={200: list[CapacityHistoryOut], 404: Problem, 422: Problem},
    tags=["capacity"],
)
def capacity_history(
    request: HttpRequest, start: str = "", end: str = "", bucket: str = "1d"
) -> list[dict[str, Any]]:
    """The capacity history per cluster and GPU model, hourly (`1h`) or daily (`1d`), over
    [start, end) (dates; by default the last 30 days): the rows of the CSV export."""
    first, last, step = _export_period(request, start=start, end=end, bucket=bucket)
    return list(exports.history_dicts(first, last, step))


@api.get(
    "/capacity/gpu-hours",
    response={200: list[GpuHoursOut], 404: Problem, 422: Problem},
    tags=["capacity"],
)
def capacity_gpu_hours(request: HttpRequest, start: str = "", end: str = "") -> list[dict]:
    """GPU-hours per tenant, cluster and GPU model over [start, end) (for billing)."""
    first, last, _step = _export_period(request, start=start, end=end)
    return list(exports.usage_dicts(first, last))


@api.get(
    "/capacity/spend",
    response={200: list[SpendOut], 404: Problem, 422: Problem},
    tags=["capacity"],
)
def capacity_spend(request: HttpRequest, start: str = "", end: str = "") -> list[dict]:
    """Spend per tenant, cluster and GPU model over [start, end) (for billing): the rows of the
    spend CSV export. Platform admins only."""
    first, last, _step = _export_period(request, start=start, end=end)
    return pricing.spend_rows(first, last)


@api.get(
    "/tenants/{namespace}/spend",
    response={200: list[SpendOut], 404: Problem, 422: Problem},
    tags=["capacity"],
)
def tenant_spend(request: HttpRequest, namespace: str, start: str = "", end: str = "") -> list:
    """One tenant's spend per cluster and GPU model over [start, end): its members and admins
    (a 404 for anyone else)."""
    tenant = get_tenant_for_user(request.user, namespace)
    form = ExportForm({k: v for k, v in {"start": start, "end": end}.items() if v})
    if not form.is_valid():
        raise _form_errors(form)
    first, last = form.period()
    return pricing.spend_rows(first, last, tenant)
