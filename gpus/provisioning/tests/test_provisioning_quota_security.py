"""Quota and capacity bypasses and the write paths (issue 20, items 2, 6, 12, 13), on the database
the CI's first pass runs (PostgreSQL + Redis). Submissions racing each other and the inventory
sync (items 2c and 5) are in test_provisioning_concurrency.py (threads on PostgreSQL); a create on
an existing name (item 4) in test_provisioning_endings.py (devcluster)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload, Node, NodeGpu
from gpus.inventory.sync import store_snapshot
from gpus.kube import apps
from gpus.kube.records import Condition, FleetReading, KubernetesApp, NodeGroup
from gpus.provisioning import services
from gpus.provisioning.capacity import fit_for, gpus_counted
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import GpuQuota, Operation
from gpus.testing import node_info, offer_catalogue
from gpus.testing_ports import free_port

L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"


def make_cluster(free: dict[str, list[int]], name: str = "dc") -> Cluster:
    """A synced cluster whose servers have these GPUs free (one server per number)."""
    cluster = Cluster.objects.create(
        name=name, vm_kind="VMInstance", last_synced_at=timezone.now() - timedelta(minutes=1)
    )
    for resource, servers in free.items():
        model = GpuModel.objects.get(resource_name=resource)
        for i, n in enumerate(servers):
            node = Node.objects.create(
                cluster=cluster, name=f"{model.pk}-{i}", health="ready", gpu_installed=8,
                gpu_free=n,
            )  # fmt: skip
            NodeGpu.objects.create(node=node, gpu_model=model, installed=8, allocated=8 - n, free=n)
    return offer_catalogue(cluster)


def vm_request(name: str, resource: str = H100, count: int = 1) -> apps.VmRequest:
    return apps.VmRequest(
        name=name,
        gpu_resource=resource,
        gpu_count=count,
        instance_type="u1.2xlarge",
        instance_profile="ubuntu",
        image="ubuntu-2404",
        disk_size_gi=50,
        storage_class="replicated",
    )


def group_request(cluster_name: str, group: str, low: int, high: int, per: int = 1):
    return apps.NodeGroupRequest(
        cluster_name=cluster_name, group=group, min_replicas=low, max_replicas=high,
        instance_type="u1.2xlarge", disk_size_gi=100, gpu_resource=L40S, gpus_per_node=per,
    )  # fmt: skip


def quota(tenant, resource: str, limit: int) -> GpuModel:
    model = GpuModel.objects.get(resource_name=resource)
    GpuQuota.objects.create(tenant=tenant, gpu_model=model, limit=limit)
    return model


# --- 2a: a node group counts at what it may grow to ---------------------------------------


@pytest.mark.django_db
def test_a_node_group_counts_against_the_quota_at_its_maximum(alice, acme):
    cluster = make_cluster({L40S: [8, 8]})
    l40s = quota(acme, L40S, 4)
    # min 1, max 100: the autoscaler may grow it to 100 L40S without asking the portal.
    with pytest.raises(services.OperationRefused) as refused:
        services.submit_node_group(
            alice, acme, cluster, group_request("ml", "gpu", 1, 100), resize=False
        )
    assert refused.value.message == "Your quota allows 4 more NVIDIA L40S."
    assert not Operation.objects.exists()
    op = services.submit_node_group(
        alice, acme, cluster, group_request("ml", "gpu", 1, 4), resize=False
    )
    assert op.gpu_count == 4
    assert gpus_counted(acme, l40s) == 4


@pytest.mark.django_db
def test_the_snapshot_counts_a_group_at_its_max_replicas(alice, acme):
    """A group made outside the portal (or synced after its operation) with maxReplicas 8 and 1
    worker now holds 8 against the quota: the autoscaler may add 7 without asking."""
    cluster = make_cluster({L40S: [8]})
    l40s = quota(acme, L40S, 8)
    group = NodeGroup(
        name="gpu", gpus=(L40S,), min_replicas=1, max_replicas=8, instance_type="u1.2xlarge",
        roles=(), monitor_name="kubernetes-ml-gpu", worker_prefix="kubernetes-ml-gpu-",
    )  # fmt: skip
    ready = Condition("Ready", "True", "ReconciliationSucceeded", "")
    reading = FleetReading(
        nodes=[node_info("n1", {L40S: 8})],
        pods=[],
        vm_kind="VMInstance",
        disk_field="ephemeralStorage",
        kubernetes_apps=[
            KubernetesApp(acme.namespace, "ml", False, {"Ready": ready}, node_groups=(group,))
        ],
    )
    store_snapshot(cluster, reading, timezone.now())
    row = GpuWorkload.objects.get(name="ml", node_group="gpu")
    assert (row.instances, row.max_instances) == (1, 8)
    assert gpus_counted(acme, l40s) == 8
    with pytest.raises(services.OperationRefused, match="Your quota allows no more NVIDIA L40S"):
        services.submit_vm(alice, acme, cluster, vm_request("one", L40S))


# --- 2b: between an operation's success and the next sync ---------------------------------


@pytest.mark.django_db
def test_a_succeeded_operation_counts_until_the_sync_shows_it(alice, acme):
    cluster = make_cluster({H100: [8]})
    h100 = quota(acme, H100, 2)
    first = services.submit_vm(alice, acme, cluster, vm_request("first", count=2))
    Operation.objects.filter(pk=first.pk).update(
        state=OperationState.SUCCEEDED, finished_at=timezone.now()
    )
    # Done, and the last snapshot was read before: the quota still counts its 2 H100.
    assert gpus_counted(acme, h100) == 2
    with pytest.raises(services.OperationRefused, match="Your quota allows no more NVIDIA H100"):
        services.submit_vm(alice, acme, cluster, vm_request("second"))
    # The next sync shows the VM: counted once, from the snapshot.
    Cluster.objects.filter(pk=cluster.pk).update(last_synced_at=timezone.now())
    GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind=WorkloadKind.VM, app_kind="VMInstance", name="first",
        gpu_model=h100, gpus_per_instance=2, state=ResourceState.RUNNING,
    )  # fmt: skip
    assert gpus_counted(acme, h100) == 2
    GpuQuota.objects.filter(tenant=acme).update(limit=3)
    services.submit_vm(alice, acme, cluster, vm_request("second"))
    assert gpus_counted(acme, h100) == 3


@pytest.mark.django_db
def test_a_succeeded_resize_replaces_what_the_snapshot_shows_until_the_sync(alice, acme):
    cluster = make_cluster({L40S: [8]})
    l40s = quota(acme, L40S, 6)
    GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind=WorkloadKind.NODE_GROUP, app_kind="Kubernetes",
        name="ml", node_group="gpu", gpu_model=l40s, gpus_per_instance=1, instances=2,
        max_instances=2, state=ResourceState.RUNNING,
    )  # fmt: skip
    resize = services.submit_node_group(
        alice, acme, cluster, group_request("ml", "gpu", 2, 5), resize=True
    )
    Operation.objects.filter(pk=resize.pk).update(
        state=OperationState.SUCCEEDED, finished_at=timezone.now()
    )
    assert gpus_counted(acme, l40s) == 5  # not 2 (the old snapshot), nor 7 (both)
    # A stop or a delete that succeeded frees nothing before the sync says so.
    Operation.objects.create(
        cluster=cluster, tenant=acme, actor_name="alice", kind=OperationKind.STOP,
        namespace=acme.namespace, app_kind="Kubernetes", name="ml", node_group="gpu",
        state=OperationState.SUCCEEDED, finished_at=timezone.now(),
    )  # fmt: skip
    assert gpus_counted(acme, l40s) == 5


# --- 2c: the free GPUs count what is in flight (the race itself: test_provisioning_concurrency)


@pytest.mark.django_db
def test_free_gpus_count_operations_in_flight_but_not_those_waiting_for_capacity(alice, acme):
    cluster = make_cluster({H100: [2]})
    first = services.submit_vm(alice, acme, cluster, vm_request("first", count=2))
    with pytest.raises(services.OperationRefused, match="only 0 free right now"):
        services.submit_vm(alice, acme, cluster, vm_request("second"))
    # Once the scheduler says it cannot place it (waiting for capacity, or in its grace period),
    # it takes no free GPU: it waits because none fits it, and must not hold back what fits.
    Operation.objects.filter(pk=first.pk).update(
        state=OperationState.QUEUED, unschedulable_since=timezone.now()
    )
    services.submit_vm(alice, acme, cluster, vm_request("second"))
    # Once running, the snapshot shows what it holds: counted from there, not twice.
    GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind=WorkloadKind.VM, app_kind="VMInstance", name="second",
        gpu_model=GpuModel.objects.get(resource_name=H100), gpus_per_instance=1, gpus_held=1,
        state=ResourceState.RUNNING,
    )  # fmt: skip
    NodeGpu.objects.filter(gpu_model__resource_name=H100).update(free=1, allocated=7)
    assert fit_for(GpuModel.objects.get(resource_name=H100), 1, cluster.pk).free_total == 1


# --- 12: a node group over the quota or the free GPUs: a plain refusal, and live checks -----


def group_form(**extra) -> dict:
    data = {
        "cluster_name": "ml", "group": "train", "min_replicas": "2", "max_replicas": "4",
        "instance_type": "u1.2xlarge", "disk_size_gi": "100", "gpu_model": L40S,
        "gpus_per_node": "1", "confirm": "1",
    }  # fmt: skip
    return {**data, **extra}


@pytest.fixture
def tenant_cluster(acme) -> Cluster:
    """acme's Kubernetes cluster "ml" (one L40S group), on servers with 4 and 1 L40S free."""
    cluster = make_cluster({L40S: [4, 1]})
    GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind=WorkloadKind.NODE_GROUP, app_kind="Kubernetes",
        name="ml", node_group="gpu", gpu_model=GpuModel.objects.get(resource_name=L40S),
        gpus_per_instance=1, instances=2, max_instances=2, gpus_held=2,
        state=ResourceState.RUNNING,
        # As the sync reads it: a resize compares with it and sends only what differs.
        group_spec={"min_replicas": 2, "max_replicas": 2, "instance_type": "u1.2xlarge",
                    "disk": "100Gi", "roles": [], "gpus": [L40S]},
    )  # fmt: skip
    return cluster


