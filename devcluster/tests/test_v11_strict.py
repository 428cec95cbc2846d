"""devcluster is never kinder than Cozystack v1.1 (issue 16): Helm sees the raw values, a duplicate
create is a 500 on every flavour, WorkloadMonitors as the v1.1 controller writes them, no GPU
feature-discovery labels on passthrough hosts, KubeVirt's permittedHostDevices.

Each test names the source it follows (see devcluster/README.md's table).
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from kubernetes import client

from devcluster.testing import DevCluster, run_devcluster

from .conftest import APPS, vm_instance, wait_for

G, V = APPS
L40S = "nvidia.com/AD102GL_L40S"
H100 = "nvidia.com/H100_94GB"

pytestmark = pytest.mark.timeout(180)

# The Hikube GPU page's "GPU on Kubernetes Worker" example: a node group with only an instance
# type and a GPU.
SEED_CLUSTER = textwrap.dedent("""\
    apiVersion: apps.cozystack.io/v1alpha1
    kind: Kubernetes
    metadata: {name: NAME, namespace: tenant-root}
    spec:
      nodeGroups:
        gpu-workers:
          instanceType: "u1.xlarge"
          gpus:
            - name: "nvidia.com/AD102GL_L40S"
    """)


def _cond(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return {}


def _kubectl_json(dc: DevCluster, *args: str) -> dict[str, Any]:
    return json.loads(dc.kubectl("get", *args, "-o", "json").stdout)


# --- 1. Helm sees the raw values; cozystack-api defaults on read only ------------------------


def test_seed_node_group_fails_helm_naming_every_missing_required_key(
    dc: DevCluster, tmp_path
) -> None:
    """rest.go Create stores the spec as the HelmRelease's values, undefaulted; Helm coalesces
    values.yaml (only md0 under nodeGroups) and its schema check names every required key the
    group lacks. A read shows the schema's defaults (rest_defaulting.go applySpecDefaults)."""
    manifest = tmp_path / "seed.yaml"
    manifest.write_text(SEED_CLUSTER.replace("NAME", "seedng"))
    assert "created" in dc.kubectl("apply", "-f", str(manifest)).stdout
    dc.kubectl(
        "wait", "--for=condition=Ready=False", "-n", "tenant-root", "kubernetes/seedng",
        "--timeout=30s",
    )  # fmt: skip
    obj = _kubectl_json(dc, "kubernetes", "seedng", "-n", "tenant-root")
    msg = _cond(obj, "Ready")["message"]
    assert _cond(obj, "Ready")["reason"] == "InstallFailed"
    assert msg.startswith(
        "Helm install failed for release tenant-root/kubernetes-seedng with chart "
        "kubernetes@1.1.0: values don't meet the specifications of the schema(s)"
    )
    assert (
        "- at '/nodeGroups/gpu-workers': missing properties 'ephemeralStorage', "
        "'maxReplicas', 'minReplicas', 'resources'"
    ) in msg
    # The read is defaulted although Helm never got those values.
    group = obj["spec"]["nodeGroups"]["gpu-workers"]
    assert group["ephemeralStorage"] == "20Gi" and group["maxReplicas"] == 10
    assert group["minReplicas"] == 0 and group["instanceType"] == "u1.xlarge"
    # No worker, no monitor: nothing was installed.
    monitors = _kubectl_json(dc, "workloadmonitors.cozystack.io", "-n", "tenant-root")["items"]
    assert not [m for m in monitors if m["metadata"]["name"].startswith("kubernetes-seedng")]
    dc.kubectl("delete", "-f", str(manifest), "--wait=false")


