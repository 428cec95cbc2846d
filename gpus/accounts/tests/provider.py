"""A real OpenID Connect provider for the tests (oidc-provider-mock on a free port) and the steps
of a sign-in as a browser takes them, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.test import Client
from django.urls import reverse
from oidc_provider_mock import run_server_in_thread

CLIENT_ID = "hikube-portal"
CLIENT_SECRET = "portal-secret"
OIDC_BACKEND = "gpus.accounts.oidc.PortalOidcBackend"


@dataclass
class Provider:
    issuer: str

    def set_user(self, sub: str, **claims: Any) -> None:
        resp = requests.put(f"{self.issuer}/users/{sub}", json=claims, timeout=10)
        assert resp.status_code == 204, resp.text

    def authorize(self, authorize_url: str, sub: str) -> str:
        """The person picks ``sub`` on the provider's page: the redirect back to the portal."""
        resp = requests.post(authorize_url, data={"sub": sub}, allow_redirects=False, timeout=10)
        assert resp.status_code == 302, resp.text
        return resp.headers["Location"]

    def settings(self) -> dict[str, Any]:
        return {
            "OIDC_ISSUER": self.issuer,
            "OIDC_ENABLED": True,
            "OIDC_RP_CLIENT_ID": CLIENT_ID,
            "OIDC_RP_CLIENT_SECRET": CLIENT_SECRET,
        }


@contextmanager
def oidc_provider(token_max_age: timedelta = timedelta(hours=1)) -> Iterator[Provider]:
    """The provider on a free port of localhost (its issuer is the URL it is reached at)."""
    with run_server_in_thread(
        port=0, require_nonce=True, access_token_max_age=token_max_age
    ) as server:
        yield Provider(f"http://localhost:{server.server_port}")


def configure(settings: Any, provider: Provider) -> None:
    """pytest-django's ``settings``: sign-in through ``provider``, local passwords still on."""
    for key, value in provider.settings().items():
        setattr(settings, key, value)
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, OIDC_BACKEND]


def start_sign_in(client: Client, next_url: str = "") -> str:
    """The portal's redirect to the provider (it stores state and nonce in the session)."""
    url = reverse("oidc_authentication_init") + (f"?next={next_url}" if next_url else "")
    resp = client.get(url)
    assert resp.status_code == 302, resp.content
    return resp["Location"]


def finish(client: Client, callback_url: str) -> Any:
    """Follow the provider's redirect back into the portal (the test client's host is ours)."""
    parts = urlsplit(callback_url)
    return client.get(f"{parts.path}?{parts.query}")


def sign_in(client: Client, provider: Provider, sub: str, next_url: str = "") -> Any:
    return finish(client, provider.authorize(start_sign_in(client, next_url), sub))
