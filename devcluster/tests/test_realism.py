"""devcluster is never kinder than Cozystack v1.1: each behaviour of issue 8, per flavour.

Timings are knobs (seconds at --speed 1, divided by speed) set through /devcluster/faults so each
test sees the behaviour for long enough without sleeping on wall-clock assumptions.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from devcluster.testing import DevCluster, run_devcluster

from .conftest import kubevirt_status, vm_instance, wait_for

G, V = "apps.cozystack.io", "v1alpha1"
H100 = "nvidia.com/H100_94GB"
L40S = "nvidia.com/AD102GL_L40S"
A100 = "nvidia.com/GA100_A100_PCIE_80GB"


@pytest.fixture
def knobs(dc: DevCluster) -> Iterator[Any]:
    """Set timing knobs for one test; the defaults come back afterwards."""

    def set_knobs(**values: Any) -> None:
        dc.set_faults({"rules": [], "knobs": values})

    yield set_knobs
    dc.clear_faults()


def _cond(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return {}


def _get(custom: client.CustomObjectsApi, ns: str, plural: str, name: str) -> dict[str, Any]:
    try:
        return custom.get_namespaced_custom_object(G, V, ns, plural, name)
    except client.ApiException as e:
        if e.status == 404:
            return {}
        raise


def _vm(custom: client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    try:
        return custom.get_namespaced_custom_object("kubevirt.io", "v1", ns, "virtualmachines", name)
    except client.ApiException as e:
        if e.status == 404:
            return {}
        raise


def _delete(custom: client.CustomObjectsApi, ns: str, plural: str, name: str) -> None:
    custom.delete_namespaced_custom_object(G, V, ns, plural, name)
    wait_for(lambda: not _get(custom, ns, plural, name), what=f"{name} uninstalled")


# --- 1. spec errors surface later, like Helm ------------------------------------------------


def test_schema_error_is_accepted_then_install_fails_and_retries(
    dc: DevCluster, custom: client.CustomObjectsApi, core: client.CoreV1Api, knobs: Any
) -> None:
    knobs(helm_retry=5.0)  # 0.1 s at speed 50: several attempts during the test
    body = vm_instance("helm-bad", [L40S], ns="tenant-root", runStrategy="Sometimes")
    made = custom.create_namespaced_custom_object(G, V, "tenant-root", "vminstances", body)
    assert made["spec"]["runStrategy"] == "Sometimes"  # 201: only the name was checked
    ready = wait_for(
        lambda: (
            _cond(_get(custom, "tenant-root", "vminstances", "helm-bad"), "Ready").get("reason")
            == "InstallFailed"
            and _get(custom, "tenant-root", "vminstances", "helm-bad")
        ),
        what="InstallFailed",
    )
    cond = _cond(ready, "Ready")
    assert cond["status"] == "False"
    assert cond["message"] == (
        "Helm install failed for release tenant-root/vm-instance-helm-bad with chart "
        "vm-instance@1.1.0: values don't meet the specifications of the schema(s) in the "
        "following chart(s):\nvm-instance:\n- at '/runStrategy': value must be one of 'Always', "
        "'Halted', 'Manual', 'RerunOnFailure', 'Once'"
    )
    assert _cond(ready, "Released")["reason"] == "InstallFailed"
    assert "observedGeneration" not in cond and "generation" not in ready["metadata"]
    assert not _vm(custom, "tenant-root", "vm-instance-helm-bad")  # nothing was installed

    def warnings() -> list[Any]:
        return [
            e
            for e in core.list_namespaced_event(
                "tenant-root", field_selector="involvedObject.kind=HelmRelease"
            ).items
            if e.involved_object.name == "vm-instance-helm-bad" and e.reason == "InstallFailed"
        ]

    ev = wait_for(lambda: [e for e in warnings() if (e.count or 0) >= 2], what="retried")[0]
    assert ev.type == "Warning" and ev.source.component == "helm-controller"
    assert ev.involved_object.api_version == "helm.toolkit.fluxcd.io/v2"
    # Fixing the spec lets the next attempt install it.
    custom.patch_namespaced_custom_object(
        G, V, "tenant-root", "vminstances", "helm-bad", {"spec": {"runStrategy": "Halted"}}
    )
    wait_for(
        lambda: (
            _cond(_get(custom, "tenant-root", "vminstances", "helm-bad"), "Ready").get("reason")
            == "InstallSucceeded"
        ),
        what="installed after the fix",
    )
    _delete(custom, "tenant-root", "vminstances", "helm-bad")


def test_failed_upgrade_keeps_the_previous_release_running(
    custom: client.CustomObjectsApi,
) -> None:
    body = vm_instance("helm-up", [H100], ns="tenant-root")
    custom.create_namespaced_custom_object(G, V, "tenant-root", "vminstances", body)
    wait_for(lambda: kubevirt_status(custom, "tenant-root", "vm-instance-helm-up") == "Running")
    first = _get(custom, "tenant-root", "vminstances", "helm-up")
    assert _cond(first, "Released")["message"].startswith(
        "Helm install succeeded for release tenant-root/vm-instance-helm-up.v1 "
    )
    version = first["status"]["version"]
    custom.patch_namespaced_custom_object(
        G, V, "tenant-root", "vminstances", "helm-up", {"spec": {"gpus": [{"nam": "typo"}]}}
    )
    failed = wait_for(
        lambda: (
            obj := _get(custom, "tenant-root", "vminstances", "helm-up"),
            _cond(obj, "Ready").get("reason") == "UpgradeFailed" and obj,
        )[1],
        what="UpgradeFailed",
    )
    msg = _cond(failed, "Ready")["message"]
    assert msg.startswith(
        "Helm upgrade failed for release tenant-root/vm-instance-helm-up with chart "
        "vm-instance@1.1.0: "
    )
    assert "- at '/gpus/0': missing property 'name'" in msg
    # Helm never received the broken values: the VM keeps the old release.
    vm = _vm(custom, "tenant-root", "vm-instance-helm-up")
    assert vm["status"]["printableStatus"] == "Running"
    assert vm["spec"]["template"]["spec"]["domain"]["devices"]["gpus"][0]["deviceName"] == H100
    # A good upgrade: revision .v2, same chart version (values do not change status.version).
    custom.patch_namespaced_custom_object(
        G, V, "tenant-root", "vminstances", "helm-up", {"spec": {"gpus": [{"name": H100}]}}
    )
    good = wait_for(
        lambda: (
            obj := _get(custom, "tenant-root", "vminstances", "helm-up"),
            _cond(obj, "Ready").get("reason") == "UpgradeSucceeded" and obj,
        )[1],
        what="UpgradeSucceeded",
    )
    assert ".v2 with chart vm-instance@1.1.0" in _cond(good, "Released")["message"]
    assert good["status"]["version"] == version
    assert "generation" not in good["metadata"]
    _delete(custom, "tenant-root", "vminstances", "helm-up")


# --- 2. errors as v1.1 returns them; reads from a lagging cache -----------------------------


def test_reads_lag_behind_writes(
    dc: DevCluster, custom: client.CustomObjectsApi, knobs: Any
) -> None:
    knobs(cache_lag=100.0)  # 2 s at speed 50
    body = vm_instance("lagged", [], ns="tenant-root", runStrategy="Halted")
    custom.create_namespaced_custom_object(G, V, "tenant-root", "vminstances", body)
    with pytest.raises(client.ApiException) as exc:
        custom.get_namespaced_custom_object(G, V, "tenant-root", "vminstances", "lagged")
    assert exc.value.status == 404  # the cache has not seen it yet
    listed = custom.list_namespaced_custom_object(G, V, "tenant-root", "vminstances")["items"]
    assert "lagged" not in {o["metadata"]["name"] for o in listed}  # lists too
    obj = wait_for(lambda: _get(custom, "tenant-root", "vminstances", "lagged"), timeout=10)
    custom.patch_namespaced_custom_object(
        G, V, "tenant-root", "vminstances", "lagged", {"metadata": {"labels": {"a": "1"}}}
    )
    with pytest.raises(client.ApiException) as exc:
        custom.patch_namespaced_custom_object(
            G, V, "tenant-root", "vminstances", "lagged", {"metadata": {"labels": {"b": "2"}}}
        )
    st = json.loads(exc.value.body)
    assert exc.value.status == 500 and "reason" not in st
    assert st["message"] == (
        "failed to update HelmRelease: Operation cannot be fulfilled on "
        'helmreleases.helm.toolkit.fluxcd.io "vm-instance-lagged": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    assert obj["metadata"]["name"] == "lagged"
    knobs(cache_lag=0.0)
    _delete(custom, "tenant-root", "vminstances", "lagged")


def test_head_knobs_paging_and_node_groups(tmp_path) -> None:
    flags = ["--continue-ttl", "0", "--event-ttl", "7200"]
    with run_devcluster(tmp_path, flavour="head", speed=50.0, extra_args=flags) as head:
        knobs = head.get_faults()["knobs"]
        assert knobs["continue_ttl"] == 0.0 and knobs["event_ttl"] == 7200.0
        assert knobs["stop_grace"] == 30.0  # defaults for the others
        with pytest.raises(RuntimeError):
            head.set_faults({"rules": [], "knobs": {"stop_grace": -1}})
        with pytest.raises(RuntimeError):
            head.set_faults({"rules": [], "knobs": {"no_such_knob": 1}})
        core = client.CoreV1Api(head.api_client())
        token = core.list_node(limit=2).metadata._continue
        with pytest.raises(client.ApiException) as exc:
            core.list_node(limit=2, _continue=token)
        assert exc.value.status == 410
        custom = client.CustomObjectsApi(head.api_client())
        body = vm_instance("dup", [], ns="tenant-root", runStrategy="Halted")
        custom.create_namespaced_custom_object(G, V, "tenant-root", "vminstances", body)
        with pytest.raises(client.ApiException) as exc:
            custom.create_namespaced_custom_object(G, V, "tenant-root", "vminstances", body)
        st = json.loads(exc.value.body)
        # v1.6.2's rest.go still wraps it (test_v11_strict covers the message).
        assert exc.value.status == 500 and "reason" not in st
        assert st["message"].startswith("failed to create HelmRelease: ")
        # HEAD's chart: no md0 merged in, a group starts at minReplicas (no `replicas: 2`).
        k8s = {
            "apiVersion": f"{G}/{V}",
            "kind": "Kubernetes",
            "metadata": {"name": "hk"},
            "spec": {
                "nodeGroups": {
                    "g": {"minReplicas": 1, "maxReplicas": 3, "instanceType": "u1.large",
                          "diskSize": "20Gi", "resources": {}, "gpus": []},
                }
            },
        }  # fmt: skip
        custom.create_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", k8s)

        def monitors() -> dict[str, Any]:
            items = custom.list_namespaced_custom_object(
                "cozystack.io", "v1alpha1", "tenant-root", "workloadmonitors"
            )["items"]
            return {
                m["metadata"]["name"]: m["status"]["observedReplicas"]
                for m in items
                if m["metadata"]["name"].startswith("kubernetes-hk-")
            }

        wait_for(lambda: monitors() == {"kubernetes-hk-g": 1}, what="head starts at min")


# --- 4. node groups as the v1.1 chart runs them --------------------------------------------


def test_node_groups_start_at_two_and_follow_the_autoscaler(
    dc: DevCluster, custom: client.CustomObjectsApi, knobs: Any
) -> None:
    knobs(scale_down_unneeded=100.0)  # 2 s at speed 50: the chart's 2 workers are visible
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "Kubernetes",
        "metadata": {"name": "ng"},
        "spec": {
            "nodeGroups": {
                "gpu": {
                    "minReplicas": 0,
                    "maxReplicas": 3,
                    "instanceType": "u1.xlarge",
                    "ephemeralStorage": "20Gi",
                    "resources": {},
                    "gpus": [{"name": H100}],
                }
            }
        },
    }
    custom.create_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", body)

    def monitor(group: str) -> dict[str, Any]:
        try:
            return custom.get_namespaced_custom_object(
                "cozystack.io", "v1alpha1", "tenant-root", "workloadmonitors",
                f"kubernetes-ng-{group}",
            )  # fmt: skip
        except client.ApiException:
            return {}

    def observed(group: str) -> int | None:
        return (monitor(group).get("status") or {}).get("observedReplicas")

    wait_for(lambda: observed("gpu") == 2, what="chart's replicas: 2")
    # values.yaml's md0 is merged in although the user did not ask for it.
    wait_for(lambda: observed("md0") == 2, what="md0 merged in")
    assert "replicas" not in monitor("gpu")["spec"]
    # Unneeded workers go after --scale-down-unneeded-time, down to minReplicas.
    wait_for(lambda: observed("gpu") == 0 and observed("md0") == 0, what="scaled down to 0")
    # Pending demand scales the group up (up to maxReplicas).
    dc.set_faults({"rules": [], "knobs": {"pending_demand": {"tenant-root/ng/gpu": 1}}})
    wait_for(lambda: observed("gpu") == 1, what="scale-up on demand")
    dc.set_faults({"rules": [], "knobs": {"pending_demand": {}}})
    # Any Helm upgrade puts every group back to 2.
    custom.patch_namespaced_custom_object(
        G, V, "tenant-root", "kuberneteses", "ng", {"spec": {"controlPlane": {"replicas": 3}}}
    )
    wait_for(lambda: observed("gpu") == 2, what="upgrade resets to 2")
    # md0 cannot be removed: a null deletes the key from the spec, Helm's default comes back.
    custom.patch_namespaced_custom_object(
        G, V, "tenant-root", "kuberneteses", "ng", {"spec": {"nodeGroups": {"md0": None}}}
    )
    assert "md0" not in _get(custom, "tenant-root", "kuberneteses", "ng")["spec"]["nodeGroups"]
    wait_for(lambda: monitor("md0"), what="md0 still there")
    _delete(custom, "tenant-root", "kuberneteses", "ng")


def test_changing_worker_gpus_rolls_with_surge_and_needs_spare_gpus(
    dc: DevCluster, custom: client.CustomObjectsApi, knobs: Any
) -> None:
    knobs(scale_down_unneeded=100000.0)
    group = {
        "minReplicas": 2,
        "maxReplicas": 2,
        "instanceType": "u1.xlarge",
        "ephemeralStorage": "20Gi",
        "resources": {},
        "gpus": [{"name": H100}] * 8,
    }
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "Kubernetes",
        "metadata": {"name": "roll"},
        "spec": {"nodeGroups": {"md0": {**group, "gpus": [], "minReplicas": 0}, "h": group}},
    }
    custom.create_namespaced_custom_object(G, V, "tenant-globex", "kuberneteses", body)

    def workers() -> dict[str, str]:
        vms = custom.list_namespaced_custom_object(
            "kubevirt.io", "v1", "tenant-globex", "virtualmachines"
        )["items"]
        return {
            v["metadata"]["name"]: v["status"]["printableStatus"]
            for v in vms
            if v["metadata"]["name"].startswith("kubernetes-roll-h-")
        }

    old = wait_for(
        lambda: (w := workers(), len(w) == 2 and set(w.values()) == {"Running"} and w)[1],
        what="both H100 hosts used",
    )
    custom.patch_namespaced_custom_object(
        G, V, "tenant-globex", "kuberneteses", "roll",
        {"spec": {"nodeGroups": {"h": {"gpus": [{"name": H100}] * 4}}}},
    )  # fmt: skip
    # New workers come up beside the old ones; no H100 is free, so they cannot run and the
    # old ones keep running.
    stuck = wait_for(lambda: (w := workers(), len(w) == 4 and w)[1], what="surge workers created")
    new = {n: s for n, s in stuck.items() if n not in old}
    wait_for(
        lambda: all(workers().get(n) == "ErrorUnschedulable" for n in new), what="no spare GPUs"
    )
    assert all(workers()[n] == "Running" for n in old)
    _delete(custom, "tenant-globex", "kuberneteses", "roll")


# --- 5. VM lifecycle ------------------------------------------------------------------------


def test_stop_restart_required_manual_and_delete(
    dc: DevCluster, custom: client.CustomObjectsApi, core: client.CoreV1Api, knobs: Any
) -> None:
    knobs(stop_grace=100.0)  # 2 s at speed 50
    ns = "tenant-globex"
    custom.create_namespaced_custom_object(G, V, ns, "vminstances", vm_instance("life", [H100], ns))
    wait_for(lambda: kubevirt_status(custom, ns, "vm-instance-life") == "Running")
    # gpus on a running VM: RestartRequired, the VM keeps running with its old devices.
    custom.patch_namespaced_custom_object(
        G, V, ns, "vminstances", "life", {"spec": {"gpus": [{"name": H100}, {"name": H100}]}}
    )
    vm = wait_for(
        lambda: (v := _vm(custom, ns, "vm-instance-life"), _cond(v, "RestartRequired") and v)[1],
        what="RestartRequired",
    )
    assert vm["status"]["printableStatus"] == "Running"
    assert _cond(vm, "RestartRequired")["status"] == "True"
    pod = core.list_namespaced_pod(ns, label_selector="vm.kubevirt.io/name=vm-instance-life")
    assert pod.items[0].spec.containers[0].resources.requests[H100] == "1"
    # Manual leaves it as it is.
    custom.patch_namespaced_custom_object(
        G, V, ns, "vminstances", "life", {"spec": {"runStrategy": "Manual"}}
    )
    wait_for(lambda: _vm(custom, ns, "vm-instance-life")["spec"]["runStrategy"] == "Manual")
    assert kubevirt_status(custom, ns, "vm-instance-life") == "Running"
    # Stop: Stopping during the grace period, the pod (and its GPU) still there.
    custom.patch_namespaced_custom_object(
        G, V, ns, "vminstances", "life", {"spec": {"runStrategy": "Halted"}}
    )
    wait_for(lambda: kubevirt_status(custom, ns, "vm-instance-life") == "Stopping")
    pods = core.list_namespaced_pod(ns, label_selector="vm.kubevirt.io/name=vm-instance-life")
    assert pods.items and pods.items[0].spec.node_name
    wait_for(lambda: kubevirt_status(custom, ns, "vm-instance-life") == "Stopped", timeout=20)
    # Start again: through Starting, with the new devices, RestartRequired gone.
    rv = custom.list_namespaced_custom_object("kubevirt.io", "v1", ns, "virtualmachines")[
        "metadata"
    ]["resourceVersion"]
    custom.patch_namespaced_custom_object(
        G, V, ns, "vminstances", "life", {"spec": {"runStrategy": "Always"}}
    )
    phases = []
    for ev in watch.Watch().stream(
        custom.list_namespaced_custom_object, "kubevirt.io", "v1", ns, "virtualmachines",
        resource_version=rv, timeout_seconds=20,
    ):  # fmt: skip
        if ev["object"]["metadata"]["name"] == "vm-instance-life":
            phases.append(ev["object"]["status"]["printableStatus"])
            if phases[-1] == "Running":
                break
    assert "Starting" in phases and phases[-1] == "Running"
    assert not _cond(_vm(custom, ns, "vm-instance-life"), "RestartRequired")
    pod = core.list_namespaced_pod(ns, label_selector="vm.kubevirt.io/name=vm-instance-life")
    assert pod.items[0].spec.containers[0].resources.requests[H100] == "2"
    # Delete: Terminating, deletionTimestamp, GPUs held, same name cannot be created.
    custom.delete_namespaced_custom_object(G, V, ns, "vminstances", "life")
    app = _get(custom, ns, "vminstances", "life")
    assert app["metadata"]["deletionTimestamp"]
    wait_for(lambda: kubevirt_status(custom, ns, "vm-instance-life") == "Terminating")
    assert core.list_namespaced_pod(ns, label_selector="vm.kubevirt.io/name=vm-instance-life").items
    with pytest.raises(client.ApiException) as exc:
        custom.create_namespaced_custom_object(
            G, V, ns, "vminstances", vm_instance("life", [H100], ns)
        )
    assert exc.value.status == 500 and "already exists" in json.loads(exc.value.body)["message"]
    wait_for(lambda: not _get(custom, ns, "vminstances", "life"), timeout=20, what="uninstalled")
    assert not core.list_namespaced_pod(
        ns, label_selector="vm.kubevirt.io/name=vm-instance-life"
    ).items


def _ready_message(custom: client.CustomObjectsApi, ns: str, plural: str, name: str) -> str:
    try:
        obj = custom.get_namespaced_custom_object(G, V, ns, plural, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return ""  # reads lag writes
        raise
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c.get("message", "") for c in conds if c["type"] == "Ready"), "")


def test_disk_states(dc: DevCluster, custom: client.CustomObjectsApi, knobs: Any) -> None:
    ns = "tenant-root"
    knobs(import_fail=[f"{ns}/broken-disk"])
    custom.create_namespaced_custom_object(
        G, V, ns, "vminstances", vm_instance("nodisk", [], ns, disks=[{"name": "missing"}])
    )
    # v1.1's chart looks the disk's DataVolume up at render time: no VM at all, a failed install.
    wait_for(
        lambda: (
            "Specified disk not exists in cluster: missing"
            in _ready_message(custom, ns, "vminstances", "nodisk")
        )
    )
    disk = {"apiVersion": f"{G}/{V}", "kind": "VMDisk", "metadata": {"name": "broken-disk"}}
    custom.create_namespaced_custom_object(G, V, ns, "vmdisks", {**disk, "spec": {}})
    custom.create_namespaced_custom_object(
        G, V, ns, "vminstances", vm_instance("baddisk", [], ns, disks=[{"name": "broken-disk"}])
    )
    wait_for(lambda: kubevirt_status(custom, ns, "vm-instance-baddisk") == "DataVolumeError")
    for name in ("nodisk", "baddisk"):
        _delete(custom, ns, "vminstances", name)
    _delete(custom, ns, "vmdisks", "broken-disk")


def test_vm_provisioning_while_its_disk_imports(tmp_path) -> None:
    # Slow speed so the import (5 s / speed) is long enough to be seen.
    with run_devcluster(tmp_path, speed=2.0) as slow:
        custom = client.CustomObjectsApi(slow.api_client())
        ns = "tenant-root"
        disk = {"apiVersion": f"{G}/{V}", "kind": "VMDisk", "metadata": {"name": "sys"}}
        custom.create_namespaced_custom_object(G, V, ns, "vmdisks", {**disk, "spec": {}})
        custom.create_namespaced_custom_object(
            G, V, ns, "vminstances", vm_instance("imp", [], ns, disks=[{"name": "sys"}])
        )
        seen = []
        for ev in watch.Watch().stream(
            custom.list_namespaced_custom_object,
            "kubevirt.io",
            "v1",
            ns,
            "virtualmachines",
            timeout_seconds=20,
        ):
            if ev["object"]["metadata"]["name"] == "vm-instance-imp":
                seen.append(ev["object"]["status"]["printableStatus"])
                if seen[-1] == "Running":
                    break
        assert seen[0] == "Provisioning" and "Starting" in seen and seen[-1] == "Running"
        assert "WaitingForVolumeBinding" not in seen


# --- 6. RBAC --------------------------------------------------------------------------------


def test_tenant_groups_and_impersonation_headers(dc: DevCluster) -> None:
    path = "/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-globex/vminstances"
    vms = "/apis/kubevirt.io/v1/namespaces/tenant-globex/virtualmachines"

    def call(p: str, *groups: str) -> int:
        # http.client, because each Impersonate-Group must be its own header line.
        conn = http.client.HTTPConnection("127.0.0.1", dc.port, timeout=10)
        try:
            conn.putrequest("GET", p)
            conn.putheader("Authorization", f"Bearer {dc.admin_token}")
            conn.putheader("Impersonate-User", "alice")
            for g in groups:
                conn.putheader("Impersonate-Group", g)
            conn.endheaders()
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    assert call(path, "tenant-globex") == 403  # no group named like the namespace
    assert call(path, "tenant-globex-admin") == 200
    assert call(path, "tenant-globex-view") == 200
    assert call(path, "other", "tenant-globex-use") == 200  # two headers, two groups
    assert call(path, "other,tenant-globex-admin") == 403  # one header is one group
    assert call(vms, "tenant-globex-admin") == 200
    assert call(vms + "?watch=1&timeoutSeconds=1", "tenant-globex-admin") == 403
    assert call(vms + "?watch=1&timeoutSeconds=1", "tenant-globex-super-admin") == 200


# --- 7. events ------------------------------------------------------------------------------


def test_scheduler_events_use_event_time_and_series(
    dc: DevCluster, custom: client.CustomObjectsApi, core: client.CoreV1Api, knobs: Any
) -> None:
    knobs(event_ttl=1000.0)  # 20 s at speed 50
    ns = "tenant-root"
    custom.create_namespaced_custom_object(
        G,
        V,
        ns,
        "vminstances",
        vm_instance("evs", [H100] * 9, ns),  # no host has 9
    )
    wait_for(lambda: kubevirt_status(custom, ns, "vm-instance-evs") == "ErrorUnschedulable")

    def failed() -> list[dict[str, Any]]:
        raw = json.loads(dc.request("GET", f"/api/v1/namespaces/{ns}/events")[2])["items"]
        return [
            e
            for e in raw
            if e["reason"] == "FailedScheduling"
            and "vm-instance-evs" in e["involvedObject"]["name"]
        ]

    ev = wait_for(lambda: [e for e in failed() if e.get("series")], what="series")[0]
    assert ev["firstTimestamp"] is None and ev["lastTimestamp"] is None and "count" not in ev
    assert ev["eventTime"].endswith("Z") and "." in ev["eventTime"]
    assert ev["series"]["count"] >= 2 and ev["series"]["lastObservedTime"]
    assert ev["reportingComponent"] == "default-scheduler"
    typed = [e for e in core.list_namespaced_event(ns).items if e.reason == "FailedScheduling"]
    assert typed and typed[0].series.count >= 2
    pod = ev["involvedObject"]["name"]
    out = dc.kubectl("events", "-n", ns, "--for", f"pod/{pod}").stdout
    assert "FailedScheduling" in out and "0/9 nodes are available" in out
    _delete(custom, ns, "vminstances", "evs")  # no more attempts, no more events
    knobs(event_ttl=10.0)  # 0.2 s: they expire
    wait_for(lambda: not failed(), what="events expired")


# --- 8. lists and watches -------------------------------------------------------------------


def test_continue_tokens_expire(dc: DevCluster, core: client.CoreV1Api, knobs: Any) -> None:
    knobs(continue_ttl=0.0)
    first = core.list_node(limit=2)
    token = first.metadata._continue
    assert token
    with pytest.raises(client.ApiException) as exc:
        core.list_node(limit=2, _continue=token)
    st = json.loads(exc.value.body)
    assert exc.value.status == 410 and st["reason"] == "Expired"
    assert st["message"].startswith("The provided continue parameter is too old")


def test_v11_app_lists_ignore_limit_and_watch_resends_as_added(
    dc: DevCluster, custom: client.CustomObjectsApi
) -> None:
    listed = custom.list_namespaced_custom_object(G, V, "tenant-acme", "vminstances", limit=1)
    assert not listed["metadata"].get("continue")
    all_items = custom.list_cluster_custom_object(G, V, "vminstances", limit=1)["items"]
    assert len(all_items) >= 2
    rv = listed["metadata"]["resourceVersion"]
    _, _, raw = dc.request(
        "GET",
        "/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-acme/vminstances"
        "?watch=1&resourceVersion=1&allowWatchBookmarks=true&timeoutSeconds=1",
    )
    events = [json.loads(line) for line in raw.splitlines() if line.strip()]
    # The list is resent as ADDED, with no 410 and no BOOKMARK; a change that lands within the
    # watch's second (another test's delete finishing under load) may follow the resend.
    assert events and events[0]["type"] == "ADDED"
    assert not {"ERROR", "BOOKMARK"} & {e["type"] for e in events}
    assert int(rv) >= 1


def test_kubectl_can_follow_a_v11_app_watch(dc: DevCluster) -> None:
    res = dc.kubectl(
        "get", "vminstances", "-n", "tenant-acme", "--watch", "--request-timeout=2s", check=False
    )
    assert "gpu-ws" in res.stdout


def test_the_worker_template_hash_covers_the_whole_template() -> None:
    """v1.1 cluster.yaml names the KubevirtMachineTemplate by a hash of the whole rendered
    template: instanceType, roles, resources.cpu/memory, gpus, ephemeralStorage (default 20Gi);
    minReplicas/maxReplicas are MachineDeployment annotations and roll nothing."""
    from devcluster.reconciler import worker_template

    base = {
        "minReplicas": 1, "maxReplicas": 2, "instanceType": "u1.large", "roles": [],
        "resources": {}, "gpus": [{"name": L40S}],
    }  # fmt: skip
    same = [
        {**base, "minReplicas": 2, "maxReplicas": 5},
        {**base, "ephemeralStorage": "20Gi"},  # the chart's default
        {**base, "resources": {"cpu": None}},
    ]
    changed = [
        {**base, "instanceType": "u1.xlarge"},
        {**base, "roles": ["ingress-nginx"]},
        {**base, "resources": {"cpu": 8}},
        {**base, "resources": {"memory": "32Gi"}},
        {**base, "gpus": [{"name": L40S}, {"name": L40S}]},
        {**base, "ephemeralStorage": "100Gi"},
    ]
    assert all(worker_template(g) == worker_template(base) for g in same)
    assert len({worker_template(g) for g in changed} | {worker_template(base)}) == 7
    # The later charts' diskSize is the same disk.
    assert worker_template({**base, "diskSize": "100Gi"}) == worker_template(changed[-1])


def test_changing_a_groups_roles_rolls_its_workers(
    dc: DevCluster, custom: client.CustomObjectsApi, knobs: Any
) -> None:
    """A roles change alone is a new worker template: new workers (new hash in their names)
    replace the old ones. A group without GPUs, so the surge always fits."""
    knobs(scale_down_unneeded=100000.0)
    group = {
        "minReplicas": 2, "maxReplicas": 3, "instanceType": "u1.large",
        "ephemeralStorage": "20Gi", "resources": {}, "roles": [], "gpus": [],
    }  # fmt: skip
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "Kubernetes",
        "metadata": {"name": "roles"},
        "spec": {"nodeGroups": {"md0": {**group, "minReplicas": 0}, "w": group}},
    }
    custom.create_namespaced_custom_object(G, V, "tenant-globex", "kuberneteses", body)
    prefix = "kubernetes-roles-w-"

    def templates() -> set[str]:
        vms = custom.list_namespaced_custom_object(
            "kubevirt.io", "v1", "tenant-globex", "virtualmachines"
        )["items"]
        names = [v["metadata"]["name"] for v in vms]
        return {n[len(prefix) :].split("-")[0] for n in names if n.startswith(prefix)}

    old = wait_for(lambda: (t := templates(), len(t) == 1 and t)[1], what="workers")
    custom.patch_namespaced_custom_object(
        G, V, "tenant-globex", "kuberneteses", "roles",
        {"spec": {"nodeGroups": {"w": {"roles": ["ingress-nginx"]}}}},
    )  # fmt: skip
    new = wait_for(lambda: (t := templates(), bool(t - old) and t - old)[1], what="a roll")
    assert len(new) == 1
    wait_for(lambda: templates() == new, what="the old workers gone")
    _delete(custom, "tenant-globex", "kuberneteses", "roles")
