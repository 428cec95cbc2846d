"""What a new user stumbled on (#20 items 16-22): the resize form, plurals, My GPUs agreeing with
the operation page, live checks, safer defaults, connecting to what you rent."""

from __future__ import annotations

import pytest

from gpus.inventory.models import GpuWorkload
from gpus.inventory.selectors import catalogue_for
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import Operation
from gpus.provisioning.tests import test_provisioning_views as base

# The synced cluster, alice's node group and the form data of the views' tests.
cluster, alice_group = base.cluster, base.alice_group
form_data, group_data, L40S = base.form_data, base.group_data, base.L40S

pytestmark = pytest.mark.django_db
TIMES = "\N{MULTIPLICATION SIGN}"


def _input_value(html: str, name: str) -> str:
    import re

    tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    assert tag, name
    value = re.search(r'value="([^"]*)"', tag.group(0))
    return value.group(1) if value else ""


# --- item 16: the resize form -------------------------------------------------------------


def test_resize_prefills_the_groups_real_maximum_and_last_asked_values(
    alice_client, acme, alice_group: GpuWorkload, alice
):
    alice_group.instances, alice_group.max_instances = 2, 6
    alice_group.save()
    url = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/"
    html = alice_client.get(url).content.decode()
    assert _input_value(html, "max_replicas") == "6"  # not 2 x the current workers
    assert _input_value(html, "min_replicas") == "2"
    # The last change the portal made to the group gives what the snapshot does not keep.
    Operation.objects.create(
        cluster=alice_group.cluster, tenant=acme, actor=alice, actor_name="alice",
        kind=OperationKind.RESIZE, namespace=acme.namespace, app_kind="Kubernetes", name="ml",
        node_group="gpu", state=OperationState.SUCCEEDED,
        params={"min_replicas": 1, "max_replicas": 6, "instance_type": "u1.4xlarge",
                "disk_size_gi": 200, "roles": ["ingress-nginx"]},
    )  # fmt: skip
    html = alice_client.get(url).content.decode()
    assert _input_value(html, "min_replicas") == "1"
    assert _input_value(html, "disk_size_gi") == "200"
    assert 'value="u1.4xlarge" selected' in html
    assert 'name="ingress" id="id_ingress" checked' in html


