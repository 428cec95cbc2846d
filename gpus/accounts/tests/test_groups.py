"""Groups to roles (Cozystack's levels and parent tenants), the identity the cluster sees, and
tenants picked up by the inventory sync."""

from __future__ import annotations

import pytest
from django.utils import timezone

from gpus.accounts.models import ExternalIdentity
from gpus.accounts.selectors import cluster_groups, cluster_user
from gpus.accounts.services import apply_groups, remember_identity
from gpus.inventory.models import Cluster
from gpus.inventory.sync import store_snapshot
from gpus.kube.groups import parents_and_self, parse_group, role_in, roles_by_namespace
from gpus.kube.records import FleetReading
from gpus.tenancy.choices import MembershipRole
from gpus.tenancy.models import Membership, Tenant


def test_groups_parse_as_cozystack_names_them():
    assert parse_group("tenant-acme-super-admin") == ("tenant-acme", "super-admin")
    assert parse_group("tenant-acme-dev-admin") == ("tenant-acme-dev", "admin")
    assert parse_group("/tenant-acme-view") == ("tenant-acme", "view")  # Keycloak's full path
    assert parse_group("tenant-acme") is None  # no group named like the namespace
    assert parse_group("tenant-admin") is None
    assert parse_group("cozystack-cluster-admin") is None
    assert parents_and_self("tenant-acme-dev") == ["tenant-acme", "tenant-acme-dev", "tenant-root"]


def test_the_highest_role_wins_and_parents_count():
    groups = ["tenant-acme-view", "tenant-acme-dev-use", "tenant-root-view"]
    assert role_in(groups, "tenant-acme-dev") == "use"
    assert role_in(["tenant-acme-admin"], "tenant-acme-dev") == "admin"
    assert role_in(["tenant-acme-dev-admin"], "tenant-acme") is None  # a child gives no parent
    assert role_in(["tenant-root-super-admin"], "tenant-globex") == "super-admin"
    namespaces = ["tenant-acme", "tenant-acme-dev", "tenant-globex"]
    assert roles_by_namespace(["tenant-acme-use"], namespaces) == {
        "tenant-acme": "use",
        "tenant-acme-dev": "use",
    }


@pytest.mark.django_db
def test_local_accounts_present_their_memberships_as_tenant_groups(alice, carol, acme):
    assert cluster_user(alice) == "hikube-portal:alice"
    assert cluster_groups(alice, acme) == ["tenant-acme-admin"]
    assert cluster_groups(carol, acme) == ["tenant-acme-view"]


@pytest.mark.django_db
def test_signed_in_people_present_their_tenant_groups_only(alice, acme, settings):
    settings.CLUSTER_USER_PREFIX = "portal.example/"
    remember_identity(alice, "https://idp", "sub", ["tenant-acme-use", "team-ml", "/tenant-x-view"])
    assert cluster_user(alice) == "portal.example/alice"
    assert cluster_groups(alice, acme) == ["tenant-acme-use", "tenant-x-view"]


@pytest.mark.django_db
def test_platform_admins_act_in_a_tenant_as_its_admin(platform_admin, acme):
    assert cluster_groups(platform_admin, acme) == ["tenant-acme-admin"]


@pytest.mark.django_db
def test_the_operator_roles_are_a_setting(alice, acme, settings):
    settings.OIDC_OPERATOR_ROLES = ["use", "admin", "super-admin"]
    apply_groups(alice, ["tenant-acme-use"])
    assert Membership.objects.get(user=alice).role == MembershipRole.OPERATOR
    settings.OIDC_OPERATOR_ROLES = ["admin", "super-admin"]
    apply_groups(alice, ["tenant-acme-use"])
    assert Membership.objects.get(user=alice).role == MembershipRole.VIEWER


@pytest.mark.django_db
def test_the_sync_picks_up_tenant_namespaces_and_gives_them_to_whose_groups_name_them(alice):
    remember_identity(alice, "https://idp", "sub-a", ["tenant-newco-admin"])
    apply_groups(alice, ["tenant-newco-admin"])
    assert not Membership.objects.filter(user=alice).exists()  # no such tenant yet
    cluster = Cluster.objects.create(name="prod")
    reading = FleetReading(
        vm_kind="VMInstance",
        disk_field="ephemeralStorage",
        tenant_namespaces=["tenant-newco", "tenant-root", "tenant-Bad_Name"],
    )
    store_snapshot(cluster, reading, timezone.now())
    assert set(Tenant.objects.values_list("namespace", flat=True)) == {
        "tenant-acme",  # alice's, known before
        "tenant-newco",
        "tenant-root",
    }
    assert Membership.objects.get(user=alice).tenant.namespace == "tenant-newco"
    assert ExternalIdentity.objects.count() == 1
