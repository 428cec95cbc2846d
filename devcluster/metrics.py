"""DCGM-exporter stand-in, as a Cozystack v1.1 tenant cluster exposes it.

Series exist only for tenant Kubernetes clusters whose GPU operator addon is enabled *and* whose
dcgm-exporter ServiceMonitor is switched on in the addon's values (off by default in v1.1), whose
monitoring agents are on and whose tenant has a monitoring tenant to write to, and
only some minutes after a worker runs (the operator installs the driver, then the exporter). The
metric set is exactly the exporter's default CSV of the version v1.1 ships. GPU UUIDs belong to
the physical GPU: (host node, slot), whoever holds it. Passthrough VMs have no host series; a
simulated guest agent (annotation `devcluster.hikube.io/guest-agent: "on"`, off by default)
reports the few nvidia-smi fields, without pod or namespace labels.

Values are pure functions of (seed, GPU UUID, time) and the workload profile, so a scrape, a
re-scrape and a backfill agree. Profiles: `training` (steady, near 100%), `hot` (training on a
GPU that is thermally throttling), `faulty` (training after an XID error, which the gauge keeps
until the driver reloads), `steady`
(constant 50 % and constant power, for energy checks), `inference` (bursty), `idle` (allocated,
a pod holds it, nothing runs) and `free` (no pod). A workload picks profiles with the annotation
`devcluster.hikube.io/gpu-profile`: a comma-separated list cycled over its GPUs ordered by
(worker, index).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from .fleet import MONITORING_LABEL, GpuModel, model_for, stable_hex
from .resources import NAMESPACES

DRIVER_VERSION = "550.127.05"
PROFILE_ANNOTATION = "devcluster.hikube.io/gpu-profile"
AGENT_ANNOTATION = "devcluster.hikube.io/guest-agent"
PROFILES = ("training", "hot", "faulty", "steady", "inference", "idle", "free")
# Seconds (at speed 1) between a worker running and its first DCGM series: the GPU operator
# installs the driver and container toolkit on the new node, then starts the exporter.
EXPORTER_DELAY_S = 240.0
OPERATOR_NAMESPACE = "cozy-gpu-operator"  # targetNamespace of the v1.1 gpu-operator HelmRelease
BOOT_EPOCH = 1767225600.0  # 2026-01-01T00:00:00Z: the counters' "since boot" origin

# The metric set of the exporter Cozystack v1.1 ships (gpu-operator chart: dcgm-exporter
# 4.1.1-4.0.4, DCGM_EXPORTER_COLLECTORS=/etc/dcgm-exporter/dcp-metrics-included.csv): the
# uncommented lines of NVIDIA/dcgm-exporter etc/dcp-metrics-included.csv at tag 4.1.1-4.0.4, in
# its order, help strings verbatim. DCGM_FI_DRIVER_VERSION is a label there, not a series.
METRICS: list[tuple[str, str, str]] = [
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "counter",
        "Total energy consumption since boot (in mJ).",
    ),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %)."),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %)."),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %)."),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    (
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "counter",
        "Total number of NVLink bandwidth counters for all lanes.",
    ),
    ("DCGM_FI_DEV_VGPU_LICENSE_STATUS", "gauge", "vGPU License status"),
    (
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for uncorrectable errors",
    ),
    (
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for correctable errors",
    ),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed"),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active."),
    (
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "gauge",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
    ),
    (
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "gauge",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
    ),
    (
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "gauge",
        "The rate of data transmitted over the PCIe bus - including both protocol headers and "
        "data payloads - in bytes per second.",
    ),
    (
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "gauge",
        "The rate of data received over the PCIe bus - including both protocol headers and "
        "data payloads - in bytes per second.",
    ),
]
# DCGM's "not supported" int64 blank (DCGM_INT64_NOT_SUPPORTED); the exporter prints it as is.
NOT_SUPPORTED = 9223372036854775794
# Row remapping exists on HBM GPUs only (A100, H100); GDDR6 cards (L40S) have no such field and
# the exporter skips blank values, so those series are absent.
HBM = {"a100", "h100"}
MEM_CLOCK = {"l40s": 9001, "a100": 1512, "h100": 2619}
POD_FOR = {
    "training": ("ml", "trainer", "train"),
    "hot": ("ml", "trainer", "train"),
    "faulty": ("ml", "trainer", "train"),
    "steady": ("ml", "trainer", "bench"),
    "inference": ("inference", "vllm", "vllm"),
    "idle": ("default", "jupyter", "notebook"),
}
# What a guest agent can read with nvidia-smi, under the DCGM names the portal stores.
AGENT_METRICS = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_SM_CLOCK",
)


@dataclass(frozen=True)
class Gpu:
    uuid: str
    index: int
    hostname: str
    model: GpuModel
    profile: str
    pod: tuple[str, str, str] | None  # (namespace, container, pod) inside the tenant cluster
    extra: tuple[tuple[str, str], ...] = ()  # e.g. cluster/tenant for backfill
    agent: bool = False  # a guest agent's view: nvidia-smi fields only


@dataclass(frozen=True)
class Exporter:
    """The dcgm-exporter of one tenant cluster, from its `addons.gpuOperator` values."""

    operator: bool
    service_monitor: bool
    honor_labels: bool
    agents: bool = False  # addons.monitoringAgents.enabled: vmagent runs in the tenant cluster
    monitoring: str = ""  # the tenant namespace whose VictoriaMetrics vmagent writes to

    @property
    def scraped(self) -> bool:
        return self.operator and self.service_monitor and self.agents and bool(self.monitoring)


def exporter_of(spec: dict[str, Any], monitoring: str = "") -> Exporter:
    """v1.1: `addons.gpuOperator.enabled` installs the operator (whose chart enables the
    exporter); `valuesOverride["gpu-operator"].dcgmExporter.serviceMonitor` (enabled: false,
    honorLabels: false by default) decides whether a ServiceMonitor exists; only
    `addons.monitoringAgents.enabled` runs the vmagent that scrapes it, and that vmagent writes
    to `vminsert-shortterm.<_namespace.monitoring>`: with no monitoring tenant (the namespace's
    `namespace.cozystack.io/monitoring` is "") nothing is stored anywhere
    (packages/apps/kubernetes/templates/helmreleases/monitoring-agents.yaml)."""
    addons = spec.get("addons") or {}
    op = addons.get("gpuOperator") or {}
    values = ((op.get("valuesOverride") or {}).get("gpu-operator")) or {}
    dcgm = values.get("dcgmExporter") or {}
    sm = dcgm.get("serviceMonitor") or {}
    return Exporter(
        operator=op.get("enabled") is True and dcgm.get("enabled", True) is not False,
        service_monitor=sm.get("enabled") is True,
        honor_labels=sm.get("honorLabels") is True,
        agents=(addons.get("monitoringAgents") or {}).get("enabled") is True,
        monitoring=monitoring,
    )


def physical_uuid(seed: int, node: str, slot: int) -> str:
    h = stable_hex(seed, "gpu", node, slot)
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class Slots:
    """Physical GPU slots per host node. A unit's GPUs take the lowest free slots of its node
    and keep them while it runs there; a freed slot (and so its UUID) goes to the next one."""

    def __init__(self) -> None:
        self.held: dict[str, dict[int, tuple[str, int]]] = {}

    def assign(self, units: Iterable[dict[str, Any]]) -> dict[tuple[str, int], tuple[str, int]]:
        live: dict[tuple[str, int], str] = {}
        order: dict[tuple[str, int], int] = {}
        for u in units:
            if u.get("node") and u.get("gpus"):
                for i in range(len(u["gpus"])):
                    live[(u["uid"], i)] = u["node"]
                    order[(u["uid"], i)] = u.get("seq", 0)
        for node, slots in self.held.items():
            for slot, key in list(slots.items()):
                if live.get(key) != node:
                    del slots[slot]
        taken = {
            key: (node, slot) for node, slots in self.held.items() for slot, key in slots.items()
        }
        for key in sorted(live, key=lambda k: (order[k], k)):
            if key in taken:
                continue
            slots = self.held.setdefault(live[key], {})
            slot = next(s for s in itertools.count() if s not in slots)
            slots[slot] = key
            taken[key] = (live[key], slot)
        return taken


def _noise(seed: int, uuid: str, bucket: int, salt: str = "") -> float:
    h = hashlib.blake2b(f"{seed}/{uuid}/{bucket}/{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def sample(gpu: Gpu, t: float, seed: int) -> dict[str, float]:
    """The metric values for one GPU at time t (seconds since epoch); fields the GPU does not
    support are absent (the exporter skips blanks) or DCGM's not-supported sentinel."""
    m, p = gpu.model, gpu.profile
    b15 = int(t // 15)
    n = _noise(seed, gpu.uuid, b15)
    n2 = _noise(seed, gpu.uuid, b15, "b")
    mem = float(m.memory_mib)
    reserved = float(round(mem * 0.012))
    offset = _noise(seed, gpu.uuid, 0, "phase") * 600
    if p in ("training", "hot", "faulty"):
        checkpoint = (t + offset) % 900 < 25  # a short checkpoint dip every 15 minutes
        util = 4 + 4 * n if checkpoint else 93 + 6 * n
        if p == "hot":
            util = min(100.0, util + 3)
        used = mem * 0.9 + mem * 0.03 * n2
        power = m.idle_power_w + (m.power_limit_w - m.idle_power_w) * (0.82 + 0.12 * n) * util / 100
        temp = 62 + 14 * util / 100 + 3 * n2
        sm = m.max_sm_clock * (0.96 + 0.03 * n2) if util > 20 else 1200.0
        tensor = util / 100 * (0.68 + 0.1 * n2)
        dram = util / 100 * 0.55
        pcie = 4e9 * util / 100
    elif p == "steady":
        util, used, temp, sm, tensor, dram, pcie = (
            50.0,
            mem * 0.5,
            60.0,
            m.max_sm_clock,
            0.4,
            0.3,
            2e9,
        )
        power = (m.idle_power_w + m.power_limit_w) / 2
    elif p == "inference":
        phase = (t + offset) % 300
        burst = phase < 80 + 40 * _noise(seed, gpu.uuid, int((t + offset) // 300), "burst")
        util = 55 + 42 * n if burst else 2 + 9 * n
        used = mem * 0.58 + (mem * 0.25 * n2 if burst else mem * 0.02 * n2)
        power = m.idle_power_w + (m.power_limit_w - m.idle_power_w) * 0.9 * util / 100
        temp = 40 + 30 * util / 100 + 2 * n2
        sm = m.max_sm_clock * 0.93 if util > 20 else 720.0 + 200 * n2
        tensor = util / 100 * (0.35 + 0.15 * n2)
        dram = util / 100 * 0.7
        pcie = 1.5e9 * util / 100
    elif p == "idle":
        util, used = 0.0, 420.0 + round(40 * n2)
        power, temp, sm, tensor, dram = m.idle_power_w + 4 * n, 33 + 3 * n2, 210.0, 0.0, 0.0
        pcie = 2e5
    else:  # free: no pod holds it
        util, used = 0.0, 0.0
        power, temp, sm, tensor, dram = m.idle_power_w * 0.8 + 3 * n, 30 + 3 * n2, 210.0, 0.0, 0.0
        pcie = 1e5
    if p == "hot":
        temp = 87 + 4 * n2
        sm = m.max_sm_clock * (0.62 + 0.06 * n)
        power = float(m.power_limit_w) - 2 * n
    # XID 13 (graphics engine exception), raised once in this driver boot (within its first
    # hour): DCGM_FI_DEV_XID_ERRORS is "the value of the last XID error encountered" and keeps
    # it until the driver reloads (dcgm-exporter etc/default-counters.csv; NVML XID events).
    xid = 13 if p == "faulty" and t - BOOT_EPOCH >= offset else 0
    avg_power = {
        "training": 0.85,
        "hot": 0.97,
        "faulty": 0.85,
        "inference": 0.4,
        "idle": 0.15,
        "free": 0.12,
    }.get(p, 0.2)
    since = max(0.0, t - BOOT_EPOCH)
    avg_w = m.idle_power_w + (m.power_limit_w - m.idle_power_w) * avg_power
    energy = (power if p == "steady" else avg_w) * since * 1000
    used = round(used)
    out: dict[str, float] = {
        "DCGM_FI_DEV_SM_CLOCK": round(sm),
        "DCGM_FI_DEV_MEM_CLOCK": MEM_CLOCK.get(m.short, 1593),
        # GDDR6 boards report no memory temperature: the exporter prints DCGM's blank as is.
        "DCGM_FI_DEV_MEMORY_TEMP": round(temp + 4) if m.short in HBM else NOT_SUPPORTED,
        "DCGM_FI_DEV_GPU_TEMP": round(temp),
        "DCGM_FI_DEV_POWER_USAGE": round(power, 3),
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": math.floor(energy),
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0,
        "DCGM_FI_DEV_GPU_UTIL": round(util),
        "DCGM_FI_DEV_MEM_COPY_UTIL": round(util * 0.45),
        "DCGM_FI_DEV_ENC_UTIL": 0,
        "DCGM_FI_DEV_DEC_UTIL": 0,
        "DCGM_FI_DEV_XID_ERRORS": xid,
        "DCGM_FI_DEV_FB_FREE": max(0, round(mem - used - reserved)),
        "DCGM_FI_DEV_FB_USED": used,
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS": 0,
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": round(min(1.0, util / 100 * 0.98), 6),
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": round(tensor, 6),
        "DCGM_FI_PROF_DRAM_ACTIVE": round(dram, 6),
        "DCGM_FI_PROF_PCIE_TX_BYTES": round(pcie * (0.4 + 0.1 * n2)),
        "DCGM_FI_PROF_PCIE_RX_BYTES": round(pcie * (0.6 + 0.1 * n)),
    }
    if m.short in HBM:
        out["DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"] = 0  # PCIe boards without an NVLink bridge
        out["DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"] = 0
        out["DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"] = 1 if p == "faulty" else 0
        out["DCGM_FI_DEV_ROW_REMAP_FAILURE"] = 0
    if gpu.agent:
        return {k: out[k] for k in AGENT_METRICS}
    return out


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(gpu: Gpu) -> str:
    parts = [
        ("gpu", str(gpu.index)),
        ("UUID", gpu.uuid),
        ("pci_bus_id", f"00000000:{7 + gpu.index:02X}:00.0"),
        ("device", f"nvidia{gpu.index}"),
        ("modelName", gpu.model.model_name),
        ("Hostname", gpu.hostname),
    ]
    if not gpu.agent:
        parts.append(("DCGM_FI_DRIVER_VERSION", DRIVER_VERSION))
    if gpu.pod:
        parts += [("container", gpu.pod[1]), ("namespace", gpu.pod[0]), ("pod", gpu.pod[2])]
    parts += list(gpu.extra)
    return ",".join(f'{k}="{_esc(v)}"' for k, v in parts)


def _fmt(v: float) -> str:
    if isinstance(v, int) or (float(v).is_integer() and abs(v) < 1e15):
        return str(int(v))
    return f"{v:.6f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:.6f}"


def render(gpus: list[Gpu], t: float, seed: int) -> str:
    """Prometheus text format 0.0.4, as dcgm-exporter serves it."""
    samples = [(g, labels(g), sample(g, t, seed)) for g in gpus]
    out: list[str] = []
    for name, mtype, help_ in METRICS:
        rows = [f"{name}{{{lab}}} {_fmt(vals[name])}" for _, lab, vals in samples if name in vals]
        if not rows:
            continue
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {mtype}")
        out += rows
    return "\n".join(out) + "\n"


def profiles_for(annotation: str | None, default: str) -> list[str]:
    items = [p.strip() for p in (annotation or "").split(",") if p.strip() in PROFILES]
    return items or [default]


def gpus_of_units(
    units: Iterable[dict[str, Any]],
    profile_annotation: str | None,
    seed: int,
    default: str = "training",
    extra: tuple[tuple[str, str], ...] = (),
    slots: dict[tuple[str, int], tuple[str, int]] | None = None,
    running_before: float | None = None,
    agent: bool = False,
) -> list[Gpu]:
    """The GPUs of Running units (one workload), with profiles cycled over (worker, index).

    `slots` maps (unit uid, index) to its physical (node, slot), which names the UUID;
    `running_before` leaves out units running for a shorter time (no exporter yet)."""
    profiles = profiles_for(profile_annotation, default)
    out: list[Gpu] = []
    k = 0
    for u in sorted(units, key=lambda u: u["name"]):
        if u["phase"] != "Running":
            continue
        if running_before is not None and u.get("since", 0.0) > running_before:
            continue
        for i, res in enumerate(u["gpus"]):
            prof = profiles[k % len(profiles)]
            k += 1
            where = (slots or {}).get((u["uid"], i)) or (u.get("node") or u["uid"], i)
            uuid = physical_uuid(seed, *where)
            pod = None
            if prof in POD_FOR and not agent:
                ns, container, stem = POD_FOR[prof]
                pod = (ns, container, f"{stem}-{u['name'][-5:]}-{i}")
            out.append(Gpu(uuid, i, u["name"], model_for(res), prof, pod, extra, agent))
    return out


def scraped(gpu: Gpu, cluster: str, tenant: str, exporter: Exporter) -> Gpu:
    """The series as VictoriaMetrics stores them after vmagent scraped the exporter through
    its ServiceMonitor: with `honorLabels: false` (the chart default) the workload's
    namespace/pod/container collide with the target's and become exported_*; the target adds
    the exporter's own; external labels add cluster and tenant."""
    target = (
        ("container", "nvidia-dcgm-exporter"),
        ("endpoint", "gpu-metrics"),
        ("instance", f"{gpu.hostname}:9400"),
        ("job", "nvidia-dcgm-exporter"),
        ("namespace", OPERATOR_NAMESPACE),
        ("pod", f"nvidia-dcgm-exporter-{stable_hex(gpu.hostname, n=5)}"),
        ("service", "nvidia-dcgm-exporter"),
    )
    ext = (("cluster", cluster), ("tenant", tenant))
    if exporter.honor_labels or gpu.pod is None:
        own = {k for k, _ in target} - ({"container", "namespace", "pod"} if gpu.pod else set())
        return dataclasses.replace(gpu, extra=tuple(kv for kv in target if kv[0] in own) + ext)
    ns, container, pod = gpu.pod
    renamed = (("exported_container", container), ("exported_namespace", ns), ("exported_pod", pod))
    return dataclasses.replace(gpu, pod=None, extra=renamed + target + ext)


def write_openmetrics(
    fh: TextIO, series: list[Gpu], start: float, end: float, step: float, seed: int
) -> int:
    """N days of the same series for `promtool tsdb create-blocks-from openmetrics`.

    OpenMetrics wants each family's samples together, so values are computed once per GPU into
    compact arrays, then written family by family.
    """
    times: list[int] = []
    t = end - math.floor((end - start) / step) * step  # align so the last sample is at `end`
    while t <= end:
        times.append(int(t))
        t += step
    values: dict[str, dict[str, array]] = {}
    for g in series:
        cols: dict[str, array] = {}
        for ts in times:
            for name, v in sample(g, ts, seed).items():
                cols.setdefault(name, array("d")).append(v)
        values[g.uuid + g.hostname] = cols
    n = 0
    for name, mtype, help_ in METRICS:
        # OpenMetrics counters need a _total suffix; keep DCGM's names and declare them `unknown`.
        fh.write(
            f"# HELP {name} {help_}\n# TYPE {name} {'gauge' if mtype == 'gauge' else 'unknown'}\n"
        )
        for g in series:
            col = values[g.uuid + g.hostname].get(name)
            if col is None:
                continue
            lab = labels(g)
            fh.write(
                "".join(
                    f"{name}{{{lab}}} {_fmt(v)} {ts}\n" for v, ts in zip(col, times, strict=False)
                )
            )
            n += len(times)
    fh.write("# EOF\n")
    return n


# --- wiring into the devcluster server (kept here so server.py only delegates) -----------------


class Dcgm:
    """The `/dcgm/` routes and the backfill series of one DevCluster."""

    def __init__(self, dc: Any) -> None:
        self.dc = dc
        self.slots = Slots()

    def _apps(self) -> Iterable[tuple[bool, str, str, dict[str, Any], list[dict[str, Any]]]]:
        """(is_cluster, ns, name, object, units) for every app; call under the store lock."""
        by_owner: dict[str, list[dict[str, Any]]] = {}
        for u in self.dc.reconciler.units.values():
            by_owner.setdefault(u["owner"], []).append(u)
        for res in self.dc.reconciler.apps:
            for (ns, name), obj in self.dc.store.iter_objects(res.key):
                units = by_owner.get(f"{res.key}|{ns}/{name}", [])
                yield res.plural == "kuberneteses", ns, name, obj, units

    def _monitoring(self, ns: str) -> str:
        """The namespace's monitoring tenant ("" for none); call under the store lock."""
        obj = self.dc.store.get(NAMESPACES.key, "", ns) or {}
        return ((obj.get("metadata") or {}).get("labels") or {}).get(MONITORING_LABEL, "")

    def series(
        self, now: float | None, include_vms: bool, stored: bool = False
    ) -> dict[tuple[str, str, str], list[Gpu]]:
        """GPUs per (kind, ns, name) with series: clusters whose exporter is scraped (and, for
        `now`, whose workers have run long enough), VMs with the guest agent on. `stored`: as
        VictoriaMetrics holds them (see `scraped`)."""
        dc = self.dc
        slots = self.slots.assign(dc.reconciler.units.values())
        before = None if now is None else now - EXPORTER_DELAY_S / dc.reconciler.speed
        out: dict[tuple[str, str, str], list[Gpu]] = {}
        for is_cluster, ns, name, obj, units in self._apps():
            ann = obj["metadata"].get("annotations") or {}
            profile = ann.get(PROFILE_ANNOTATION)
            if is_cluster:
                exporter = exporter_of(obj.get("spec") or {}, self._monitoring(ns))
                if not exporter.scraped:
                    continue
                gpus = gpus_of_units(units, profile, dc.seed, "training", (), slots, before)
                if stored:
                    gpus = [scraped(g, f"kubernetes-{name}", ns, exporter) for g in gpus]
                out[("kubernetes", ns, name)] = gpus
            elif include_vms and ann.get(AGENT_ANNOTATION) == "on":
                extra = (("tenant", ns), ("vm", name)) if stored else ()
                gpus = gpus_of_units(units, profile, dc.seed, "idle", extra, slots, agent=True)
                out[("vm", ns, name)] = gpus
        return {k: v for k, v in out.items() if v}

    def targets(self, include_vms: bool = False) -> list[dict[str, Any]]:
        """Prometheus HTTP SD. Cluster targets carry the exporter pod's own labels, so a real
        Prometheus scraping with honor_labels false renames the workload's to exported_*."""
        host = f"127.0.0.1:{self.dc.port}"
        out = []
        with self.dc.store.lock:
            found = self.series(time.time(), include_vms)
        for kind, ns, name in found:
            if kind == "kubernetes":
                labels = {
                    "__metrics_path__": f"/dcgm/kubernetes/{ns}/{name}/metrics",
                    "cluster": f"kubernetes-{name}",
                    "tenant": ns,
                    "namespace": OPERATOR_NAMESPACE,
                    "pod": f"nvidia-dcgm-exporter-{stable_hex(ns, name, n=5)}",
                    "container": "nvidia-dcgm-exporter",
                    "service": "nvidia-dcgm-exporter",
                    "source": "dcgm-exporter",
                }
            else:
                labels = {
                    "__metrics_path__": f"/dcgm/vm/{ns}/{name}/metrics",
                    "tenant": ns,
                    "vm": name,
                    "source": "guest-agent",
                }
            out.append({"targets": [host], "labels": labels})
        return out

    def route(self, req: Any) -> Any:
        from .api import Response

        not_found = Response(404, b"404 page not found\n", content_type="text/plain; charset=utf-8")
        segs = req.path.strip("/").split("/")
        if segs == ["dcgm", "targets"]:
            body = json.dumps(self.targets(req.query.get("include") == "vms")).encode()
            return Response(200, body)
        if len(segs) == 5 and segs[1] in ("kubernetes", "vm") and segs[4] == "metrics":
            now = time.time()
            with self.dc.store.lock:
                gpus = self.series(now, True).get((segs[1], segs[2], segs[3]))
            if gpus is None:
                return not_found
            text = render(gpus, now, self.dc.seed)
            return Response(
                200, text.encode(), content_type="text/plain; version=0.0.4; charset=utf-8"
            )
        return not_found

    def backfill(self, include_vms: bool) -> list[Gpu]:
        with self.dc.store.lock:
            return [g for gs in self.series(None, include_vms, stored=True).values() for g in gs]
