from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.i18n import set_language

from gpus.ops import health, metrics

from . import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    # Answered first by gpus.ops.middleware (any host, plain HTTP); here for reverse().
    path("livez", login_not_required(health.livez), name="livez"),
    path("readyz", login_not_required(health.readyz), name="readyz"),
    path("metrics", login_not_required(metrics.metrics_view), name="metrics"),
    path("favicon.ico", views.favicon),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The language switcher must work on the login page too.
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),
    path("admin/", admin.site.urls),
    path("", include("gpus.urls")),
]
