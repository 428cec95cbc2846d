"""Every Cozystack app shape the portal knows: names, kinds, and pure manifest builders.

No I/O, no client imports: plain values in, plain dicts out, so the provisioning code
can store the desired manifest on its Operation row (one builder for the preview and the task)
and tests can validate the output against the real chart schemas.

Shapes follow cozystack-hikube-domain.md §2 (Cozystack v1.1 = Hikube baseline).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GROUP = "apps.cozystack.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

VM_INSTANCE = "VMInstance"
VM_DISK = "VMDisk"
KUBERNETES = "Kubernetes"
VIRTUAL_MACHINE = "VirtualMachine"

# URL plurals: note "kuberneteses" (ApplicationDefinition), not "kubernetes".
PLURALS: dict[str, str] = {
    VM_INSTANCE: "vminstances",
    VM_DISK: "vmdisks",
    KUBERNETES: "kuberneteses",
    VIRTUAL_MACHINE: "virtualmachines",
}

# Each app is a HelmRelease named prefix+name, and that must fit in 53 characters.
PREFIXES: dict[str, str] = {
    VM_INSTANCE: "vm-instance-",
    VM_DISK: "vm-disk-",
    KUBERNETES: "kubernetes-",
    VIRTUAL_MACHINE: "virtual-machine-",
}
HELM_RELEASE_MAX = 53

NODE_GROUP_DISK_FIELDS = ("ephemeralStorage", "diskSize")
DEFAULT_NODE_GROUP_DISK = "ephemeralStorage"  # v1.1

# DNS-1035 labels (app and node-group names): the one pattern; the forms validate with it too.
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# What one operation may send: the forms bound every text, so a request within them is far
# smaller; this bounds what reaches the cluster (and the Helm release secret) whatever the path.
MAX_MANIFESTS_BYTES = 256 * 1024


def manifests_size(docs: Sequence[dict[str, Any]]) -> int:
    """The bytes of the manifests as JSON, the way they are sent."""
    return len(json.dumps(list(docs), separators=(",", ":")).encode())


class ManifestError(ValueError):
    """A value the cluster would reject anyway; caught before anything is sent."""


# --- names ---------------------------------------------------------------------


def max_name_length(kind: str) -> int:
    return HELM_RELEASE_MAX - len(PREFIXES[kind])


def release_name(kind: str, name: str) -> str:
    """The HelmRelease (and KubeVirt VM / WorkloadMonitor) name behind an app."""
    return PREFIXES[kind] + name


def name_errors(kind: str, name: str) -> list[str]:
    """Plain-words problems with ``name`` for ``kind``; empty if it is valid."""
    problems = []
    if not DNS1035.match(name or ""):
        problems.append(
            "use lowercase letters, digits and '-', "
            "start with a letter and end with a letter or digit"
        )
    limit = max_name_length(kind)
    if len(name or "") > limit:
        problems.append(f"at most {limit} characters for a {kind} (it has {len(name)})")
    return problems


def validate_name(kind: str, name: str) -> str:
    problems = name_errors(kind, name)
    if problems:
        raise ManifestError(f"Invalid {kind} name {name!r}: " + "; ".join(problems))
    return name


def _metadata(
    kind: str, name: str, namespace: str, labels: Mapping[str, str] | None
) -> dict[str, Any]:
    validate_name(kind, name)
    if not namespace:
        raise ManifestError("namespace is required")
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    return meta


def _gpus(gpu_resource_names: Iterable[str]) -> list[dict[str, str]]:
    # One entry per physical GPU: multi-GPU repeats the same resource name.
    out = []
    for resource in gpu_resource_names:
        if not resource or "/" not in resource:
            raise ManifestError(
                f"GPU resource name must look like nvidia.com/<MODEL>, got {resource!r}"
            )
        out.append({"name": resource})
    return out


def _quantity(value: str | int) -> str:
    # Quantities go out as strings: the schema accepts int-or-string, Helm templates prefer strings.
    text = str(value).strip()
    if not text:
        raise ManifestError("a size is required, e.g. 100Gi")
    return text


# --- VMs -----------------------------------------------------------------------


def _source(image: str) -> dict[str, Any]:
    if not image:
        return {}  # empty disk
    if image.startswith(("http://", "https://")):
        return {"http": {"url": image}}
    return {"image": {"name": image}}


def vm_disk(
    name: str,
    namespace: str,
    image: str,
    storage: str | int,
    storage_class: str = "replicated",
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A VMDisk from a golden image name (e.g. ``ubuntu-2404``), an http(s) URL, or "" (empty)."""
    return {
        "apiVersion": API_VERSION,
        "kind": VM_DISK,
        "metadata": _metadata(VM_DISK, name, namespace, labels),
        "spec": {
            "source": _source(image),
            "storage": _quantity(storage),
            "storageClass": storage_class,
        },
    }


