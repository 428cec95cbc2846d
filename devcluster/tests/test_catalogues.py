"""The catalogues a v1.1 cluster serves (instance types, preferences, golden images, storage
classes) and the charts' render-time lookups of them, seen with kubectl and the real client."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from kubernetes import client

from devcluster.testing import DevCluster, run_devcluster

from .conftest import APPS, kubevirt_status, vm_instance, wait_for

pytestmark = pytest.mark.timeout(120)
G, V = APPS


def _ready(custom: client.CustomObjectsApi, ns: str, plural: str, name: str) -> dict[str, Any]:
    try:
        obj = custom.get_namespaced_custom_object(G, V, ns, plural, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return {}  # reads lag writes
        raise
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Ready"), {})


@pytest.fixture
def fast_retry(dc: DevCluster) -> Any:
    dc.set_faults({"rules": [], "knobs": {"helm_retry": 5.0}})  # 0.1 s at speed 50
    yield
    dc.clear_faults()


def test_kubectl_lists_the_v11_catalogues(dc: DevCluster) -> None:
    types = dc.kubectl("get", "virtualmachineclusterinstancetypes", "-o", "name").stdout.split()
    # cozystack v1.1.0 packages/system/kubevirt-instancetypes: 48 types, u1 among them.
    assert len(types) == 48
    assert "virtualmachineclusterinstancetype.instancetype.kubevirt.io/u1.2xlarge" in types
    u1 = json.loads(dc.kubectl("get", "vmcit", "u1.2xlarge", "-o", "json").stdout)
    assert u1["spec"]["cpu"]["guest"] == 8 and u1["spec"]["memory"]["guest"] == "32Gi"
    prefs = dc.kubectl("get", "vmcps", "-o", "name").stdout.split()
    assert "virtualmachineclusterpreference.instancetype.kubevirt.io/ubuntu" in prefs
    images = dc.kubectl("-n", "cozy-public", "get", "dv", "-o", "name").stdout.split()
    assert "datavolume.cdi.kubevirt.io/vm-image-ubuntu-2404" in images
    classes = dc.kubectl("get", "storageclasses", "-o", "name").stdout.split()
    assert sorted(classes) == [
        "storageclass.storage.k8s.io/local",
        "storageclass.storage.k8s.io/replicated",
        "storageclass.storage.k8s.io/replicated-async",
    ]
    # The portal's own account reads them; a tenant does not list cluster-scoped objects.
    assert "u1.2xlarge" in dc.kubectl("--context", "portal", "get", "vmcit").stdout
    denied = dc.kubectl("--context", "tenant-acme", "get", "vmcit", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    # Golden images in cozy-public only (a Role there), never a tenant's disks.
    portal_dvs = dc.kubectl("--context", "portal", "-n", "cozy-public", "get", "dv", "-o", "name")
    assert "datavolume.cdi.kubevirt.io/vm-image-ubuntu-2404" in portal_dvs.stdout.split()
    elsewhere = dc.kubectl("--context", "portal", "get", "dv", "-A", check=False)
    assert elsewhere.returncode != 0 and "forbidden" in elsewhere.stderr.lower()


def test_unknown_instance_type_fails_the_install_until_it_exists(
    dc: DevCluster, custom: client.CustomObjectsApi, tmp_path: Any, fast_retry: Any
) -> None:
    ns = "tenant-root"
    body = vm_instance("cat-it", [], ns, instanceType="zz1.huge")
    custom.create_namespaced_custom_object(G, V, ns, "vminstances", body)
    cond = wait_for(
        lambda: (
            (c := _ready(custom, ns, "vminstances", "cat-it")).get("reason") == "InstallFailed"
            and c
        ),
        what="InstallFailed",
    )
    # cozystack v1.1.0 packages/apps/vm-instance/templates/vm.yaml, word for word.
    assert cond["message"] == (
        "Helm install failed for release tenant-root/vm-instance-cat-it with chart "
        "vm-instance@1.1.0: Specified instanceType does not exist in the cluster: zz1.huge"
    )
    # An admin adds the instance type: Helm's next retry installs the VM.
    manifest = tmp_path / "it.yaml"
    manifest.write_text(
        textwrap.dedent("""\
            apiVersion: instancetype.kubevirt.io/v1beta1
            kind: VirtualMachineClusterInstancetype
            metadata: {name: zz1.huge}
            spec: {cpu: {guest: 64}, memory: {guest: 256Gi}}
            """)
    )
    dc.kubectl("create", "-f", str(manifest))
    wait_for(
        lambda: _ready(custom, ns, "vminstances", "cat-it").get("reason") == "InstallSucceeded",
        what="installed once the type exists",
    )
    dc.kubectl("delete", "vmcit", "zz1.huge")
    custom.delete_namespaced_custom_object(G, V, ns, "vminstances", "cat-it")


def test_a_profile_the_cluster_lost_fails_until_it_is_back(
    dc: DevCluster, custom: client.CustomObjectsApi, tmp_path: Any, fast_retry: Any
) -> None:
    """The schema's enum lists every v1.1 preference; one an admin removed passes the schema
    and fails the chart's lookup."""
    ns = "tenant-root"
    saved = tmp_path / "sles.json"
    saved.write_text(dc.kubectl("get", "vmcp", "sles", "-o", "json").stdout)
    dc.kubectl("delete", "vmcp", "sles")
    body = vm_instance("cat-pf", [], ns, instanceProfile="sles")
    custom.create_namespaced_custom_object(G, V, ns, "vminstances", body)
    wait_for(
        lambda: (
            _ready(custom, ns, "vminstances", "cat-pf")
            .get("message", "")
            .endswith("Specified instanceProfile does not exist in the cluster: sles")
        ),
        what="profile refused",
    )
    events = dc.kubectl("-n", ns, "get", "events", "--field-selector", "reason=InstallFailed")
    assert "Specified instanceProfile does not exist in the cluster: sles" in events.stdout
    dc.kubectl("create", "-f", str(saved))
    wait_for(
        lambda: _ready(custom, ns, "vminstances", "cat-pf").get("reason") == "InstallSucceeded",
        what="installed once the preference is back",
    )
    custom.delete_namespaced_custom_object(G, V, ns, "vminstances", "cat-pf")


