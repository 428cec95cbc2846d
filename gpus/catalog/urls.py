from django.urls import path

from gpus.catalog import views

urlpatterns = [
    path("compare/", views.compare, name="compare"),
]
