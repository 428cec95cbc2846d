"""Connecting to what you rent (#20 item 20), against devcluster over HTTP: a VM's addresses and
SSH command, a cluster's admin kubeconfig, read by a task impersonating the person (no request
calls the cluster; the portal's own account cannot read the Secret)."""

from __future__ import annotations

import time

import pytest
import yaml
from django.test import Client

from devcluster.testing import run_devcluster
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.kube.errors import ForbiddenError
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def eager_tasks():
    """Tasks run in the request (the worker's code, without a worker process)."""
    import gpus.provisioning.tasks  # noqa: F401 (registers the tasks, as the worker does)
    from hikube_portal.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def demo(tmp_path, register, acme, globex, eager_tasks):
    seed_catalog()
    with run_devcluster(tmp_path / "dc", speed=200.0) as dc:
        yield register(dc)


def _connect(client: Client, url: str, seconds: float = 30) -> tuple[int, str]:
    """Ask, then read the answer as the page's polling does, until it is not pending."""
    client.post(url)
    deadline = time.monotonic() + seconds
    while True:
        response = client.get(url)
        html = response.content.decode()
        if response.status_code == 286 or time.monotonic() > deadline:
            return response.status_code, html
        client.post(url, {"again": "1"})  # not there yet (installing): ask again
        time.sleep(0.2)


def test_vm_addresses_ssh_command_and_kubeconfig_read_as_the_person(
    demo, alice_client, bob_client, carol
):
    from gpus.inventory.clusters import gateway_for

    vm = GpuWorkload.objects.get(tenant__namespace="tenant-acme", name="gpu-ws")
    url = f"/tenants/tenant-acme/gpus/{vm.pk}/connect/"
    # The page itself asks nothing of the cluster: it loads the answer with htmx.
    page = alice_client.get(f"/tenants/tenant-acme/gpus/{vm.pk}/").content.decode()
    assert f'hx-post="{url}"' in page and 'hx-trigger="load"' in page
    status, html = _connect(alice_client, url)
    assert status == 286 and 'id="connect-vm"' in html, html
    assert "198.51.100." in html and "22, 8888" in html
    # gpu-ws was not made by the portal: its user is a placeholder, said to be one.
    assert 'id="ssh-cmd">ssh USER@198.51.100.' in html and "replace USER" in html
    alice_client.post(url, {"again": "1"}, HTTP_ACCEPT_LANGUAGE="fr")
    html = alice_client.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert 'id="ssh-cmd">ssh USER@198.51.100.' in html and "remplacez USER" in html
    assert "vm-instance-gpu-ws.tenant-acme.svc" in html

    group = GpuWorkload.objects.get(tenant__namespace="tenant-acme", name="ml", node_group="gpu")
    url = f"/tenants/tenant-acme/gpus/{group.pk}/connect/"
    status, html = _connect(alice_client, url)
    assert status == 286 and 'id="kubeconfig-download"' in html, html
    download = alice_client.get(f"/tenants/tenant-acme/gpus/{group.pk}/kubeconfig/")
    assert download.status_code == 200
    assert download["Content-Disposition"] == 'attachment; filename="ml.kubeconfig"'
    assert download["Cache-Control"] == "no-store"
    config = yaml.safe_load(download.content)
    assert config["kind"] == "Config" and config["current-context"]
    # Handed over once: the credential does not stay in the portal.
    again = alice_client.get(f"/tenants/tenant-acme/gpus/{group.pk}/kubeconfig/")
    assert again.status_code == 404

    # A viewer's groups give the "view" level, which the chart's Role does not cover: the
    # cluster refuses, and the portal says so.
    viewer = Client()
    viewer.force_login(carol)
    status, html = _connect(viewer, url, seconds=5)
    assert status == 286 and 'id="connect-refused"' in html
    assert viewer.get(f"/tenants/tenant-acme/gpus/{group.pk}/kubeconfig/").status_code == 404
    # Another tenant: 404, nothing asked.
    assert bob_client.post(url).status_code == 404
    assert bob_client.get(f"/tenants/tenant-acme/gpus/{group.pk}/kubeconfig/").status_code == 404
    # The portal's own account cannot read the Secret: only the person can.
    portal = Cluster(name="as-portal", kubeconfig=demo.kubeconfig, context="portal")
    gateway = gateway_for(portal)
    with pytest.raises(ForbiddenError):
        gateway.session.call_json(
            gateway.session.core().read_namespaced_secret,
            "kubernetes-ml-admin-kubeconfig",
            "tenant-acme",
        )


def test_a_whole_cluster_is_deleted_in_the_cluster(demo, alice):
    """The delete the cluster page records runs like a VM's: as alice, until the app is gone."""
    from gpus.inventory.selectors import get_kubernetes_cluster_for_user
    from gpus.provisioning import services
    from gpus.provisioning.tests.test_provisioning_devcluster import drive

    groups = get_kubernetes_cluster_for_user(alice, "tenant-acme", "ml")
    assert {g.node_group for g in groups} >= {"md0", "gpu"}
    op = services.submit_cluster_delete(alice, groups)
    op = drive(op, {"succeeded", "failed"}, seconds=60)
    assert op.state == "succeeded", (op.reason, op.message)
    from gpus.inventory.clusters import gateway_for

    assert gateway_for(demo).get("kuberneteses", "tenant-acme", "ml") is None


def test_one_node_group_is_removed_and_the_cluster_stays(demo, alice):
    from gpus.inventory.clusters import gateway_for
    from gpus.provisioning import services
    from gpus.provisioning.tests.test_provisioning_devcluster import drive

    group = GpuWorkload.objects.get(tenant__namespace="tenant-acme", name="ml", node_group="gpu")
    op = services.submit_node_group_delete(alice, group)
    op = drive(op, {"succeeded", "failed"}, seconds=60)
    assert op.state == "succeeded", (op.reason, op.message)
    app = gateway_for(demo).get("kuberneteses", "tenant-acme", "ml")
    assert app is not None and "gpu" not in app["spec"]["nodeGroups"]
    assert "md0" in app["spec"]["nodeGroups"]