def test_resize_prefills_from_the_snapshot_spec_first(alice_client, acme, alice_group, alice):
    from gpus.kube.records import kubernetes_app_from_json

    # What the sync stores: the group's spec as the cluster has it (v1.1 ephemeralStorage).
    app = kubernetes_app_from_json({
        "metadata": {"namespace": acme.namespace, "name": "ml"},
        "spec": {"nodeGroups": {"gpu": {
            "minReplicas": 1, "maxReplicas": 5, "instanceType": "u1.8xlarge",
            "ephemeralStorage": "200Gi", "roles": [], "gpus": [{"name": L40S}],
        }}},
    })  # fmt: skip
    group = app.node_groups[0]
    assert (group.disk, group.instance_type, group.roles) == ("200Gi", "u1.8xlarge", ())
    alice_group.max_instances = 5
    alice_group.group_spec = {"min_replicas": 1, "instance_type": "u1.8xlarge",
                              "disk": "200Gi", "roles": []}  # fmt: skip
    alice_group.save()
    # An older portal change said otherwise: the cluster's spec wins.
    Operation.objects.create(
        cluster=alice_group.cluster, tenant=acme, actor=alice, actor_name="alice",
        kind=OperationKind.RESIZE, namespace=acme.namespace, app_kind="Kubernetes", name="ml",
        node_group="gpu", state=OperationState.SUCCEEDED,
        params={"min_replicas": 3, "max_replicas": 6, "instance_type": "u1.4xlarge",
                "disk_size_gi": 100, "roles": ["ingress-nginx"]},
    )  # fmt: skip
    html = alice_client.get(f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/").content
    html = html.decode()
    assert _input_value(html, "max_replicas") == "5" and _input_value(html, "min_replicas") == "1"
    assert _input_value(html, "disk_size_gi") == "200" and 'value="u1.8xlarge" selected' in html
    assert 'name="ingress" id="id_ingress" checked' not in html


def test_resize_cannot_become_a_new_cluster(
    alice_client, acme, alice_group, django_capture_on_commit_callbacks
):
    url = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/"
    html = alice_client.get(url).content.decode()
    assert 'name="new_cluster"' not in html and 'name="version"' not in html
    with django_capture_on_commit_callbacks():
        response = alice_client.post(
            url, group_data(new_cluster="evil", version="v1.30", cluster_name="x", confirm="1")
        )
    assert response.status_code == 302
    op = Operation.objects.get()
    assert (op.kind, op.name, op.node_group) == ("resize", "ml", "gpu")
    assert op.params["new_cluster_version"] == "" and op.manifests[0]["kind"] == "Kubernetes"
    assert op.manifests[0]["metadata"]["name"] == "ml"


# --- item 22: the smaller ones --------------------------------------------------------------


def test_vcpu_advice_says_gpu_or_gpus_never_gpu_s(alice_client, acme, cluster):
    url = f"/tenants/{acme.namespace}/vms/new/check/"
    one = alice_client.post(url, form_data(instance_type="u1.medium")).content.decode()
    assert "for 1 GPU:" in one and "GPU(s)" not in one
    two = alice_client.post(url, form_data(instance_type="u1.xlarge", gpu_count="2"))
    assert "for 2 GPUs:" in two.content.decode()


def test_a_stopped_vm_says_stopped_once(alice_client, acme, cluster):
    vm = GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind="vm", app_kind="VMInstance", name="box",
        gpus_per_instance=1, state="stopped", reason="Stopped", message="VM is stopped",
    )  # fmt: skip
    page = alice_client.get(f"/tenants/{acme.namespace}/gpus/{vm.pk}/").content.decode()
    assert "Stopped. Stopped." not in page and "Stopped</span></p>" in page
    rows = alice_client.get(f"/tenants/{acme.namespace}/gpus/").content.decode()
    row = rows[rows.index('data-state="stopped"') :]
    row = row[: row.index("</tr>")]
    assert row.count("Stopped") == 1, row


def test_a_node_group_operation_says_per_worker_not_the_quota_count(
    alice_client, acme, alice_group, django_capture_on_commit_callbacks
):
    url = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/"
    with django_capture_on_commit_callbacks():
        alice_client.post(url, group_data(min_replicas="1", max_replicas="1", confirm="1"))
    op = Operation.objects.get()
    assert op.gpu_count == 2  # what the quota counts (a v1.1 group keeps 2 workers)
    page = alice_client.get(f"/tenants/{acme.namespace}/operations/{op.pk}/").content.decode()
    assert f"1 {TIMES} NVIDIA L40S per worker, 1 to 1 worker." in page
    assert f"2 {TIMES} NVIDIA L40S" not in page
    listing = alice_client.get(f"/tenants/{acme.namespace}/operations/").content.decode()
    assert f"1 {TIMES} NVIDIA L40S per worker, 1 to 1 worker" in listing


# --- item 17: My GPUs agrees with the operation page ---------------------------------------


def _op(cluster, acme, alice, **extra) -> Operation:
    values = dict(
        cluster=cluster, tenant=acme, actor=alice, actor_name="alice", namespace=acme.namespace,
        app_kind="VMInstance", name="box", manifests=[],
    )  # fmt: skip
    return Operation.objects.create(**{**values, **extra})


def _row(html: str, name: str) -> str:
    start = html.index(f"<strong>{name}</strong>")
    return html[start : html.index("</tr>", start)]


