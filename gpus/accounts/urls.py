"""Sign-in and token pages. The OIDC names are mozilla-django-oidc's (its middleware reverses
them), so they live outside any namespace; see hikube_portal/urls.py."""

from django.contrib.auth.decorators import login_not_required
from django.urls import path

from gpus.accounts import oidc, views

oidc_urlpatterns = [
    path(
        "accounts/oidc/authenticate/",
        login_not_required(oidc.SignIn.as_view()),
        name="oidc_authentication_init",
    ),
    path(
        "accounts/oidc/callback/",
        login_not_required(oidc.Callback.as_view()),
        name="oidc_authentication_callback",
    ),
    path("accounts/logout/", views.sign_out, name="oidc_logout"),
]

app_name = "accounts"
urlpatterns = [
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.revoke_token, name="revoke_token"),
]