def test_any_update_writes_the_defaulted_spec_back(dc: DevCluster, tmp_path) -> None:
    """rest.go Update patches what r.Get returns (the defaulted spec) and stores the result: a
    merge patch touching another key fills the group's defaults, so Helm's retry then names
    only `resources` (required, no default); once sent, the retry installs."""
    manifest = tmp_path / "seed.yaml"
    manifest.write_text(SEED_CLUSTER.replace("NAME", "seedfix"))
    dc.kubectl("apply", "-f", str(manifest))
    dc.kubectl(
        "wait", "--for=condition=Ready=False", "-n", "tenant-root", "kubernetes/seedfix",
        "--timeout=30s",
    )  # fmt: skip
    custom = client.CustomObjectsApi(dc.api_client())

    def ready() -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", "seedfix")
        return _cond(obj, "Ready")

    def patch(group: dict[str, Any]) -> None:
        dc.kubectl(
            "patch", "kubernetes", "seedfix", "-n", "tenant-root", "--type=merge",
            "-p", json.dumps({"spec": {"nodeGroups": {"gpu-workers": group}}}),
        )  # fmt: skip

    patch({"maxReplicas": 2})
    msg = wait_for(
        lambda: (
            (r := ready()).get("status") == "False"
            and "missing propert" in r["message"]
            and "'ephemeralStorage'" not in r["message"]
            and r["message"]
        ),
        what="a failure naming only resources",
    )
    assert "- at '/nodeGroups/gpu-workers': missing property 'resources'" in msg
    patch({"resources": {}})
    res = dc.kubectl(
        "wait", "--for=condition=Ready=True", "-n", "tenant-root", "kubernetes/seedfix",
        "--timeout=30s",
    )  # fmt: skip
    assert "condition met" in res.stdout
    obj = _kubectl_json(dc, "kubernetes", "seedfix", "-n", "tenant-root")
    assert obj["spec"]["nodeGroups"]["gpu-workers"]["maxReplicas"] == 2
    dc.kubectl("delete", "-f", str(manifest), "--wait=false")


def test_a_label_patch_writes_the_defaults_into_the_values_and_helm_upgrades(
    dc: DevCluster,
) -> None:
    """Even a patch a GET cannot tell apart (a label) goes through rest.go Update, which writes
    the defaulted spec as the HelmRelease's values: they changed, so Helm upgrades (.v2)."""
    custom = client.CustomObjectsApi(dc.api_client())
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "VMInstance",
        "metadata": {"name": "rawvm"},
        "spec": {"runStrategy": "Halted"},
    }
    custom.create_namespaced_custom_object(G, V, "tenant-root", "vminstances", body)

    def released() -> str:
        try:
            obj = custom.get_namespaced_custom_object(G, V, "tenant-root", "vminstances", "rawvm")
        except client.ApiException:
            return ""  # the read cache has not seen the create yet
        return _cond(obj, "Released").get("message", "")

    try:
        wait_for(lambda: ".v1 " in released(), what="installed")
        before = custom.get_namespaced_custom_object(G, V, "tenant-root", "vminstances", "rawvm")
        wait_for(
            lambda: (
                dc.kubectl(
                    "label", "vminstance", "rawvm", "-n", "tenant-root", "team=ml", check=False
                ).returncode
                == 0
            ),
            what="label accepted once the read cache has caught up",
        )
        wait_for(lambda: ".v2 " in released(), what="a Helm upgrade for a label")
        after = custom.get_namespaced_custom_object(G, V, "tenant-root", "vminstances", "rawvm")
        assert after["spec"] == before["spec"]  # a GET shows no difference
    finally:
        custom.delete_namespaced_custom_object(G, V, "tenant-root", "vminstances", "rawvm")


