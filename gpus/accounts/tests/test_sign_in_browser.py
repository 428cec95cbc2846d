"""The sign-in with the platform's identity in headless Chromium, in English and in French: the
login page's button, the provider's page, back in the portal with the tenant of the groups claim,
then sign-out through the provider's page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from gpus.accounts.tests.provider import configure, oidc_provider
from gpus.tenancy.models import Tenant

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

TEXT = {
    "en": {
        "sign_in": "Sign in with your Hikube account",
        "log_out": "Log out",
        "login": "Log in",
        "signed_out": "You are signed out.",
    },
    "fr": {
        "sign_in": "Se connecter avec votre compte Hikube",
        "log_out": "Se déconnecter",
        "login": "Se connecter",
        "signed_out": "Vous êtes déconnecté.",
    },
}


@pytest.mark.parametrize("language", ["en", "fr"])
def test_sign_in_and_out_through_the_provider(page, live_server, settings, language):
    Tenant.objects.create(namespace="tenant-acme", display_name="Acme Corp")
    with oidc_provider() as provider:
        configure(settings, provider)
        provider.set_user(
            f"sub-{language}", preferred_username=f"nora-{language}", groups=["tenant-acme-admin"]
        )
        page.set_extra_http_headers({"Accept-Language": language})
        page.goto(live_server.url + reverse("login"))
        assert page.locator("html").get_attribute("lang") == language
        page.get_by_role("link", name=TEXT[language]["sign_in"]).click()
        page.wait_for_url(f"{provider.issuer}/**")  # the provider's own page
        page.get_by_placeholder("sub").fill(f"sub-{language}")
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_url(live_server.url + reverse("gpus:catalog"))
        assert page.locator(".user-name").inner_text() == f"nora-{language}"
        page.goto(live_server.url + reverse("gpus:my_gpus", args=["tenant-acme"]))
        assert page.get_by_role("heading", level=1).count() == 1
        page.get_by_role("button", name=TEXT[language]["log_out"]).click()
        page.wait_for_url(f"{provider.issuer}/oauth2/end_session**")
        page.get_by_role("button").first.click()  # the provider's "end the session" button
        page.wait_for_url(live_server.url + reverse("login") + "**")
        assert page.get_by_role("link", name=TEXT[language]["sign_in"]).is_visible()
        assert page.locator(".messages").inner_text() == TEXT[language]["signed_out"]
