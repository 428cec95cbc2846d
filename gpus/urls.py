from django.urls import path, register_converter

from . import views
from . import views_utilization as util


class IdConverter:
    """A database id: digits that fit a 64-bit integer (longer ones are a 404, not a 500)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "dbid")

app_name = "gpus"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("compare/", views.compare, name="compare"),
    path("advisor/", views.advisor, name="advisor"),
    path("inventory/", views.inventory, name="inventory"),
    path("inventory/summary/", views.inventory_summary, name="inventory_summary"),
    path("inventory/sync/", views.inventory_sync, name="inventory_sync"),
    path("inventory/nodes/", views.node_list, name="nodes"),
    path("inventory/nodes/<dbid:pk>/", views.node_detail, name="node"),
    path("tenants/", views.tenant_list, name="tenants"),
    path("tenants/<slug:namespace>/", views.tenant_detail, name="tenant"),
    path("tenants/<slug:namespace>/gpus/", views.my_gpus, name="my_gpus"),
    path("tenants/<slug:namespace>/vms/new/", views.vm_new, name="vm_new"),
    path("tenants/<slug:namespace>/vms/new/check/", views.vm_check, name="vm_check"),
    path(
        "tenants/<slug:namespace>/vms/<slug:name>/<slug:action>/",
        views.vm_action,
        name="vm_action",
    ),
    path(
        "tenants/<slug:namespace>/kubernetes/nodegroups/new/",
        views.node_group_edit,
        name="node_group_new",
    ),
    path(
        "tenants/<slug:namespace>/kubernetes/<slug:name>/nodegroups/<slug:group>/",
        views.node_group_edit,
        name="node_group_edit",
    ),
    path("tenants/<slug:namespace>/operations/", views.operation_list, name="operations"),
    path("audit/", views.audit_log, name="audit"),
    path("tenants/<slug:namespace>/operations/<int:pk>/", views.operation_detail, name="operation"),
    path(
        "tenants/<slug:namespace>/operations/<int:pk>/status/",
        views.operation_status,
        name="operation_status",
    ),
    path(
        "tenants/<slug:namespace>/operations/<int:pk>/retry/",
        views.operation_retry,
        name="operation_retry",
    ),
    path("tenants/<slug:namespace>/gpus/<dbid:pk>/", views.workload_detail, name="workload"),
    # Utilization (issue 12): ops pages, tenant pages, chart JSON, the guest-agent endpoint.
    path("utilization/", util.fleet, name="util_fleet"),
    path("utilization/heatmap/", util.heatmap, name="util_heatmap"),
    path("utilization/idle/", util.idle, name="util_idle"),
    path("utilization/health/", util.health, name="util_health"),
    path("utilization/energy/", util.energy, name="util_energy"),
    path("utilization/gpus/<str:uuid>/", util.gpu, name="util_gpu"),
    path("utilization/gpus/<str:uuid>/history/", util.gpu_history, name="util_gpu_history"),
    path("utilization/charts/<slug:kind>/", util.chart, name="util_chart"),
    path("tenants/<slug:namespace>/utilization/", util.tenant_page, name="util_tenant"),
    path("tenants/<slug:namespace>/utilization/idle/", util.idle, name="util_tenant_idle"),
    path(
        "tenants/<slug:namespace>/utilization/gpus/<str:uuid>/",
        util.gpu,
        name="util_tenant_gpu",
    ),
    path(
        "tenants/<slug:namespace>/utilization/gpus/<str:uuid>/history/",
        util.gpu_history,
        name="util_tenant_gpu_history",
    ),
    path(
        "tenants/<slug:namespace>/utilization/agent/<int:workload_id>/",
        util.agent_token,
        name="util_agent_token",
    ),
    path("metrics/agent/", util.agent_ingest, name="agent_ingest"),
]