def test_a_node_group_over_the_quota_is_refused_next_to_its_maximum(
    alice_client, acme, tenant_cluster
):
    quota(acme, L40S, 4)  # the group "gpu" holds 2: 2 more
    url = f"/tenants/{acme.namespace}/kubernetes/nodegroups/new/"
    response = alice_client.post(url, group_form(max_replicas="3"))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert errors["max_replicas"] == ["Your quota allows 2 more NVIDIA L40S."]
    assert "Your quota allows 2 more NVIDIA L40S." in response.content.decode()
    assert not Operation.objects.exists()


def test_a_node_group_must_fit_the_free_gpus_per_worker_and_in_all(
    alice_client, acme, tenant_cluster
):
    url = f"/tenants/{acme.namespace}/kubernetes/nodegroups/new/"
    # 20 workers of 1 L40S with 5 free.
    response = alice_client.post(url, group_form(min_replicas="20", max_replicas="20"))
    assert response.context["form"].errors["min_replicas"] == [
        "20 workers × 1 NVIDIA L40S need 20 GPUs: only 5 free right now."
    ]
    # 6 L40S per worker when a server holds at most 4 free.
    response = alice_client.post(url, group_form(gpus_per_node="6"))
    assert response.context["form"].errors["gpus_per_node"] == [
        "6 × NVIDIA L40S per worker, but at most 4 free on one server (a worker's GPUs are all "
        "on one server)."
    ]
    assert not Operation.objects.exists()
    # Within what is free: recorded. A resize counts what the group holds as its own:
    # 2 workers held, 5 free, so 7 workers of 1 fit.
    assert alice_client.post(url, group_form(max_replicas="2")).status_code == 302
    resize = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/"
    # The new group "train" (2 workers, in flight) takes 2 of the 5 free: 3 left, + 2 held.
    response = alice_client.post(resize, group_form(min_replicas="6", max_replicas="6"))
    assert response.context["form"].errors["min_replicas"] == [
        "6 workers × 1 NVIDIA L40S need 4 GPUs: only 3 free right now."
    ]
    assert (
        alice_client.post(resize, group_form(min_replicas="5", max_replicas="5")).status_code == 302
    )
    assert Operation.objects.count() == 2


