"""OpenID Connect through mozilla-django-oidc, with what a platform sign-in needs on top.

- Endpoints come from the issuer's discovery document (read once per process) unless a setting
  names them; the document must name the configured issuer.
- The ID token is checked for signature, ``iss``, ``aud`` (our client id), ``exp`` and ``iat``
  (the library checks only the signature and ``exp``) and the nonce; any failure is a refused
  sign-in, never a 500.
- A person is found by (issuer, subject), never by e-mail; at each sign-in and each silent
  session refresh their tenants, roles and platform-admin flag are re-read from the groups claim.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, resolve_url
from django.utils.translation import gettext as _
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.middleware import SessionRefresh as LibrarySessionRefresh
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from gpus.accounts.models import ExternalIdentity
from gpus.accounts.services import apply_groups, groups_from_claims, remember_identity

log = logging.getLogger(__name__)

# Setting -> field of the provider's discovery document.
DISCOVERED = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
    "OIDC_OP_LOGOUT_ENDPOINT": "end_session_endpoint",
}
_metadata: dict[str, dict[str, Any]] = {}


def provider_metadata() -> dict[str, Any]:
    """The issuer's ``/.well-known/openid-configuration``, fetched once per process."""
    issuer = settings.OIDC_ISSUER
    if not issuer:
        raise ImproperlyConfigured("OIDC_ISSUER is not set: sign-in with OpenID Connect is off.")
    if issuer not in _metadata:
        resp = requests.get(
            f"{issuer}/.well-known/openid-configuration", timeout=settings.OIDC_TIMEOUT
        )
        resp.raise_for_status()
        data = resp.json()
        if str(data.get("issuer", "")).rstrip("/") != issuer:
            raise ImproperlyConfigured(
                f"The provider at {issuer} calls itself {data.get('issuer')!r}: check OIDC_ISSUER."
            )
        _metadata[issuer] = data
    return _metadata[issuer]


def oidc_setting(attr: str, *args: Any) -> Any:
    """A mozilla-django-oidc setting; provider endpoints not set are discovered."""
    if attr in DISCOVERED and not getattr(settings, attr, ""):
        value = provider_metadata().get(DISCOVERED[attr])
        if value:
            return value
        if args:
            return args[0]
        raise ImproperlyConfigured(f"The provider's discovery document has no {DISCOVERED[attr]}")
    return import_from_settings(attr, *args)


class PortalOidcBackend(OIDCAuthenticationBackend):
    get_settings = staticmethod(oidc_setting)

    def _verify_jws(self, payload: Any, key: Any) -> dict[str, Any]:
        try:
            alg = jwt.get_unverified_header(payload).get("alg")
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"The ID token is not a JWT: {exc}") from exc
        if alg != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"The ID token is signed with {alg!r}, not the expected one.")
        try:
            return jwt.decode(
                payload,
                key,
                algorithms=[alg],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_ISSUER,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=30,
            )
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"The ID token was refused: {exc}") from exc

    def retrieve_matching_jwk(self, token: str) -> Any:
        """The provider's key for ``token``: by ``kid`` when the token names one (Keycloak
        does), else the provider's only key for the algorithm. Never a key of another alg."""
        resp = requests.get(
            self.OIDC_OP_JWKS_ENDPOINT,
            verify=self.get_settings("OIDC_VERIFY_SSL", True),
            timeout=self.get_settings("OIDC_TIMEOUT", None),
        )
        resp.raise_for_status()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"The ID token is not a JWT: {exc}") from exc
        keys = [
            k
            for k in resp.json().get("keys", [])
            if k.get("alg", header.get("alg")) == header.get("alg") and k.get("use", "sig") == "sig"
        ]
        if header.get("kid"):
            keys = [k for k in keys if k.get("kid") == header["kid"]]
        if len(keys) != 1:
            raise SuspiciousOperation("No single signing key of the provider matches the token.")
        return jwt.PyJWK(keys[0])

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        info = super().get_userinfo(access_token, id_token, payload)
        if info.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("The user info belongs to another subject than the token.")
        # The ID token's claims (groups may be in either), the user info's win.
        return {**payload, **info}

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub") and claims.get(settings.OIDC_USERNAME_CLAIM))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        return get_user_model().objects.filter(
            external_identity__issuer=settings.OIDC_ISSUER,
            external_identity__subject=claims["sub"],
        )

    def create_user(self, claims: dict[str, Any]) -> Any:
        User = get_user_model()
        username = str(claims[settings.OIDC_USERNAME_CLAIM])[:150]
        if User.objects.filter(username=username).exists():
            # A local account of that name: never hand it to someone else's identity.
            raise SuspiciousOperation(f"A local account is already named {username!r}.")
        user = User.objects.create_user(
            username, email=str(claims.get(settings.OIDC_EMAIL_CLAIM) or "")
        )
        return self.update_user(user, claims)

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        email = str(claims.get(settings.OIDC_EMAIL_CLAIM) or "")
        if email and user.email != email:
            user.email = email
            user.save(update_fields=["email"])
        groups = groups_from_claims(claims)
        remember_identity(user, settings.OIDC_ISSUER, str(claims["sub"]), groups)
        apply_groups(user, groups)
        return user