def test_my_gpus_row_shows_the_latest_operation_until_a_sync_confirms_it(
    alice_client, acme, cluster, alice
):
    from datetime import timedelta

    from django.utils import timezone

    GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind="vm", app_kind="VMInstance", name="box",
        gpus_per_instance=1, state="provisioning", reason="Provisioning",
    )  # fmt: skip
    url = f"/tenants/{acme.namespace}/gpus/"
    # A start that succeeded after the last sync: the row says running, as the operation page.
    start = _op(cluster, acme, alice, kind="start", state="succeeded", finished_at=timezone.now(),
                params={"action": "start"})  # fmt: skip
    row = _row(alice_client.get(url).content.decode(), "box")
    assert "Running" in row and "Provisioning" not in row
    assert f"/operations/{start.pk}/" in row and "the list confirms it at the next sync" in row
    assert "/box/stop/" in row and "/box/start/" not in row
    html = alice_client.get(url).content.decode()
    assert 'id="in-flight"' not in html  # told on its row, not twice
    # A stop in flight: the row follows it and offers no other action meanwhile.
    stop = _op(cluster, acme, alice, kind="stop", state="applying", params={"action": "stop"})
    row = _row(alice_client.get(url).content.decode(), "box")
    assert f"/operations/{stop.pk}/" in row and "Follow the change in progress" in row
    assert "/box/stop/" not in row and "/box/delete/" not in row
    # Once the sync has seen it, the snapshot speaks again.
    stop.state, stop.finished_at = "succeeded", timezone.now()
    stop.save()
    row = _row(alice_client.get(url).content.decode(), "box")
    assert "Stopped" in row and "/box/start/" in row
    cluster.last_synced_at = timezone.now() + timedelta(seconds=1)
    cluster.save()
    row = _row(alice_client.get(url).content.decode(), "box")
    assert "Provisioning" in row and "/operations/" not in row


# --- item 18: live checks, OS cross-checks, honest endings ---------------------------------


def _field_errors(response, field: str) -> list[str]:
    return [str(e) for e in response.context["form"].errors.get(field, [])]


def test_image_profile_and_driver_snippet_must_agree(alice_client, acme, cluster):
    url = f"/tenants/{acme.namespace}/vms/new/check/"
    fine = alice_client.post(url, form_data())
    assert fine.context["form"].is_valid(), fine.context["form"].errors
    windows = alice_client.post(url, form_data(instance_profile="windows.2k22.virtio"))
    assert _field_errors(windows, "instance_profile") == [
        "Microsoft Windows Server 2022 (virtio) does not fit the Ubuntu 24.04 image; profiles "
        "that fit: Ubuntu."
    ]
    rocky = alice_client.post(url, form_data(image="rocky-9"))
    assert (
        "profiles that fit: CentOS Stream 9, Red Hat Enterprise Linux 9 (amd64)"
        in _field_errors(rocky, "instance_profile")[0]
    )
    # The driver snippet fits the image's family (#16 item 8): Rocky gets NVIDIA's dnf one.
    assert _field_errors(rocky, "install_driver") == []
    html = rocky.content.decode()
    assert "untick it" not in html and "preview-yaml" not in html  # the profile still refuses
    own = alice_client.post(
        url,
        form_data(image="rocky-9", instance_profile="rhel.9", install_driver=None,
                  cloud_init="#cloud-config\nruncmd:\n  - apt-get install -y htop\n"),
    )  # fmt: skip
    assert own.context["form"].is_valid()
    assert "Your cloud-init calls apt-get, which the Rocky Linux 9 image does not have." in (
        own.content.decode()
    )
    submitted = alice_client.post(
        f"/tenants/{acme.namespace}/vms/new/", form_data(image="almalinux-9")
    )
    assert submitted.status_code == 200 and not Operation.objects.exists()


