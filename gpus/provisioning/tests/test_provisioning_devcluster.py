"""Operations against devcluster over HTTP, driven step by step in-process (the Celery tasks call
the same functions): apply is idempotent, polling is batched, failures are named."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client

from devcluster.testing import run_devcluster
from gpus.catalog.models import GpuModel
from gpus.inventory import schemas, sync
from gpus.inventory.clusters import gateway_for
from gpus.inventory.models import Cluster
from gpus.kube import apps
from gpus.kube.operations import apply_manifest
from gpus.provisioning import capacity, engine, presenters, services
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import AuditEvent, GpuQuota, Operation
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"


@pytest.fixture
def catalog(db):
    seed_catalog()


@pytest.fixture(scope="module", params=["current", "legacy"])
def dc(request, tmp_path_factory):
    with run_devcluster(
        tmp_path_factory.mktemp(f"dc-{request.param}"), flavour=request.param, speed=200.0
    ) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme) -> Cluster:
    """Registered and synced after the tenant exists, so the snapshot has its workloads."""
    row = Cluster.objects.create(
        name=f"dc{dc.port}", kubeconfig=str(dc.kubeconfig), context="admin"
    )
    sync.sync_cluster(row.pk)
    schemas.refresh_served_schemas(row.pk)
    row.refresh_from_db()
    return row


def vm_request(name: str, gpu: str = H100, count: int = 1, **extra) -> apps.VmRequest:
    return apps.VmRequest(
        name=name,
        gpu_resource=gpu,
        gpu_count=count,
        instance_type="u1.2xlarge",
        instance_profile="ubuntu",
        image="ubuntu" if extra.pop("legacy", False) else "ubuntu-2404",
        disk_size_gi=50,
        storage_class="replicated",
        **extra,
    )


def drive(op: Operation, until: set[str], seconds: float = 60) -> Operation:
    """What the worker does: claim+apply, then batched polls until a state in ``until``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        op.refresh_from_db()
        if op.state in until:
            return op
        if op.state == OperationState.PENDING:
            claimed = engine.claim(op.pk)
            if claimed:
                engine.apply(claimed)
        else:
            engine.poll_cluster(op.cluster_id)
        time.sleep(0.1)
    raise AssertionError(f"operation stayed {op.state}: {op.reason} {op.message} {op.error}")


def image_for(cluster: Cluster) -> dict:
    return {"legacy": cluster.vm_kind == "VirtualMachine"}


