"""The GPU VM form, its live checks and preview, the operation pages: from the database only.
Security: another tenant gets 404 on every URL (GET and POST), CSRF on every htmx write,
and fuzzed input never causes a 500 nor an enqueued operation unless valid."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import yaml
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpus.catalog.models import GpuModel
from gpus.inventory.choices import ResourceState, WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload, Node, NodeGpu
from gpus.inventory.reasons import REASONS, explain_reason
from gpus.inventory.selectors import catalogue_for
from gpus.provisioning import capacity, presenters
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import GpuQuota, Operation
from gpus.testing import offer_catalogue

pytestmark = pytest.mark.django_db
L40S = "nvidia.com/AD102GL_L40S"
ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx4yH1uQeQ5K3m3sQm7nYyq7bYp1pZ7rj2qj6w8x1y2 alice@laptop"
)


@pytest.fixture
def cluster(db) -> Cluster:
    """A synced cluster: 2 L40S servers with 4 and 3 free, the served schemas."""
    now = timezone.now()
    cluster = Cluster.objects.create(name="dc", vm_kind="VMInstance", last_synced_at=now)
    l40s = GpuModel.objects.get(resource_name=L40S)
    for name, free in (("gpu-l40s-1", 4), ("gpu-l40s-2", 3)):
        node = Node.objects.create(
            cluster=cluster,
            name=name,
            health="ready",
            gpu_installed=4,
            gpu_free=free,
        )
        NodeGpu.objects.create(
            node=node, gpu_model=l40s, installed=4, allocated=4 - free, free=free
        )
    return offer_catalogue(cluster)  # the v1.1 catalogues and chart schemas


def form_data(**extra) -> dict:
    data = {
        "name": "gpu-ws-2",
        "gpu_model": L40S,
        "gpu_count": "1",
        "instance_type": "u1.2xlarge",
        "instance_profile": "ubuntu",
        "image": "ubuntu-2404",
        "disk_size_gi": "50",
        "storage_class": "replicated",
        "ssh_keys": ED25519,
        "external": "PortList",
        "external_ports": "22, 8888",
        "install_driver": "on",
        "cloud_init": "",
        "run_strategy": "Always",
    }
    data.update(extra)
    return {k: v for k, v in data.items() if v is not None}


def test_form_lists_served_models_with_free_counts(alice_client, acme, cluster):
    page = alice_client.get(f"/tenants/{acme.namespace}/vms/new/").content.decode()
    assert "7 free, at most 4 on one server" in page
    # The deprecated gn1 instance types are never offered (the page's random CSRF token may
    # contain "gn1": look at the instance type choices only).
    choices = re.search(r'<select name="instance_type".*?</select>', page, re.S)
    assert choices and "u1.2xlarge" in choices.group(0)
    assert "gn1" not in choices.group(0)
    # Only models the cluster serves: no A100 node in this snapshot.
    assert "GA100_A100_PCIE_80GB" not in page


def test_live_check_shows_errors_next_to_fields_and_the_fit(alice_client, acme, cluster):
    url = f"/tenants/{acme.namespace}/vms/new/check/"
    page = alice_client.post(url, form_data(name="Bad_Name", gpu_count="5"), HTTP_HX_REQUEST="true")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="err-name" hx-swap-oob="true"' in html and "lowercase" in html
    assert "5 × NVIDIA L40S requested: 7 free in all, but at most 4 on one server" in html
    page = alice_client.post(url, form_data(instance_type="u1.xlarge"), HTTP_HX_REQUEST="true")
    html = page.content.decode()
    assert "at least 8 vCPU per GPU" in html
    assert "kubectl -n tenant-acme apply -f gpu-ws-2.yaml" in html and ".kubeconfig" not in html


def test_preview_is_exactly_what_the_task_applies(
    alice_client, acme, cluster, django_capture_on_commit_callbacks
):
    url = f"/tenants/{acme.namespace}/vms/new/"
    html = alice_client.post(url + "check/", form_data(), HTTP_HX_REQUEST="true").content.decode()
    import html as html_lib

    preview = html_lib.unescape(html.split('id="preview-yaml">')[1].split("</code>")[0])
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(url, form_data())
    assert response.status_code == 302
    op = Operation.objects.get()
    assert list(yaml.safe_load_all(preview)) == op.manifests
    assert len(callbacks) == 1
    disk, vm = op.manifests
    assert disk["kind"] == "VMDisk" and disk["spec"]["source"] == {"image": {"name": "ubuntu-2404"}}
    assert vm["spec"]["gpus"] == [{"name": L40S}]
    assert vm["spec"]["disks"] == [{"name": "gpu-ws-2-system"}]
    assert "nvidia-driver-550" in vm["spec"]["cloudInit"]
    assert op.actor_name == "alice" and op.state == OperationState.PENDING
    assert op.events.filter(action="operation.create").count() == 1


def test_over_capacity_refused_unless_queued(alice_client, acme, cluster):
    url = f"/tenants/{acme.namespace}/vms/new/"
    page = alice_client.post(url, form_data(gpu_count="5")).content.decode()
    assert "at most 4 on one server" in page
    assert not Operation.objects.exists()
    response = alice_client.post(url, form_data(gpu_count="5", queue_until_capacity="on"))
    assert response.status_code == 302
    assert Operation.objects.get().queue_until_capacity


def test_over_quota_refused(alice_client, acme, cluster):
    GpuQuota.objects.create(
        tenant=acme, gpu_model=GpuModel.objects.get(resource_name=L40S), limit=2
    )
    GpuWorkload.objects.create(
        cluster=cluster,
        tenant=acme,
        kind=WorkloadKind.VM,
        app_kind="VMInstance",
        name="old",
        gpu_model=GpuModel.objects.get(resource_name=L40S),
        gpus_per_instance=1,
    )
    page = alice_client.post(f"/tenants/{acme.namespace}/vms/new/", form_data(gpu_count="2"))
    assert "Your quota allows 1 more NVIDIA L40S." in page.content.decode()
    assert not Operation.objects.exists()


def test_name_too_long_for_the_prefix_and_the_disk(alice_client, acme, cluster):
    page = alice_client.post(f"/tenants/{acme.namespace}/vms/new/", form_data(name="a" * 39))
    assert "At most 38 characters" in page.content.decode()


def test_bad_ssh_key_and_cloud_init_are_refused(alice_client, acme, cluster):
    page = alice_client.post(
        f"/tenants/{acme.namespace}/vms/new/",
        form_data(ssh_keys="ssh-ed25519 notbase64!!", cloud_init="runcmd: [ls]"),
    ).content.decode()
    assert "Line 1: the key body is not base64." in page
    assert "#cloud-config" in page
    assert not Operation.objects.exists()


@pytest.fixture
def alice_op(alice, acme, cluster) -> Operation:
    return Operation.objects.create(
        cluster=cluster,
        tenant=acme,
        actor=alice,
        actor_name="alice",
        kind="create",
        namespace=acme.namespace,
        app_kind="VMInstance",
        name="x",
        manifests=[],
        state=OperationState.FAILED,
    )


def operation_urls(namespace: str, pk: int) -> list[tuple[str, str]]:
    base = f"/tenants/{namespace}"
    return [
        ("get", f"{base}/vms/new/"),
        ("post", f"{base}/vms/new/"),
        ("post", f"{base}/vms/new/check/"),
        ("get", f"{base}/operations/"),
        ("get", f"{base}/operations/{pk}/"),
        ("get", f"{base}/operations/{pk}/status/"),
        ("post", f"{base}/operations/{pk}/retry/"),
    ]


def test_another_tenant_gets_404_everywhere(bob_client, alice_op, acme):
    for method, url in operation_urls(acme.namespace, alice_op.pk):
        response = getattr(bob_client, method)(url, form_data(), HTTP_HX_REQUEST="true")
        assert response.status_code == 404, (method, url)
    # Bob's own tenant URL with Alice's operation id: still 404.
    assert bob_client.get(f"/tenants/tenant-globex/operations/{alice_op.pk}/").status_code == 404
    assert (
        bob_client.post(f"/tenants/tenant-globex/operations/{alice_op.pk}/retry/").status_code
        == 404
    )
    assert Operation.objects.count() == 1


def test_viewer_cannot_write(carol, acme, alice_op):
    client = Client()
    client.force_login(carol)
    assert (
        "not create machines" in client.get(f"/tenants/{acme.namespace}/vms/new/").content.decode()
    )
    assert client.post(f"/tenants/{acme.namespace}/vms/new/", form_data()).status_code == 404
    assert (
        client.post(f"/tenants/{acme.namespace}/operations/{alice_op.pk}/retry/").status_code == 404
    )


def test_csrf_is_required_on_every_write(alice, acme, alice_op, cluster):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    writes = [u for m, u in operation_urls(acme.namespace, alice_op.pk) if m == "post"]
    for url in writes:
        assert client.post(url, form_data(), HTTP_HX_REQUEST="true").status_code == 403, url
    page = client.get(f"/tenants/{acme.namespace}/vms/new/")
    token = page.cookies["csrftoken"].value
    # htmx sends the token in the header the <body> declares.
    assert 'hx-headers=\'{"X-CSRFToken"' in page.content.decode()
    ok = client.post(writes[1], form_data(), HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 200


def test_status_fragment_stops_polling_when_terminal(alice_client, alice_op, acme):
    response = alice_client.get(f"/tenants/{acme.namespace}/operations/{alice_op.pk}/status/")
    assert response.status_code == 286
    Operation.objects.filter(pk=alice_op.pk).update(state=OperationState.PROVISIONING)
    response = alice_client.get(f"/tenants/{acme.namespace}/operations/{alice_op.pk}/status/")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("start", "Elle était déjà en marche\u00a0: rien n\u2019a été modifié."),
        ("stop", "Elle était déjà arrêtée\u00a0: rien n\u2019a été modifié."),
    ],
)
def test_an_action_already_true_says_so_in_the_readers_language(
    alice_client, alice_op, acme, kind, words
):
    """The worker wrote its message in English; the Done line is the reader's language."""
    Operation.objects.filter(pk=alice_op.pk).update(
        kind=kind,
        state=OperationState.SUCCEEDED,
        reason="AlreadyDone",
        message="It was already running: nothing was changed.",
    )
    url = f"/tenants/{acme.namespace}/operations/{alice_op.pk}/"
    page = alice_client.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    done = re.search(r'id="op-done">(.*?)</p>', page, re.S)
    assert done is not None and done.group(1) == words
    # Nothing ran: no "GPU server found" nor "Running" step with a time (#20 tryout item 4).
    assert 'id="op-steps"' not in page and "data-step=" not in page


