from django.urls import path

from . import views

app_name = "gpus"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("compare/", views.compare, name="compare"),
    path("advisor/", views.advisor, name="advisor"),
    path("inventory/", views.inventory, name="inventory"),
    path("inventory/summary/", views.inventory_summary, name="inventory_summary"),
    path("inventory/sync/", views.inventory_sync, name="inventory_sync"),
    path("inventory/nodes/", views.node_list, name="nodes"),
    path("tenants/<slug:namespace>/", views.tenant_detail, name="tenant"),
    path("tenants/<slug:namespace>/gpus/", views.my_gpus, name="my_gpus"),
]