def test_a_group_added_by_patch_is_stored_as_sent(dc: DevCluster, tmp_path) -> None:
    """A merge patch adding a group to a working cluster: the old groups come back defaulted,
    the new one as sent, so Helm's upgrade fails naming the keys the new group lacks."""
    custom = client.CustomObjectsApi(dc.api_client())
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "Kubernetes",
        "metadata": {"name": "addng"},
        "spec": {"nodeGroups": {"md0": {"minReplicas": 0}}},
    }
    custom.create_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", body)
    # md0 is completed by values.yaml's md0 (Helm coalesces maps key by key): it installs.
    dc.kubectl(
        "wait", "--for=condition=Ready=True", "-n", "tenant-root", "kubernetes/addng",
        "--timeout=30s",
    )  # fmt: skip
    dc.kubectl(
        "patch", "kubernetes", "addng", "-n", "tenant-root", "--type=merge",
        "-p", json.dumps({"spec": {"nodeGroups": {"gpu": {"gpus": [{"name": L40S}]}}}}),
    )  # fmt: skip
    failed = wait_for(
        lambda: (
            obj := custom.get_namespaced_custom_object(
                G, V, "tenant-root", "kuberneteses", "addng"
            ),
            _cond(obj, "Ready").get("reason") == "UpgradeFailed" and obj,
        )[1],
        what="UpgradeFailed",
    )
    msg = _cond(failed, "Ready")["message"]
    assert (
        "- at '/nodeGroups/gpu': missing properties 'ephemeralStorage', 'instanceType', "
        "'maxReplicas', 'minReplicas', 'resources'"
    ) in msg
    assert "/nodeGroups/md0" not in msg
    custom.delete_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", "addng")


# --- 4. a duplicate create is a 500 on head too ------------------------------------------------


def test_head_answers_a_duplicate_create_with_a_500(tmp_path) -> None:
    """cozystack v1.6.2 pkg/registry/apps/application/rest.go still wraps the HelmRelease
    error with fmt.Errorf (`failed to create HelmRelease: %v`, `failed to update HelmRelease:
    %v`): the apiserver answers 500 with no reason, as on v1.1."""
    with run_devcluster(tmp_path, flavour="head", speed=50.0) as head:
        custom = client.CustomObjectsApi(head.api_client())
        body = vm_instance("dup", [], ns="tenant-root", runStrategy="Halted")
        custom.create_namespaced_custom_object(G, V, "tenant-root", "vminstances", body)
        with pytest.raises(client.ApiException) as exc:
            custom.create_namespaced_custom_object(G, V, "tenant-root", "vminstances", body)
        st = json.loads(exc.value.body)
        assert exc.value.status == 500 and "reason" not in st
        assert st["message"] == (
            "failed to create HelmRelease: helmreleases.helm.toolkit.fluxcd.io "
            '"vm-instance-dup" already exists'
        )
        res = head.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
        assert res.returncode != 0
        assert "failed to create HelmRelease" in res.stderr and "already exists" in res.stderr


# --- 2. KubeVirt's permittedHostDevices ------------------------------------------------------


def _kv(dc: DevCluster, name: str, ns: str = "tenant-root") -> dict[str, Any]:
    res = dc.kubectl(
        "get", "virtualmachines.kubevirt.io", name, "-n", ns, "-o", "json", check=False
    )
    return json.loads(res.stdout) if res.returncode == 0 else {}


def _launchers(dc: DevCluster, prefix: str, ns: str = "tenant-root") -> list[dict[str, Any]]:
    pods = _kubectl_json(dc, "pods", "-n", ns)["items"]
    return [p for p in pods if p["metadata"]["name"].startswith(f"virt-launcher-{prefix}")]


