"""Operations that used to end wrong (issue 20 items 4, 9-11, issue 16 items 1 and 5), against
devcluster over HTTP with the real client, driven step by step as the Celery tasks do."""

from __future__ import annotations

import time

import pytest

from devcluster.testing import run_devcluster
from gpus.inventory import sync
from gpus.inventory.clusters import gateway_for
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.kube import apps
from gpus.provisioning import engine, services
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import Operation
from gpus.provisioning.tests.test_provisioning_devcluster import drive
from gpus.testing import seed_catalog

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

H100 = "nvidia.com/H100_94GB"
L40S = "nvidia.com/AD102GL_L40S"
ENDED = {OperationState.SUCCEEDED, OperationState.FAILED}


@pytest.fixture
def catalog(db):
    seed_catalog()


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    with run_devcluster(tmp_path_factory.mktemp("dc"), flavour="current", speed=200.0) as cluster:
        yield cluster


@pytest.fixture
def cluster(dc, acme, register) -> Cluster:
    return register(dc, f"dc{dc.port}")


def vm_request(name: str, gpu: str = H100, count: int = 1, **extra) -> apps.VmRequest:
    return apps.VmRequest(
        name=name,
        gpu_resource=gpu,
        gpu_count=count,
        instance_type="u1.2xlarge",
        instance_profile="ubuntu",
        image="ubuntu-2404",
        disk_size_gi=20,
        storage_class="replicated",
        **extra,
    )


def apply_once(op: Operation) -> Operation:
    claimed = engine.claim(op.pk)
    assert claimed is not None
    engine.apply(claimed)
    op.refresh_from_db()
    return op


def snapshot_row(cluster: Cluster, tenant, name: str, state: str) -> GpuWorkload:
    for _ in range(100):
        sync.sync_cluster(cluster.pk)
        row = GpuWorkload.objects.filter(tenant=tenant, name=name, node_group="").first()
        if row and row.state == state:
            return row
        time.sleep(0.1)
    raise AssertionError(f"{name} never read {state} in the snapshot: {row and row.state}")


# --- #20.11: an action that is already true ends at once ---------------------------------


def test_start_on_a_running_vm_and_stop_on_a_stopped_one_end_at_once(cluster, alice, acme):
    created = drive(services.submit_vm(alice, acme, cluster, vm_request("noop")), ENDED)
    assert created.state == OperationState.SUCCEEDED, (created.reason, created.message)
    row = snapshot_row(cluster, acme, "noop", "running")

    start = apply_once(services.submit_vm_action(alice, row, OperationKind.START))
    # No Helm revision will come for a write that was not made: done now, not in 15 minutes.
    assert start.state == OperationState.SUCCEEDED, (start.state, start.reason, start.message)
    assert "already running" in start.message

    stop = drive(services.submit_vm_action(alice, row, OperationKind.STOP), ENDED)
    assert stop.state == OperationState.SUCCEEDED, (stop.reason, stop.message)
    assert stop.baseline["labelled"] is True  # made by the portal: it carries its label
    assert stop.reason == ""  # a real stop is a change
    row = snapshot_row(cluster, acme, "noop", "stopped")
    again = apply_once(services.submit_vm_action(alice, row, OperationKind.STOP))
    assert again.state == OperationState.SUCCEEDED, (again.state, again.reason, again.message)
    assert "already stopped" in again.message
    # The VM is free for the next change at once (delete is not refused).
    services.submit_vm_action(alice, row, OperationKind.DELETE)


def test_the_worker_writes_an_operations_message_in_the_askers_language(cluster, alice, acme):
    """The worker has no request: it writes in the language the operation was asked in."""
    from django.utils import translation

    from gpus.provisioning.tasks import apply_operation

    created = drive(services.submit_vm(alice, acme, cluster, vm_request("noop-fr")), ENDED)
    assert created.state == OperationState.SUCCEEDED, (created.reason, created.message)
    row = snapshot_row(cluster, acme, "noop-fr", "running")
    with translation.override("fr"):
        start = services.submit_vm_action(alice, row, OperationKind.START)
    assert translation.get_language() != "fr"  # the worker's own language
    apply_operation.apply(args=[start.pk])
    start.refresh_from_db()
    assert start.state == OperationState.SUCCEEDED
    assert start.message == "Elle était déjà en marche\u00a0: rien n\u2019a été modifié."


# --- #20.9: "Try again" re-checks that its target is still what it was -------------------


def failed_start(alice, row: GpuWorkload) -> Operation:
    """A start that failed (its VM never came up in time, say)."""
    op = services.submit_vm_action(alice, row, OperationKind.START)
    engine.fail(op, "Timeout", "Not ready after 15 minutes.")
    return op