def test_an_action_already_true_is_not_notified(alice_op):
    """Nothing happened: the operation page says so; no second "Start …: done." (#20 tryout)."""
    from gpus.capacity.models import Notification
    from gpus.capacity.services import notify_operation_end

    done = {"kind": "start", "state": OperationState.SUCCEEDED}
    Operation.objects.filter(pk=alice_op.pk).update(**done, reason="AlreadyDone")
    notify_operation_end(alice_op.pk)
    assert not Notification.objects.exists()
    Operation.objects.filter(pk=alice_op.pk).update(**done, reason="")
    notify_operation_end(alice_op.pk)
    assert Notification.objects.get().text.endswith(": done.")


def test_status_poll_does_fragment_sized_work(
    alice_client, alice_op, acme, monkeypatch, django_assert_num_queries
):
    """The 2-second poll builds no YAML of the manifests and runs no navigation query."""
    Operation.objects.filter(pk=alice_op.pk).update(
        state=OperationState.PROVISIONING,
        gpu_model=GpuModel.objects.get(resource_name=L40S),
        gpu_count=1,
        manifests=[{"kind": "VMInstance", "spec": {"cloudInit": "x" * 10_000}}] * 20,
    )

    def no_yaml(*args: object, **kwargs: object) -> str:
        raise AssertionError("the status poll dumped the manifests to YAML")

    monkeypatch.setattr(yaml, "safe_dump_all", no_yaml)
    url = f"/tenants/{acme.namespace}/operations/{alice_op.pk}/status/"
    alice_client.get(url, HTTP_HX_REQUEST="true")  # warm the session
    # session, user, tenant, operation, median of past provisionings (the ETA).
    with django_assert_num_queries(5):
        response = alice_client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'id="op-state"' in response.content.decode()
    # Failed: no ETA, but the membership that offers "Try again"; htmx stops polling.
    Operation.objects.filter(pk=alice_op.pk).update(state=OperationState.FAILED)
    with django_assert_num_queries(5):
        response = alice_client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 286 and "Try again" in response.content.decode()
    # Done: nothing more than the operation itself.
    Operation.objects.filter(pk=alice_op.pk).update(state=OperationState.SUCCEEDED)
    with django_assert_num_queries(4):
        assert alice_client.get(url, HTTP_HX_REQUEST="true").status_code == 286
    # The page around it still shows the manifests, with the navigation.
    monkeypatch.undo()
    page = alice_client.get(f"/tenants/{acme.namespace}/operations/{alice_op.pk}/")
    html = page.content.decode()
    assert "kind: VMInstance" in html and "<nav" in html