def test_create_vm_runs_and_is_recorded(cluster, alice, acme, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        op = services.submit_vm(alice, acme, cluster, vm_request("web-1", **image_for(cluster)))
    assert len(callbacks) == 1  # the apply is enqueued on commit, once
    assert AuditEvent.objects.filter(operation=op, action="operation.create").count() == 1
    op = drive(op, {OperationState.SUCCEEDED, OperationState.FAILED})
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    assert op.applied_at and op.scheduled_at and op.running_at
    # The disk, then (once its app is Ready) the VM: v1.1's chart needs the disk's DataVolume.
    assert op.attempts == (1 if cluster.vm_kind == "VirtualMachine" else 2)
    # The VM exists once, and applying the same manifests again writes nothing.
    gateway = gateway_for(cluster)
    for doc in op.manifests:
        assert apply_manifest(gateway, doc).wrote is False


def test_second_active_operation_on_same_target_is_refused(cluster, alice, acme):
    services.submit_vm(alice, acme, cluster, vm_request("dup", **image_for(cluster)))
    with pytest.raises(services.OperationRefused) as exc:
        services.submit_vm(alice, acme, cluster, vm_request("dup", **image_for(cluster)))
    assert exc.value.field == "name"
    assert Operation.objects.filter(name="dup").count() == 1


def test_quota_counts_in_flight_operations(cluster, alice, acme):
    h100 = GpuModel.objects.get(resource_name=H100)
    # The shared devcluster may already hold H100s of acme (earlier tests): count from there.
    held = capacity.gpus_counted(acme, h100)
    GpuQuota.objects.create(tenant=acme, gpu_model=h100, limit=held + 3)
    services.submit_vm(alice, acme, cluster, vm_request("q1", count=2, **image_for(cluster)))
    with pytest.raises(services.OperationRefused) as exc:
        services.submit_vm(alice, acme, cluster, vm_request("q2", count=2, **image_for(cluster)))
    assert "allows 1 more NVIDIA H100" in exc.value.message
    assert not Operation.objects.filter(name="q2").exists()


@pytest.fixture
def fresh_cluster(dc, tmp_path) -> Cluster:
    """A devcluster of its own (same flavour): this test counts every free H100."""
    with run_devcluster(tmp_path / "dc", flavour=dc.flavour, speed=200.0) as own:
        row = Cluster.objects.create(name="fresh", kubeconfig=str(own.kubeconfig), context="admin")
        sync.sync_cluster(row.pk)
        schemas.refresh_served_schemas(row.pk)
        row.refresh_from_db()
        yield row


def test_over_capacity_refused_unless_queued_then_runs_when_capacity_frees(
    fresh_cluster, alice, acme
):
    cluster = fresh_cluster
    # Two VMs of 5 H100 land on the two 8-GPU servers: 6 free in all, at most 3 on one.
    blockers = []
    for i in range(2):
        op = services.submit_vm(
            alice, acme, cluster, vm_request(f"hold-{i}", count=5, **image_for(cluster))
        )
        blockers.append(drive(op, {OperationState.SUCCEEDED}))
    sync.sync_cluster(cluster.pk)
    with pytest.raises(services.OperationRefused) as exc:
        services.submit_vm(alice, acme, cluster, vm_request("big", count=4, **image_for(cluster)))
    assert "4 × NVIDIA H100 NVL requested: 6 free in all, but at most 3 on one server" in str(
        exc.value.message
    )
    queued = services.submit_vm(
        alice,
        acme,
        cluster,
        vm_request("big", count=4, queue_until_capacity=True, **image_for(cluster)),
    )
    queued = drive(queued, {OperationState.QUEUED})
    assert "H100" in presenters.describe(queued).explanation
    # Free one server: delete a blocker through a delete operation.
    delete = services.record(
        user=alice,
        tenant=acme,
        cluster=cluster,
        kind=OperationKind.DELETE,
        app_kind=blockers[0].app_kind,
        name=blockers[0].name,
        docs=blockers[0].manifests,
    )
    drive(delete, {OperationState.SUCCEEDED})
    queued = drive(queued, {OperationState.SUCCEEDED, OperationState.FAILED})
    assert queued.state == OperationState.SUCCEEDED


def test_spec_the_cluster_refuses_fails_with_the_field_named(cluster, alice, acme):
    docs = apps.vm_manifests(
        vm_request("bad", **image_for(cluster)), acme.namespace, cluster.vm_kind
    )
    docs[-1]["spec"]["runStrategy"] = "Sometimes"  # not in the chart's enum
    op = services.record(
        user=alice,
        tenant=acme,
        cluster=cluster,
        kind=OperationKind.CREATE,
        app_kind=cluster.vm_kind,
        name="bad",
        docs=docs,
    )
    op = drive(op, {OperationState.FAILED, OperationState.SUCCEEDED})
    assert op.state == OperationState.FAILED
    assert any("runStrategy" in c["field"] for c in op.causes), op.causes


def test_operation_page_shows_progress_and_stops_polling(cluster, alice, acme):
    op = services.submit_vm(alice, acme, cluster, vm_request("page-1", **image_for(cluster)))
    client = Client()
    client.force_login(alice)
    url = f"/tenants/{acme.namespace}/operations/{op.pk}/status/"
    assert client.get(url).status_code == 200
    drive(op, {OperationState.SUCCEEDED})
    response = client.get(url)
    assert response.status_code == 286
    assert b"op-done" in response.content


def test_stop_start_delete_a_vm_made_with_kubectl(cluster, dc, alice, acme):
    """Day-2 actions work on objects made outside the portal, from the snapshot row."""
    import yaml

    from gpus.inventory.models import GpuWorkload

    legacy = cluster.vm_kind == "VirtualMachine"
    docs = apps.vm_manifests(
        vm_request("outside", gpu=L40S, legacy=legacy), acme.namespace, cluster.vm_kind
    )
    for doc in docs:
        doc["metadata"].pop("labels", None)  # kubectl users do not set the portal's label
    dc.kubectl("apply", "-f", "-", context=acme.namespace, input=yaml.safe_dump_all(docs))
    for _ in range(50):
        sync.sync_cluster(cluster.pk)
        vm = GpuWorkload.objects.filter(tenant=acme, name="outside").first()
        if vm and vm.state == "running":
            break
        time.sleep(0.1)
    assert vm is not None and vm.state == "running"
    assert not Operation.objects.filter(name="outside").exists()  # made outside the portal

    stop = drive(services.submit_vm_action(alice, vm, OperationKind.STOP), {"succeeded"})
    assert stop.running_at is None
    # No portal label on it: the poller looked for it in its namespace, not in the label list.
    assert stop.baseline["labelled"] is False
    sync.sync_cluster(cluster.pk)
    vm = GpuWorkload.objects.get(tenant=acme, name="outside")
    assert vm.state == "stopped"
    start = drive(services.submit_vm_action(alice, vm, OperationKind.START), {"succeeded"})
    assert start.running_at is not None
    delete = drive(services.submit_vm_action(alice, vm, OperationKind.DELETE), {"succeeded"})
    assert [d["kind"] for d in delete.manifests] == [cluster.vm_kind]  # not its disk: not ours
    assert "portal_made" not in delete.params
    gateway = gateway_for(cluster)
    plural = "virtualmachines" if legacy else "vminstances"
    assert gateway.get(plural, acme.namespace, "outside") is None
    actions = list(
        AuditEvent.objects.filter(target__endswith="/outside").values_list("action", flat=True)
    )
    assert actions.count("operation.succeeded") == 3


A100 = "nvidia.com/GA100_A100_PCIE_80GB"


def test_resize_a_node_group_while_someone_else_changes_another(cluster, dc, alice, acme):
    """A merge patch of one group: a concurrent change of md0 is not lost; ready when the
    group's WorkloadMonitor shows minReplicas available workers."""
    import json

    from gpus.inventory.models import GpuWorkload

    group = GpuWorkload.objects.get(tenant=acme, name="ml", node_group="gpu")
    assert group.instances == 2
    request = apps.NodeGroupRequest(
        cluster_name="ml",
        group="gpu",
        min_replicas=3,
        max_replicas=4,
        instance_type="u1.8xlarge",  # as it is: no roll
        disk_size_gi=100,
        gpu_resource=A100,
        gpus_per_node=1,
    )
    op = services.submit_node_group(alice, acme, cluster, request, resize=True)
    # The quota counts what the group may grow to: maxReplicas x GPUs per worker (issue 20, 2a).
    assert op.kind == "resize" and op.gpu_count == 4
    assert op.params["changed"] == ["minReplicas"] and op.params["rolls"] is False
    claimed = engine.claim(op.pk)
    engine.apply(claimed)
    # Someone else edits md0 meanwhile (kubectl, another portal tab...).
    path = f"/apis/apps.cozystack.io/v1alpha1/namespaces/{acme.namespace}/kuberneteses/ml"
    for _attempt in range(10):  # v1.1 answers a PATCH on a stale cache with a 500: retry
        status, _, body = dc.request(
            "PATCH",
            path,
            body={"spec": {"nodeGroups": {"md0": {"maxReplicas": 7}}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if status != 500:
            break
        time.sleep(0.05)
    assert status == 200, body
    op = drive(op, {OperationState.SUCCEEDED, OperationState.FAILED}, seconds=90)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    spec = json.loads(dc.request("GET", path)[2])["spec"]
    assert spec["nodeGroups"]["md0"]["maxReplicas"] == 7
    assert spec["nodeGroups"]["gpu"]["minReplicas"] == 3
    assert op.observed["available"] >= 3


def _group_patches(dc, namespace: str, name: str) -> list[dict]:
    """The bodies of the merge patches devcluster received for one Kubernetes app."""
    return [
        e["body"]
        for e in dc.audit()
        if e["verb"] == "patch" and e["resource"].startswith("kuberneteses")
        and e["namespace"] == namespace and e["name"] == name and e["allowed"]
    ]  # fmt: skip


def _worker_templates(dc, namespace: str, cluster: str, group: str) -> set[str]:
    """The worker template hashes of a group's worker VMs (kubernetes-<c>-<g>-<tmpl>-<sfx>)."""
    path = f"/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines"
    import json

    prefix = f"kubernetes-{cluster}-{group}-"
    names = [i["metadata"]["name"] for i in json.loads(dc.request("GET", path)[2])["items"]]
    return {n[len(prefix) :].split("-")[0] for n in names if n.startswith(prefix)}


def test_a_resize_patches_only_the_changed_key_and_does_not_roll(cluster, dc, alice, acme):
    """Issue 16 item 2: the form's defaults (instance type, disk, roles) are never sent; only
    maxReplicas changes, so the worker template and its workers stay."""
    from gpus.inventory.models import GpuWorkload

    spec = GpuWorkload.objects.get(tenant=acme, name="ml", node_group="gpu").group_spec
    assert spec["instance_type"] == "u1.8xlarge" and spec["gpus"] == [A100]
    assert spec["disk"] == "100Gi" and spec["roles"] == []
    before = _worker_templates(dc, acme.namespace, "ml", "gpu")
    assert len(before) == 1
    sent = len(_group_patches(dc, acme.namespace, "ml"))
    high = spec["max_replicas"] + 2
    request = apps.NodeGroupRequest(
        "ml", "gpu", spec["min_replicas"], high, "u1.8xlarge", 100, A100, 1
    )
    op = services.submit_node_group(alice, acme, cluster, request, resize=True)
    assert op.params["changed"] == ["maxReplicas"] and not op.params["rolls"]
    assert op.gpu_count == high  # maxReplicas x 1, no surge
    op = drive(op, {OperationState.SUCCEEDED, OperationState.FAILED}, seconds=90)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    patches = _group_patches(dc, acme.namespace, "ml")[sent:]
    assert patches == [{"spec": {"nodeGroups": {"gpu": {"maxReplicas": high}}}}]
    assert _worker_templates(dc, acme.namespace, "ml", "gpu") == before
    # Nothing changed at all: refused, nothing recorded.
    sync.sync_cluster(cluster.pk)
    with pytest.raises(services.OperationRefused, match="Nothing to change"):
        services.submit_node_group(alice, acme, cluster, request, resize=True)


def test_an_instance_type_change_rolls_and_counts_the_surge(cluster, dc, alice, acme):
    """A new instance type is a new KubevirtMachineTemplate in v1.1: the patch carries that key
    alone, the quota counts the old workers' GPUs plus maxReplicas new ones, and devcluster
    replaces the workers (new template hash)."""
    from gpus.inventory.models import GpuWorkload

    live = GpuWorkload.objects.get(tenant=acme, name="ml", node_group="gpu")
    spec, held = live.group_spec, live.gpus_held
    assert held > 0
    before = _worker_templates(dc, acme.namespace, "ml", "gpu")
    sent = len(_group_patches(dc, acme.namespace, "ml"))
    model = GpuModel.objects.get(resource_name=A100)
    # At most 3 workers (earlier tests grew it): the surge must fit among the free A100s.
    low, high = min(spec["min_replicas"], 2), 3
    request = apps.NodeGroupRequest("ml", "gpu", low, high, "u1.2xlarge", 100, A100, 1)
    peak = held + high  # the old workers' GPUs + up to maxReplicas new ones beside them
    GpuQuota.objects.create(tenant=acme, gpu_model=model, limit=peak - 1)
    with pytest.raises(services.OperationRefused) as refused:
        services.submit_node_group(alice, acme, cluster, request, resize=True)
    assert refused.value.field == "max_replicas"
    GpuQuota.objects.filter(tenant=acme).update(limit=peak)
    op = services.submit_node_group(alice, acme, cluster, request, resize=True)
    changed = op.params["changed"]
    assert set(changed) - {"minReplicas", "maxReplicas"} == {"instanceType"}
    assert op.params["rolls"] is True and op.gpu_count == peak
    engine.apply(engine.claim(op.pk))
    patches = _group_patches(dc, acme.namespace, "ml")[sent:]
    assert len(patches) == 1
    sent_group = patches[0]["spec"]["nodeGroups"]["gpu"]
    assert set(sent_group) == set(changed) and sent_group["instanceType"] == "u1.2xlarge"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = _worker_templates(dc, acme.namespace, "ml", "gpu")
        if after - before:
            break
        time.sleep(0.2)
    assert after - before, "a new instance type makes a new worker template"


def test_add_a_gpu_node_group(cluster, alice, acme):
    request = apps.NodeGroupRequest(
        cluster_name="ml",
        group="infer",
        min_replicas=1,
        max_replicas=2,
        instance_type="u1.2xlarge",
        disk_size_gi=50,
        gpu_resource=L40S,
        gpus_per_node=1,
    )
    op = services.submit_node_group(alice, acme, cluster, request, resize=False)
    assert op.gpu_count == 2  # v1.1 starts every group at 2 workers
    disk_field = cluster.node_group_disk_field
    assert disk_field in op.manifests[0]["spec"]["nodeGroups"]["infer"]
    op = drive(op, {OperationState.SUCCEEDED, OperationState.FAILED}, seconds=90)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)


def test_create_a_cluster_with_a_gpu_node_group(cluster, alice, acme):
    request = apps.NodeGroupRequest(
        cluster_name="train",
        group="gpu",
        min_replicas=1,
        max_replicas=2,
        instance_type="u1.2xlarge",
        disk_size_gi=50,
        gpu_resource=L40S,
        gpus_per_node=1,
        new_cluster_version="v1.33",
    )
    op = services.submit_node_group(alice, acme, cluster, request, resize=False)
    spec = op.manifests[0]["spec"]
    assert spec["addons"]["gpuOperator"]["enabled"] is True and spec["version"] == "v1.33"
    op = drive(op, {OperationState.SUCCEEDED, OperationState.FAILED}, seconds=90)
    assert op.state == OperationState.SUCCEEDED, (op.reason, op.message)
    assert op.observed["available"] >= 1


def test_a_worker_vm_that_cannot_be_placed_is_named_within_the_grace(
    cluster, dc, alice, acme, settings, monkeypatch
):
    """Issue 16 item 5: the poller lists the group's worker VMs (by their Cluster API labels)
    and a worker in ErrorUnschedulable fails the operation after the VM grace with "No <model>
    free for worker i of n", not at the 30-minute timeout."""
    import types

    settings.OPERATION_UNSCHEDULABLE_GRACE_SECONDS = 0
    # The snapshot's fit check would refuse 8 A100 per worker: let it through, the cluster
    # is the one that cannot place it.
    fits = types.SimpleNamespace(worker_fits=True, total_fits=True)
    monkeypatch.setattr(services, "group_fit_for", lambda *a, **k: fits)
    request = apps.NodeGroupRequest("ml", "wide", 1, 2, "u1.8xlarge", 100, A100, 8)
    op = services.submit_node_group(alice, acme, cluster, request, resize=False)
    op = drive(op, {OperationState.FAILED, OperationState.SUCCEEDED}, seconds=60)
    assert op.state == OperationState.FAILED, (op.reason, op.message)
    assert op.reason == "ErrorUnschedulable"
    # The first worker the poll saw (1 or both of the 2 the chart starts with, by then).
    assert re.fullmatch(r"No NVIDIA A100 free for worker 1 of [12]\.", op.message), op.message
