from django.urls import path

from gpus.capacity import views

urlpatterns = [
    path("capacity/", views.capacity_page, name="capacity"),
    path("capacity/operations/", views.fleet_operations, name="capacity_operations"),
    path("capacity/chart/", views.capacity_chart, name="capacity_chart"),
    path("capacity/rightsizing/", views.rightsizing_page, name="capacity_rightsizing"),
    path("rightsizing/", views.rightsizing_fragment, name="capacity_rightsizing_fragment"),
    path(
        "capacity/export/history.csv",
        views.export_csv,
        {"what": "history"},
        name="capacity_export_history",
    ),
    path(
        "capacity/export/gpu-hours.csv",
        views.export_csv,
        {"what": "gpu-hours"},
        name="capacity_export_gpu_hours",
    ),
    path(
        "capacity/export/spend.csv",
        views.export_csv,
        {"what": "spend"},
        name="capacity_export_spend",
    ),
    path("capacity/prices/", views.prices, name="capacity_prices"),
    path("capacity/spend/", views.fleet_spend, name="capacity_spend"),
    path("tenants/<slug:namespace>/spend/", views.tenant_spend, name="capacity_tenant_spend"),
    path(
        "tenants/<slug:namespace>/spend/energy/",
        views.tenant_energy_chart,
        name="capacity_tenant_energy",
    ),
    path(
        "tenants/<slug:namespace>/spend.csv",
        views.tenant_spend_csv,
        name="capacity_tenant_spend_csv",
    ),
    path("quotas/headroom/", views.headroom_fragment, name="capacity_headroom"),
    path("tenants/<slug:namespace>/quotas/", views.tenant_quotas, name="capacity_quotas"),
    path("tenants/<slug:namespace>/waitlist/", views.waitlist, name="capacity_waitlist"),
    path(
        "tenants/<slug:namespace>/waitlist/<int:pk>/leave/",
        views.waitlist_leave,
        name="capacity_waitlist_leave",
    ),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/unread/", views.notifications_unread, name="notifications_unread"),
    path("notifications/read/", views.notifications_read, name="notifications_read"),
]