def test_a_gpu_not_permitted_never_gets_a_launcher_pod(dc: DevCluster) -> None:
    """KubeVirt v1.6.2: RenderLaunchManifest fails (renderresources.go
    validatePermittedHostDevices), lifecycle.go returns a FailedCreate sync error, the VMI stays
    Pending with Synchronized=False (conditions.go CheckFailure), vm.go copies it onto the VM,
    which prints Starting; no pod, so no GPU is held. Permitting the device lets it start."""
    dc.set_faults({"rules": [], "knobs": {"permitted_host_devices": [L40S]}})
    try:
        custom = client.CustomObjectsApi(dc.api_client())
        body = vm_instance("notperm", [H100], ns="tenant-root")
        custom.create_namespaced_custom_object(G, V, "tenant-root", "vminstances", body)
        vm = wait_for(
            lambda: _cond(kv := _kv(dc, "vm-instance-notperm"), "Synchronized") and kv,
            timeout=30,
            what="Synchronized=False",
        )
        sync = _cond(vm, "Synchronized")
        assert (sync["status"], sync["reason"]) == ("False", "FailedCreate")
        assert sync["message"] == (
            "failed to render launch manifest: GPU nvidia.com/H100_94GB is not permitted in "
            "permittedHostDevices configuration"
        )
        assert vm["status"]["printableStatus"] == "Starting"
        assert _cond(vm, "Ready")["reason"] == "PodNotExists"
        printed = dc.kubectl(
            "get", "virtualmachines.kubevirt.io", "vm-instance-notperm", "-n", "tenant-root"
        ).stdout  # fmt: skip
        assert "Starting" in printed
        assert _launchers(dc, "vm-instance-notperm") == []
        # The Helm release itself is fine: the chart does not look GPUs up.
        app = custom.get_namespaced_custom_object(G, V, "tenant-root", "vminstances", "notperm")
        assert _cond(app, "Ready")["status"] == "True"
        # The platform team permits it: virt-controller's requeue creates the pod.
        dc.set_faults({"rules": [], "knobs": {"permitted_host_devices": None}})
        wait_for(
            lambda: _kv(dc, "vm-instance-notperm")["status"]["printableStatus"] == "Running",
            timeout=30,
            what="Running once permitted",
        )
        assert not _cond(_kv(dc, "vm-instance-notperm"), "Synchronized")
        assert len(_launchers(dc, "vm-instance-notperm")) == 1
    finally:
        dc.clear_faults()
        client.CustomObjectsApi(dc.api_client()).delete_namespaced_custom_object(
            G, V, "tenant-root", "vminstances", "notperm"
        )


def test_node_group_workers_with_a_gpu_not_permitted_stay_starting(dc: DevCluster) -> None:
    dc.set_faults({"rules": [], "knobs": {"permitted_host_devices": [L40S]}})
    custom = client.CustomObjectsApi(dc.api_client())
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "Kubernetes",
        "metadata": {"name": "npng"},
        "spec": {
            "nodeGroups": {
                "h": {"minReplicas": 1, "maxReplicas": 2, "instanceType": "u1.xlarge",
                      "ephemeralStorage": "20Gi", "resources": {}, "gpus": [{"name": H100}]},
            }
        },
    }  # fmt: skip
    try:
        custom.create_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", body)

        def workers() -> list[dict[str, Any]]:
            vms = _kubectl_json(dc, "virtualmachines.kubevirt.io", "-n", "tenant-root")["items"]
            return [v for v in vms if v["metadata"]["name"].startswith("kubernetes-npng-h-")]

        stuck = wait_for(
            lambda: (
                len(ws := workers()) == 2
                and all(_cond(w, "Synchronized").get("reason") == "FailedCreate" for w in ws)
                and ws
            ),
            timeout=30,
            what="both workers FailedCreate",
        )
        assert {w["status"]["printableStatus"] for w in stuck} == {"Starting"}
        assert _launchers(dc, "kubernetes-npng-h-") == []
        monitor = _kubectl_json(dc, "workloadmonitors.cozystack.io", "kubernetes-npng-h", "-n",
                                "tenant-root")  # fmt: skip
        assert monitor["status"]["observedReplicas"] == 0
        assert monitor["status"]["availableReplicas"] == 0
    finally:
        dc.clear_faults()
        custom.delete_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", "npng")


# --- 3. no GPU feature-discovery labels on passthrough hosts ---------------------------------


def test_passthrough_hosts_carry_no_gpu_feature_discovery_labels(dc: DevCluster) -> None:
    """GFD is a `container` workload operand (NVIDIA/gpu-operator v25.3.0 state_manager.go
    gpuStateLabels); on vm-passthrough hosts only the sandbox operands are labelled. The model
    is the device plugin's resource name in capacity/allocatable."""
    for label in ("nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory",
                  "nvidia.com/gpu.family"):  # fmt: skip
        res = dc.kubectl("get", "nodes", "-l", label, "-o", "name")
        assert res.stdout.strip() == "", label
    hosts = _kubectl_json(dc, "nodes", "-l", "nvidia.com/gpu.workload.config=vm-passthrough")
    assert len(hosts["items"]) == 9
    for node in hosts["items"]:
        labels = node["metadata"]["labels"]
        assert labels["nvidia.com/gpu.deploy.vfio-manager"] == "true"
        assert labels["nvidia.com/gpu.deploy.sandbox-device-plugin"] == "true"
        assert "nvidia.com/gpu.deploy.gpu-feature-discovery" not in labels
        gpus = [k for k in node["status"]["capacity"] if k.startswith("nvidia.com/")]
        assert len(gpus) == 1 and node["status"]["allocatable"][gpus[0]]


