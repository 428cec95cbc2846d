"""Fleets: host nodes with passthrough GPUs, tenant namespaces and starting workloads.

`demo` (small, with running workloads), `scale` (12,500 nodes x 8 GPUs) or a YAML file
(format in devcluster/README.md).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .store import now_rfc3339

L40S = "nvidia.com/AD102GL_L40S"
A100 = "nvidia.com/GA100_A100_PCIE_80GB"
H100 = "nvidia.com/H100_94GB"


@dataclass(frozen=True)
class GpuModel:
    resource: str
    short: str
    product: str  # what GFD would label nvidia.com/gpu.product (not on passthrough hosts)
    model_name: str  # DCGM modelName
    memory_mib: int
    family: str
    compute: tuple[int, int]
    power_limit_w: int
    max_sm_clock: int
    idle_power_w: int


MODELS: dict[str, GpuModel] = {
    L40S: GpuModel(
        L40S, "l40s", "NVIDIA-L40S", "NVIDIA L40S", 46068, "ada-lovelace", (8, 9), 350, 2520, 35
    ),
    A100: GpuModel(
        A100,
        "a100",
        "NVIDIA-A100-80GB-PCIe",
        "NVIDIA A100 80GB PCIe",
        81920,
        "ampere",
        (8, 0),
        300,
        1410,
        45,
    ),
    H100: GpuModel(
        H100, "h100", "NVIDIA-H100-NVL", "NVIDIA H100 NVL", 95830, "hopper", (9, 0), 400, 1785, 60
    ),
}


def model_for(resource: str) -> GpuModel:
    """Known model, or a generic one for names a fleet file invents."""
    if resource in MODELS:
        return MODELS[resource]
    slug = resource.split("/", 1)[-1]
    return GpuModel(
        resource,
        slug.lower(),
        "NVIDIA-" + slug.replace("_", "-"),
        "NVIDIA " + slug.replace("_", " "),
        24576,
        "unknown",
        (8, 0),
        250,
        1700,
        30,
    )


def stable_hex(*parts: Any, n: int = 32) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n]


def stable_uuid(*parts: Any) -> str:
    return str(uuid.UUID(stable_hex(*parts), version=4))


@dataclass
class NodeSpec:
    name: str
    model: str | None
    gpus: int
    ready: bool = True
    cordoned: bool = False
    cpu: int = 128
    memory_gib: int = 1024
    # GPUs the device plugin reports Unhealthy: in capacity, not in allocatable (kubelet
    # devicemanager: capacity counts every device, allocatable the healthy ones).
    unhealthy: int = 0


@dataclass
class Fleet:
    name: str
    nodes: list[NodeSpec]
    tenants: list[str]
    workloads: list[dict[str, Any]] = field(default_factory=list)
    # Tenant namespace -> the tenant whose monitoring it uses ("" for none): the
    # `namespace.cozystack.io/monitoring` label the v1.1 tenant chart writes.
    monitoring: dict[str, str] = field(default_factory=dict)


def make_node(spec: NodeSpec, seed: int, created: float) -> dict[str, Any]:
    """A Node as a Cozystack (Talos) host with the NVIDIA sandbox device plugin would report it."""
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "node-role.kubernetes.io/worker": "",
        "topology.kubernetes.io/zone": "gva-"
        + ("a", "b", "c")[int(stable_hex(spec.name, n=4), 16) % 3],
    }
    capacity = {
        "cpu": str(spec.cpu),
        "devices.kubevirt.io/kvm": "1k",
        "devices.kubevirt.io/tun": "1k",
        "devices.kubevirt.io/vhost-net": "1k",
        "ephemeral-storage": "1874716672Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{spec.memory_gib * 1048576}Ki",
        "pods": "250",
    }
    allocatable = dict(
        capacity,
        cpu=f"{spec.cpu * 1000 - 500}m",
        memory=f"{spec.memory_gib * 1048576 - 1048576}Ki",
        **{"ephemeral-storage": "1727729574400"},
    )
    if spec.model and spec.gpus:
        model_for(spec.model)  # an unknown model fails here
        labels.update(
            {
                # NFD's PCI vendor label, then the GPU operator's (NVIDIA/gpu-operator v25.3.0
                # controllers/state_manager.go: `nvidia.com/gpu.present`, and gpuStateLabels
                # for the vm-passthrough workload config). No gpu-feature-discovery labels
                # (gpu.product, gpu.count, gpu.memory, gpu.family): GFD is a `container`
                # workload operand and does not run on passthrough hosts (cozystack v1.1.0
                # packages/system/gpu-operator/values-talos.yaml: sandboxWorkloads on, no
                # driver, no device plugin). The model is the resource name, nothing else.
                "feature.node.kubernetes.io/pci-10de.present": "true",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.workload.config": "vm-passthrough",
                "nvidia.com/gpu.deploy.sandbox-device-plugin": "true",
                "nvidia.com/gpu.deploy.sandbox-validator": "true",
                "nvidia.com/gpu.deploy.vfio-manager": "true",
                "nvidia.com/gpu.deploy.kata-manager": "true",
                "nvidia.com/gpu.deploy.cc-manager": "true",
            }
        )
        capacity[spec.model] = str(spec.gpus)
        allocatable[spec.model] = str(max(spec.gpus - spec.unhealthy, 0))
    ts = now_rfc3339(created)
    hb = now_rfc3339()
    if spec.ready:
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": hb,
            "lastTransitionTime": ts,
        }
        others = "False"
    else:
        ready = {
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.",
            "lastHeartbeatTime": ts,
            "lastTransitionTime": hb,
        }
        others = "Unknown"
    conditions = [
        {
            "type": t,
            "status": others,
            "reason": r if spec.ready else "NodeStatusUnknown",
            "message": msg if spec.ready else "Kubelet stopped posting node status.",
            "lastHeartbeatTime": hb if spec.ready else ts,
            "lastTransitionTime": ts,
        }
        for t, r, msg in (
            (
                "MemoryPressure",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        )
    ] + [ready]
    taints = []
    if spec.cordoned:
        taints.append(
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": hb}
        )
    if not spec.ready:
        taints += [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": hb},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": hb},
        ]
    h = int(stable_hex(seed, spec.name, n=8), 16)
    ip = f"10.{(h >> 16) & 255}.{(h >> 8) & 255}.{h & 255 or 1}"
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "uid": stable_uuid(seed, "node", spec.name),
            "creationTimestamp": ts,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"podCIDR": f"10.244.{h % 250}.0/24", "podCIDRs": [f"10.244.{h % 250}.0/24"]},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": stable_uuid(seed, "boot", spec.name),
                "containerRuntimeVersion": "containerd://2.0.5",
                "kernelVersion": "6.12.35-talos",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.33.3",
                "machineID": stable_hex(seed, "machine", spec.name),
                "operatingSystem": "linux",
                "osImage": "Talos (v1.10.5)",
                "systemUUID": stable_uuid(seed, "system", spec.name),
            },
        },
    }
    if spec.cordoned:
        node["spec"]["unschedulable"] = True
    if taints:
        node["spec"]["taints"] = taints
    return node


MONITORING_LABEL = "namespace.cozystack.io/monitoring"


def make_namespace(name: str, created: float, monitoring: str | None = None) -> dict[str, Any]:
    """A namespace; tenant ones carry the tenant chart's `namespace.cozystack.io/monitoring`:
    the tenant that runs monitoring for it (itself with `monitoring: true`, else the parent's),
    "" when none does (CZ packages/apps/tenant/templates/namespace.yaml)."""
    labels = {"kubernetes.io/metadata.name": name}
    if monitoring is not None:
        labels[MONITORING_LABEL] = monitoring
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": stable_uuid("ns", name),
            "creationTimestamp": now_rfc3339(created),
            "labels": labels,
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _app(
    kind: str, ns: str, name: str, spec: dict[str, Any], profile: str | None = None
) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if profile:
        md["annotations"] = {"devcluster.hikube.io/gpu-profile": profile}
    return {"apiVersion": "apps.cozystack.io/v1alpha1", "kind": kind, "metadata": md, "spec": spec}


# gpu-operator values that make vmagent scrape dcgm-exporter (devcluster/metrics.py).
SCRAPED = {"gpu-operator": {"dcgmExporter": {"serviceMonitor": {"enabled": True}}}}
SCRAPED_HONOR = {
    "gpu-operator": {"dcgmExporter": {"serviceMonitor": {"enabled": True, "honorLabels": True}}}
}


def demo_fleet(flavour: str = "current") -> Fleet:
    nodes: list[NodeSpec] = []
    for i in range(1, 5):
        nodes.append(NodeSpec(f"gpu-l40s-{i}", L40S, 4, cordoned=(i == 4), cpu=64, memory_gib=512))
    for i in range(1, 4):
        nodes.append(NodeSpec(f"gpu-a100-{i}", A100, 4, ready=(i != 3), cpu=96, memory_gib=1024))
    for i in range(1, 3):
        nodes.append(NodeSpec(f"gpu-h100-{i}", H100, 8, cpu=192, memory_gib=2048))
    workloads: list[dict[str, Any]] = []
    if flavour == "legacy":
        workloads.append(
            _app(
                "VirtualMachine",
                "tenant-acme",
                "gpu-ws",
                {
                    "running": True,
                    "instanceType": "u1.2xlarge",
                    "gpus": [{"name": L40S}],
                    "systemDisk": {"image": "ubuntu", "storage": "100Gi"},
                },
                "idle",
            )
        )
        workloads.append(
            _app(
                "VirtualMachine",
                "tenant-globex",
                "inference",
                {
                    "running": True,
                    "instanceType": "u1.4xlarge",
                    "gpus": [{"name": L40S}],
                    "systemDisk": {"image": "ubuntu", "storage": "200Gi"},
                },
                "inference",
            )
        )
    else:
        workloads.append(
            _app(
                "VMDisk",
                "tenant-acme",
                "gpu-ws-system",
                {"source": {"image": {"name": "ubuntu-2404"}}, "storage": "100Gi"},
            )
        )
        workloads.append(
            _app(
                "VMInstance",
                "tenant-acme",
                "gpu-ws",
                {
                    "runStrategy": "Always",
                    "instanceType": "u1.2xlarge",
                    "disks": [{"name": "gpu-ws-system"}],
                    "gpus": [{"name": L40S}],
                    "external": True,
                    "externalPorts": [22, 8888],
                },
                "idle",
            )
        )
        workloads.append(
            _app(
                "VMDisk",
                "tenant-globex",
                "inference-system",
                {"source": {"image": {"name": "ubuntu-2404"}}, "storage": "200Gi"},
            )
        )
        workloads.append(
            _app(
                "VMInstance",
                "tenant-globex",
                "inference",
                {
                    "runStrategy": "Always",
                    "instanceType": "u1.4xlarge",
                    "disks": [{"name": "inference-system"}],
                    "gpus": [{"name": L40S}],
                },
                "inference",
            )
        )
    disk_key = "diskSize" if flavour == "head" else "ephemeralStorage"

    def group(
        mn: int, mx: int, it: str, disk: str, gpus: list[str], roles: list[str] | None = None
    ) -> dict:
        g: dict[str, Any] = {
            "minReplicas": mn,
            "maxReplicas": mx,
            "instanceType": it,
            disk_key: disk,
            "resources": {},
            "gpus": [{"name": x} for x in gpus],
        }
        if roles:
            g["roles"] = roles
        return g

    workloads.append(
        _app(
            "Kubernetes",
            "tenant-acme",
            "ml",
            {
                "version": "v1.33",
                "controlPlane": {"replicas": 2},
                "nodeGroups": {
                    "md0": group(1, 3, "u1.large", "50Gi", [], ["ingress-nginx"]),
                    "gpu": group(2, 4, "u1.8xlarge", "100Gi", [A100]),
                },
                # The exporter's ServiceMonitor is off by default in v1.1: switch it on, and the
                # monitoring agents (vmagent) that scrape it.
                "addons": {
                    "gpuOperator": {"enabled": True, "valuesOverride": SCRAPED},
                    "monitoringAgents": {"enabled": True, "valuesOverride": {}},
                },
            },
            "hot,training",
        )
    )
    workloads.append(
        _app(
            "Kubernetes",
            "tenant-globex",
            "serve",
            {
                "version": "v1.34",
                "nodeGroups": {"gpu": group(1, 2, "u1.8xlarge", "100Gi", [L40S, L40S])},
                "addons": {
                    "gpuOperator": {"enabled": True, "valuesOverride": SCRAPED_HONOR},
                    "monitoringAgents": {"enabled": True, "valuesOverride": {}},
                },
            },
            "inference,idle",
        )
    )
    for w in workloads:  # globex's VM runs the simulated guest agent (off by default)
        if w["metadata"]["name"] == "inference":
            w["metadata"]["annotations"]["devcluster.hikube.io/guest-agent"] = "on"
    tenants = ["tenant-root", "tenant-acme", "tenant-globex"]
    # Hikube's root tenant runs monitoring; its children use it.
    return Fleet("demo", nodes, tenants, workloads, {t: "tenant-root" for t in tenants})


SCALE_MIX = ((L40S, 0.5), (A100, 0.3), (H100, 0.2))
# The demo fleet's workloads per 44 GPUs: 2 VMs of 1 L40S, a cluster with 2 workers of 1 A100
# (and a CPU-only group), a cluster with 1 worker of 2 L40S, 2 tenants: 6 GPUs of 44 held
# (13.6 %), half the workloads VMs. The scale fleet repeats it every SCALE_BLOCK_NODES nodes.
SCALE_BLOCK_NODES = 11  # 88 GPUs: two demo fleets' worth, 12 GPUs held by 8 workloads


def _scale_workloads(block: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Block `block`'s two tenants, each with what acme or globex runs in the demo fleet."""
    out: list[dict[str, Any]] = []
    tenants = [f"tenant-s{block:05d}a", f"tenant-s{block:05d}b"]
    for ns, like in zip(tenants, ("acme", "globex"), strict=True):
        for k in range(2):  # two demo fleets' worth per block: each tenant runs its pair twice
            vm = f"vm-{k}"
            out.append(
                _app(
                    "VMDisk",
                    ns,
                    f"{vm}-system",
                    {"source": {"image": {"name": "ubuntu-2404"}}, "storage": "100Gi"},
                )
            )
            out.append(
                _app(
                    "VMInstance",
                    ns,
                    vm,
                    {
                        "runStrategy": "Always",
                        "instanceType": "u1.2xlarge",
                        "disks": [{"name": f"{vm}-system"}],
                        "gpus": [{"name": L40S}],
                    },
                    "idle" if like == "acme" else "inference",
                )
            )
            groups: dict[str, Any]
            if like == "acme":
                groups = {
                    "md0": _group(1, 3, "u1.large", "50Gi", [], ["ingress-nginx"]),
                    "gpu": _group(2, 4, "u1.8xlarge", "100Gi", [A100]),
                }
            else:
                groups = {"gpu": _group(1, 2, "u1.8xlarge", "100Gi", [L40S, L40S])}
            out.append(
                _app(
                    "Kubernetes",
                    ns,
                    f"k8s-{k}",
                    {"version": "v1.33", "nodeGroups": groups},
                    "hot,training" if like == "acme" else "inference,idle",
                )
            )
    return tenants, out


def _group(
    mn: int, mx: int, it: str, disk: str, gpus: list[str], roles: list[str] | None = None
) -> dict[str, Any]:
    g: dict[str, Any] = {
        "minReplicas": mn,
        "maxReplicas": mx,
        "instanceType": it,
        "ephemeralStorage": disk,
        "resources": {},
        "gpus": [{"name": x} for x in gpus],
    }
    if roles:
        g["roles"] = roles
    return g


def scale_fleet(n_nodes: int = 12500, gpus_per_node: int = 8, workloads: bool = True) -> Fleet:
    """12,500 nodes x 8 GPUs: 50% L40S, 30% A100, 20% H100.

    Every 500th node is cordoned and every 700th NotReady. With `workloads`, the demo fleet's
    workloads and tenants in its proportions: per SCALE_BLOCK_NODES nodes, two tenants with
    four GPU VMs and four Kubernetes clusters holding 12 GPUs (13.6 %, as the demo's 6 of 44).
    """
    nodes = []
    bounds = []
    acc = 0.0
    for res, share in SCALE_MIX:
        acc += share
        bounds.append((res, round(acc * n_nodes)))
    start = 0
    for res, end in bounds:
        short = MODELS[res].short
        for i in range(start, end):
            n = i - start + 1
            nodes.append(
                NodeSpec(
                    f"gpu-{short}-{n:05d}",
                    res,
                    gpus_per_node,
                    ready=(i % 700 != 699),
                    cordoned=(i % 500 == 499),
                )
            )
        start = end
    tenants = ["tenant-root", "tenant-acme", "tenant-globex"]
    apps: list[dict[str, Any]] = []
    if workloads:
        for block in range(n_nodes // SCALE_BLOCK_NODES):
            names, found = _scale_workloads(block)
            tenants += names
            apps += found
    return Fleet("scale", nodes, tenants, apps, {t: "tenant-root" for t in tenants})


def file_fleet(path: str) -> Fleet:
    data = yaml.safe_load(Path(path).read_text()) or {}
    for res, m in (data.get("models") or {}).items():
        MODELS[res] = GpuModel(
            res,
            m.get("short", res.split("/")[-1].lower()),
            m.get("product", "NVIDIA-" + res.split("/")[-1]),
            m.get("modelName", "NVIDIA " + res.split("/")[-1]),
            int(m.get("memoryMiB", 24576)),
            m.get("family", "unknown"),
            tuple(m.get("compute", (8, 0))),  # type: ignore[arg-type]
            int(m.get("powerLimitW", 250)),
            int(m.get("maxSmClockMHz", 1700)),
            int(m.get("idlePowerW", 30)),
        )
    nodes: list[NodeSpec] = []
    for entry in data.get("nodes") or []:
        count = int(entry.get("count", 1))
        cordoned = set(entry.get("cordoned") or [])
        not_ready = set(entry.get("notReady") or [])
        # `unhealthy: {1: 1}`: node 1 of the entry has one GPU its device plugin reports
        # Unhealthy (capacity 4, allocatable 3).
        unhealthy = {int(k): int(v) for k, v in (entry.get("unhealthy") or {}).items()}
        for i in range(1, count + 1):
            name = (
                entry["name"]
                if "name" in entry and count == 1
                else f"{entry.get('prefix', 'node')}-{i}"
            )
            nodes.append(
                NodeSpec(
                    name,
                    entry.get("model"),
                    int(entry.get("gpus", 0)),
                    ready=bool(entry.get("ready", True)) and i not in not_ready,
                    cordoned=bool(entry.get("cordoned_all", False)) or i in cordoned,
                    cpu=int(entry.get("cpu", 128)),
                    memory_gib=int(entry.get("memoryGiB", 1024)),
                    unhealthy=unhealthy.get(i, 0),
                )
            )
    tenants = list(data.get("tenants") or ["tenant-root"])
    # `monitoring: {tenant-x: ""}` leaves a tenant without; by default the root's serves all.
    monitoring = {t: "tenant-root" for t in tenants} | dict(data.get("monitoring") or {})
    return Fleet(Path(path).stem, nodes, tenants, list(data.get("workloads") or []), monitoring)


def load_fleet(name: str, flavour: str = "current") -> Fleet:
    if name == "demo":
        return demo_fleet(flavour)
    if name == "scale":
        return scale_fleet()
    if name.startswith("scale:"):  # e.g. scale:200 for a smaller bench fleet
        return scale_fleet(int(name.split(":", 1)[1]))
    return file_fleet(name)
