"""Typed records of what the cluster shows, and the parsers that build them from raw JSON.

Only this package knows Cozystack's and Kubernetes' shapes (``spec.gpus``, ``nodeGroups``,
``printableStatus``, WorkloadMonitor status, release-name prefixes). The parsers are lenient:
a tenant's spec goes unchecked into Helm on Cozystack v1.1, so any value may have any type; odd
values become empty/zero rather than exceptions, and an object that still cannot be read is
reported as an ``OddObject`` by the gateway, never raised.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils import parse_quantity

from gpus.kube.apps import KUBERNETES, PREFIXES, VM_INSTANCE, release_name

GPU_PREFIX = "nvidia.com/"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" / "False" / "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""

    @property
    def is_true(self) -> bool:
        return self.status == "True"


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str]
    allocatable: dict[str, str]
    capacity: dict[str, str]
    ready: bool
    unschedulable: bool
    taints: list[dict[str, str]]
    gpu_resources: dict[str, int]  # allocatable nvidia.com/* counts
    # status.conditions as plain dicts (type, status, reason, message), for the node page.
    conditions: tuple[dict[str, str], ...] = ()

    @property
    def gpu_installed(self) -> dict[str, int]:
        """GPUs installed per resource: ``status.capacity`` counts every device the device
        plugin registered, allocatable only the healthy ones (kubelet devicemanager
        ``GetCapacity``), so an unhealthy GPU stays installed and is shown unavailable."""
        capacity = gpu_counts(self.capacity)
        return {
            r: max(capacity.get(r, 0), self.gpu_resources.get(r, 0))
            for r in sorted({*capacity, *self.gpu_resources})
        }

    def gpu_unhealthy(self, resource: str) -> int:
        """Installed GPUs of ``resource`` the node does not offer (capacity - allocatable)."""
        return max(self.gpu_installed.get(resource, 0) - self.gpu_resources.get(resource, 0), 0)


@dataclass(frozen=True)
class GpuPod:
    namespace: str
    name: str
    node_name: str
    phase: str
    gpus: dict[str, int]
    labels: dict[str, str]
    owner_kind: str = ""
    owner_name: str = ""

    @property
    def kubevirt_vm(self) -> str:
        """The KubeVirt VM a virt-launcher pod runs ("" for other pods)."""
        return self.labels.get("vm.kubevirt.io/name") or self.labels.get("kubevirt.io/domain", "")

    @property
    def machine_deployment(self) -> tuple[str, str]:
        """(Cluster API cluster, MachineDeployment) of a worker VM's launcher pod, ("", "") for
        other pods. Cozystack v1.1 labels the worker VM template with
        `cluster.x-k8s.io/deployment-name: <release>-<group>` and spreads on
        `cluster.x-k8s.io/cluster-name: <release>` (packages/apps/kubernetes/templates/
        cluster.yaml); KubeVirt copies a VMI's labels to its launcher pod. A name prefix cannot
        tell group `gpu` from `gpu-large`."""
        return (
            self.labels.get("cluster.x-k8s.io/cluster-name", ""),
            self.labels.get("cluster.x-k8s.io/deployment-name", ""),
        )


@dataclass(frozen=True)
class KubevirtVm:
    namespace: str
    name: str
    printable_status: str  # "" if not reported yet; unknown values map to "unknown" (states.py)
    ready: bool
    conditions: dict[str, Condition]
    deleting: bool = False


@dataclass(frozen=True)
class WorkloadMonitor:
    namespace: str
    name: str
    kind: str
    type: str
    min_replicas: int | None
    replicas: int | None  # absent on v1.1 worker monitors
    available_replicas: int | None
    observed_replicas: int | None


@dataclass(frozen=True)
class VmApp:
    """A VM app: a ``VMInstance`` (Cozystack v1.0+) or the legacy ``VirtualMachine``."""

    namespace: str
    name: str
    kind: str
    gpus: tuple[str, ...]  # resource names, one entry per GPU
    run_strategy: str  # "" when unset
    running: bool | None  # legacy VirtualMachine's spec.running
    instance_type: str
    deleting: bool  # metadata.deletionTimestamp is set (Helm uninstall in progress)
    conditions: dict[str, Condition]  # Ready / Released (+ WorkloadsReady on v1.3+)

    @property
    def kubevirt_name(self) -> str:
        """The KubeVirt VirtualMachine (and its WorkloadMonitor) behind this app."""
        # Items of a list may omit their kind: a VMInstance then.
        return PREFIXES.get(self.kind, PREFIXES[VM_INSTANCE]) + self.name

    @property
    def halted(self) -> bool:
        return self.run_strategy == "Halted" or (
            self.kind == "VirtualMachine" and self.running is False
        )


@dataclass(frozen=True)
class NodeGroup:
    """One entry of a Kubernetes app's ``spec.nodeGroups`` (with or without GPUs)."""

    name: str
    gpus: tuple[str, ...]  # per worker
    min_replicas: int
    max_replicas: int
    instance_type: str
    roles: tuple[str, ...]
    monitor_name: str  # WorkloadMonitor kubernetes-<app>-<group>
    worker_prefix: str  # worker VMs are kubernetes-<app>-<group>-<suffix> (display only)
    disk: str = ""  # ephemeralStorage (v1.1) or diskSize (v1.4+), as the spec says it