def test_retry_of_an_old_start_after_the_vm_was_deleted_is_refused(cluster, alice, acme):
    created = drive(services.submit_vm(alice, acme, cluster, vm_request("gone-1")), ENDED)
    assert created.state == OperationState.SUCCEEDED
    row = snapshot_row(cluster, acme, "gone-1", "running")
    old = failed_start(alice, row)
    deleted = drive(services.submit_vm_action(alice, row, OperationKind.DELETE), ENDED)
    assert deleted.state == OperationState.SUCCEEDED
    # The portal made it: the poller saw it go in the cluster-wide list of the portal's label.
    assert deleted.params["portal_made"] is True

    with pytest.raises(services.OperationRefused) as exc:
        services.retry(alice, old)
    assert "gone-1 was deleted after this operation failed" in exc.value.message
    # And the old create, tried again, would bring it back too: refused the same way.
    engine.fail(created, "Timeout", "pretend it had failed")
    with pytest.raises(services.OperationRefused):
        services.retry(alice, created)
    assert not Operation.objects.filter(params__retry_of__in=[old.pk, created.pk]).exists()


def test_retry_of_a_start_whose_vm_went_outside_the_portal_creates_nothing(
    cluster, dc, alice, acme
):
    created = drive(services.submit_vm(alice, acme, cluster, vm_request("gone-2")), ENDED)
    assert created.state == OperationState.SUCCEEDED
    row = snapshot_row(cluster, acme, "gone-2", "running")
    old = failed_start(alice, row)
    # Deleted with kubectl; the snapshot has not seen it go yet, so the retry is recorded...
    path = f"/apis/apps.cozystack.io/v1alpha1/namespaces/{acme.namespace}/vminstances/gone-2"
    assert dc.request("DELETE", path)[0] == 200
    gateway = gateway_for(cluster)
    for _ in range(200):
        if gateway.get("vminstances", acme.namespace, "gone-2") is None:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("gone-2 was never deleted")
    again = drive(services.retry(alice, old), ENDED)
    # ...but its apply finds nothing to start, says so, and creates nothing.
    assert again.state == OperationState.FAILED
    assert "no longer in the cluster" in again.message
    assert gateway.get("vminstances", acme.namespace, "gone-2") is None
    # Once the snapshot knows, the retry is refused before anything is recorded.
    snapshot_gone(cluster, acme, "gone-2")
    with pytest.raises(services.OperationRefused) as exc:
        services.retry(alice, old)
    assert "gone-2 is no longer in the cluster" in exc.value.message


def snapshot_gone(cluster: Cluster, tenant, name: str) -> None:
    for _ in range(100):
        sync.sync_cluster(cluster.pk)
        if not GpuWorkload.objects.filter(tenant=tenant, name=name, node_group="").exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} stayed in the snapshot")


# --- #20.10: a failed create cleans up what it made ----------------------------------------


