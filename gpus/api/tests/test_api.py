"""The JSON API driven as a script drives it: a bearer token, JSON in and out, the same rules as
the pages (tenancy 404s, form validation, quotas, the operation recorded before acting)."""

from __future__ import annotations

import json

import pytest
import requests
from django.test import Client
from django.urls import reverse

from gpus.accounts.models import ApiToken
from gpus.accounts.services import create_token, revoke_token
from gpus.catalog.models import GpuModel
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import GpuQuota, Operation

pytestmark = [pytest.mark.django_db]

L40S = "nvidia.com/AD102GL_L40S"
API = "/api/v1"


class Script:
    """What a script does: requests with ``Authorization: Bearer``, JSON bodies."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: dict | None = None):
        kwargs = dict(self.headers)
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        return getattr(self.client, method)(API + path, **kwargs)


@pytest.fixture
def alice_api(alice) -> Script:
    return Script(create_token(alice, "ci")[1])


@pytest.fixture
def bob_api(bob) -> Script:
    return Script(create_token(bob, "ci")[1])


def vm(name: str = "train-1", **extra) -> dict:
    return {"name": name, "gpu_model": L40S, "gpu_count": 1, **extra}


def test_openapi_document_is_served_and_names_every_route(db):
    resp = Client().get(f"{API}/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["info"]["title"] == "Hikube Portal API"
    paths = set(doc["paths"])
    assert {
        f"{API}/models",
        f"{API}/tenants/{{namespace}}/vms",
        f"{API}/tenants/{{namespace}}/vms/{{name}}",
        f"{API}/tenants/{{namespace}}/vms/{{name}}/actions",
        f"{API}/tenants/{{namespace}}/node-groups",
        f"{API}/tenants/{{namespace}}/node-groups/{{cluster}}/{{group}}",
        f"{API}/tenants/{{namespace}}/kubernetes/{{cluster}}",
        f"{API}/tenants/{{namespace}}/operations/{{pk}}",
        f"{API}/tenants/{{namespace}}/utilization",
    } <= paths
    assert doc["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"


def test_the_docs_page_loads_its_scripts_from_the_portal(db, settings):
    """Swagger UI from the portal's static files: the CSP (script-src 'self') lets it run."""
    resp = Client().get(f"{API}/docs")
    assert resp.status_code == 200
    page = resp.content.decode()
    assert f"{settings.STATIC_URL}ninja/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr.net" not in page and "<script>" not in page


def test_no_or_a_bad_or_a_revoked_token_is_401(alice, snapshot):
    assert Script(None).call("get", "/models").status_code == 401
    assert Script("hkp_not-a-token").call("get", "/models").status_code == 401
    token, raw = create_token(alice, "old")
    assert Script(raw).call("get", "/models").status_code == 200
    assert revoke_token(alice, token.pk)
    assert Script(raw).call("get", "/models").status_code == 401


def test_tokens_are_hashed_at_rest_and_shown_once(alice_client, alice):
    resp = alice_client.post(reverse("accounts:tokens"), {"name": "nightly"})
    raw = resp.context["new_token"]
    assert raw.startswith("hkp_") and raw in resp.content.decode()
    token = ApiToken.objects.get(user=alice, name="nightly")
    assert raw not in (token.digest, token.prefix) and len(token.digest) == 64
    assert raw not in alice_client.get(reverse("accounts:tokens")).content.decode()
    # Revoked from the page; another person's token id is not theirs to revoke.
    alice_client.post(reverse("accounts:revoke_token", args=[token.pk]))
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Script(raw).call("get", "/models").status_code == 401


def test_models_with_free_gpus(alice_api, snapshot):
    resp = alice_api.call("get", "/models")
    assert resp.status_code == 200
    models = {m["resource_name"]: m for m in resp.json()}
    assert models[L40S]["free"] == 3 and models[L40S]["free_on_one_server"] == 3
    assert models["nvidia.com/H100_94GB"]["free"] == 6


