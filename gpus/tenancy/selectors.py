"""Which tenants a person may see: every tenant-owned read starts here (another tenant is a 404)."""

from __future__ import annotations

from django.db.models import QuerySet, Subquery
from django.http import Http404

from gpus.tenancy.models import Membership, Tenant
from gpus.web.access import User, is_platform_admin


def tenants_for_user(user: User) -> QuerySet[Tenant]:
    """The tenants a user belongs to. Platform admins see every tenant."""
    if not user.is_authenticated:
        return Tenant.objects.none()
    if is_platform_admin(user):
        return Tenant.objects.all()
    return Tenant.objects.filter(memberships__user=user)


def get_tenant_for_user(user: User, namespace: str) -> Tenant:
    """A tenant the user may see, or 404: never a 403 that would confirm the tenant exists."""
    tenant = tenants_for_user(user).filter(namespace=namespace).first()
    if tenant is None:
        raise Http404("No such tenant.")
    return tenant


def tenant_id_of(namespace: str) -> Subquery:
    """The tenant's id as a subquery, to filter ``tenant_id`` by a namespace: the planner reads
    it first, then walks a (tenant, ...) index in the list's order, where a join on the
    namespace sorted every row of the tenant."""
    return Subquery(Tenant.objects.filter(namespace=namespace).values("pk")[:1])


def memberships_of(tenant: Tenant) -> QuerySet[Membership]:
    return tenant.memberships.select_related("user").order_by("user__username")


def membership_of(user: User, tenant: Tenant) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, tenant=tenant).first()