def test_plain_words_for_insufficient_gpus(alice_op, cluster):
    Operation.objects.filter(pk=alice_op.pk).update(
        reason="ErrorUnschedulable",
        message="0/9 nodes are available: 2 Insufficient nvidia.com/AD102GL_L40S.",
        gpu_count=5,
    )
    alice_op.refresh_from_db()
    text = presenters.describe(alice_op).explanation
    # The one capacity sentence, as the form and My GPUs say it.
    assert text == "5 × NVIDIA L40S requested: 7 free in all, but at most 4 on one server."


def test_one_capacity_sentence_for_fit_refusal_and_waiting():
    sentence = capacity.capacity_sentence
    assert sentence("L40S", 2, 7, 4) == "2 × L40S requested: 7 free in all, up to 4 on one server."
    assert sentence("L40S", 5, 7, 4) == (
        "5 × L40S requested: 7 free in all, but at most 4 on one server."
    )
    assert sentence("L40S", 9, 7, 4) == "9 × L40S requested: only 7 free right now."


def test_operations_and_workloads_read_the_one_table_of_reasons():
    for reason, words in REASONS.items():
        assert presenters.plain_reason(reason, "raw") == str(words) == explain_reason(reason)
    # Picked over "Helm refused the settings": a timing failure is an InstallFailed too.
    assert presenters.plain_reason("InstallFailed", "raw") == "The platform could not install it."
    assert presenters.plain_reason("ErrorUnschedulable", "") == (
        "No server can take this VM right now."
    )
    # Unknown reasons (and a timeout, whose message says it all) keep the cluster's words.
    assert presenters.plain_reason("Timeout", "Not running after 900 s.") == (
        "Not running after 900 s."
    )
    assert presenters.plain_reason("SomethingNew", "as the cluster said") == "as the cluster said"


