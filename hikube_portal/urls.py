from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.i18n import set_language

from gpus.accounts import urls as accounts_urls
from gpus.accounts import views as accounts_views
from gpus.api import endpoints as api
from gpus.ops import health, metrics

from . import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    # Answered first by gpus.ops.middleware (any host, plain HTTP); here for reverse().
    path("livez", login_not_required(health.livez), name="livez"),
    path("readyz", login_not_required(health.readyz), name="readyz"),
    path("metrics", login_not_required(metrics.metrics_view), name="metrics"),
    path("favicon.ico", views.favicon),
    path("accounts/login/", accounts_views.SignInView.as_view(), name="login"),
    # Ends the provider's session too when signed in through OpenID Connect.
    path("accounts/logout/", accounts_views.sign_out, name="logout"),
    *accounts_urls.oidc_urlpatterns,
    path("accounts/", include("gpus.accounts.urls")),
    # The language switcher must work on the login page too.
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),
    path("admin/", admin.site.urls),
    # The JSON API for scripts; its OpenAPI document is /api/v1/openapi.json.
    path("api/v1/", api.urls()),
    path("", include("gpus.urls")),
]
