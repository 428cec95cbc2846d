"""DCGM series to readings: one `Reading` per GPU UUID, whatever the label dialect.

Accepts `Hostname` and `hostname` (upstream renamed it), the workload as `namespace`/`pod` (raw
exporter, or scraped with honorLabels) or `exported_namespace`/`exported_pod` (honorLabels false,
where `namespace` is then the exporter's own), and treats DCGM's blank sentinels (>= 2^62) as
missing.

Through Prometheus or VictoriaMetrics every series also carries the scrape target's own
`namespace`/`pod` (the exporter pod, in the gpu-operator's namespace). dcgm-exporter adds
`namespace`/`pod` only to GPUs a pod holds (NVIDIA/dcgm-exporter
`internal/pkg/transformation/kubernetes.go`, `PodMapper.Process`: labels are set only for a device
found in the kubelet's pod-resources list), so an idle GPU's series carry the exporter's pod
alone: that is never a workload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

SENTINEL = 2**62  # DCGM blank / not-supported values start above this
# What "busy" is measured with, best first: (reading field, DCGM field).
BUSY_METRICS = (
    ("gr_active", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"),
    ("sm_active", "DCGM_FI_PROF_SM_ACTIVE"),
    ("util", "DCGM_FI_DEV_GPU_UTIL"),
)

# DCGM field -> (reading field, scale). PROF ratios become percentages.
FIELDS: dict[str, tuple[str, float]] = {
    "DCGM_FI_DEV_GPU_UTIL": ("util", 1.0),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("gr_active", 100.0),
    "DCGM_FI_PROF_SM_ACTIVE": ("sm_active", 100.0),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": ("tensor", 100.0),
    "DCGM_FI_DEV_FB_USED": ("mem_used", 1.0),
    "DCGM_FI_DEV_FB_FREE": ("mem_free", 1.0),
    "DCGM_FI_DEV_FB_RESERVED": ("mem_reserved", 1.0),
    "DCGM_FI_DEV_FB_TOTAL": ("mem_total", 1.0),
    "DCGM_FI_DEV_POWER_USAGE": ("power", 1.0),
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("power_limit", 1.0),
    "DCGM_FI_DEV_GPU_TEMP": ("temp", 1.0),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock", 1.0),
    "DCGM_FI_DEV_MEM_CLOCK": ("mem_clock", 1.0),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_mj", 1.0),
    "DCGM_FI_DEV_XID_ERRORS": ("xid", 1.0),
    # The clock-event (throttle) reasons bitmask: not in the default CSV; renamed in DCGM 3.3.
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": ("throttle", 1.0),
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": ("throttle", 1.0),
}
METRIC_NAMES = tuple(FIELDS)
# Where the gpu-operator runs its exporter: Cozystack v1.1 installs it in `cozy-gpu-operator`
# (packages/apps/kubernetes/templates/helmreleases/gpu-operator.yaml, targetNamespace), NVIDIA's
# own install guide in `gpu-operator`. The DaemonSet is `nvidia-dcgm-exporter` (gpu-operator
# v25.3.0, assets/state-dcgm-exporter).
EXPORTER_NAMESPACES = frozenset({"cozy-gpu-operator", "gpu-operator"})
EXPORTER_POD_PREFIX = "nvidia-dcgm-exporter-"


MAX_INDEX = 32767  # the column's range; a GPU's index is its slot on the board: 0 to 15 or so


def gpu_index(text: str) -> int | None:
    """A GPU index label: ASCII digits in range ("²".isdigit() is true, int("²") fails)."""
    if text.isascii() and text.isdigit() and int(text) <= MAX_INDEX:
        return int(text)
    return None


@dataclass
class Reading:
    """One GPU at one time, with who held it as the series' labels say."""

    uuid: str
    ts: float
    values: dict[str, float] = field(default_factory=dict)
    model_name: str = ""
    hostname: str = ""
    index: int | None = None
    namespace: str = ""  # the workload's namespace inside the tenant cluster
    pod: str = ""
    cluster: str = ""  # kubernetes-<name> (vmagent external label or target label)
    tenant: str = ""  # tenant namespace
    vm: str = ""  # GPU VM name (guest agent)
    source: str = "dcgm-exporter"

    @property
    def allocated(self) -> bool:
        """A pod (or a VM) holds the GPU."""
        return bool(self.pod) or self.source == "guest-agent"

    def busy(self) -> tuple[float | None, str]:
        """Busy percentage and the metric it came from: the graphics engine or SM activity
        where the exporter has profiling metrics (time really busy), else GPU_UTIL (a kernel
        ran at some point of the sample period)."""
        for key, name in BUSY_METRICS:
            if key in self.values:
                return self.values[key], name
        return None, ""

    def mem_total(self) -> float | None:
        v = self.values
        if "mem_total" in v:
            return v["mem_total"]
        if "mem_used" in v and "mem_free" in v:
            return v["mem_used"] + v["mem_free"] + v.get("mem_reserved", 0.0)
        return None