def test_a_halted_create_says_stopped_and_a_failed_bar_is_not_full(
    alice_client, acme, cluster, alice
):
    from django.utils import timezone

    from gpus.provisioning.presenters import describe

    halted = _op(
        cluster, acme, alice, kind="create", state="succeeded", finished_at=timezone.now(),
        manifests=[{"kind": "VMInstance", "spec": {"runStrategy": "Halted"}}],
        params={"run_strategy": "Halted"}, applied_at=timezone.now(),
    )  # fmt: skip
    page = alice_client.get(f"/tenants/{acme.namespace}/operations/{halted.pk}/").content.decode()
    assert "reports it running" not in page and "created stopped, as asked" in page
    assert 'data-step="running"' not in page
    failed = _op(
        cluster, acme, alice, name="other", kind="create", state="failed",
        finished_at=timezone.now(), manifests=[{"kind": "VMInstance", "spec": {}}],
    )  # fmt: skip
    assert describe(failed).percent < 100
    page = alice_client.get(f"/tenants/{acme.namespace}/operations/{failed.pk}/").content.decode()
    assert 'aria-valuenow="100"' not in page and "progress-failed" in page
    # A deleted VM's retried delete says gone, not running.
    retried = _op(cluster, acme, alice, name="third", kind="retry", state="succeeded",
                  finished_at=timezone.now(), params={"retry_kind": "delete"})  # fmt: skip
    page = alice_client.get(f"/tenants/{acme.namespace}/operations/{retried.pk}/").content.decode()
    assert "gone from the cluster" in page and "running" not in page.split('id="op-done"')[1][:200]


# --- item 21: safer defaults ------------------------------------------------------------------

NO_KEY_WARNING = "SSH (port 22) is open to the internet but no SSH key is given"


def test_nothing_is_open_to_the_outside_by_default(alice_client, acme, cluster):
    html = alice_client.get(f"/tenants/{acme.namespace}/vms/new/").content.decode()
    assert '<option value="none" selected>' in html
    # A VM made with the defaults (the API fills what is not given from them) opens no port.
    from gpus.provisioning.forms import GpuVmForm

    form = GpuVmForm(gpu_choices=[(L40S, "L40S")], catalogue=catalogue_for(cluster))
    assert form.fields["external"].initial == "none"
    data = {k: v for k, v in form_data().items() if k not in ("external", "external_ports")}
    check = alice_client.post(
        f"/tenants/{acme.namespace}/vms/new/check/", {**data, "external": "none"}
    )
    preview = check.context["checks"]["preview"]
    assert "external: false" in preview and "external: true" not in preview


def test_ssh_open_without_a_key_is_warned(alice_client, acme, cluster):
    url = f"/tenants/{acme.namespace}/vms/new/check/"
    no_key = alice_client.post(url, form_data(ssh_keys="", external_ports="22"))
    assert NO_KEY_WARNING in no_key.content.decode()
    whole = alice_client.post(url, form_data(ssh_keys="", external="WholeIP"))
    assert NO_KEY_WARNING in whole.content.decode()
    assert NO_KEY_WARNING not in alice_client.post(url, form_data()).content.decode()  # a key
    other_port = alice_client.post(url, form_data(ssh_keys="", external_ports="8888"))
    assert NO_KEY_WARNING not in other_port.content.decode()
    closed = alice_client.post(url, form_data(ssh_keys="", external="none"))
    assert NO_KEY_WARNING not in closed.content.decode()


# --- item 20: the VM page, "in progress" links ---------------------------------------------


def test_vm_page_has_its_actions_operations_and_charts(alice_client, acme, cluster, alice, carol):
    from django.test import Client

    vm = GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind="vm", app_kind="VMInstance", name="box",
        gpus_per_instance=1, state="running",
    )  # fmt: skip
    old = _op(cluster, acme, alice, kind="create", state="succeeded")
    url = f"/tenants/{acme.namespace}/gpus/{vm.pk}/"
    page = alice_client.get(url).content.decode()
    actions = page[page.index('id="workload-actions"') :]
    actions = actions[: actions.index("</p>")]
    assert "/box/stop/" in actions and "/box/delete/" in actions and "/box/start/" not in actions
    assert f"/operations/{old.pk}/" in page and 'id="workload-operations"' in page
    assert f"/utilization/#workload-{vm.pk}" in page
    viewer = Client()
    viewer.force_login(carol)
    assert 'id="workload-actions"' not in viewer.get(url).content.decode()
    # A change in flight: the page follows it instead of offering actions.
    busy = _op(cluster, acme, alice, kind="stop", state="provisioning", params={"action": "stop"})
    page = alice_client.get(url).content.decode()
    assert "Follow the change in progress" in page and "/box/delete/" not in page
    assert page.count(f"/operations/{busy.pk}/") >= 2  # the latest operation and the list