def test_my_gpus_shows_operations_in_flight_and_split_capacity(alice_client, acme, cluster, alice):
    Operation.objects.create(
        cluster=cluster,
        tenant=acme,
        actor=alice,
        actor_name="alice",
        kind="create",
        namespace=acme.namespace,
        app_kind="VMInstance",
        name="coming",
        manifests=[],
        state=OperationState.PROVISIONING,
    )
    GpuWorkload.objects.create(
        cluster=cluster,
        tenant=acme,
        kind=WorkloadKind.VM,
        app_kind="VMInstance",
        name="wide",
        gpu_model=GpuModel.objects.get(resource_name=L40S),
        gpus_per_instance=5,
        state=ResourceState.UNSCHEDULABLE,
    )
    # Done after the last sync: the snapshot does not show it yet, the operation does.
    Operation.objects.create(
        cluster=cluster,
        tenant=acme,
        actor=alice,
        actor_name="alice",
        kind="create",
        namespace=acme.namespace,
        app_kind="VMInstance",
        name="just-done",
        manifests=[],
        state=OperationState.SUCCEEDED,
        finished_at=timezone.now(),
    )
    Operation.objects.create(
        cluster=cluster,
        tenant=acme,
        actor=alice,
        actor_name="alice",
        kind="create",
        namespace=acme.namespace,
        app_kind="VMInstance",
        name="long-ago",
        manifests=[],
        state=OperationState.SUCCEEDED,
        finished_at=cluster.last_synced_at - timedelta(days=1),
    )
    html = alice_client.get(f"/tenants/{acme.namespace}/gpus/").content.decode()
    assert 'id="in-flight"' in html and "coming" in html and "just-done" in html
    assert "long-ago" not in html
    assert "Waiting for GPUs on one server" in html
    assert "7 free in all, but at most 4 on one server" in html
    assert "Waiting for a free GPU" not in html
    # The tenant's spend is one click away (it was reachable only through the tenant page).
    assert f'href="/tenants/{acme.namespace}/spend/" id="my-spend"' in html