def test_node_group_with_unknown_instance_type_fails_the_kubernetes_release(
    dc: DevCluster, custom: client.CustomObjectsApi, fast_retry: Any
) -> None:
    ns = "tenant-root"
    group = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "instanceType": "u1.9xlarge",
        "ephemeralStorage": "20Gi",
        "resources": {},
        "roles": [],
    }
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "Kubernetes",
        "metadata": {"name": "cat-k"},
        "spec": {"version": "v1.33", "nodeGroups": {"gpu": group}},
    }
    custom.create_namespaced_custom_object(G, V, ns, "kuberneteses", body)
    cond = wait_for(
        lambda: (
            (c := _ready(custom, ns, "kuberneteses", "cat-k")).get("reason") == "InstallFailed"
            and c
        ),
        what="InstallFailed",
    )
    # packages/apps/kubernetes/templates/cluster.yaml words it its own way.
    assert cond["message"].endswith("Specified instancetype not exists in cluster: u1.9xlarge")
    custom.patch_namespaced_custom_object(
        G,
        V,
        ns,
        "kuberneteses",
        "cat-k",
        {"spec": {"nodeGroups": {"gpu": {"instanceType": "u1.8xlarge"}}}},
    )
    wait_for(
        lambda: _ready(custom, ns, "kuberneteses", "cat-k").get("reason") == "InstallSucceeded",
        what="installed after the fix",
    )
    custom.delete_namespaced_custom_object(G, V, ns, "kuberneteses", "cat-k")


def test_a_disk_from_a_missing_image_waits_with_clone_without_source(
    dc: DevCluster, custom: client.CustomObjectsApi, tmp_path: Any
) -> None:
    ns = "tenant-root"
    disk = {
        "apiVersion": f"{G}/{V}",
        "kind": "VMDisk",
        "metadata": {"name": "cat-img-system"},
        "spec": {"source": {"image": {"name": "beos-5"}}, "storage": "20Gi"},
    }
    custom.create_namespaced_custom_object(G, V, ns, "vmdisks", disk)
    wait_for(
        lambda: _ready(custom, ns, "vmdisks", "cat-img-system").get("status") == "True",
        what="the disk's release",
    )
    body = vm_instance("cat-img", [], ns, disks=[{"name": "cat-img-system"}])
    custom.create_namespaced_custom_object(G, V, ns, "vminstances", body)

    def warning() -> str:
        out = dc.kubectl(
            "-n", ns, "get", "events", "--field-selector",
            "reason=CloneWithoutSource,involvedObject.name=vm-disk-cat-img-system",
            "-o", "json",
        ).stdout  # fmt: skip
        items = json.loads(out)["items"]
        return items[0]["message"] if items else ""

    # CDI (pvc-clone-controller.go): the clone waits for its source, with a Warning event.
    assert wait_for(warning, what="CloneWithoutSource") == (
        "The source pvc vm-image-beos-5 doesn't exist"
    )
    assert kubevirt_status(custom, ns, "vm-instance-cat-img") == "Provisioning"
    # The image appears (an admin imports it): the clone goes on and the VM starts.
    image = tmp_path / "image.yaml"
    image.write_text(
        textwrap.dedent("""\
            apiVersion: cdi.kubevirt.io/v1beta1
            kind: DataVolume
            metadata: {name: vm-image-beos-5, namespace: cozy-public}
            spec:
              source: {http: {url: "https://example.org/beos.img"}}
              storage: {resources: {requests: {storage: 5Gi}}, storageClassName: replicated}
            """)
    )
    dc.kubectl("create", "-f", str(image))
    wait_for(lambda: kubevirt_status(custom, ns, "vm-instance-cat-img") == "Running", what="up")
    dc.kubectl("-n", "cozy-public", "delete", "dv", "vm-image-beos-5")
    custom.delete_namespaced_custom_object(G, V, ns, "vminstances", "cat-img")
    custom.delete_namespaced_custom_object(G, V, ns, "vmdisks", "cat-img-system")


def test_the_legacy_chart_words_a_missing_instance_type_its_own_way(tmp_path: Any) -> None:
    with run_devcluster(tmp_path, flavour="legacy", speed=50.0) as legacy:
        legacy.set_faults({"rules": [], "knobs": {"helm_retry": 5.0}})
        custom = client.CustomObjectsApi(legacy.api_client())
        ns = "tenant-root"
        body = {
            "apiVersion": f"{G}/{V}",
            "kind": "VirtualMachine",
            "metadata": {"name": "cat-legacy"},
            "spec": {
                "running": True,
                "instanceType": "zz9.none",
                "systemDisk": {"image": "ubuntu", "storage": "5Gi"},
            },
        }
        custom.create_namespaced_custom_object(G, V, ns, "virtualmachines", body)
        cond = wait_for(
            lambda: (
                (c := _ready(custom, ns, "virtualmachines", "cat-legacy")).get("reason")
                == "InstallFailed"
                and c
            ),
            what="InstallFailed",
        )
        # packages/apps/virtual-machine/templates/vm.yaml, its last version (08a5f9890^).
        assert cond["message"].endswith("Specified instancetype not exists in cluster: zz9.none")
