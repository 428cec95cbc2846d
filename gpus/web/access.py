"""The one access policy: who may see, who may act.

Platform admins see every tenant and the fleet-wide pages; a tenant's members see their tenant;
its operators (and platform admins) may change things, its viewers only look. Anything else is a
404, never a 403 that would confirm the page or the tenant exists (DESIGN rule 5).

web imports no other app, so a tenant is whatever has ``memberships`` (tenancy's relation) whose
rows know ``can_operate``.
"""

from __future__ import annotations

from typing import Any, Protocol

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import Http404

User = AbstractBaseUser | AnonymousUser


class HasMemberships(Protocol):
    memberships: Any  # tenancy's Membership rows of this tenant (a related manager)


def is_platform_admin(user: User) -> bool:
    """Platform admins (staff) see every tenant, the fleet, nodes, the audit log and admin."""
    return bool(user.is_authenticated and user.is_staff)


def require_platform_admin(user: User) -> None:
    """For admin-only pages: anyone else gets a 404."""
    if not is_platform_admin(user):
        raise Http404("No such page.")


def may_operate(user: User, tenant: HasMemberships) -> bool:
    """Platform admins and the tenant's operators may change things; viewers only look."""
    if not user.is_authenticated:
        return False
    if is_platform_admin(user):
        return True
    membership = tenant.memberships.filter(user_id=user.pk).first()
    return bool(membership and membership.can_operate)


def require_may_operate(user: User, tenant: HasMemberships) -> None:
    """For actions: someone who may only look gets a 404, like a page that is not theirs."""
    if not may_operate(user, tenant):
        raise Http404("No such page.")