def clean(value: float) -> float | None:
    """None for NaN and DCGM's sentinels."""
    if value != value or abs(value) >= SENTINEL:
        return None
    return float(value)


def _first(labels: Mapping[str, str], *names: str) -> str:
    for name in names:
        if labels.get(name):
            return labels[name]
    return ""


def is_exporter(namespace: str, pod: str) -> bool:
    """The exporter's own pod (a scrape target's labels), not a workload holding the GPU."""
    return namespace in EXPORTER_NAMESPACES and pod.startswith(EXPORTER_POD_PREFIX)


def workload_of(labels: Mapping[str, str]) -> tuple[str, str]:
    """(namespace, pod) of the workload holding the GPU, or ("", "") when none does.

    With honorLabels false the workload's labels are `exported_*` and `namespace`/`pod` are the
    target's; with honorLabels true (or scraped directly) they are `namespace`/`pod`, and a GPU
    no pod holds still gets the target's `namespace`/`pod` added by Prometheus."""
    if labels.get("exported_pod") or labels.get("exported_namespace"):
        ns, pod = labels.get("exported_namespace", ""), labels.get("exported_pod", "")
    else:
        ns, pod = labels.get("namespace", ""), labels.get("pod", "")
    if is_exporter(ns, pod):
        return "", ""
    return ns, pod


def add_sample(
    readings: dict[str, Reading],
    metric: str,
    labels: Mapping[str, str],
    value: float,
    ts: float,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Fold one series value into the reading of its GPU."""
    if metric not in FIELDS:
        return
    uuid = labels.get("UUID") or labels.get("uuid")
    if not uuid:
        return
    key = f"{uuid}|{labels.get('cluster') or (extra or {}).get('cluster', '')}"
    r = readings.get(key)
    if r is None:
        merged = {**(extra or {}), **{k: v for k, v in labels.items() if v}}
        namespace, pod = workload_of(merged)
        r = Reading(
            uuid=uuid,
            ts=ts,
            model_name=merged.get("modelName", ""),
            hostname=_first(merged, "Hostname", "hostname"),
            index=gpu_index(merged.get("gpu", "")),
            namespace=namespace,
            pod=pod,
            cluster=merged.get("cluster", ""),
            tenant=merged.get("tenant", ""),
            vm=merged.get("vm", ""),
            source=merged.get("source", "dcgm-exporter"),
        )
        readings[key] = r
    v = clean(value)
    if v is None:
        return
    name, scale = FIELDS[metric]
    r.values[name] = v * scale


def parse_exposition(text: str, ts: float, extra: Mapping[str, str] | None = None) -> list[Reading]:
    """Prometheus text format (as dcgm-exporter serves it) to one Reading per GPU.

    `extra` are the target's labels (cluster, tenant, vm, source), which the series' own
    labels override, as Prometheus does with honor_labels."""
    readings: dict[str, Reading] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in FIELDS:
            continue
        for s in family.samples:
            add_sample(readings, s.name, s.labels, s.value, ts, extra)
    return list(readings.values())
