"""Deleting a node group, or a whole tenant Kubernetes cluster, against devcluster over HTTP
(Cozystack v1.1 flavour, the portal's own service account impersonating the person): through
the JSON API as a script does it and through the page's confirmation, recorded as operations
with audit events, done only when the cluster shows the group (or the cluster) gone."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from devcluster.testing import run_devcluster
from gpus.accounts.services import create_token
from gpus.inventory import sync
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.kube import apps
from gpus.provisioning import services
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import AuditEvent, Operation
from gpus.provisioning.tests.test_provisioning_devcluster import drive
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

L40S = "nvidia.com/AD102GL_L40S"
API = "/api/v1"
DONE = {OperationState.SUCCEEDED, OperationState.FAILED}


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    with run_devcluster(tmp_path_factory.mktemp("dc-k8s-delete"), speed=200.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, globex, register) -> Cluster:
    """The portal as deployed: its own least-privilege account (context ``portal``)."""
    seed_catalog()
    row = register(dc, f"dc{dc.port}", context="portal")
    assert row.last_error == ""
    return row


def app_path(name: str) -> str:
    return f"/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-acme/kuberneteses/{name}"


def read_app(dc, name: str) -> dict | None:
    status, _, body = dc.request("GET", app_path(name))
    return json.loads(body) if status == 200 else None


def monitors(dc, prefix: str) -> set[str]:
    path = "/apis/cozystack.io/v1alpha1/namespaces/tenant-acme/workloadmonitors"
    items = json.loads(dc.request("GET", path)[2])["items"]
    return {m["metadata"]["name"] for m in items if m["metadata"]["name"].startswith(prefix)}


def make_group(user, tenant, cluster, name: str, group: str, new: bool) -> None:
    request = apps.NodeGroupRequest(
        cluster_name=name,
        group=group,
        min_replicas=1,
        max_replicas=1,
        instance_type="u1.2xlarge",
        disk_size_gi=50,
        gpu_resource=L40S,
        gpus_per_node=1,
        new_cluster_version="v1.33" if new else "",
    )
    op = services.submit_node_group(user, tenant, cluster, request, resize=False)
    op = drive(op, DONE, seconds=90)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)


def api(user) -> Client:
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {create_token(user, 'ci')[1]}"
    return client


def test_delete_one_node_group_then_the_whole_cluster(cluster, dc, alice, bob, carol, acme):
    make_group(alice, acme, cluster, "gone", "gpu", new=True)
    make_group(alice, acme, cluster, "gone", "extra", new=False)
    sync.sync_cluster(cluster.pk)
    # v1.1's chart md0 runs beside them (its spec does not name it).
    assert set(
        GpuWorkload.objects.filter(tenant=acme, name="gone").values_list("node_group", flat=True)
    ) == {"gpu", "extra", "md0"}
    assert monitors(dc, "kubernetes-gone-") >= {"kubernetes-gone-gpu", "kubernetes-gone-extra"}

    # Another tenant's group is a 404; so is a viewer's attempt to act.
    url = f"{API}/tenants/tenant-acme/node-groups/gone/extra"
    assert api(bob).delete(url).status_code == 404
    assert api(carol).delete(url).status_code == 404
    assert api(alice).delete(f"{API}/tenants/tenant-acme/node-groups/gone/nope").status_code == 404
    assert not Operation.objects.filter(kind=OperationKind.DELETE).exists()

    # The script deletes one group: recorded (202), then done once the cluster shows it gone.
    resp = api(alice).delete(url)
    assert resp.status_code == 202, resp.content
    body = resp.json()
    assert body["kind"] == "delete" and body["node_group"] == "extra"
    assert body["target"] == "Kubernetes/gone"
    op = Operation.objects.get(pk=body["id"])
    assert op.manifests[0]["spec"] == {"nodeGroups": {"extra": None}}
    assert AuditEvent.objects.filter(operation=op, action="operation.delete").exists()
    op = drive(op, DONE, seconds=90)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    groups = read_app(dc, "gone")["spec"]["nodeGroups"]
    assert "extra" not in groups and "gpu" in groups  # the other group is untouched
    assert "kubernetes-gone-extra" not in monitors(dc, "kubernetes-gone-")
    assert "kubernetes-gone-gpu" in monitors(dc, "kubernetes-gone-")
    patches = [
        e for e in dc.audit() if e["verb"] == "patch" and e["name"] == "gone" and e["allowed"]
    ]
    assert patches and patches[-1]["user"] == "hikube-portal:alice"
    page = Client()
    page.force_login(alice)
    shown = page.get(reverse("gpus:operation", args=["tenant-acme", op.pk])).content.decode()
    assert "gone / extra" in shown and "GPU server found" not in shown
    follow = api(alice).get(body["url"])
    assert follow.json()["state"] == "succeeded" and follow.json()["terminal"] is True
    sync.sync_cluster(cluster.pk)
    assert set(
        GpuWorkload.objects.filter(tenant=acme, name="gone").values_list("node_group", flat=True)
    ) == {"gpu", "md0"}

    # md0 is merged back by Cozystack v1.1's chart: refused in plain words, nothing recorded.
    group = GpuWorkload.objects.get(tenant=acme, name="gone", node_group="gpu")
    group.node_group = "md0"
    with pytest.raises(services.OperationRefused) as exc:
        services.submit_node_group_delete(alice, group)
    assert "md0 is the chart's default group" in exc.value.message
    assert api(alice).delete(f"{API}/tenants/tenant-acme/node-groups/ml/md0").status_code == 422

    # The page: the group's own page offers both deletes, each with its confirmation.
    group = GpuWorkload.objects.get(tenant=acme, name="gone", node_group="gpu")
    detail = page.get(reverse("gpus:workload", args=["tenant-acme", group.pk])).content.decode()
    group_url = reverse("gpus:node_group_delete", args=["tenant-acme", "gone", "gpu"])
    whole = reverse("gpus:cluster_delete", args=["tenant-acme", "gone"])
    assert group_url in detail and whole in detail
    assert "The cluster gone and its other groups stay." in page.get(group_url).content.decode()
    other = Client()
    other.force_login(bob)
    assert other.get(whole).status_code == 404 and other.post(whole).status_code == 404
    assert "This cannot be undone." in page.get(whole).content.decode()
    resp = page.post(whole, {"confirm_name": "gone"})
    assert resp.status_code == 302
    op = Operation.objects.get(name="gone", node_group="", kind=OperationKind.DELETE)
    assert resp["Location"] == reverse("gpus:operation", args=["tenant-acme", op.pk])
    assert AuditEvent.objects.filter(operation=op, action="operation.delete").exists()
    # One change at a time: a group delete while the cluster's delete runs is refused.
    again = page.post(group_url)
    assert again.status_code == 200 and "still in progress" in again.content.decode()
    op = drive(op, DONE, seconds=90)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    assert read_app(dc, "gone") is None
    deletes = [e for e in dc.audit() if e["verb"] == "delete" and e["name"] == "gone"]
    assert deletes and deletes[-1]["user"] == "hikube-portal:alice" and deletes[-1]["allowed"]
    sync.sync_cluster(cluster.pk)
    assert not GpuWorkload.objects.filter(tenant=acme, name="gone").exists()


def test_a_retried_delete_deletes_again(cluster, dc, alice, acme):
    """A failed delete, tried again, deletes (it never re-applies the delete's bare manifests
    as if they were a change, which would leave the object there and say Done)."""
    make_group(alice, acme, cluster, "again", "gpu", new=True)
    sync.sync_cluster(cluster.pk)
    group = GpuWorkload.objects.get(tenant=acme, name="again", node_group="gpu")
    whole = services.submit_cluster_delete(alice, [group])
    Operation.objects.filter(pk=whole.pk).update(state=OperationState.FAILED)  # as if refused
    assert read_app(dc, "again") is not None
    retried = services.retry(alice, Operation.objects.get(pk=whole.pk))
    assert retried.kind == OperationKind.RETRY and retried.params["retry_kind"] == "delete"
    retried = drive(retried, DONE, seconds=90)
    assert retried.state == OperationState.SUCCEEDED, (retried.reason, retried.message)
    assert read_app(dc, "again") is None
