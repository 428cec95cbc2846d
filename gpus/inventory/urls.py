from django.urls import path

from gpus.inventory import views

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("advisor/", views.advisor, name="advisor"),
    path("inventory/", views.inventory, name="inventory"),
    path("inventory/summary/", views.inventory_summary, name="inventory_summary"),
    path("inventory/sync/", views.inventory_sync, name="inventory_sync"),
    path("inventory/nodes/", views.node_list, name="nodes"),
    path("inventory/nodes/<dbid:pk>/", views.node_detail, name="node"),
    path("tenants/", views.tenant_list, name="tenants"),
    path("tenants/<slug:namespace>/", views.tenant_detail, name="tenant"),
]
