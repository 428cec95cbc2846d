from django.urls import path

from . import views

app_name = "gpus"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("compare/", views.compare, name="compare"),
    path("advisor/", views.advisor, name="advisor"),
    path("tenants/<slug:namespace>/", views.tenant_detail, name="tenant"),
]
