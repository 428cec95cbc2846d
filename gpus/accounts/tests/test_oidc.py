"""Sign-in through a real OpenID Connect provider (oidc-provider-mock, started on a free port):
tenants and roles from the groups claim, a removed group, refused tokens, state and nonce,
sign-out at the provider too."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.test import Client
from django.urls import reverse

from gpus.accounts.models import ExternalIdentity
from gpus.accounts.oidc import PortalOidcBackend
from gpus.accounts.tests.provider import (
    CLIENT_ID,
    configure,
    finish,
    oidc_provider,
    sign_in,
    start_sign_in,
)
from gpus.tenancy.choices import MembershipRole
from gpus.tenancy.models import Membership, Tenant

pytestmark = [pytest.mark.django_db, pytest.mark.integration]


@pytest.fixture(scope="module")
def provider():
    with oidc_provider() as p:
        yield p


@pytest.fixture
def oidc(settings, provider):
    configure(settings, provider)
    return provider


@pytest.fixture
def tenants(db):
    return {
        ns: Tenant.objects.update_or_create(namespace=ns, defaults={"display_name": ns})[0]
        for ns in ("tenant-root", "tenant-acme", "tenant-acme-dev", "tenant-globex")
    }


def roles(user) -> dict[str, str]:
    return dict(Membership.objects.filter(user=user).values_list("tenant__namespace", "role"))


def test_sign_in_maps_groups_to_tenants_and_roles(oidc, tenants):
    oidc.set_user(
        "sub-dana",
        preferred_username="dana",
        email="dana@acme.example",
        groups=["tenant-acme-admin", "/tenant-globex-use", "staff-everyone", "tenant-nowhere-view"],
    )
    client = Client()
    resp = sign_in(client, oidc, "sub-dana")
    assert resp.status_code == 302 and resp["Location"] == reverse("gpus:catalog")
    user = get_user_model().objects.get(username="dana")
    assert user.email == "dana@acme.example"
    assert not user.has_usable_password()
    assert not user.is_staff
    # -admin acts, in the tenant and its child; -use only looks; unknown tenants give nothing.
    assert roles(user) == {
        "tenant-acme": MembershipRole.OPERATOR,
        "tenant-acme-dev": MembershipRole.OPERATOR,
        "tenant-globex": MembershipRole.VIEWER,
    }
    identity = ExternalIdentity.objects.get(user=user)
    assert identity.subject == "sub-dana" and identity.issuer == oidc.issuer
    # The session is the person's: their tenant's page opens, another tenant's is a 404.
    assert client.get(reverse("gpus:my_gpus", args=["tenant-acme"])).status_code == 200
    assert client.get(reverse("gpus:my_gpus", args=["tenant-root"])).status_code == 404


def test_platform_admin_groups_make_platform_admins(oidc, tenants, settings):
    settings.OIDC_PLATFORM_ADMIN_GROUPS = ["hikube-ops"]
    oidc.set_user("sub-olga", preferred_username="olga", groups=["hikube-ops"])
    sign_in(Client(), oidc, "sub-olga")
    user = get_user_model().objects.get(username="olga")
    assert user.is_staff and user.is_superuser


def test_a_removed_group_removes_the_access_at_the_next_sign_in(oidc, tenants, settings):
    settings.OIDC_PLATFORM_ADMIN_GROUPS = ["hikube-ops"]
    oidc.set_user("sub-erin", preferred_username="erin", groups=["tenant-acme-admin", "hikube-ops"])
    sign_in(Client(), oidc, "sub-erin")
    user = get_user_model().objects.get(username="erin")
    assert "tenant-acme" in roles(user) and user.is_staff
    oidc.set_user("sub-erin", preferred_username="erin", groups=["tenant-globex-view"])
    client = Client()
    sign_in(client, oidc, "sub-erin")
    user.refresh_from_db()
    assert roles(user) == {"tenant-globex": MembershipRole.VIEWER}
    assert not user.is_staff
    assert client.get(reverse("gpus:my_gpus", args=["tenant-acme"])).status_code == 404


def test_the_session_refresh_reads_the_groups_again(oidc, tenants, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "gpus.accounts.oidc.SessionRefresh"]
    oidc.set_user("sub-finn", preferred_username="finn", groups=["tenant-acme-use"])
    client = Client()
    sign_in(client, oidc, "sub-finn")
    page = reverse("gpus:my_gpus", args=["tenant-acme"])
    assert client.get(page).status_code == 200  # within the refresh period: no round trip
    session = client.session
    session["oidc_id_token_expiration"] = 0  # the period is over
    session.save()
    oidc.set_user("sub-finn", preferred_username="finn", groups=[])  # removed at the provider
    resp = client.get(page)
    assert resp.status_code == 302
    authorize = resp["Location"]
    assert authorize.startswith(oidc.issuer) and "prompt=none" in authorize
    # The provider cannot answer silently here (login_required): the portal's session ends, so
    # nothing is reachable until the person signs in again, and then with the groups of now.
    back = oidc.authorize(authorize, "sub-finn")
    assert "error=login_required" in back
    assert finish(client, back)["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session
    assert client.get(page).status_code == 302  # to the login page
    sign_in(client, oidc, "sub-finn")
    assert roles(get_user_model().objects.get(username="finn")) == {}
    assert client.get(page).status_code == 404


def test_a_wrong_state_is_refused_in_plain_words(oidc, tenants):
    oidc.set_user("sub-gus", preferred_username="gus", groups=["tenant-acme-admin"])
    client = Client()
    back = oidc.authorize(start_sign_in(client), "sub-gus")
    forged = back.replace("state=", "state=forged")
    resp = finish(client, forged)
    assert resp.status_code == 302 and resp["Location"] == reverse("login")
    assert not get_user_model().objects.filter(username="gus").exists()
    page = client.get(resp["Location"])
    assert "did not succeed" in page.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_wrong_nonce_is_refused(oidc, tenants):
    oidc.set_user("sub-hal", preferred_username="hal", groups=["tenant-acme-admin"])
    client = Client()
    authorize = start_sign_in(client)
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    session = client.session
    session["oidc_states"][state]["nonce"] = "not-the-one-sent"
    session.save()
    resp = finish(client, oidc.authorize(authorize, "sub-hal"))
    assert resp["Location"] == reverse("login")
    assert not get_user_model().objects.filter(username="hal").exists()


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_a_tampered_id_token_is_refused(oidc, tenants, monkeypatch):
    oidc.set_user("sub-ivy", preferred_username="ivy", groups=["tenant-acme-admin"])
    real_get_token = PortalOidcBackend.get_token

    def tampered(self, payload):
        token = real_get_token(self, payload)
        return {**token, "id_token": _tamper(token["id_token"])}

    monkeypatch.setattr(PortalOidcBackend, "get_token", tampered)
    client = Client()
    resp = sign_in(client, oidc, "sub-ivy")
    assert resp["Location"] == reverse("login")
    assert not get_user_model().objects.filter(username="ivy").exists()


def test_an_expired_id_token_is_refused(settings, tenants):
    with oidc_provider(token_max_age=timedelta(minutes=-5)) as expiring:
        configure(settings, expiring)
        expiring.set_user("sub-jo", preferred_username="jo", groups=["tenant-acme-admin"])
        resp = sign_in(Client(), expiring, "sub-jo")
    assert resp["Location"] == reverse("login")
    assert not get_user_model().objects.filter(username="jo").exists()


def test_a_token_for_another_client_is_refused(oidc, tenants, settings):
    oidc.set_user("sub-kim", preferred_username="kim", groups=["tenant-acme-admin"])
    client = Client()
    authorize = start_sign_in(client)
    # The provider issues the code (and token) to another client id.
    other = authorize.replace(f"client_id={CLIENT_ID}", "client_id=another-app")
    back = oidc.authorize(other, "sub-kim")
    settings.OIDC_RP_CLIENT_ID = "another-app"  # so the code exchange itself succeeds...
    backend = PortalOidcBackend()
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID  # ... but the ID token's audience is not the portal
    code = parse_qs(urlsplit(back).query)["code"][0]
    token = backend.get_token(
        {
            "client_id": "another-app",
            "client_secret": "x",
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://testserver" + reverse("oidc_authentication_callback"),
        }
    )
    checker = PortalOidcBackend()
    with pytest.raises(SuspiciousOperation, match=r"[Aa]udience"):
        checker.verify_token(token["id_token"], nonce=None)


def test_a_local_account_is_never_taken_over_by_a_provider_identity(oidc, tenants, alice):
    oidc.set_user("sub-mallory", preferred_username="alice", groups=["tenant-globex-admin"])
    client = Client()
    resp = sign_in(client, oidc, "sub-mallory")
    assert resp["Location"] == reverse("login")
    assert not ExternalIdentity.objects.exists()
    assert "tenant-globex" not in roles(alice)


def test_sign_out_ends_the_providers_session_too(oidc, tenants):
    oidc.set_user("sub-lea", preferred_username="lea", groups=["tenant-acme-view"])
    client = Client()
    sign_in(client, oidc, "sub-lea")
    id_token = client.session["oidc_id_token"]
    resp = client.post(reverse("logout"))
    assert "_auth_user_id" not in client.session
    end = urlsplit(resp["Location"])
    assert f"{end.scheme}://{end.netloc}" == oidc.issuer
    query = parse_qs(end.query)
    assert query["id_token_hint"] == [id_token]
    assert query["post_logout_redirect_uri"] == ["http://testserver" + reverse("login")]
    # The provider's own page takes it from there and sends the person back to the portal.
    page = requests.get(resp["Location"], timeout=10)
    assert page.status_code == 200
    back = requests.post(
        f"{oidc.issuer}/oauth2/end_session/confirm",
        data={"redirect_uri": query["post_logout_redirect_uri"][0]},
        allow_redirects=False,
        timeout=10,
    )
    assert back.headers["Location"] == "http://testserver" + reverse("login")
    # A GET does not sign anyone out (CSRF-safe), and a signed-out person is asked to log in.
    assert client.get(reverse("gpus:catalog")).status_code == 302


def test_local_accounts_can_be_switched_off(oidc, tenants, alice, settings):
    settings.LOCAL_LOGIN = False
    settings.AUTHENTICATION_BACKENDS = ["gpus.accounts.oidc.PortalOidcBackend"]
    client = Client()
    page = client.get(reverse("login")).content.decode()
    assert reverse("oidc_authentication_init") in page
    assert 'name="password"' not in page
    resp = client.post(reverse("login"), {"username": "alice", "password": "correct-horse-battery"})
    assert resp.status_code == 405
    assert "_auth_user_id" not in client.session


def _access_token(provider, sub: str) -> str:
    """A script's own code flow at the provider (no portal involved): its access token."""
    redirect = "http://localhost/script-callback"
    authorize = (
        f"{provider.issuer}/oauth2/authorize?response_type=code&client_id={CLIENT_ID}"
        f"&redirect_uri={redirect}&scope=openid+profile+groups&state=s&nonce=n"
    )
    code = parse_qs(urlsplit(provider.authorize(authorize, sub)).query)["code"][0]
    resp = requests.post(
        f"{provider.issuer}/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": CLIENT_ID,
            "client_secret": "x",
        },
        timeout=10,
    )
    return resp.json()["access_token"]


def test_the_api_takes_the_providers_access_token(oidc, tenants):
    oidc.set_user("sub-max", preferred_username="max", groups=["tenant-acme-view"])
    sign_in(Client(), oidc, "sub-max")  # the account exists once the person signed in
    token = _access_token(oidc, "sub-max")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    resp = api.get("/api/v1/tenants")
    assert resp.status_code == 200
    assert [t["namespace"] for t in resp.json()] == ["tenant-acme", "tenant-acme-dev"]
    assert api.get("/api/v1/tenants/tenant-globex/vms").status_code == 404
    assert Client(HTTP_AUTHORIZATION="Bearer forged").get("/api/v1/tenants").status_code == 401
    # Someone the portal has never seen sign in gets nothing, even with a valid token.
    oidc.set_user("sub-new", preferred_username="newcomer", groups=["tenant-acme-admin"])
    stranger = Client(HTTP_AUTHORIZATION=f"Bearer {_access_token(oidc, 'sub-new')}")
    assert stranger.get("/api/v1/tenants").status_code == 401
