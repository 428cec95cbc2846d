"""Quotas in the portal (#18 item 3): admins set them on the tenant (audited), tenants see
their headroom before they submit, both forms enforce them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from gpus.catalog.models import GpuModel
from gpus.provisioning.models import AuditEvent, GpuQuota, Operation
from gpus.provisioning.tests.test_provisioning_views import form_data, group_data
from gpus.testing import L40S

pytestmark = pytest.mark.django_db


def test_admin_sets_a_quota_audited(admin_client_, alice_client, acme):
    l40s = GpuModel.objects.get(resource_name=L40S)
    url = reverse("gpus:capacity_quotas", args=[acme.namespace])
    response = admin_client_.post(url, {"gpu_model": l40s.pk, "limit": "2"})
    assert response.status_code == 302
    assert GpuQuota.objects.get(tenant=acme, gpu_model=l40s).limit == 2
    admin_client_.post(url, {"gpu_model": l40s.pk, "limit": "3"})
    admin_client_.post(url, {"gpu_model": l40s.pk, "limit": "3"})  # no change: no event
    admin_client_.post(url, {"gpu_model": l40s.pk, "limit": ""})  # removed
    assert not GpuQuota.objects.filter(tenant=acme).exists()
    events = list(AuditEvent.objects.filter(tenant=acme, action="quota.set"))
    assert [(e.actor_name, e.detail["old"], e.detail["new"]) for e in events] == [
        ("admin", None, 2),
        ("admin", 2, 3),
        ("admin", 3, None),
    ]
    # Bad input: an error next to the field, never a 500.
    page = admin_client_.post(url, {"gpu_model": l40s.pk, "limit": "-1"})
    assert page.status_code == 200 and "greater than or equal to 0" in page.content.decode()
    # The field's label starts with a capital in French too (its msgid is the model field's).
    fr = admin_client_.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Limite de GPU" in fr and "limite de GPU" not in fr
    # A tenant member sees the page read-only (with its GPU-hours) and may not post to it.
    page = alice_client.get(url).content.decode()
    assert 'id="quota-form"' not in page and 'id="gpu-hours"' in page
    assert alice_client.post(url, {"gpu_model": l40s.pk, "limit": "99"}).status_code == 404
    assert not GpuQuota.objects.filter(tenant=acme).exists()


def test_quota_urls_are_404_for_other_tenants(bob_client, acme, globex):
    for url in (
        reverse("gpus:capacity_quotas", args=[acme.namespace]),
        reverse("gpus:capacity_headroom") + f"?tenant={acme.namespace}",
    ):
        assert bob_client.get(url).status_code == 404, url
    own = bob_client.get(reverse("gpus:capacity_headroom") + f"?tenant={globex.namespace}")
    assert own.status_code == 200


def test_headroom_and_enforcement_on_both_forms(
    admin_client_,
    alice_client,
    acme,
    cluster,
    alice_group,
):
    l40s = GpuModel.objects.get(resource_name=L40S)
    admin_client_.post(
        reverse("gpus:capacity_quotas", args=[acme.namespace]),
        {"gpu_model": l40s.pk, "limit": "5"},
    )
    # The node group (max 4 x 1 L40S... as the fixture has it) counts against the quota.
    headroom = alice_client.get(reverse("gpus:capacity_headroom")).content.decode()
    counted = 5 - int(headroom.split(" of 5 NVIDIA L40S left")[0].split()[-1])
    assert counted == alice_group.gpus_at_most
    # Every page the tenant submits from loads the box before submitting.
    for name in ("gpus:catalog", "gpus:my_gpus", "gpus:vm_new", "gpus:node_group_new"):
        args = [] if name == "gpus:catalog" else [acme.namespace]
        assert "gpus:capacity_headroom" not in (
            page := alice_client.get(reverse(name, args=args)).content.decode()
        )
        assert reverse("gpus:capacity_headroom") in page, name
    # VM form: asking more than the quota leaves is refused next to the field.
    left = 5 - counted
    response = alice_client.post(
        reverse("gpus:vm_new", args=[acme.namespace]), form_data(gpu_count=str(left + 1))
    )
    assert "Your quota allows" in response.content.decode()
    assert not Operation.objects.exists()
    # Node-group form: the same quota.
    response = alice_client.post(
        reverse("gpus:node_group_new", args=[acme.namespace]),
        group_data(cluster_name="", new_cluster="train", max_replicas="50", confirm="1"),
    )
    assert "Your quota allows" in response.content.decode()
    assert not Operation.objects.exists()
