"""Who calls the API: a personal API token, or an access token of the platform's OIDC provider.

Either way the caller is a portal user and every call runs with that user's rights, through the
same selectors and services as the pages. The session cookie is not accepted, so no CSRF applies.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from gpus.accounts.oidc import user_for_access_token
from gpus.accounts.selectors import user_for_api_token
from gpus.accounts.services import TOKEN_PREFIX


class BearerToken(HttpBearer):
    """``Authorization: Bearer hkp_...`` (a personal token) or an OIDC access token."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        if token.startswith(TOKEN_PREFIX):
            user = user_for_api_token(token)
        else:
            user = user_for_access_token(token)
        if user is not None:
            request.user = user
        return user