FIELDS = [*form_data().keys(), "queue_until_capacity"]
texty = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        ["", "0", "-1", "9999999999", "gpu-ws", "u1.2xlarge", L40S, "WholeIP", "a" * 60]
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.dictionaries(st.sampled_from(FIELDS), texty, max_size=len(FIELDS)), base=st.booleans()
)
def test_fuzzed_form_never_500_and_invalid_never_enqueued(alice_client, acme, cluster, data, base):
    payload = {**(form_data(name=f"fz{abs(hash(str(data))) % 10**6}") if base else {}), **data}
    payload = {k: v.replace("\x00", "") for k, v in payload.items()}
    before = Operation.objects.count()
    check = alice_client.post(
        f"/tenants/{acme.namespace}/vms/new/check/", payload, HTTP_HX_REQUEST="true"
    )
    assert check.status_code == 200
    response = alice_client.post(f"/tenants/{acme.namespace}/vms/new/", payload)
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert Operation.objects.count() == before
    else:
        op = Operation.objects.latest("pk")
        # What was recorded passes the same validation again.
        from gpus.provisioning.forms import GpuVmForm

        form = GpuVmForm(
            payload,
            vm_kind="VMInstance",
            gpu_choices=[(L40S, "L40S")],
            catalogue=catalogue_for(cluster),
        )
        assert form.is_valid(), form.errors
        assert op.params["name"] == form.cleaned_data["name"]


@pytest.fixture
def alice_vm(acme, cluster) -> GpuWorkload:
    return GpuWorkload.objects.create(
        cluster=cluster,
        tenant=acme,
        kind=WorkloadKind.VM,
        app_kind="VMInstance",
        name="box",
        gpu_model=GpuModel.objects.get(resource_name=L40S),
        gpus_per_instance=1,
        state=ResourceState.RUNNING,
    )


def test_vm_actions_confirm_then_record(
    alice_client, acme, alice_vm, django_capture_on_commit_callbacks
):
    html = alice_client.get(f"/tenants/{acme.namespace}/gpus/").content.decode()
    assert f"/tenants/{acme.namespace}/vms/box/stop/" in html
    page = alice_client.get(f"/tenants/{acme.namespace}/vms/box/delete/")
    assert "Delete box?" in page.content.decode()
    assert not Operation.objects.exists()  # a GET only asks
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(f"/tenants/{acme.namespace}/vms/box/stop/")
    assert response.status_code == 302 and len(callbacks) == 1
    op = Operation.objects.get()
    assert op.kind == "stop" and op.manifests[0]["spec"] == {"runStrategy": "Halted"}
    # A second action while the first is in flight is refused in words, not a 500.
    page = alice_client.post(f"/tenants/{acme.namespace}/vms/box/delete/")
    assert page.status_code == 200 and "still in progress" in page.content.decode()


def test_restart_is_offered_only_for_a_pending_change(
    alice_client, carol, acme, alice_vm, django_capture_on_commit_callbacks
):
    carol_client = Client()
    carol_client.force_login(carol)
    url = f"/tenants/{acme.namespace}/vms/box/restart/"
    detail = f"/tenants/{acme.namespace}/gpus/{alice_vm.pk}/"
    assert url not in alice_client.get(detail).content.decode()
    refused = alice_client.post(url)
    assert refused.status_code == 200 and "no change waiting" in refused.content.decode()
    assert not Operation.objects.exists()
    GpuWorkload.objects.filter(pk=alice_vm.pk).update(reason="RestartRequired")
    assert url in alice_client.get(detail).content.decode()
    assert url in alice_client.get(f"/tenants/{acme.namespace}/gpus/").content.decode()
    assert url not in carol_client.get(detail).content.decode()  # a viewer only looks
    assert carol_client.post(url).status_code == 404
    with django_capture_on_commit_callbacks() as callbacks:
        assert alice_client.post(url).status_code == 302
    op = Operation.objects.get()
    assert op.kind == OperationKind.RESTART and len(callbacks) == 1
    assert op.params["phase"] == "stop"
    assert [d["spec"] for d in op.manifests] == [
        {"runStrategy": "Halted"},
        {"runStrategy": "Always"},
    ]