def _external(external: bool, external_ports: Sequence[int]) -> dict[str, Any]:
    ports = [int(p) for p in external_ports]
    if any(not 0 < p < 65536 for p in ports):
        raise ManifestError(f"ports must be 1-65535, got {ports}")
    return {"external": bool(external), "externalMethod": "PortList", "externalPorts": ports}


def vm_instance(
    name: str,
    namespace: str,
    instance_type: str,
    instance_profile: str,
    disk_names: Sequence[str],
    gpu_resource_names: Sequence[str],
    run_strategy: str = "Always",
    ssh_keys: Sequence[str] = (),
    cloud_init: str = "",
    external: bool = False,
    external_ports: Sequence[int] = (22,),
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A VMInstance (current flavour). The system disk is a separate VMDisk listed first."""
    for disk in disk_names:
        validate_name(VM_DISK, disk)
    spec: dict[str, Any] = {
        "runStrategy": run_strategy,
        "instanceType": instance_type,
        "instanceProfile": instance_profile,
        "disks": [{"name": d} for d in disk_names],
        "gpus": _gpus(gpu_resource_names),
        "sshKeys": list(ssh_keys),
        "cloudInit": cloud_init,
        **_external(external, external_ports),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": VM_INSTANCE,
        "metadata": _metadata(VM_INSTANCE, name, namespace, labels),
        "spec": spec,
    }


def legacy_virtual_machine(
    name: str,
    namespace: str,
    instance_type: str,
    instance_profile: str,
    gpu_resource_names: Sequence[str],
    image: str = "ubuntu",
    storage: str | int = "50Gi",
    storage_class: str = "replicated",
    running: bool = True,
    ssh_keys: Sequence[str] = (),
    cloud_init: str = "",
    external: bool = False,
    external_ports: Sequence[int] = (22,),
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The legacy one-object VirtualMachine (pre-v1.0 Cozystack, old Hikube pages).

    Both power fields are sent with the same meaning: charts before 2026-02-09 read
    ``running``, the last chart (the served schema) reads ``runStrategy``.
    """
    spec: dict[str, Any] = {
        "running": bool(running),
        "runStrategy": "Always" if running else "Halted",
        "instanceType": instance_type,
        "instanceProfile": instance_profile,
        "systemDisk": {
            "image": image,
            "storage": _quantity(storage),
            "storageClass": storage_class,
        },
        "gpus": _gpus(gpu_resource_names),
        "sshKeys": list(ssh_keys),
        "cloudInit": cloud_init,
        **_external(external, external_ports),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": VIRTUAL_MACHINE,
        "metadata": _metadata(VIRTUAL_MACHINE, name, namespace, labels),
        "spec": spec,
    }


def vm_power_patch(vm_kind: str, running: bool) -> dict[str, Any]:
    """Merge patch to start/stop a VM of either flavour."""
    spec: dict[str, Any] = {"runStrategy": "Always" if running else "Halted"}
    if vm_kind == VIRTUAL_MACHINE:
        spec["running"] = bool(running)
    return {"spec": spec}


# --- Kubernetes clusters and node groups ------------------------------------------


def node_group(
    min_replicas: int,
    max_replicas: int,
    instance_type: str,
    disk_size: str | int,
    gpus: Sequence[str] = (),
    roles: Sequence[str] = (),
    disk_field: str = "ephemeralStorage",
) -> dict[str, Any]:
    """One ``nodeGroups`` entry. ``gpus`` lists one resource name per GPU of each worker.

    ``disk_field`` comes from discovery: v1.4+ charts fail to render if
    ``ephemeralStorage`` is present, v1.1 requires it.
    """
    if disk_field not in NODE_GROUP_DISK_FIELDS:
        raise ManifestError(f"disk_field must be one of {NODE_GROUP_DISK_FIELDS}")
    if min_replicas < 0 or max_replicas < 1 or min_replicas > max_replicas:
        raise ManifestError(
            "need 0 <= minReplicas <= maxReplicas and maxReplicas >= 1 "
            f"(got {min_replicas}..{max_replicas})"
        )
    return {
        "minReplicas": int(min_replicas),
        "maxReplicas": int(max_replicas),
        "instanceType": instance_type,
        disk_field: _quantity(disk_size),
        # Required (may be empty) in v1.1; empty = sized by instanceType.
        "resources": {},
        "roles": list(roles),
        "gpus": _gpus(gpus),
    }


# gpu-operator values (Cozystack wraps NVIDIA's chart as the `gpu-operator` subchart:
# packages/system/gpu-operator/values.yaml) that make the exporter's ServiceMonitor exist (off
# by default: charts/gpu-operator/values.yaml `dcgmExporter.serviceMonitor.enabled: false`), with
# the workload's namespace/pod kept as they are (honorLabels), not renamed exported_*.
GPU_METRICS_VALUES: dict[str, Any] = {
    "gpu-operator": {"dcgmExporter": {"serviceMonitor": {"enabled": True, "honorLabels": True}}}
}


def kubernetes_cluster(
    name: str,
    namespace: str,
    version: str,
    node_groups: Mapping[str, Mapping[str, Any]],
    gpu_operator: bool = True,
    control_plane_replicas: int = 2,
    storage_class: str = "replicated",
    labels: Mapping[str, str] | None = None,
    monitoring: bool = False,
) -> dict[str, Any]:
    """A tenant Kubernetes cluster. ``node_groups`` replaces the chart's default md0 entirely.

    ``monitoring`` (the tenant has a monitoring tenant): the monitoring agents run and the
    dcgm-exporter's ServiceMonitor is on, so GPU metrics reach the tenant's VictoriaMetrics."""
    for group in node_groups:
        if not DNS1035.match(group):
            raise ManifestError(f"Invalid node group name {group!r}")
    addons: dict[str, Any] = {"gpuOperator": {"enabled": bool(gpu_operator), "valuesOverride": {}}}
    if monitoring:
        addons["monitoringAgents"] = {"enabled": True, "valuesOverride": {}}
        if gpu_operator:
            addons["gpuOperator"]["valuesOverride"] = GPU_METRICS_VALUES
    return {
        "apiVersion": API_VERSION,
        "kind": KUBERNETES,
        "metadata": _metadata(KUBERNETES, name, namespace, labels),
        "spec": {
            "version": version,
            "storageClass": storage_class,
            "controlPlane": {"replicas": int(control_plane_replicas)},
            "nodeGroups": {g: dict(spec) for g, spec in node_groups.items()},
            "addons": addons,
        },
    }


def node_group_merge_patch(
    group: str,
    spec: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """JSON merge patch (RFC 7386) touching one node group only.

    ``nodeGroups`` is one map value, so replacing ``spec`` would drop the other groups;
    this patch adds/updates ``group``, or deletes it when ``spec`` is None. Merge patch
    merges *inside* the group too: pass ``previous`` (the group as read) so keys that
    disappeared are sent as null and removed.
    """
    if not DNS1035.match(group):
        raise ManifestError(f"Invalid node group name {group!r}")
    value: dict[str, Any] | None
    if spec is None:
        value = None
    else:
        value = {k: None for k in (previous or {}) if k not in spec}
        value.update(dict(spec))
    return {"spec": {"nodeGroups": {group: value}}}


def plural_for(manifest_or_kind: Mapping[str, Any] | str) -> str:
    kind = (
        manifest_or_kind if isinstance(manifest_or_kind, str) else manifest_or_kind.get("kind", "")
    )
    try:
        return PLURALS[kind]
    except KeyError:
        raise ManifestError(f"Unknown kind {kind!r}; known: {sorted(PLURALS)}") from None


# --- GPU VM request and its manifests (one builder for preview and task) --------------


@dataclass(frozen=True)
class VmRequest:
    name: str
    gpu_resource: str
    gpu_count: int
    instance_type: str
    instance_profile: str
    image: str
    disk_size_gi: int
    storage_class: str
    ssh_keys: tuple[str, ...] = ()
    external: str = "none"  # none | PortList | WholeIP
    external_ports: tuple[int, ...] = (22,)
    cloud_init: str = ""
    run_strategy: str = "Always"
    queue_until_capacity: bool = False
    # The portal's guest agent in the cloud-init (added at submit, with the VM's own token).
    guest_agent: bool = False

    def as_params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gpu_resource": self.gpu_resource,
            "gpu_count": self.gpu_count,
            "instance_type": self.instance_type,
            "instance_profile": self.instance_profile,
            "image": self.image,
            "disk_size_gi": self.disk_size_gi,
            "storage_class": self.storage_class,
            "ssh_keys": list(self.ssh_keys),
            "external": self.external,
            "external_ports": list(self.external_ports),
            "cloud_init": self.cloud_init,
            "run_strategy": self.run_strategy,
            "queue_until_capacity": self.queue_until_capacity,
            "guest_agent": self.guest_agent,
        }


PORTAL_LABELS = {"app.kubernetes.io/managed-by": "hikube-portal"}


def system_disk_name(vm_name: str) -> str:
    return f"{vm_name}-system"


def max_vm_name_length(vm_kind: str) -> int:
    """Longest VM name: prefix + name <= 53, and the system VMDisk ``<name>-system`` too."""
    if vm_kind == VM_INSTANCE:
        return min(
            max_name_length(VM_INSTANCE),
            max_name_length(VM_DISK) - len(system_disk_name("")),
        )
    return max_name_length(vm_kind)


def vm_manifests(request: VmRequest, namespace: str, vm_kind: str) -> list[dict[str, Any]]:
    """The exact manifests the task applies, in Hikube's shapes (VMDisk first on current)."""
    gpus = [request.gpu_resource] * request.gpu_count
    external = request.external != "none"
    ports = list(request.external_ports) or [22]
    if vm_kind == VIRTUAL_MACHINE:
        vm = legacy_virtual_machine(
            request.name,
            namespace,
            request.instance_type,
            request.instance_profile,
            gpus,
            image=request.image,
            storage=f"{request.disk_size_gi}Gi",
            storage_class=request.storage_class,
            running=request.run_strategy != "Halted",
            ssh_keys=request.ssh_keys,
            cloud_init=request.cloud_init,
            external=external,
            external_ports=ports,
            labels=PORTAL_LABELS,
        )
        vm["spec"]["runStrategy"] = request.run_strategy
        docs = [vm]
    else:
        disk = vm_disk(
            system_disk_name(request.name),
            namespace,
            request.image,
            f"{request.disk_size_gi}Gi",
            request.storage_class,
            labels=PORTAL_LABELS,
        )
        vm = vm_instance(
            request.name,
            namespace,
            request.instance_type,
            request.instance_profile,
            [disk["metadata"]["name"]],
            gpus,
            run_strategy=request.run_strategy,
            ssh_keys=request.ssh_keys,
            cloud_init=request.cloud_init,
            external=external,
            external_ports=ports,
            labels=PORTAL_LABELS,
        )
        docs = [disk, vm]
    if request.external == "WholeIP":
        vm["spec"]["externalMethod"] = "WholeIP"
        vm["spec"].pop("externalPorts", None)
    return docs


# --- Kubernetes node groups (add or resize one group of an existing tenant cluster) -----

# Cozystack v1.1 creates every MachineDeployment with 2 workers and returns to 2 on each
# change (devcluster-vs-cozystack.md D): the fit and quota count at least that many.
V11_CHART_WORKERS = 2


@dataclass(frozen=True)
class NodeGroupRequest:
    cluster_name: str
    group: str
    min_replicas: int
    max_replicas: int
    instance_type: str
    disk_size_gi: int
    gpu_resource: str
    gpus_per_node: int
    roles: tuple[str, ...] = ()
    new_cluster_version: str = ""  # set: create the cluster with this group
    # A new cluster of a tenant with a monitoring tenant: agents and GPU metrics on.
    monitoring: bool = False

    @property
    def workers_held(self) -> int:
        return max(self.min_replicas, V11_CHART_WORKERS)

    @property
    def workers_at_most(self) -> int:
        """What the autoscaler may grow the group to: quotas count this."""
        return max(self.max_replicas, self.workers_held)

    def as_params(self) -> dict[str, Any]:
        return {
            "cluster_name": self.cluster_name,
            "group": self.group,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "instance_type": self.instance_type,
            "disk_size_gi": self.disk_size_gi,
            "gpu_resource": self.gpu_resource,
            "gpus_per_node": self.gpus_per_node,
            "roles": list(self.roles),
            "new_cluster_version": self.new_cluster_version,
            "monitoring": self.monitoring,
        }


# The group the chart always has: v1.1's values.yaml holds md0 and Helm deep-merges the user's
# groups into it; later charts emit md0 when nodeGroups is empty (packages/apps/kubernetes).
DEFAULT_NODE_GROUP = "md0"


def has_node_group(app: Mapping[str, Any] | None, group: str) -> bool:
    """Whether a tenant Kubernetes app (as read) has this worker group, the chart's md0 too."""
    if app is None:
        return False
    groups = (app.get("spec") or {}).get("nodeGroups") or {}
    return group in groups or group == DEFAULT_NODE_GROUP


# A node group's keys that are in its worker template. Cozystack v1.1
# packages/apps/kubernetes/templates/cluster.yaml renders the KubevirtMachineTemplate from the
# whole group (instanceType, ephemeralStorage, roles, gpus, resources.cpu/memory) and names it
# by `sha256sum | trunc 6` of that text: a change to any of them is a new template, and the
# MachineDeployment (rollingUpdate maxSurge: maxReplicas, maxUnavailable: 1) replaces every
# worker. minReplicas/maxReplicas are only annotations: no roll.
ROLLING_KEYS = frozenset(
    {"instanceType", "ephemeralStorage", "diskSize", "roles", "gpus", "resources"}
)


def _same(key: str, wanted: Any, live: Any) -> bool:
    if key == "roles":  # one label per role: the order changes the text, not the meaning
        return sorted(wanted or []) == sorted(live or [])
    if key in NODE_GROUP_DISK_FIELDS:
        return str(wanted).strip() == str(live).strip()
    return bool(wanted == live)


def changed_group_keys(wanted: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """The keys of a ``node_group()`` entry whose value differs from the live group's (a key
    the live group does not say is changed: sending the same value again changes nothing)."""
    return [k for k, v in wanted.items() if k not in live or not _same(k, v, live[k])]


def requested_group(request: NodeGroupRequest, disk_field: str | None) -> dict[str, Any]:
    """The ``node_group()`` entry a request asks for (the cluster's disk key, v1.1's default)."""
    return node_group(
        request.min_replicas,
        request.max_replicas,
        request.instance_type,
        f"{request.disk_size_gi}Gi",
        gpus=[request.gpu_resource] * request.gpus_per_node,
        roles=request.roles,
        disk_field=disk_field or DEFAULT_NODE_GROUP_DISK,
    )


def node_group_manifests(
    request: NodeGroupRequest,
    namespace: str,
    disk_field: str,
    keys: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """One partial Kubernetes manifest whose spec holds only this group: applied as a JSON
    merge patch it changes that group alone (never the whole spec, never a null). ``keys``
    (a resize): only these keys of the group, the ones the person changed."""
    group = requested_group(request, disk_field)
    if request.new_cluster_version:
        # A new cluster: supplying nodeGroups replaces the chart's default md0 in the values
        # (v1.1 still deep-merges md0 in); the GPU operator installs the drivers.
        return [
            kubernetes_cluster(
                request.cluster_name,
                namespace,
                request.new_cluster_version,
                {request.group: group},
                gpu_operator=True,
                labels=PORTAL_LABELS,
                monitoring=request.monitoring,
            )
        ]
    validate_name(KUBERNETES, request.cluster_name)
    if keys is not None:
        only = set(keys)
        group = {k: v for k, v in group.items() if k in only}
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KUBERNETES,
            "metadata": {"name": request.cluster_name, "namespace": namespace},
            "spec": {"nodeGroups": {request.group: group}},
        }
    ]
