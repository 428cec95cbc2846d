"""Sign-in (the provider's, and local accounts where allowed), sign-out, API tokens."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render, resolve_url
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from gpus.accounts import selectors, services
from gpus.accounts.forms import TokenForm
from gpus.accounts.oidc import oidc_setting


@method_decorator(login_not_required, name="dispatch")
class SignInView(LoginView):
    """The login page: a button for the platform's sign-in, the password form for local accounts
    (the demo users of `make run`) unless LOCAL_LOGIN is off."""

    template_name = "registration/login.html"

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not settings.LOCAL_LOGIN:
            return HttpResponseNotAllowed(["GET"])
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: object) -> dict[str, object]:
        context = super().get_context_data(**kwargs)
        context["oidc_enabled"] = settings.OIDC_ENABLED
        context["local_login"] = settings.LOCAL_LOGIN
        return context


@require_POST
@login_not_required
def sign_out(request: HttpRequest) -> HttpResponse:
    """Ends the portal's session, then the provider's (RP-initiated logout) when signed in there."""
    id_token = request.session.get("oidc_id_token")
    logout(request)
    # Kept in the new, anonymous session: the login page says it when the person is back.
    messages.success(request, _("You are signed out."))
    back = request.build_absolute_uri(resolve_url(settings.LOGOUT_REDIRECT_URL))
    if settings.OIDC_ENABLED and id_token:
        endpoint = oidc_setting("OIDC_OP_LOGOUT_ENDPOINT", "")
        if endpoint:
            query = urlencode(
                {
                    "id_token_hint": id_token,
                    "post_logout_redirect_uri": back,
                    "client_id": settings.OIDC_RP_CLIENT_ID,
                }
            )
            return redirect(f"{endpoint}?{query}")
    return redirect(back)


def tokens(request: HttpRequest) -> HttpResponse:
    """The person's API tokens; a new one is shown once, right after it is made."""
    form = TokenForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        _token, new_token = services.create_token(request.user, form.cleaned_data["name"])
        form = TokenForm()
    return render(
        request,
        "accounts/tokens.html",
        {"form": form, "tokens": selectors.tokens_of(request.user), "new_token": new_token},
    )


@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    if services.revoke_token(request.user, token_id):
        messages.success(request, _("The token is revoked: it no longer works."))
    return redirect("accounts:tokens")
