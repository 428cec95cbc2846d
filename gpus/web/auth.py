"""Login throttling: django-axes for every login that comes over the web."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class WebLoginThrottle(AxesStandaloneBackend):
    """django-axes' lockout check for logins with a request (the login page, the admin's).

    An authentication without a request (Django's test `Client.login`, a shell) has no address
    to lock and cannot be hammered from outside: it goes on to the password check instead of
    failing with axes' "request required" error.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
