"""Render-time failures of the v1.1 charts that the schema check does not catch: what Helm's
install or upgrade then reports (the HelmRelease retries forever, so fixing the cause clears it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LABEL_VALUE_MAX = 63  # k8s.io/apimachinery validation.LabelValueMaxLength


INSTANCETYPE = "instancetype"
PREFERENCE = "preference"

# The chart's own words (each chart says it its way).
VM_INSTANCE_TYPE = "Specified instanceType does not exist in the cluster: %s"
VM_PROFILE = "Specified instanceProfile does not exist in the cluster: %s"
LEGACY_INSTANCE_TYPE = "Specified instancetype not exists in cluster: %s"
LEGACY_PROFILE = "Specified profile not exists in cluster: %s"
GROUP_INSTANCE_TYPE = "Specified instancetype not exists in cluster: %s"


def render_problem(
    plural: str,
    release: str,
    spec: dict[str, Any],
    disk_exists: Callable[[str], bool] = lambda _name: True,
    exists: Callable[[str, str], bool] = lambda _kind, _name: True,
) -> str:
    """Why Helm cannot apply the rendered chart ("" when it can).

    VM instances: the chart looks each disk's DataVolume (`vm-disk-<name>`) up at render time
    and fails when it is not there yet (cozystack v1.1 packages/apps/vm-instance/templates/
    vm.yaml: `lookup ... DataVolume` then `fail "Specified disk not exists in cluster: %s"`).
    The DataVolume exists once the disk's own release has installed (vm-disk templates/dv.yaml).
    Before that, vm.yaml looks the instance type and preference up (cluster-scoped) and fails
    with `Specified instanceType does not exist in the cluster: %s` / `Specified instanceProfile
    does not exist in the cluster: %s`; the kubernetes chart (cluster.yaml) looks each group's
    instance type up: `Specified instancetype not exists in cluster: %s`.

    Kubernetes apps: `<release>-<group>` names the MachineDeployment and is the value of its
    `cluster.x-k8s.io/deployment-name` label (cozystack v1.1 packages/apps/kubernetes/templates/
    cluster.yaml); Cluster API's MachineDeployment webhook refuses a name that cannot be a label
    value (kubernetes-sigs/cluster-api PR 7712, `machinedeployment_webhook.go`)."""
    if plural in ("vminstances", "virtualmachines"):
        # vm.yaml starts with `lookup` of the cluster instance type and preference, then `fail`
        # (v1.1 vm-instance; the legacy virtual-machine chart, last at 08a5f9890^, words it
        # "instancetype not exists" / "profile not exists").
        legacy = plural == "virtualmachines"
        itype, profile = spec.get("instanceType"), spec.get("instanceProfile")
        if itype and not exists(INSTANCETYPE, str(itype)):
            return (LEGACY_INSTANCE_TYPE if legacy else VM_INSTANCE_TYPE) % itype
        if profile and not exists(PREFERENCE, str(profile)):
            return (LEGACY_PROFILE if legacy else VM_PROFILE) % profile
    if plural == "vminstances":
        for disk in spec.get("disks") or []:
            name = disk.get("name") if isinstance(disk, dict) else None
            if name and not disk_exists(name):
                return f"Specified disk not exists in cluster: {name}"
        return ""
    if plural != "kuberneteses":
        return ""
    groups = spec.get("nodeGroups")
    groups = groups if isinstance(groups, dict) else {}
    # Rendering (lookup + fail per group) comes before anything is applied (the webhook below).
    for group in groups.values():
        itype = group.get("instanceType") if isinstance(group, dict) else None
        if itype and not exists(INSTANCETYPE, str(itype)):
            return GROUP_INSTANCE_TYPE % itype
    for group in groups:
        name = f"{release}-{group}"
        if len(name) > LABEL_VALUE_MAX:
            return (
                'admission webhook "validation.machinedeployment.cluster.x-k8s.io" denied the '
                f'request: MachineDeployment.cluster.x-k8s.io "{name}" is invalid: metadata.name: '
                f'Invalid value: "{name}": must be no more than {LABEL_VALUE_MAX} characters'
            )
    return ""