def test_vm_actions_are_404_for_another_tenant_and_need_csrf(bob_client, alice, acme, alice_vm):
    for action in ("start", "stop", "delete", "restart", "reboot"):
        url = f"/tenants/{acme.namespace}/vms/box/{action}/"
        assert bob_client.get(url).status_code == 404
        assert bob_client.post(url).status_code == 404
    assert bob_client.post("/tenants/tenant-globex/vms/box/stop/").status_code == 404
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"/tenants/{acme.namespace}/vms/box/stop/").status_code == 403
    assert not Operation.objects.exists()


@pytest.fixture
def alice_group(acme, cluster) -> GpuWorkload:
    return GpuWorkload.objects.create(
        cluster=cluster, tenant=acme, kind=WorkloadKind.NODE_GROUP, app_kind="Kubernetes",
        name="ml", node_group="gpu", gpu_model=GpuModel.objects.get(resource_name=L40S),
        gpus_per_instance=1, instances=2, state=ResourceState.RUNNING,
    )  # fmt: skip


def group_data(**extra) -> dict:
    data = {
        "cluster_name": "ml",
        "group": "gpu",
        "min_replicas": "3",
        "max_replicas": "4",
        "instance_type": "u1.2xlarge",
        "disk_size_gi": "100",
        "gpu_model": L40S,
        "gpus_per_node": "1",
    }
    return {**data, **extra}


def test_node_group_resize_previews_a_patch_of_that_group_then_records(
    alice_client, acme, alice_group, django_capture_on_commit_callbacks
):
    url = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/"
    page = alice_client.get(url).content.decode()
    assert "starts with 2 workers" in page and "nvidia.com/gpu: 1" in page
    html = alice_client.post(url, group_data()).content.decode()
    assert "nodeGroups:" in html and "minReplicas: 3" in html and "md0" in html
    assert not Operation.objects.exists()  # the first POST only previews
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(url, group_data(confirm="1"))
    assert response.status_code == 302 and len(callbacks) == 1
    op = Operation.objects.get()
    assert (op.kind, op.name, op.node_group, op.gpu_count) == ("resize", "ml", "gpu", 4)  # max 4
    assert list(op.manifests[0]["spec"]["nodeGroups"]) == ["gpu"]
    assert op.manifests[0]["spec"]["nodeGroups"]["gpu"]["ephemeralStorage"] == "100Gi"
    bad = alice_client.post(url, group_data(min_replicas="5", max_replicas="2", confirm="1"))
    assert "At least the minimum." in bad.content.decode()


def test_node_group_urls_are_404_for_another_tenant(bob_client, alice, acme, alice_group):
    for url in (
        f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/",
        f"/tenants/{acme.namespace}/kubernetes/nodegroups/new/",
        "/tenants/tenant-globex/kubernetes/ml/nodegroups/gpu/",
    ):
        assert bob_client.get(url).status_code == 404, url
        assert bob_client.post(url, group_data(confirm="1")).status_code == 404, url
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    url = f"/tenants/{acme.namespace}/kubernetes/ml/nodegroups/gpu/"
    assert client.post(url, group_data(confirm="1")).status_code == 403
    assert not Operation.objects.exists()


def test_audit_log_is_for_admins_and_filters(admin_client_, alice_client, bob, alice_op, acme):
    from gpus.provisioning.models import AuditEvent

    AuditEvent.objects.create(
        operation=alice_op, tenant=acme, actor_name="alice", action="operation.create",
        target="VMInstance tenant-acme/x",
    )  # fmt: skip
    AuditEvent.objects.create(
        tenant=acme,
        actor_name="portal",
        action="operation.failed",
        target="VMInstance tenant-acme/y",
    )
    assert alice_client.get("/audit/").status_code == 404
    page = admin_client_.get("/audit/").content.decode()
    assert "tenant-acme/x" in page and "tenant-acme/y" in page
    page = admin_client_.get("/audit/?actor=Alice&action=create").content.decode()
    assert "tenant-acme/x" in page and "tenant-acme/y" not in page
    page = admin_client_.get("/audit/?since=2000-01-01&until=2000-01-02").content.decode()
    assert "No event matches." in page
    # The tenant by its namespace, as the log shows it; no list of every tenant in the form.
    page = admin_client_.get("/audit/?tenant=tenant-acme").content.decode()
    assert "tenant-acme/x" in page and "<option" not in page.split('id="id_tenant"')[1][:200]
    page = admin_client_.get("/audit/?tenant=tenant-globex").content.decode()
    assert "No event matches." in page
    with pytest.raises(ValueError):
        AuditEvent.objects.first().delete()