def test_another_tenant_is_a_404_never_a_403(bob_api, alice_api, snapshot):
    assert alice_api.call("get", "/tenants/tenant-acme/vms").status_code == 200
    assert bob_api.call("get", "/tenants/tenant-acme/vms").status_code == 404
    assert bob_api.call("post", "/tenants/tenant-acme/vms", vm()).status_code == 404
    assert bob_api.call("delete", "/tenants/tenant-acme/vms/ws").status_code == 404
    assert bob_api.call("get", "/tenants/tenant-acme/utilization").status_code == 404
    op = Operation.objects.create(
        cluster=snapshot,
        tenant=snapshot.workloads.first().tenant,
        actor_name="alice",
        kind=OperationKind.CREATE,
        namespace="tenant-acme",
        app_kind="VMInstance",
        name="x",
    )
    assert bob_api.call("get", f"/tenants/tenant-acme/operations/{op.pk}").status_code == 404
    assert alice_api.call("get", f"/tenants/tenant-acme/operations/{op.pk}").status_code == 200
    tenants = [t["namespace"] for t in bob_api.call("get", "/tenants").json()]
    assert tenants == ["tenant-globex"]


def test_a_viewer_may_look_but_not_act(carol, snapshot):
    api = Script(create_token(carol, "ro")[1])
    assert api.call("get", "/tenants/tenant-acme/vms").status_code == 200
    assert api.call("post", "/tenants/tenant-acme/vms", vm()).status_code == 404
    assert not Operation.objects.exists()


def test_create_vm_is_validated_like_the_form(alice_api, snapshot):
    resp = alice_api.call("post", "/tenants/tenant-acme/vms", vm(name="Bad_Name", gpu_count=9))
    assert resp.status_code == 422
    errors = resp.json()["errors"]
    assert "name" in errors and "gpu_count" in errors
    assert not Operation.objects.exists()


def test_quota_is_enforced(alice_api, snapshot, acme):
    GpuQuota.objects.create(
        tenant=acme, gpu_model=GpuModel.objects.get(resource_name=L40S), limit=1
    )
    resp = alice_api.call("post", "/tenants/tenant-acme/vms", vm(gpu_count=2))
    assert resp.status_code == 422
    assert "gpu_count" in resp.json()["errors"]
    assert not Operation.objects.exists()


def test_too_many_requests_answer_429_with_retry_after(alice_api, snapshot, settings):
    settings.OPERATION_RATE_PER_MINUTE = 1
    assert alice_api.call("post", "/tenants/tenant-acme/vms", vm("one")).status_code == 202
    resp = alice_api.call("post", "/tenants/tenant-acme/vms", vm("two"))
    assert resp.status_code == 429, resp.content
    assert 1 <= int(resp["Retry-After"]) <= 60
    assert resp.json()["detail"].startswith("Too many requests for this tenant: try again in")
    assert Operation.objects.count() == 1