@dataclass(frozen=True)
class KubernetesApp:
    namespace: str
    name: str
    deleting: bool
    conditions: dict[str, Condition]
    node_groups: tuple[NodeGroup, ...] = ()


@dataclass(frozen=True)
class OddObject:
    """An object the gateway could not turn into a record (shown to admins, skipped)."""

    kind: str
    namespace: str
    name: str
    problem: str


@dataclass(frozen=True)
class GpuQuotaLimit:
    """One GPU limit of a tenant namespace's ResourceQuota, as the apiserver enforces it: only
    ``requests.nvidia.com/<MODEL>`` counts for an extended resource (kubernetes
    ``pkg/quota/v1/evaluator/core/pods.go`` ``isExtendedResourceNameForQuota``); the v1.1 tenant
    chart writes its ``resourceQuotas`` as ``tenant-quota`` with ``requests.X`` and ``limits.X``."""

    namespace: str
    name: str  # the ResourceQuota's name
    resource: str  # nvidia.com/<MODEL>
    hard: int
    used: int


QUOTA_PREFIX = "requests."


def gpu_quota_limits(obj: Mapping[str, Any]) -> list[GpuQuotaLimit]:
    """The enforced GPU limits of one ResourceQuota (``spec.hard``; ``status.used`` as the
    quota controller last wrote it, 0 before it has)."""
    namespace, name = _key(obj)
    hard = _map(_map(obj.get("spec")).get("hard"))
    used = _map(_map(obj.get("status")).get("used"))
    out = []
    for key, value in hard.items():
        if not (isinstance(key, str) and key.startswith(QUOTA_PREFIX + GPU_PREFIX)):
            continue
        out.append(
            GpuQuotaLimit(
                namespace, name, key[len(QUOTA_PREFIX) :], _count(value), _count(used.get(key))
            )
        )
    return out


@dataclass(frozen=True)
class QuotaDenial:
    """The apiserver's quota refusal (``exceeded quota: <name>, requested: ..., used: ...,
    limited: ...``; kubernetes plugin/pkg/admission/resourcequota/controller.go), per resource
    name without the ``requests.`` prefix."""

    quota: str
    requested: dict[str, int]
    used: dict[str, int]
    limited: dict[str, int]


_DENIAL = re.compile(
    r"exceeded quota: (?P<quota>[^,]+), requested: (?P<requested>\S*), used: (?P<used>\S*), "
    r"limited: (?P<limited>\S*)"
)


def _pairs(text: str) -> dict[str, int]:
    out = {}
    for pair in text.strip().rstrip(",").split(","):
        key, _, value = pair.partition("=")
        if key:
            name = key[len(QUOTA_PREFIX) :] if key.startswith(QUOTA_PREFIX) else key
            out[name] = _count(value)
    return out


def quota_denial(message: str) -> QuotaDenial | None:
    """Read a quota refusal out of any message that carries one (KubeVirt wraps it in
    ``failed to create virtual machine pod: pods "..." is forbidden: ...``)."""
    match = _DENIAL.search(message or "")
    if not match:
        return None
    return QuotaDenial(
        match.group("quota").strip(),
        _pairs(match.group("requested")),
        _pairs(match.group("used")),
        _pairs(match.group("limited")),
    )


