"""Writes. Every state change of the portal goes through a function here."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from .choices import MembershipRole
from .models import Cluster, Membership, Tenant

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


def register_default_cluster() -> Cluster:
    """The cluster named by the CLUSTER_* settings, created or updated."""
    cluster, _ = Cluster.objects.update_or_create(
        name=settings.CLUSTER_NAME,
        defaults={
            "kubeconfig": "" if settings.CLUSTER_IN_CLUSTER else settings.CLUSTER_KUBECONFIG,
            "context": settings.CLUSTER_CONTEXT,
            "in_cluster": settings.CLUSTER_IN_CLUSTER,
        },
    )
    return cluster


def request_inventory_sync(cluster: Cluster) -> None:
    """Queue a sync now (the button admins press); the task runs after the commit."""
    from .tasks import sync_inventory

    transaction.on_commit(lambda: sync_inventory.delay(cluster.pk))
