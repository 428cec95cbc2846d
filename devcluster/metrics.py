"""DCGM-exporter stand-in: per-GPU series for tenant-cluster workers (and GPU VMs, standing in
for guest agents).

Values are pure functions of (seed, GPU UUID, time) and the workload profile, so a scrape, a
re-scrape and a backfill agree. Profiles: `training` (steady, near 100%), `hot` (training on a
GPU that is thermally throttling), `inference` (bursty), `idle` (allocated, a pod holds it,
nothing runs) and `free` (no pod). A workload picks profiles with the annotation
`devcluster.hikube.io/gpu-profile`: a comma-separated list cycled over its GPUs ordered by
(worker, index).
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from .fleet import GpuModel, model_for

DRIVER_VERSION = "550.127.05"
PROFILE_ANNOTATION = "devcluster.hikube.io/gpu-profile"
PROFILES = ("training", "hot", "inference", "idle", "free")
BOOT_EPOCH = 1767225600.0  # 2026-01-01T00:00:00Z: the counters' "since boot" origin

# name, type, help (help strings as dcgm-exporter's default-counters.csv spells them)
METRICS: list[tuple[str, str, str]] = [
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
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
    ("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB)."),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Current power limit for the device (in W)."),
    (
        "DCGM_FI_DEV_THERMAL_VIOLATION",
        "counter",
        "Throttling duration due to thermal constraints (in us).",
    ),
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
]
MEM_CLOCK = {"l40s": 9001, "a100": 1512, "h100": 2619}
POD_FOR = {
    "training": ("ml", "trainer", "train"),
    "hot": ("ml", "trainer", "train"),
    "inference": ("inference", "vllm", "vllm"),
    "idle": ("default", "jupyter", "notebook"),
}


@dataclass(frozen=True)
class Gpu:
    uuid: str
    index: int
    hostname: str
    model: GpuModel
    profile: str
    pod: tuple[str, str, str] | None  # (namespace, container, pod) inside the tenant cluster
    extra: tuple[tuple[str, str], ...] = ()  # e.g. cluster/tenant for backfill


def _noise(seed: int, uuid: str, bucket: int, salt: str = "") -> float:
    h = hashlib.blake2b(f"{seed}/{uuid}/{bucket}/{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def sample(gpu: Gpu, t: float, seed: int) -> dict[str, float]:
    """All metric values for one GPU at time t (seconds since epoch)."""
    m, p = gpu.model, gpu.profile
    b15 = int(t // 15)
    n = _noise(seed, gpu.uuid, b15)
    n2 = _noise(seed, gpu.uuid, b15, "b")
    mem = float(m.memory_mib)
    reserved = float(round(mem * 0.012))
    offset = _noise(seed, gpu.uuid, 0, "phase") * 600
    if p in ("training", "hot"):
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
    elif p == "idle":
        util, used = 0.0, 420.0 + round(40 * n2)
        power, temp, sm, tensor, dram = m.idle_power_w + 4 * n, 33 + 3 * n2, 210.0, 0.0, 0.0
    else:  # free: no pod holds it
        util, used = 0.0, 0.0
        power, temp, sm, tensor, dram = m.idle_power_w * 0.8 + 3 * n, 30 + 3 * n2, 210.0, 0.0, 0.0
    throttled = 0.0
    if p == "hot":
        temp = 87 + 4 * n2
        sm = m.max_sm_clock * (0.62 + 0.06 * n)
        power = float(m.power_limit_w) - 2 * n
    avg_power = {"training": 0.85, "hot": 0.97, "inference": 0.4, "idle": 0.15, "free": 0.12}.get(
        p, 0.2
    )
    since = max(0.0, t - BOOT_EPOCH)
    energy = (m.idle_power_w + (m.power_limit_w - m.idle_power_w) * avg_power) * since * 1000
    if p == "hot":
        throttled = since * 0.4 * 1e6  # 40% of the time throttled, in microseconds
    used = round(used)
    return {
        "DCGM_FI_DEV_SM_CLOCK": round(sm),
        "DCGM_FI_DEV_MEM_CLOCK": MEM_CLOCK.get(m.short, 1593),
        "DCGM_FI_DEV_GPU_TEMP": round(temp),
        "DCGM_FI_DEV_MEMORY_TEMP": round(temp + 4),
        "DCGM_FI_DEV_POWER_USAGE": round(power, 3),
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": math.floor(energy),
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0,
        "DCGM_FI_DEV_GPU_UTIL": round(util),
        "DCGM_FI_DEV_MEM_COPY_UTIL": round(util * 0.45),
        "DCGM_FI_DEV_ENC_UTIL": 0,
        "DCGM_FI_DEV_DEC_UTIL": 0,
        "DCGM_FI_DEV_XID_ERRORS": 0,
        "DCGM_FI_DEV_FB_FREE": max(0, round(mem - used - reserved)),
        "DCGM_FI_DEV_FB_USED": used,
        "DCGM_FI_DEV_FB_RESERVED": reserved,
        "DCGM_FI_DEV_POWER_MGMT_LIMIT": float(m.power_limit_w),
        "DCGM_FI_DEV_THERMAL_VIOLATION": math.floor(throttled),
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": round(min(1.0, util / 100 * 0.98), 6),
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": round(tensor, 6),
        "DCGM_FI_PROF_DRAM_ACTIVE": round(dram, 6),
    }


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
        ("DCGM_FI_DRIVER_VERSION", DRIVER_VERSION),
    ]
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
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {mtype}")
        for _, lab, vals in samples:
            out.append(f"{name}{{{lab}}} {_fmt(vals[name])}")
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
) -> list[Gpu]:
    """The GPUs of Running units (one workload), with profiles cycled over (worker, index)."""
    profiles = profiles_for(profile_annotation, default)
    out: list[Gpu] = []
    k = 0
    for u in sorted(units, key=lambda u: u["name"]):
        if u["phase"] != "Running":
            continue
        for i, res in enumerate(u["gpus"]):
            prof = profiles[k % len(profiles)]
            k += 1
            uid = hashlib.sha256(f"{seed}/{u['uid']}/{i}".encode()).hexdigest()
            uuid = f"GPU-{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:32]}"
            pod = None
            if prof in POD_FOR:
                ns, container, stem = POD_FOR[prof]
                pod = (ns, container, f"{stem}-{u['name'][-5:]}-{i}")
            out.append(Gpu(uuid, i, u["name"], model_for(res), prof, pod, extra))
    return out


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
        cols = {name: array("d") for name, _, _ in METRICS}
        for ts in times:
            for name, v in sample(g, ts, seed).items():
                cols[name].append(v)
        values[g.uuid] = cols
    n = 0
    for name, mtype, help_ in METRICS:
        # OpenMetrics counters need a _total suffix; keep DCGM's names and declare them `unknown`.
        fh.write(
            f"# HELP {name} {help_}\n# TYPE {name} {'gauge' if mtype == 'gauge' else 'unknown'}\n"
        )
        for g in series:
            lab = labels(g)
            col = values[g.uuid][name]
            fh.write(
                "".join(
                    f"{name}{{{lab}}} {_fmt(v)} {ts}\n" for v, ts in zip(col, times, strict=False)
                )
            )
            n += len(times)
    fh.write("# EOF\n")
    return n
