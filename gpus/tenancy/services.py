"""Writes of tenancy: the demo tenants and users of `make run`."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from gpus.tenancy.choices import MembershipRole
from gpus.tenancy.models import Membership, Tenant

DEMO_PASSWORD = "hikube-demo"  # noqa: S105 - the documented demo login, refused with DEBUG off
DEMO_TENANTS = [("tenant-acme", "Acme Corp"), ("tenant-globex", "Globex")]
DEMO_USERS = [
    # username, is platform admin, tenant namespace, role
    ("admin", True, None, None),
    ("alice", False, "tenant-acme", MembershipRole.OPERATOR),
    ("bob", False, "tenant-globex", MembershipRole.OPERATOR),
]


@transaction.atomic
def seed_demo_data() -> list[str]:
    """Create the demo tenants and users; running it again changes nothing but the passwords."""
    User = get_user_model()
    tenants = {}
    for namespace, display_name in DEMO_TENANTS:
        tenants[namespace], _ = Tenant.objects.update_or_create(
            namespace=namespace, defaults={"display_name": display_name}
        )
    created = []
    for username, is_admin, namespace, role in DEMO_USERS:
        user, was_created = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        user.is_staff = user.is_superuser = is_admin
        user.set_password(DEMO_PASSWORD)
        user.save()
        if namespace:
            Membership.objects.update_or_create(
                user=user, tenant=tenants[namespace], defaults={"role": role}
            )
        if was_created:
            created.append(username)
    return created