# What the cluster offers the forms: KubeVirt cluster instance types and preferences, golden
# images (CDI DataVolumes `vm-image-<name>` in `cozy-public`, which the vm-disk chart clones) and
# storage classes (cozystack v1.1 packages/system/kubevirt-instancetypes,
# packages/apps/vm-disk/templates/dv.yaml, hack/cdi_golden_image_create.sh).
INSTANCE_TYPE = "instancetype"
PREFERENCE = "preference"
IMAGE = "image"
STORAGE_CLASS = "storageclass"
IMAGE_NAMESPACE = "cozy-public"
IMAGE_PREFIX = "vm-image-"
CATALOGUE_SOURCES = (
    # (kind, group, version, plural, namespace)
    (
        INSTANCE_TYPE,
        "instancetype.kubevirt.io",
        "v1beta1",
        "virtualmachineclusterinstancetypes",
        "",
    ),
    (PREFERENCE, "instancetype.kubevirt.io", "v1beta1", "virtualmachineclusterpreferences", ""),
    (IMAGE, "cdi.kubevirt.io", "v1beta1", "datavolumes", IMAGE_NAMESPACE),
    (STORAGE_CLASS, "storage.k8s.io", "v1", "storageclasses", ""),
)


@dataclass(frozen=True)
class CatalogueItem:
    """One thing the cluster offers: its name as the chart takes it, and what the forms show."""

    kind: str
    name: str
    label: str = ""  # display name (instance type, preference)
    vcpu: int = 0
    memory_mib: int = 0
    windows: bool = False  # preference's os-type label
    default: bool = False  # the default storage class
    deprecated: bool = False  # instancetype.kubevirt.io/deprecated (gn1)
    gpus: bool = False  # an instance type that brings its own GPUs (gn1)


@dataclass
class FleetReading:
    """Everything one inventory sync read from the cluster, as records."""

    vm_kind: str
    disk_field: str
    nodes: list[NodeInfo] = field(default_factory=list)
    pods: list[GpuPod] = field(default_factory=list)
    vms: list[VmApp] = field(default_factory=list)
    kubevirt_vms: dict[tuple[str, str], KubevirtVm] = field(default_factory=dict)
    kubernetes_apps: list[KubernetesApp] = field(default_factory=list)
    monitors: dict[tuple[str, str], WorkloadMonitor] = field(default_factory=dict)
    odd: list[OddObject] = field(default_factory=list)
    # Cozystack tenant namespaces (tenant-root, tenant-<name>, ...): who may be a tenant.
    tenant_namespaces: list[str] = field(default_factory=list)
    # Tenant namespace -> the tenant namespace that runs its monitoring ("" for none).
    tenant_monitoring: dict[str, str] = field(default_factory=dict)
    # The GPU limits of the tenant namespaces' ResourceQuotas.
    quotas: list[GpuQuotaLimit] = field(default_factory=list)
    # What the forms may offer; kinds the portal could not read are absent (kept as they were).
    catalogue: dict[str, list[CatalogueItem]] = field(default_factory=dict)


# The label the v1.1 tenant chart puts on each tenant namespace: the tenant whose monitoring
# (VictoriaMetrics) it uses, its own with `monitoring: true`, else its parent's, "" for none
# (cozystack packages/apps/tenant/templates/namespace.yaml). Clusters' monitoring agents write
# there (packages/apps/kubernetes/templates/helmreleases/monitoring-agents.yaml).
MONITORING_LABEL = "namespace.cozystack.io/monitoring"

# --- parsers ---------------------------------------------------------------------


def _count(value: Any) -> int:
    """A quantity as a whole number; 0 for anything that is not one."""
    try:
        return int(parse_quantity(value))
    except (ValueError, TypeError, ArithmeticError):
        return 0


def opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def gpu_counts(resources: Mapping[str, Any]) -> dict[str, int]:
    return {k: _count(v) for k, v in resources.items() if k.startswith(GPU_PREFIX)}


def node_from_json(item: Mapping[str, Any]) -> NodeInfo:
    meta, spec, status = (
        _map(item.get("metadata")),
        _map(item.get("spec")),
        _map(item.get("status")),
    )
    allocatable = {k: str(v) for k, v in _map(status.get("allocatable")).items()}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return NodeInfo(
        name=meta.get("name", ""),
        labels=dict(meta.get("labels") or {}),
        allocatable=allocatable,
        capacity={k: str(v) for k, v in _map(status.get("capacity")).items()},
        ready=ready,
        unschedulable=bool(spec.get("unschedulable", False)),
        taints=[
            {"key": t.get("key", ""), "value": t.get("value", ""), "effect": t.get("effect", "")}
            for t in spec.get("taints") or []
        ],
        gpu_resources=gpu_counts(allocatable),
        conditions=tuple(
            {k: str(c.get(k) or "") for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
            if isinstance(c, dict)
        ),
    )


def pod_gpus(pod: Mapping[str, Any]) -> dict[str, int]:
    """GPUs a pod holds: sum over containers, or the largest init container (k8s rule)."""
    spec = _map(pod.get("spec"))

    def of(container: Mapping[str, Any]) -> dict[str, int]:
        res = _map(container.get("resources"))
        # Extended resources: requests default to limits and must equal them.
        merged = {**_map(res.get("limits")), **_map(res.get("requests"))}
        return gpu_counts(merged)

    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        for k, v in of(c).items():
            total[k] = total.get(k, 0) + v
    for c in spec.get("initContainers") or []:
        for k, v in of(c).items():
            total[k] = max(total.get(k, 0), v)
    return {k: v for k, v in total.items() if v > 0}


def pod_from_json(item: Mapping[str, Any], gpus: dict[str, int]) -> GpuPod:
    meta = _map(item.get("metadata"))
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else {})
    return GpuPod(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        node_name=_map(item.get("spec")).get("nodeName") or "",
        phase=_map(item.get("status")).get("phase") or "",
        gpus=gpus,
        labels=dict(meta.get("labels") or {}),
        owner_kind=owner.get("kind", ""),
        owner_name=owner.get("name", ""),
    )