def test_create_vm_records_the_operation_then_it_is_followed(
    alice_api, snapshot, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        resp = alice_api.call("post", "/tenants/tenant-acme/vms", vm(ssh_keys=[]))
    assert resp.status_code == 202, resp.content
    body = resp.json()
    op = Operation.objects.get(pk=body["id"])
    assert op.state == OperationState.PENDING and op.kind == OperationKind.CREATE
    assert op.actor_name == "alice" and op.cluster_user == "hikube-portal:alice"
    assert op.cluster_groups == ["tenant-acme-admin"]
    assert len(callbacks) == 1  # the apply is enqueued after the record is committed
    follow = alice_api.call("get", body["url"].removeprefix(API))
    assert follow.status_code == 200
    assert follow.json()["state"] == "pending" and follow.json()["terminal"] is False


def test_vm_actions_and_delete(alice_api, snapshot):
    resp = alice_api.call("post", "/tenants/tenant-acme/vms/ws/actions", {"action": "stop"})
    assert resp.status_code == 202, resp.content
    assert resp.json()["kind"] == "stop"
    bad = alice_api.call("post", "/tenants/tenant-acme/vms/ws/actions", {"action": "explode"})
    assert bad.status_code == 422
    # One change at a time per target, as on the pages.
    busy = alice_api.call("delete", "/tenants/tenant-acme/vms/ws")
    assert busy.status_code == 422 and "still in progress" in busy.json()["detail"]
    Operation.objects.update(state=OperationState.SUCCEEDED)
    gone = alice_api.call("delete", "/tenants/tenant-acme/vms/ws")
    assert gone.status_code == 202 and gone.json()["kind"] == "delete"
    assert alice_api.call("delete", "/tenants/tenant-acme/vms/nope").status_code == 404


def test_node_group_on_a_new_cluster(alice_api, snapshot):
    resp = alice_api.call(
        "put",
        "/tenants/tenant-acme/node-groups",
        {
            "new_cluster": "ml",
            "group": "gpu",
            "min_replicas": 1,
            "max_replicas": 2,
            "gpu_model": L40S,
        },
    )
    assert resp.status_code == 202, resp.content
    op = Operation.objects.get(pk=resp.json()["id"])
    assert (op.app_kind, op.name, op.node_group) == ("Kubernetes", "ml", "gpu")
    missing = alice_api.call(
        "put",
        "/tenants/tenant-acme/node-groups",
        {"group": "gpu", "min_replicas": 3, "max_replicas": 2, "gpu_model": L40S},
    )
    assert missing.status_code == 422
    assert {"cluster_name", "max_replicas"} <= set(missing.json()["errors"])


def test_a_node_group_resize_keeps_what_it_leaves_out(alice_api, snapshot):
    """Issue 16 item 2: a field the script leaves out keeps the live group's value, not the
    form's default, and the patch carries only what changed."""
    from gpus.inventory.models import GpuWorkload

    GpuWorkload.objects.filter(name="k8s", node_group="gpu").update(
        max_instances=2,
        group_spec={"min_replicas": 1, "max_replicas": 2, "instance_type": "u1.8xlarge",
                    "disk": "200Gi", "roles": ["ingress-nginx"], "gpus": [L40S, L40S]},
    )  # fmt: skip
    resp = alice_api.call(
        "put",
        "/tenants/tenant-acme/node-groups",
        {"cluster_name": "k8s", "group": "gpu", "min_replicas": 1, "max_replicas": 3,
         "gpu_model": L40S},
    )  # fmt: skip
    assert resp.status_code == 202, resp.content
    op = Operation.objects.get(pk=resp.json()["id"])
    assert op.kind == OperationKind.RESIZE
    assert op.manifests[0]["spec"] == {"nodeGroups": {"gpu": {"maxReplicas": 3}}}


def test_utilization_of_the_tenant(alice_api, snapshot):
    resp = alice_api.call("get", "/tenants/tenant-acme/utilization?range=7d")
    assert resp.status_code == 200
    assert resp.json()["tenant"] == "tenant-acme" and resp.json()["range"] == "7d"
    bad = alice_api.call("get", "/tenants/tenant-acme/utilization?range=custom&start=")
    assert bad.status_code == 422


@pytest.mark.integration
def test_a_script_over_http(live_server, alice, snapshot):
    """A real HTTP client against the running portal: read the models, follow 404s."""
    raw = create_token(alice, "script")[1]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {raw}"
    models = session.get(f"{live_server.url}{API}/models", timeout=10)
    assert models.status_code == 200 and models.headers["Content-Type"].startswith(
        "application/json"
    )
    assert any(m["resource_name"] == L40S for m in models.json())
    assert (
        session.get(f"{live_server.url}{API}/tenants/tenant-globex/vms", timeout=10).status_code
        == 404
    )
    assert requests.get(f"{live_server.url}{API}/openapi.json", timeout=10).status_code == 200