def test_new_cluster_name_must_be_new_and_valid(alice_client, acme, alice_group):
    url = f"/tenants/{acme.namespace}/kubernetes/nodegroups/new/"
    page = alice_client.post(url, group_data(cluster_name="", new_cluster="ml")).content.decode()
    assert "This cluster exists" in page
    page = alice_client.post(url, group_data(cluster_name="", new_cluster="")).content.decode()
    assert "Pick a cluster, or name a new one." in page
    page = alice_client.post(url, group_data(cluster_name="", new_cluster="train")).content.decode()
    assert "kind: Kubernetes" in page and "gpuOperator" in page
    assert not Operation.objects.exists()


def test_node_group_and_new_cluster_names_follow_dns_1035(alice_client, acme, alice_group):
    url = f"/tenants/{acme.namespace}/kubernetes/nodegroups/new/"
    data = group_data(cluster_name="", new_cluster="Bad_One", group="-x")
    response = alice_client.post(url, data)
    form = response.context["form"]
    assert [e.code for e in form.errors.as_data()["new_cluster"]] == ["dns1035"]
    assert [e.code for e in form.errors.as_data()["group"]] == ["dns1035"]
    assert "start with a letter, end with a letter or digit" in response.content.decode()
    assert not Operation.objects.exists()


def test_the_cloud_init_field_says_its_limit(alice_client, acme, cluster):
    """The browser cuts a paste past the textarea's maxlength silently (#20 tryout): the help
    text says the limit, in the reader's language."""
    page = alice_client.get(f"/tenants/{acme.namespace}/vms/new/", HTTP_ACCEPT_LANGUAGE="fr")
    html = page.content.decode()
    assert 'maxlength="32768"' in html
    assert "d\u2019au plus 32\u202f768 caractères (le navigateur coupe un collage" in html


def test_a_refused_node_group_shows_no_preview_nor_button(alice_client, acme, alice_group):
    """After a capacity error the form shows the error, not the patch and "Add the group"
    (#20 tryout item 3)."""
    url = f"/tenants/{acme.namespace}/kubernetes/nodegroups/new/"
    page = alice_client.post(url, group_data(group="big", gpus_per_node="5", confirm="1"))
    html = page.content.decode()
    assert page.context["form"].errors and "at most 4 on one server" in html
    assert 'id="node-group-submit"' not in html and 'id="preview-yaml"' not in html
    assert "Check and preview" in html
    ok = alice_client.post(url, group_data(group="big")).content.decode()
    assert 'id="node-group-submit"' in ok and 'id="preview-yaml"' in ok
    assert not Operation.objects.exists()


def test_wording_of_the_tryout(alice_client, acme, alice_group):
    """#20 tryout item 5: a back link, not a breadcrumb with nothing after "›"; a stopped VM
    is "Arrêtée" (une VM) in French."""
    url = f"/tenants/{acme.namespace}/gpus/{alice_group.pk}/"
    html = alice_client.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "← Mes GPU</a>" in html and "›" not in html
    vm = GpuWorkload.objects.create(
        cluster=alice_group.cluster, tenant=acme, kind=WorkloadKind.VM, app_kind="VMInstance",
        name="ws", gpu_model=alice_group.gpu_model, gpus_per_instance=1, instances=1,
        state=ResourceState.STOPPED,
    )  # fmt: skip
    html = alice_client.get(f"/tenants/{acme.namespace}/gpus/{vm.pk}/", HTTP_ACCEPT_LANGUAGE="fr")
    assert "Arrêtée" in html.content.decode()
