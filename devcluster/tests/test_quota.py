"""ResourceQuota: served, kept up to date and enforced on virt-launcher pods as kube-apiserver's
quota admission does, and reported by KubeVirt the way virt-controller reports a refused pod."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devcluster.testing import DevCluster, run_devcluster

from .conftest import APPS, kubevirt_status, vm_instance, wait_for

NS = "tenant-root"
H100 = "nvidia.com/H100_94GB"
L40S = "nvidia.com/AD102GL_L40S"

QUOTA_YAML = f"""\
apiVersion: v1
kind: ResourceQuota
metadata:
  name: gpu-quota
  namespace: {NS}
spec:
  hard:
    requests.{H100}: "1"
    {L40S}: "0"
"""


@pytest.fixture(scope="module")
def qdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    # Its own cluster: a quota in a shared one would refuse other tests' VMs.
    with run_devcluster(tmp_path_factory.mktemp("quota"), fleet="demo", speed=50.0) as cluster:
        yield cluster


def _quota(qdc: DevCluster) -> dict[str, Any]:
    out = qdc.kubectl("get", "resourcequota", "gpu-quota", "-n", NS, "-o", "json")
    return json.loads(out.stdout)


def _kv(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return custom.get_namespaced_custom_object(
        "kubevirt.io", "v1", NS, "virtualmachines", f"vm-instance-{name}"
    )


def test_quota_enforced_on_launcher_pods_and_reported_by_kubevirt(
    qdc: DevCluster, tmp_path: Path
) -> None:
    custom = client.CustomObjectsApi(qdc.api_client())
    core = client.CoreV1Api(qdc.api_client())
    path = tmp_path / "quota.yaml"
    path.write_text(QUOTA_YAML)
    qdc.kubectl("create", "-f", str(path))
    quota = _quota(qdc)
    # The controller's status: hard as asked, used only for what the pod evaluator tracks
    # (an extended resource without `requests.` is accepted and never counted).
    assert quota["status"]["hard"] == {f"requests.{H100}": "1", L40S: "0"}
    assert quota["status"]["used"] == {f"requests.{H100}": "0"}

    for name, gpu in (("q1", H100), ("q2", H100), ("q3", L40S)):
        custom.create_namespaced_custom_object(
            *APPS, NS, "vminstances", vm_instance(name, [gpu], ns=NS)
        )
    wait_for(lambda: kubevirt_status(custom, NS, "vm-instance-q1") == "Running", what="q1 runs")
    # Not enforced: `nvidia.com/...` without the `requests.` prefix.
    wait_for(lambda: kubevirt_status(custom, NS, "vm-instance-q3") == "Running", what="q3 runs")

    def refused() -> dict[str, Any] | None:
        vm = _kv(custom, "q2")
        conds = {c["type"]: c for c in vm.get("status", {}).get("conditions", [])}
        return conds.get("Synchronized")

    sync = wait_for(refused, what="q2's pod refused by the quota")
    vm = _kv(custom, "q2")
    assert vm["status"]["printableStatus"] == "Starting"  # the VMI is still Pending
    assert sync["status"] == "False" and sync["reason"] == "FailedCreate"
    assert re.fullmatch(
        r'failed to create virtual machine pod: pods "virt-launcher-vm-instance-q2-\w{5}" is '
        r"forbidden: exceeded quota: gpu-quota, requested: requests\.nvidia\.com/H100_94GB=1, "
        r"used: requests\.nvidia\.com/H100_94GB=1, limited: requests\.nvidia\.com/H100_94GB=1",
        sync["message"],
    ), sync["message"]
    # No pod, so no GPU held; the VMI carries KubeVirt's Warning event.
    pods = core.list_namespaced_pod(NS, label_selector="kubevirt.io/domain=vm-instance-q2")
    assert pods.items == []
    events = qdc.kubectl(
        "get", "events", "-n", NS, "--field-selector", "reason=FailedCreate", "-o", "json"
    )
    (event,) = json.loads(events.stdout)["items"]
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "VirtualMachineInstance"
    assert event["message"].startswith('Error creating pod: pods "virt-launcher-vm-instance-q2-')
    assert "exceeded quota: gpu-quota" in event["message"]
    wait_for(
        lambda: _quota(qdc)["status"]["used"] == {f"requests.{H100}": "1"}, what="used follows"
    )

    # A tenant reads its quota and cannot change it.
    tenant = qdc.kubectl("get", "resourcequota", "-o", "name", context=NS)
    assert tenant.stdout.strip() == "resourcequota/gpu-quota"
    denied = qdc.kubectl(
        "patch", "resourcequota", "gpu-quota", "--type=merge", "-p", "{}", context=NS, check=False
    )
    assert denied.returncode != 0 and "forbidden" in denied.stderr

    # Raising the quota lets KubeVirt's retry create the pod.
    qdc.kubectl(
        "patch",
        "resourcequota",
        "gpu-quota",
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"hard": {f"requests.{H100}": "2"}}}),
    )
    wait_for(lambda: kubevirt_status(custom, NS, "vm-instance-q2") == "Running", what="q2 runs")
    wait_for(lambda: _quota(qdc)["status"]["used"] == {f"requests.{H100}": "2"}, what="used is 2")


def test_quota_rejects_a_value_that_is_not_a_quantity(qdc: DevCluster, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(QUOTA_YAML.replace('"1"', "lots").replace("gpu-quota", "bad-quota"))
    out = qdc.kubectl("create", "-f", str(path), check=False)
    assert out.returncode != 0
    assert 'ResourceQuota "bad-quota" is invalid' in out.stderr
    assert "lots" in out.stderr