class SignIn(OIDCAuthenticationRequestView):
    get_settings = staticmethod(oidc_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not settings.OIDC_ENABLED:
            return redirect("login")
        return super().get(request)


class Callback(OIDCAuthenticationCallbackView):
    """The provider's redirect back: a refused token or state is a message, never a 500."""

    get_settings = staticmethod(oidc_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not settings.OIDC_ENABLED:
            return redirect("login")
        try:
            return super().get(request)
        except SuspiciousOperation as exc:
            log.warning("OIDC sign-in refused: %s", exc)
            return self.login_failure()

    @property
    def failure_url(self) -> str:
        return resolve_url(settings.LOGIN_REDIRECT_URL_FAILURE)

    def login_failure(self) -> HttpResponse:
        messages.error(
            self.request,
            _("The sign-in with your organisation's account did not succeed. Please try again."),
        )
        return super().login_failure()


class SessionRefresh(LibrarySessionRefresh):
    """Silent re-authentication (prompt=none) once the ID token's period is over, so the groups
    claim is read again. Not for htmx fragments: they cannot follow a redirect to the provider."""

    @staticmethod
    def get_settings(attr: str, *args: Any) -> Any:
        if attr == "OIDC_OP_AUTHORIZATION_ENDPOINT":
            return ""  # read lazily below
        return oidc_setting(attr, *args)

    def __init__(self, get_response: Any) -> None:
        self._endpoint = ""
        super().__init__(get_response)

    @property  # type: ignore[override]
    def OIDC_OP_AUTHORIZATION_ENDPOINT(self) -> str:
        # Discovered on first use, not when the middleware is built (no call at start-up).
        return self._endpoint or oidc_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")

    @OIDC_OP_AUTHORIZATION_ENDPOINT.setter
    def OIDC_OP_AUTHORIZATION_ENDPOINT(self, value: str | None) -> None:
        self._endpoint = ""

    def is_refreshable_url(self, request: HttpRequest) -> bool:
        if getattr(request, "htmx", False):
            return False
        return super().is_refreshable_url(request)


USERINFO_CACHE_SECONDS = 60


def user_for_access_token(raw: str) -> Any:
    """The portal user holding an access token of the provider (a script's bearer token).

    The provider's userinfo endpoint says whose it is (cached a minute per token); its groups,
    when present, are applied as at a sign-in. A person must have signed in once through the
    pages (that creates the account); an unknown subject gets nothing.
    """
    if not settings.OIDC_ENABLED:
        return None
    key = "accounts:userinfo:" + hashlib.sha256(raw.encode()).hexdigest()
    claims = cache.get(key)
    fresh = claims is None
    if fresh:
        try:
            resp = requests.get(
                oidc_setting("OIDC_OP_USER_ENDPOINT"),
                headers={"Authorization": f"Bearer {raw}"},
                timeout=settings.OIDC_TIMEOUT,
            )
        except requests.RequestException as exc:
            log.warning("OIDC userinfo unreachable: %s", exc)
            return None
        if resp.status_code != 200:
            return None
        claims = resp.json()
        cache.set(key, claims, USERINFO_CACHE_SECONDS)
    identity = (
        ExternalIdentity.objects.select_related("user")
        .filter(issuer=settings.OIDC_ISSUER, subject=str(claims.get("sub")))
        .first()
    )
    if identity is None or not identity.user.is_active:
        return None
    if fresh and settings.OIDC_GROUPS_CLAIM in claims:
        groups = groups_from_claims(claims)
        remember_identity(identity.user, settings.OIDC_ISSUER, identity.subject, groups)
        apply_groups(identity.user, groups)
    return identity.user