def test_a_second_change_to_a_group_in_flight_is_refused_next_to_it(
    alice_client, acme, tenant_cluster
):
    url = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/"
    assert alice_client.post(url, group_form(group="gpu")).status_code == 302
    response = alice_client.post(url, group_form(group="gpu", max_replicas="3"))
    assert response.status_code == 200
    assert response.context["form"].errors["group"] == [
        "Another change to ml is still in progress; wait for it to finish."
    ]
    assert Operation.objects.count() == 1


def test_the_node_group_form_checks_fit_and_quota_as_the_user_types(
    alice_client, acme, tenant_cluster
):
    quota(acme, L40S, 10)
    url = f"/tenants/{acme.namespace}/kubernetes/nodegroups/new/check/"
    html = alice_client.post(url, group_form(gpus_per_node="6")).content.decode()
    assert "6 × NVIDIA L40S per worker, but at most 4 free on one server" in html
    assert 'id="fit" class="alert alert-bad"' in html
    html = alice_client.post(url, group_form(max_replicas="9")).content.decode()
    assert "2 workers × 1 NVIDIA L40S: 2 more GPUs needed, 5 free in all" in html
    assert 'id="quota" class="alert alert-bad"' in html  # 9 > 8 left
    assert "A group counts at its maximum workers" in html
    html = alice_client.post(url, group_form(min_replicas="5", max_replicas="2")).content.decode()
    assert (
        'id="err-max_replicas" hx-swap-oob="true"><p class="field-error" role="alert">At least'
        in html
    )
    assert not Operation.objects.exists()


