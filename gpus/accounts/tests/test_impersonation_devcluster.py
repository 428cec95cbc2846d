"""Writes carry the person's rights: signed in through a real OIDC provider, the portal writes to
devcluster with its own least-privilege service account impersonating ``hikube-portal:<user>``
with the person's tenant groups; the cluster's RBAC (Cozystack's tenant roles) is the second wall.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from devcluster.testing import run_devcluster
from gpus.accounts.tests.provider import configure, oidc_provider, sign_in
from gpus.inventory.models import Cluster
from gpus.provisioning import services
from gpus.provisioning.choices import OperationState
from gpus.provisioning.tests.test_provisioning_devcluster import drive, vm_request
from gpus.tenancy.models import Tenant
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    with run_devcluster(tmp_path_factory.mktemp("dc-identity"), speed=200.0) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def provider():
    with oidc_provider() as p:
        yield p


@pytest.fixture
def cluster(dc, db, register) -> Cluster:
    """The portal as deployed: its own service account (kubeconfig context ``portal``), never
    the admin. The sync under it also picks up the cluster's tenant namespaces."""
    seed_catalog()
    row = register(dc, f"dc{dc.port}", context="portal")
    assert row.last_error == ""
    return row


def person(settings, provider, sub: str, groups: list[str]) -> tuple[object, Client]:
    configure(settings, provider)
    provider.set_user(sub, preferred_username=sub, groups=groups)
    client = Client()
    sign_in(client, provider, sub)
    return get_user_model().objects.get(username=sub), client


def test_the_sync_under_the_portal_account_picks_up_tenant_namespaces(cluster):
    assert set(Tenant.objects.values_list("namespace", flat=True)) >= {
        "tenant-root",
        "tenant-acme",
        "tenant-globex",
    }


def test_a_vm_is_created_as_the_person_with_their_groups(cluster, dc, settings, provider):
    user, client = person(settings, provider, "dana", ["tenant-acme-admin", "team-ml"])
    acme = Tenant.objects.get(namespace="tenant-acme")
    op = services.submit_vm(user, acme, cluster, vm_request("dana-vm"))
    assert op.cluster_user == "hikube-portal:dana"
    assert op.cluster_groups == ["tenant-acme-admin"]  # tenant groups only
    # The disk goes first and the VM once the disk is Ready (issue 16 item 1): drive to the end.
    op = drive(op, {OperationState.SUCCEEDED, OperationState.FAILED}, seconds=90)
    assert op.state != OperationState.FAILED, (op.reason, op.message)
    creates = [e for e in dc.audit() if e["verb"] == "create" and "dana-vm" in e["name"]]
    assert {e["resource"] for e in creates} == {
        "vmdisks.apps.cozystack.io",
        "vminstances.apps.cozystack.io",
    }, creates
    assert creates, dc.audit()[-5:]
    for entry in creates:
        assert entry["user"] == "hikube-portal:dana"
        assert entry["groups"] == ["tenant-acme-admin", "system:authenticated"]
        assert entry["allowed"] is True
    assert client.get(reverse("gpus:operation", args=["tenant-acme", op.pk])).status_code == 200


@pytest.mark.parametrize("role", ["view", "use"])
def test_the_cluster_itself_refuses_a_person_who_may_only_look(
    cluster, dc, settings, provider, role
):
    user, client = person(settings, provider, f"vic-{role}", [f"tenant-acme-{role}"])
    acme = Tenant.objects.get(namespace="tenant-acme")
    # The portal's own check refuses (a POST of the form is a 404): bypass it, as a bug would.
    assert client.post(reverse("gpus:vm_new", args=["tenant-acme"]), {}).status_code == 404
    op = services.submit_vm(user, acme, cluster, vm_request(f"vic-{role}-vm"))
    op = drive(op, {OperationState.FAILED, OperationState.SUCCEEDED})
    assert op.state == OperationState.FAILED and op.reason == "Forbidden"
    assert f'User "hikube-portal:vic-{role}" cannot create resource' in op.message
    refused = [e for e in dc.audit() if e["user"] == f"hikube-portal:vic-{role}"]
    assert refused and not any(e["allowed"] for e in refused)
    page = client.get(reverse("gpus:operation", args=["tenant-acme", op.pk]))
    assert "The cluster refused this action for your account." in page.content.decode()