def gone_from_cluster(gateway, plural: str, namespace: str, name: str) -> bool:
    """Gone, or on its way (Helm uninstall waits for the VM to stop)."""
    for _ in range(300):
        obj = gateway.get(plural, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return True
        time.sleep(0.05)
    return False


def test_an_unschedulable_create_that_fails_removes_its_vm_and_disk(cluster, alice, acme, settings):
    settings.OPERATION_UNSCHEDULABLE_GRACE_SECONDS = 0
    request = vm_request("never-fits", count=9)  # no server holds 9 H100
    docs = apps.vm_manifests(request, acme.namespace, cluster.vm_kind)
    op = services.record(
        user=alice,
        tenant=acme,
        cluster=cluster,
        kind=OperationKind.CREATE,
        app_kind=cluster.vm_kind,
        name="never-fits",
        docs=docs,
        params=request.as_params(),
        check_capacity=False,
    )
    op = drive(op, ENDED)
    assert op.state == OperationState.FAILED
    assert op.reason == "ErrorUnschedulable"
    assert "removes the VM and the disk" in op.message
    assert engine.clean_up(op.pk) == "done"  # what the task enqueued on commit runs
    gateway = gateway_for(cluster)
    assert gone_from_cluster(gateway, "vminstances", acme.namespace, "never-fits")
    disk = next(d["metadata"]["name"] for d in docs if d["kind"] == apps.VM_DISK)
    assert gone_from_cluster(gateway, "vmdisks", acme.namespace, disk)
    op.refresh_from_db()
    assert op.params["cleanup"] == "done"
    assert engine.clean_up(op.pk) == "nothing to do"  # twice is harmless


def test_clean_up_spares_what_a_later_retry_made(cluster, alice, acme, settings):
    settings.OPERATION_UNSCHEDULABLE_GRACE_SECONDS = 0
    request = vm_request("fits-later", count=9)
    docs = apps.vm_manifests(request, acme.namespace, cluster.vm_kind)
    op = services.record(
        user=alice,
        tenant=acme,
        cluster=cluster,
        kind=OperationKind.CREATE,
        app_kind=cluster.vm_kind,
        name="fits-later",
        docs=docs,
        check_capacity=False,
    )
    op = drive(op, ENDED)
    assert op.state == OperationState.FAILED
    again = services.retry(alice, op)  # before the clean-up task ran
    assert engine.clean_up(op.pk) == "superseded"
    assert gateway_for(cluster).get("vminstances", acme.namespace, "fits-later") is not None
    # The retry finds what the create it retries made: its own, not an existing object.
    again = drive(again, ENDED)
    assert again.reason != "AlreadyExists", again.message


# --- #20.4: a create never changes an existing object ---------------------------------------


def test_a_create_on_a_name_made_since_the_sync_is_refused_at_submit(cluster, alice, acme):
    op = drive(services.submit_vm(alice, acme, cluster, vm_request("twin")), ENDED)
    assert op.state == OperationState.SUCCEEDED, op.message
    # Done, and the snapshot has not seen it yet: the name is taken all the same.
    with pytest.raises(services.OperationRefused) as refused:
        services.submit_vm(alice, acme, cluster, vm_request("twin", count=2))
    assert (refused.value.field, refused.value.message) == (
        "name",
        "A VM with this name already exists.",
    )
    assert Operation.objects.filter(name="twin").count() == 1


def test_the_engine_creates_only_and_says_so(cluster, alice, acme):
    """Past the submit's checks (a VM made with kubectl, which no snapshot shows yet), the
    apply finds it and fails in plain words, changing nothing: not its GPUs, disk or
    cloud-init, and the failure's clean-up does not remove it either."""
    gateway = gateway_for(cluster)
    first = drive(services.submit_vm(alice, acme, cluster, vm_request("kept")), ENDED)
    assert first.state == OperationState.SUCCEEDED
    vm_before = gateway.get("vminstances", acme.namespace, "kept")
    bigger = vm_request("kept", count=2, cloud_init="#cloud-config\nruncmd: [reboot]\n")
    docs = apps.vm_manifests(bigger, acme.namespace, cluster.vm_kind)
    op = services.record(
        user=alice, tenant=acme, cluster=cluster, kind=OperationKind.CREATE,
        app_kind=cluster.vm_kind, name="kept", docs=docs, params=bigger.as_params(),
        check_capacity=False,
    )  # fmt: skip
    op = drive(op, ENDED)
    assert (op.state, op.reason) == (OperationState.FAILED, "AlreadyExists")
    assert "already exists in the cluster. A create never changes what is there" in op.message
    assert "VMInstance kept" in op.message
    assert op.baseline["absent"] == []
    assert op.attempts == 1
    vm_after = gateway.get("vminstances", acme.namespace, "kept")
    assert vm_after["spec"] == vm_before["spec"]
    assert vm_after["metadata"]["resourceVersion"] == vm_before["metadata"]["resourceVersion"]
    assert engine.clean_up(op.pk) == "nothing to do"
    assert gateway.get("vminstances", acme.namespace, "kept") is not None


def test_adding_a_group_named_like_an_existing_one_never_overwrites_it(cluster, alice, acme):
    """acme's cluster "ml" has md0 (role ingress-nginx) and "gpu": "add group" with either
    name is refused at submit, and the apply refuses it too (md0 has no GPUs, so no snapshot
    row)."""
    gateway = gateway_for(cluster)
    before = gateway.get("kuberneteses", acme.namespace, "ml")
    for group in ("md0", "gpu"):
        request = apps.NodeGroupRequest(
            cluster_name="ml", group=group, min_replicas=1, max_replicas=1,
            instance_type="u1.2xlarge", disk_size_gi=100, gpu_resource=L40S, gpus_per_node=1,
        )  # fmt: skip
        with pytest.raises(services.OperationRefused) as refused:
            services.submit_node_group(alice, acme, cluster, request, resize=False)
        assert refused.value.field == "group"
        assert refused.value.message == (
            f"ml already has a node group named {group}: pick another name, or resize that "
            "group from its page."
        )
    docs = apps.node_group_manifests(request, acme.namespace, cluster.node_group_disk_field)
    op = services.record(
        user=alice, tenant=acme, cluster=cluster, kind=OperationKind.CREATE,
        app_kind="Kubernetes", name="ml", node_group="md0", docs=docs,
        params=request.as_params(), check_capacity=False,
    )  # fmt: skip
    op = drive(op, ENDED)
    assert (op.state, op.reason) == (OperationState.FAILED, "AlreadyExists")
    assert op.message.startswith("ml already has a node group named md0. Adding it would")
    after = gateway.get("kuberneteses", acme.namespace, "ml")
    assert after["spec"]["nodeGroups"] == before["spec"]["nodeGroups"]
    assert after["spec"]["nodeGroups"]["md0"]["roles"] == ["ingress-nginx"]


# --- #17.3: a sweep records what it saw in one UPDATE per batch ---------------------------


def test_a_sweep_records_what_it_saw_in_one_update_and_only_while_polled(cluster, alice, acme):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ops = [
        apply_once(services.submit_vm(alice, acme, cluster, vm_request(f"sweep-{i}", gpu=L40S)))
        for i in range(3)
    ]
    # The disks go first; each VM is sent once its disk is Ready (issue 16 item 1).
    for _ in range(300):
        engine.poll_cluster(cluster.pk)
        states = set(
            Operation.objects.filter(pk__in=[o.pk for o in ops]).values_list("state", flat=True)
        )
        if states == {OperationState.PENDING}:
            break
        time.sleep(0.1)
    ops = [apply_once(op) for op in ops]
    assert all(op.state == OperationState.PROVISIONING for op in ops)
    # One of them ended meanwhile (another worker, say): the sweep must not write into it.
    Operation.objects.filter(pk=ops[2].pk).update(state=OperationState.FAILED, observed={})
    gateway = gateway_for(cluster)
    for _ in range(100):  # the cluster's list cache shows the new apps after a moment
        listed = {
            a["metadata"]["name"]
            for a in gateway.iter_apps("vminstances", namespace=acme.namespace)
        }
        if {"sweep-0", "sweep-1"} <= listed:
            break
        time.sleep(0.1)
    with CaptureQueriesContext(connection) as queries:
        engine.poll_cluster(cluster.pk)
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    facts = [w for w in writes if '"observed"' in w]
    assert len(facts) == 1, writes  # both operations' first sight in one statement
    assert Operation.objects.filter(pk__in=[ops[0].pk, ops[1].pk]).exclude(observed={}).count() == 2
    assert Operation.objects.get(pk=ops[2].pk).observed == {}
    for op in ops[:2]:
        drive(op, ENDED)


def test_a_sweep_costs_the_same_queries_for_3_or_30_operations_and_writes_only_news(
    cluster, alice, acme
):
    """#17.3: a sweep reads the operations in one query (and their cluster, tenants and models
    in one each), writes what changed in one UPDATE per set of fields, and nothing when it sees
    nothing new, even while Helm retries (the VMs here wait for a disk that never comes)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    gateway = gateway_for(cluster)

    def in_flight(prefix: str, n: int) -> None:
        rows = []
        for i in range(n):
            req = vm_request(f"{prefix}-{i}")
            docs = apps.vm_manifests(req, acme.namespace, cluster.vm_kind)
            vm = next(d for d in docs if d["kind"] == cluster.vm_kind)
            gateway.session.call_json(
                gateway.session.custom().create_namespaced_custom_object,
                apps.GROUP, apps.VERSION, acme.namespace, apps.PLURALS[vm["kind"]], vm,
            )  # fmt: skip
            rows.append(
                Operation(
                    cluster=cluster, tenant=acme, actor_name="alice", kind=OperationKind.CREATE,
                    namespace=acme.namespace, app_kind=cluster.vm_kind, name=req.name,
                    manifests=docs, state=OperationState.PROVISIONING,
                    applied_at=timezone.now(), baseline={"before": {}},
                )
            )  # fmt: skip
        Operation.objects.bulk_create(rows)
        for _ in range(200):  # until every one says what Helm retries
            engine.poll_cluster(cluster.pk)
            if not polled.exclude(reason="InstallFailed").exists():
                return
            time.sleep(0.1)
        raise AssertionError(list(polled.values_list("name", "reason", "message")))

    def sweep() -> list[str]:
        expected = polled.count()
        with CaptureQueriesContext(connection) as queries:
            assert engine.poll_cluster(cluster.pk) == expected
        return [q["sql"] for q in queries.captured_queries]

    polled = Operation.objects.filter(cluster=cluster, state=OperationState.PROVISIONING)
    in_flight("few", 3)
    few = sweep()
    assert not [q for q in few if q.startswith("UPDATE")], few  # nothing new: no write
    Operation.objects.filter(cluster=cluster).update(observed={"seen": "before this sweep"})
    first = sweep()
    assert sum(q.startswith("UPDATE") for q in first) == 1, first  # 3 changes, one UPDATE
    in_flight("many", 27)
    Operation.objects.filter(cluster=cluster).update(observed={"seen": "before this sweep"})
    first_many = sweep()
    assert sum(q.startswith("UPDATE") for q in first_many) == 1, first_many
    assert len(first_many) == len(first)
    assert len(sweep()) == len(few)  # 30 operations, the queries of 3
    assert not polled.filter(observed__seen="before this sweep").exists()
    assert polled.count() == 30