# --- 6: a limit per tenant, and one tenant's flood does not hold the queue -------------------


def test_a_tenant_past_its_rate_is_told_when_to_try_again(
    alice_client, alice, acme, bob, globex, tenant_cluster, settings
):
    settings.OPERATION_RATE_PER_MINUTE = 2
    for name in ("a", "b"):
        services.submit_vm(alice, acme, tenant_cluster, vm_request(name, L40S))
    url = f"/tenants/{acme.namespace}/kubernetes/nodegroups/new/"
    response = alice_client.post(url, group_form())
    assert response.status_code == 200
    [error] = response.context["form"].non_field_errors()
    found = re.fullmatch(r"Too many requests for this tenant: try again in (\d+) s\.", error)
    assert found and 1 <= int(found[1]) <= 60, error
    assert error in response.content.decode()
    assert Operation.objects.count() == 2
    # Another tenant has a budget of its own (the counts are in the shared cache, per tenant).
    services.submit_vm(bob, globex, tenant_cluster, vm_request("g1", L40S))
    assert Operation.objects.count() == 3


def test_a_tenant_with_many_operations_waiting_waits_and_the_others_do_not(
    alice, acme, bob, globex, tenant_cluster, settings
):
    settings.OPERATION_TENANT_MAX_WAITING = 3
    for i in range(3):
        services.submit_vm(alice, acme, tenant_cluster, vm_request(f"w{i}", L40S))
    with pytest.raises(services.OperationRefused) as refused:
        services.submit_vm(alice, acme, tenant_cluster, vm_request("w3", L40S))
    assert refused.value.message == (
        "Too many requests for this tenant: 3 operations are still waiting to be sent to the "
        "cluster. Try again in a minute."
    )
    assert refused.value.retry_after == 60
    # bob's operation does not queue behind alice's flood: at most 3 of hers are waiting.
    services.submit_vm(bob, globex, tenant_cluster, vm_request("g0", L40S))
    # Once one of hers is applied (the poller follows it), she may submit again.
    Operation.objects.filter(name="w0").update(state=OperationState.PROVISIONING)
    services.submit_vm(alice, acme, tenant_cluster, vm_request("w3", L40S))
    assert Operation.objects.filter(tenant=acme).count() == 4


# --- 13: Redis down: recorded and said so, and pages that count still answer -----------------


@pytest.fixture
def redis_down(monkeypatch, settings):
    """The broker and the cache pointed at a port where nothing listens."""
    from celery import current_app

    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    # broker_write_url first: unset, it reads broker_url, and monkeypatch must save the real one.
    monkeypatch.setattr(current_app.conf, "broker_write_url", nobody)
    monkeypatch.setattr(current_app.conf, "broker_url", nobody)
    monkeypatch.setitem(current_app.conf, "broker_transport", None)
    # The connection pools were made for the real broker: make them again for this one.
    monkeypatch.setattr(current_app, "_pool", None)
    monkeypatch.setattr(current_app.amqp, "_producer_pool", None)
    backend = settings.CACHES["default"]["BACKEND"]
    assert "Redis" in backend, "the first pass runs on Redis"
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": nobody}}
    return nobody