def conditions_of(obj: Mapping[str, Any] | None) -> dict[str, Condition]:
    out = {}
    for c in _map(_map(obj).get("status")).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type"):
            out[str(c["type"])] = Condition(
                type=str(c["type"]),
                status=str(c.get("status", "Unknown")),
                reason=str(c.get("reason", "") or ""),
                message=str(c.get("message", "") or ""),
                last_transition_time=str(c.get("lastTransitionTime", "") or ""),
            )
    return out


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _map(obj.get("metadata"))
    return _str(meta.get("namespace")), _str(meta.get("name"))


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool(_map(obj.get("metadata")).get("deletionTimestamp"))


def gpu_names(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """``spec.gpus``: a list of ``{name: <resource name>}``, one entry per GPU."""
    gpus = spec.get("gpus")
    if not isinstance(gpus, list):
        return ()
    return tuple(
        str(g["name"]) for g in gpus if isinstance(g, Mapping) and isinstance(g.get("name"), str)
    )


def vm_app_from_json(obj: Mapping[str, Any], kind: str) -> VmApp:
    namespace, name = _key(obj)
    spec = _map(obj.get("spec"))
    running = spec.get("running")
    return VmApp(
        namespace=namespace,
        name=name,
        kind=kind,
        gpus=gpu_names(spec),
        run_strategy=_str(spec.get("runStrategy")),
        running=running if isinstance(running, bool) else None,
        instance_type=_str(spec.get("instanceType")),
        deleting=_deleting(obj),
        conditions=conditions_of(obj),
    )


def kubevirt_vm_from_json(obj: Mapping[str, Any]) -> KubevirtVm:
    namespace, name = _key(obj)
    conditions = conditions_of(obj)
    status = _map(obj.get("status"))
    ready_condition = conditions.get("Ready")
    return KubevirtVm(
        namespace=namespace,
        name=name,
        printable_status=_str(status.get("printableStatus")),
        ready=status.get("ready") is True or bool(ready_condition and ready_condition.is_true),
        conditions=conditions,
        deleting=_deleting(obj),
    )


# Cozystack v1.1 packages/apps/kubernetes/values.yaml: the md0 group every cluster has. Helm
# deep-merges the user's nodeGroups into it, so it runs (its WorkloadMonitor
# kubernetes-<name>-md0 counts its workers) even when the app's spec, as cozystack-api shows it,
# does not name it (the portal's own clusters send only their GPU group).
CHART_MD0 = {
    "minReplicas": 0,
    "maxReplicas": 10,
    "instanceType": "u1.medium",
    "ephemeralStorage": "20Gi",
    "roles": ["ingress-nginx"],
    "resources": {},
    "gpus": [],
}


def kubernetes_app_from_json(obj: Mapping[str, Any], chart_md0: bool = False) -> KubernetesApp:
    """A tenant cluster and its node groups. ``chart_md0`` (v1.1): the chart's md0 is one of
    them, its spec's keys (if any) over the chart's values."""
    namespace, name = _key(obj)
    groups = []
    prefix = release_name(KUBERNETES, name)
    spec_groups = dict(_map(_map(obj.get("spec")).get("nodeGroups")))
    if chart_md0:
        spec_groups["md0"] = {**CHART_MD0, **_map(spec_groups.get("md0"))}
    for group_name, group in spec_groups.items():
        group = _map(group)
        roles = group.get("roles")
        groups.append(
            NodeGroup(
                name=str(group_name),
                gpus=gpu_names(group),
                min_replicas=max(opt_int(group.get("minReplicas")) or 0, 0),
                max_replicas=max(opt_int(group.get("maxReplicas")) or 0, 0),
                instance_type=_str(group.get("instanceType")),
                roles=tuple(r for r in roles if isinstance(r, str))
                if isinstance(roles, list)
                else (),
                monitor_name=f"{prefix}-{group_name}",
                worker_prefix=f"{prefix}-{group_name}-",
                disk=_str(group.get("ephemeralStorage") or group.get("diskSize")),
            )
        )
    return KubernetesApp(
        namespace=namespace,
        name=name,
        deleting=_deleting(obj),
        conditions=conditions_of(obj),
        node_groups=tuple(groups),
    )


def workload_monitor_from_json(obj: Mapping[str, Any]) -> WorkloadMonitor:
    namespace, name = _key(obj)
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    return WorkloadMonitor(
        namespace=namespace,
        name=name,
        kind=_str(spec.get("kind")),
        type=_str(spec.get("type")),
        min_replicas=opt_int(spec.get("minReplicas")),
        replicas=opt_int(spec.get("replicas")),
        available_replicas=opt_int(status.get("availableReplicas")),
        observed_replicas=opt_int(status.get("observedReplicas")),
    )


# --- connecting: a VM's Service, a tenant cluster's kubeconfig Secret -----------------------


@dataclass(frozen=True)
class VmEndpoint:
    """How a VM is reached: its Service's external addresses and open ports (none: only from
    inside the tenant, by the Service's DNS name)."""

    service: str
    namespace: str
    external_ips: tuple[str, ...]
    ports: tuple[int, ...]
    whole_ip: bool

    @property
    def dns_name(self) -> str:
        return f"{self.service}.{self.namespace}.svc"


def vm_endpoint_from_json(obj: Mapping[str, Any]) -> VmEndpoint:
    namespace, name = _key(obj)
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    ingress = _map(status.get("loadBalancer")).get("ingress")
    ips = tuple(
        str(i.get("ip") or i.get("hostname"))
        for i in (ingress if isinstance(ingress, list) else [])
        if isinstance(i, Mapping) and (i.get("ip") or i.get("hostname"))
    )
    ports = tuple(
        p
        for p in (opt_int(_map(x).get("port")) for x in spec.get("ports") or [])
        if p is not None and p != 65535  # the chart's placeholder port, not one opened
    )
    external = spec.get("type") == "LoadBalancer"
    return VmEndpoint(
        service=name,
        namespace=namespace,
        external_ips=ips if external else (),
        ports=ports if external else (),
        whole_ip=external and not ports,
    )


def kubeconfig_from_secret(obj: Mapping[str, Any]) -> str | None:
    """``super-admin.conf`` (the key the chart's NOTES name), else ``admin.conf``, decoded."""
    data = _map(obj.get("data"))
    for key in ("super-admin.conf", "admin.conf"):
        value = data.get(key)
        if isinstance(value, str) and value:
            try:
                return base64.b64decode(value).decode()
            except (ValueError, UnicodeDecodeError):
                return None
    return None


def _memory_mib(value: Any) -> int:
    try:
        return int(parse_quantity(str(value)) // (1024 * 1024))
    except (ValueError, TypeError, ArithmeticError):
        return 0


def catalogue_item_from_json(kind: str, obj: Mapping[str, Any]) -> CatalogueItem | None:
    """A catalogue entry, or None for an object the forms never offer (a DataVolume that is not
    a golden image)."""
    meta = _map(obj.get("metadata"))
    name, labels, notes = (
        _str(meta.get("name")),
        _map(meta.get("labels")),
        _map(meta.get("annotations")),
    )
    spec = _map(obj.get("spec"))
    if kind == INSTANCE_TYPE:
        return CatalogueItem(
            kind,
            name,
            label=_str(notes.get("instancetype.kubevirt.io/displayName")),
            vcpu=_count(_map(spec.get("cpu")).get("guest")),
            memory_mib=_memory_mib(_map(spec.get("memory")).get("guest")),
            deprecated=_str(labels.get("instancetype.kubevirt.io/deprecated")) == "true",
            gpus=bool(spec.get("gpus")),
        )
    if kind == PREFERENCE:
        return CatalogueItem(
            kind,
            name,
            label=_str(notes.get("openshift.io/display-name")),
            windows=_str(labels.get("instancetype.kubevirt.io/os-type")) == "windows",
        )
    if kind == IMAGE:
        if not name.startswith(IMAGE_PREFIX) or len(name) == len(IMAGE_PREFIX):
            return None
        return CatalogueItem(kind, name[len(IMAGE_PREFIX) :])
    default = _str(notes.get("storageclass.kubernetes.io/is-default-class")) == "true"
    return CatalogueItem(kind, name, default=default)
