"""Writes of accounts: a person's tenants and roles from the groups claim; API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gpus.accounts.models import ApiToken, ExternalIdentity
from gpus.kube.groups import roles_by_namespace
from gpus.tenancy.choices import MembershipRole
from gpus.tenancy.models import Membership, Tenant

TOKEN_PREFIX = "hkp_"  # noqa: S105 - a marker that makes leaked tokens findable


def membership_role(tenant_role: str) -> str:
    """A Cozystack tenant role as the portal's membership role (settings.OIDC_OPERATOR_ROLES)."""
    if tenant_role in settings.OIDC_OPERATOR_ROLES:
        return MembershipRole.OPERATOR
    return MembershipRole.VIEWER


def groups_from_claims(claims: dict[str, Any]) -> list[str]:
    raw = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(raw, str):
        raw = [raw]
    return sorted({str(g).lstrip("/") for g in raw if g})


@transaction.atomic
def apply_groups(user: Any, groups: Iterable[str]) -> dict[str, str]:
    """Make the user's memberships and platform-admin flag what ``groups`` say, nothing more:
    a group gone at the provider is a tenant gone here. Returns namespace -> membership role."""
    groups = sorted(set(groups))
    namespaces = Tenant.objects.values_list("namespace", flat=True)
    wanted = {
        ns: membership_role(role) for ns, role in roles_by_namespace(groups, namespaces).items()
    }
    tenants = dict(Tenant.objects.filter(namespace__in=wanted).values_list("namespace", "pk"))
    Membership.objects.filter(user=user).exclude(tenant_id__in=tenants.values()).delete()
    for ns, role in wanted.items():
        Membership.objects.update_or_create(
            user=user, tenant_id=tenants[ns], defaults={"role": role}
        )
    admin = bool(set(groups) & set(settings.OIDC_PLATFORM_ADMIN_GROUPS))
    if (user.is_staff, user.is_superuser) != (admin, admin):
        user.is_staff = user.is_superuser = admin
        user.save(update_fields=["is_staff", "is_superuser"])
    return wanted


def remember_identity(user: Any, issuer: str, subject: str, groups: list[str]) -> None:
    ExternalIdentity.objects.update_or_create(
        user=user, defaults={"issuer": issuer, "subject": subject, "groups": groups}
    )


def refresh_new_tenants(namespaces: Iterable[str]) -> int:
    """Tenants the sync just found: give the people whose stored groups reach them their
    memberships now rather than at their next sign-in. Returns how many people changed."""
    namespaces = set(namespaces)
    if not namespaces:
        return 0
    changed = 0
    for identity in ExternalIdentity.objects.select_related("user"):
        if roles_by_namespace(identity.groups, namespaces):
            apply_groups(identity.user, identity.groups)
            changed += 1
    return changed


def token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create_token(user: Any, name: str) -> tuple[ApiToken, str]:
    """A new token; the raw value is returned once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=raw[: len(TOKEN_PREFIX) + 6], digest=token_digest(raw)
    )
    return token, raw


def revoke_token(user: Any, token_id: int) -> bool:
    return bool(
        ApiToken.objects.filter(user=user, pk=token_id, revoked_at=None).update(
            revoked_at=timezone.now()
        )
    )


def touch_token(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