@pytest.mark.once  # about Redis: the embedded pass has none
@pytest.mark.django_db(transaction=True)  # the send runs at the commit, inside the request
def test_with_redis_down_a_submit_is_recorded_and_says_it_will_run_later(
    seeded_catalog, alice_client, acme, tenant_cluster, redis_down, monkeypatch
):
    url = f"/tenants/{acme.namespace}/kubernetes/nodegroups/new/"
    response = alice_client.post(url, group_form(), follow=True)
    assert response.status_code == 200
    op = Operation.objects.get()
    assert response.redirect_chain == [(f"/tenants/{acme.namespace}/operations/{op.pk}/", 302)]
    assert op.state == OperationState.PENDING
    assert (
        "Recorded. The task queue cannot be reached right now: this operation will run when the "
        "queue is back, by itself." in response.content.decode()
    )
    # Once the queue is back, the reconciler (beat) sends it.
    from gpus.provisioning import engine
    from gpus.web import queue

    sent: list[tuple] = []
    monkeypatch.setattr(queue, "enqueue", lambda *args: sent.append(args))
    Operation.objects.filter(pk=op.pk).update(updated_at=timezone.now() - timedelta(minutes=1))
    assert engine.reconcile() == [op.pk]
    assert sent == [("provisioning.apply_operation", op.pk)]


@pytest.mark.once  # about Redis: the embedded pass has none
@pytest.mark.django_db(transaction=True)
def test_with_redis_down_an_api_create_is_recorded_and_says_so(
    seeded_catalog, alice, acme, tenant_cluster, redis_down
):
    from django.test import Client

    from gpus.accounts.services import create_token

    token = create_token(alice, "script")[1]
    response = Client().post(
        f"/api/v1/tenants/{acme.namespace}/vms",
        data=json.dumps({"name": "late", "gpu_model": L40S, "gpu_count": 1}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 202, response.content
    assert response.json()["state"] == "pending"
    assert response.json()["message"].startswith("Recorded. The task queue cannot be reached")
    assert Operation.objects.get().name == "late"


@pytest.mark.once  # about Redis: the embedded pass has none
def test_with_redis_down_the_admin_node_list_still_answers(
    admin_client_, tenant_cluster, redis_down
):
    response = admin_client_.get("/inventory/nodes/")
    assert response.status_code == 200
    page = response.content.decode()
    assert Node.objects.count() == 2
    assert all(node.name in page for node in Node.objects.all())


def test_a_resize_that_rolls_the_workers_says_so_and_counts_the_surge(
    alice_client, acme, tenant_cluster
):
    """Issue 16 item 2: a new instance type replaces every worker (v1.1 cluster.yaml hashes the
    whole worker template; maxSurge = maxReplicas): the page says so before it is sent, and the
    new workers come up beside the old ones, so the 2 GPUs the group holds are not free."""
    resize = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/"
    same = {"group": "gpu", "max_replicas": "2", "confirm": ""}
    # Only the maximum: no warning, a patch of maxReplicas alone.
    response = alice_client.post(resize, group_form(**{**same, "max_replicas": "3"}))
    page = response.content.decode()
    assert "Every worker is replaced" not in page
    assert "maxReplicas: 3" in page and "instanceType" not in page and "roles" not in page
    # A new instance type: the warning, with what the surge needs.
    response = alice_client.post(resize, group_form(**same, instance_type="u1.8xlarge"))
    page = response.content.decode()
    assert "Every worker is replaced" in page
    assert "needs up to 2 spare NVIDIA L40S while it runs" in page
    assert "instanceType: u1.8xlarge" in page and "maxReplicas" not in page
    # 6 new workers beside the old: 6 needed of the 5 free (the held 2 do not count as free).
    response = alice_client.post(
        resize,
        group_form(group="gpu", max_replicas="6", instance_type="u1.8xlarge"),
    )
    assert response.context["form"].errors["min_replicas"] == [
        "6 workers × 1 NVIDIA L40S need 6 GPUs: only 5 free right now."
    ]
    # Without the roll the same maximum fits (the group's own 2 count as its own).
    assert alice_client.post(resize, group_form(group="gpu", max_replicas="6")).status_code == 302
    op = Operation.objects.get()
    assert op.params["changed"] == ["maxReplicas"] and op.manifests[0]["spec"] == {
        "nodeGroups": {"gpu": {"maxReplicas": 6}}
    }