def test_another_change_in_progress_links_to_it(alice_client, acme, cluster, alice):
    GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind="vm", app_kind="VMInstance", name="box",
        gpus_per_instance=1, state="running",
    )  # fmt: skip
    busy = _op(cluster, acme, alice, kind="stop", state="provisioning", params={"action": "stop"})
    response = alice_client.post(f"/tenants/{acme.namespace}/vms/box/delete/")
    html = response.content.decode()
    assert "still in progress" in html
    assert 'id="busy-op"' in html and f"/operations/{busy.pk}/" in html
    failed = _op(cluster, acme, alice, kind="start", state="failed", params={"action": "start"})
    page = alice_client.get(f"/tenants/{acme.namespace}/operations/{failed.pk}/").content.decode()
    assert 'id="busy-op"' in page and f"/operations/{busy.pk}/" in page


def test_an_operation_not_yet_applied_can_be_cancelled(alice_client, acme, cluster, alice, carol):
    from django.test import Client

    from gpus.provisioning import engine
    from gpus.provisioning.models import AuditEvent

    op = _op(cluster, acme, alice, kind="create", state="pending")
    page = alice_client.get(f"/tenants/{acme.namespace}/operations/{op.pk}/").content.decode()
    assert 'id="op-cancel"' in page
    viewer = Client()
    viewer.force_login(carol)
    viewer_page = viewer.get(f"/tenants/{acme.namespace}/operations/{op.pk}/").content.decode()
    assert 'id="op-cancel"' not in viewer_page
    url = f"/tenants/{acme.namespace}/operations/{op.pk}/cancel/"
    assert viewer.post(url).status_code == 404  # a viewer may not act (the tenant's rule)
    assert alice_client.post(url).status_code == 302
    op.refresh_from_db()
    assert op.state == "cancelled" and op.finished_at is not None
    assert AuditEvent.objects.filter(operation=op, action="operation.cancel").count() == 1
    assert engine.claim(op.pk) is None  # the worker's message, arriving later, does nothing
    page = alice_client.get(f"/tenants/{acme.namespace}/operations/{op.pk}/").content.decode()
    assert 'id="op-cancelled"' in page and 'id="op-cancel"' not in page
    # Once a worker has it, it is too late: refused in plain words, nothing changed.
    taken = _op(cluster, acme, alice, name="other", kind="create", state="pending")
    assert engine.claim(taken.pk) is not None
    response = alice_client.post(
        f"/tenants/{acme.namespace}/operations/{taken.pk}/cancel/", follow=True
    )
    assert "can no longer be cancelled" in response.content.decode()
    taken.refresh_from_db()
    assert taken.state == "applying"


def test_a_whole_cluster_can_be_deleted_after_typing_its_name(
    alice_client, bob_client, acme, alice_group, alice, django_capture_on_commit_callbacks
):
    page = alice_client.get(f"/tenants/{acme.namespace}/gpus/{alice_group.pk}/").content.decode()
    assert f"/tenants/{acme.namespace}/kubernetes/ml/delete/" in page
    url = f"/tenants/{acme.namespace}/kubernetes/ml/delete/"
    assert bob_client.get(url).status_code == 404 and bob_client.post(url).status_code == 404
    assert "<code>gpu</code>" in alice_client.get(url).content.decode()
    wrong = alice_client.post(url, {"confirm_name": "m"}).content.decode()
    assert "Type the cluster&#x27;s name, ml, to confirm." in wrong
    assert not Operation.objects.exists()
    # Refused while one of its groups changes, with a link to that change.
    busy = _op(alice_group.cluster, acme, alice, app_kind="Kubernetes", name="ml",
               node_group="gpu", kind="resize", state="provisioning")  # fmt: skip
    refused = alice_client.post(url, {"confirm_name": "ml"}).content.decode()
    assert "still in progress" in refused and f"/operations/{busy.pk}/" in refused
    busy.state = "succeeded"
    busy.save()
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(url, {"confirm_name": "ml"})
    assert response.status_code == 302 and len(callbacks) == 1
    op = Operation.objects.get(kind="delete")
    assert (op.app_kind, op.name, op.node_group) == ("Kubernetes", "ml", "")
    assert op.manifests == [{"apiVersion": "apps.cozystack.io/v1alpha1", "kind": "Kubernetes",
                             "metadata": {"name": "ml", "namespace": acme.namespace}}]  # fmt: skip