# --- 5 and 6. WorkloadMonitors as the v1.1 controller writes them ----------------------------


def test_workload_monitors_never_store_operational(dc: DevCluster) -> None:
    monitors = _kubectl_json(dc, "workloadmonitors.cozystack.io", "-A")["items"]
    assert monitors
    assert all("operational" not in (m.get("status") or {}) for m in monitors)
    table = dc.kubectl("get", "workloadmonitors.cozystack.io", "-n", "tenant-acme").stdout
    header, *rows = table.splitlines()
    # A null cell prints as blanks under the column (kubectl's table printer).
    at = header.index("OPERATIONAL")
    assert rows and all(row[at : at + len("OPERATIONAL")].strip() == "" for row in rows)
    assert "OBSERVED" in header.split() and header.split()[-1] == "AGE"


def test_worker_monitor_counts_the_launcher_pods_its_selector_matches(dc: DevCluster) -> None:
    """cluster.yaml's worker monitor selects cluster-name, deployment-name and role=worker
    (CAPK puts the role and cluster on the VMI template, KubeVirt copies them to the pod):
    observed = matching pods, available = Ready ones (booted VMs, not GPUs ready in the tenant
    cluster). Workers that cannot be placed are observed (Pending pods) but not available."""
    custom = client.CustomObjectsApi(dc.api_client())
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "Kubernetes",
        "metadata": {"name": "selng"},
        "spec": {
            "nodeGroups": {
                "big": {"minReplicas": 1, "maxReplicas": 2, "instanceType": "u1.xlarge",
                        "ephemeralStorage": "20Gi", "resources": {},
                        "gpus": [{"name": H100}] * 9},  # no host has 9
            }
        },
    }  # fmt: skip
    custom.create_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", body)
    try:
        selector = {
            "cluster.x-k8s.io/cluster-name": "kubernetes-selng",
            "cluster.x-k8s.io/deployment-name": "kubernetes-selng-big",
            "cluster.x-k8s.io/role": "worker",
        }
        label = ",".join(f"{k}={v}" for k, v in selector.items())
        pods = wait_for(
            lambda: (
                len(p := _kubectl_json(dc, "pods", "-n", "tenant-root", "-l", label)["items"]) == 2
                and p
            ),
            timeout=30,
            what="two Pending launcher pods",
        )
        assert {p["status"]["phase"] for p in pods} == {"Pending"}

        def monitor_of(name: str, ns: str) -> dict[str, Any]:
            return _kubectl_json(dc, "workloadmonitors.cozystack.io", name, "-n", ns)

        monitor = wait_for(
            lambda: (
                (m := monitor_of("kubernetes-selng-big", "tenant-root"))["status"][
                    "observedReplicas"
                ]
                == 2
                and m
            ),
            what="observed 2",
        )
        assert monitor["spec"]["selector"] == selector
        assert monitor["status"]["availableReplicas"] == 0
        # The demo's running cluster: its Ready launcher pods are exactly the available ones.
        ml = monitor_of("kubernetes-ml-gpu", "tenant-acme")
        ml_label = ",".join(f"{k}={v}" for k, v in ml["spec"]["selector"].items())
        ml_pods = _kubectl_json(dc, "pods", "-n", "tenant-acme", "-l", ml_label)["items"]
        ready = [
            p for p in ml_pods
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in p["status"].get("conditions", []))
        ]  # fmt: skip
        assert len(ml_pods) == ml["status"]["observedReplicas"] >= 1
        assert len(ready) == ml["status"]["availableReplicas"]
    finally:
        custom.delete_namespaced_custom_object(G, V, "tenant-root", "kuberneteses", "selng")
