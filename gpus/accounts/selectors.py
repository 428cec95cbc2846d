"""Reads of accounts: who the cluster should see acting, tokens."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from gpus.accounts.models import ApiToken, ExternalIdentity
from gpus.accounts.services import token_digest, touch_token
from gpus.kube.groups import LEVEL, role_in, tenant_groups_of
from gpus.tenancy.models import Tenant
from gpus.web.access import is_platform_admin


def cluster_user(user: Any) -> str:
    """The Kubernetes user name the portal impersonates for ``user`` (always prefixed)."""
    return f"{settings.CLUSTER_USER_PREFIX}{user.get_username()}"


def cluster_groups(user: Any, tenant: Tenant) -> list[str]:
    """The person's tenant groups, as Cozystack's OIDC login presents them to the cluster.

    Signed in through OIDC: the tenant groups of the last groups claim. A local account (the
    demo users): its memberships as the groups that would grant them (operator -> ``-admin``,
    viewer -> ``-view``). A platform admin acts in any tenant as its ``-admin`` (the portal may
    impersonate only tenant groups, never the platform's own admin group).
    """
    identity = ExternalIdentity.objects.filter(user=user).first()
    if identity is not None:
        groups = tenant_groups_of(identity.groups)
    else:
        groups = [
            f"{ns}-{'admin' if role == 'operator' else 'view'}"
            for ns, role in user.memberships.values_list("tenant__namespace", "role")
        ]
    if is_platform_admin(user):
        role = role_in(groups, tenant.namespace)
        if role is None or LEVEL[role] < LEVEL["admin"]:
            groups.append(f"{tenant.namespace}-admin")
    return sorted(set(groups))


def tokens_of(user: Any) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


def user_for_api_token(raw: str) -> Any:
    """The active user a personal API token belongs to, or None (unknown, revoked)."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=token_digest(raw), revoked_at=None)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    touch_token(token)
    return token.user