def test_a_superscript_digit_is_not_a_port(alice_client, acme, cluster):
    """Found by the fuzzer: "²".isdigit() is True but int("²") fails (a 500)."""
    response = alice_client.post(
        f"/tenants/{acme.namespace}/vms/new/check/", form_data(external_ports="²")
    )
    assert response.status_code == 200
    assert "is not a port" in response.content.decode()


def test_one_node_group_can_be_deleted_but_not_md0(
    alice_client, bob_client, acme, alice_group, django_capture_on_commit_callbacks
):
    page = alice_client.get(f"/tenants/{acme.namespace}/gpus/{alice_group.pk}/").content.decode()
    url = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/delete/"
    assert url in page
    assert bob_client.post(url).status_code == 404
    assert "The cluster ml and its other groups stay." in alice_client.get(url).content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        assert alice_client.post(url).status_code == 302
    assert len(callbacks) == 1
    op = Operation.objects.get()
    assert (op.kind, op.name, op.node_group) == ("delete", "ml", "gpu")
    # A merge patch that removes this group only (null deletes), never a delete of the cluster.
    assert op.manifests[0]["spec"] == {"nodeGroups": {"gpu": None}}
    md0 = GpuWorkload.objects.create(
        cluster=alice_group.cluster, tenant=acme, kind="node_group", app_kind="Kubernetes",
        name="ml", node_group="md0", gpus_per_instance=0, instances=2, state="running",
    )  # fmt: skip
    page = alice_client.get(f"/tenants/{acme.namespace}/gpus/{md0.pk}/").content.decode()
    assert "/nodegroups/md0/delete/" not in page
    refused = alice_client.post(f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/md0/delete/")
    assert "Resize it to 0 minimum workers instead." in refused.content.decode()
    assert Operation.objects.count() == 1


def test_a_cluster_delete_shows_on_each_of_its_groups(alice_client, acme, alice_group, alice):
    op = _op(alice_group.cluster, acme, alice, app_kind="Kubernetes", name="ml", kind="delete",
             state="provisioning", params={"action": "delete"})  # fmt: skip
    html = alice_client.get(f"/tenants/{acme.namespace}/gpus/").content.decode()
    row = _row(html, "ml")
    assert f"/operations/{op.pk}/" in row and "Follow the change in progress" in row
    assert '/nodegroups/gpu/"' not in row  # no Resize while the cluster goes
    assert 'id="in-flight"' not in html  # told on the group's row, not twice


def test_a_resize_keeps_the_groups_other_roles(
    alice_client, acme, alice_group, django_capture_on_commit_callbacks
):
    alice_group.group_spec = {"min_replicas": 2, "instance_type": "u1.2xlarge", "disk": "100Gi",
                              "roles": ["ingress-nginx", "monitoring"]}  # fmt: skip
    alice_group.save()
    url = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/"
    with django_capture_on_commit_callbacks():
        alice_client.post(url, group_data(confirm="1"))  # ingress unticked by the person
    roles = Operation.objects.get().manifests[0]["spec"]["nodeGroups"]["gpu"]["roles"]
    assert roles == ["monitoring"]
