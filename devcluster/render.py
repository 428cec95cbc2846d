"""Render-time failures of the v1.1 charts that the schema check does not catch: what Helm's
install or upgrade then reports (the HelmRelease retries forever, so fixing the cause clears it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LABEL_VALUE_MAX = 63  # k8s.io/apimachinery validation.LabelValueMaxLength


def render_problem(
    plural: str,
    release: str,
    spec: dict[str, Any],
    disk_exists: Callable[[str], bool] = lambda _name: True,
) -> str:
    """Why Helm cannot apply the rendered chart ("" when it can).

    VM instances: the chart looks each disk's DataVolume (`vm-disk-<name>`) up at render time
    and fails when it is not there yet (cozystack v1.1 packages/apps/vm-instance/templates/
    vm.yaml: `lookup ... DataVolume` then `fail "Specified disk not exists in cluster: %s"`).
    The DataVolume exists once the disk's own release has installed (vm-disk templates/dv.yaml).

    Kubernetes apps: `<release>-<group>` names the MachineDeployment and is the value of its
    `cluster.x-k8s.io/deployment-name` label (cozystack v1.1 packages/apps/kubernetes/templates/
    cluster.yaml); Cluster API's MachineDeployment webhook refuses a name that cannot be a label
    value (kubernetes-sigs/cluster-api PR 7712, `machinedeployment_webhook.go`)."""
    if plural == "vminstances":
        for disk in spec.get("disks") or []:
            name = disk.get("name") if isinstance(disk, dict) else None
            if name and not disk_exists(name):
                return f"Specified disk not exists in cluster: {name}"
        return ""
    if plural != "kuberneteses":
        return ""
    groups = spec.get("nodeGroups")
    for group in groups if isinstance(groups, dict) else {}:
        name = f"{release}-{group}"
        if len(name) > LABEL_VALUE_MAX:
            return (
                'admission webhook "validation.machinedeployment.cluster.x-k8s.io" denied the '
                f'request: MachineDeployment.cluster.x-k8s.io "{name}" is invalid: metadata.name: '
                f'Invalid value: "{name}": must be no more than {LABEL_VALUE_MAX} characters'
            )
    return ""
