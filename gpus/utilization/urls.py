from django.urls import path

from gpus.utilization import views

urlpatterns = [
    # Ops pages, tenant pages, chart JSON, the guest-agent endpoint.
    path("utilization/", views.fleet, name="util_fleet"),
    path("utilization/heatmap/", views.heatmap, name="util_heatmap"),
    path("utilization/idle/", views.idle, name="util_idle"),
    path("utilization/health/", views.health, name="util_health"),
    path("utilization/energy/", views.energy, name="util_energy"),
    path("utilization/gpus/<str:uuid>/", views.gpu, name="util_gpu"),
    path("utilization/gpus/<str:uuid>/history/", views.gpu_history, name="util_gpu_history"),
    path("utilization/charts/<slug:kind>/", views.chart, name="util_chart"),
    path("tenants/<slug:namespace>/utilization/", views.tenant_page, name="util_tenant"),
    path("tenants/<slug:namespace>/utilization/idle/", views.idle, name="util_tenant_idle"),
    path(
        "tenants/<slug:namespace>/utilization/gpus/<str:uuid>/",
        views.gpu,
        name="util_tenant_gpu",
    ),
    path(
        "tenants/<slug:namespace>/utilization/gpus/<str:uuid>/history/",
        views.gpu_history,
        name="util_tenant_gpu_history",
    ),
    path(
        "tenants/<slug:namespace>/utilization/agent/<int:workload_id>/",
        views.agent_token,
        name="util_agent_token",
    ),
    path("metrics/agent/", views.agent_ingest, name="agent_ingest"),
]
