"""What DCGM's fields mean: the clock-event (throttle) reasons bitmask, and board power by model
when the exporter does not report it."""

from __future__ import annotations

# The clock-event reasons bitmask (nvmlClocksEventReasons / DCGM_FI_DEV_CLOCKS_EVENT_REASONS).
THROTTLE_BITS = {
    0x1: "gpu_idle",
    0x2: "app_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
}
# Reasons that mean the GPU was held back (not idle or app-set clocks).
THROTTLING = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
# Board power (W) where the exporter does not report DCGM_FI_DEV_POWER_MGMT_LIMIT (it is not
# in the default CSV): NVIDIA's product briefs / datasheets.
BOARD_POWER_W = {
    "l40s": 350.0,
    "a100 80gb pcie": 300.0,
    "a100-sxm4-80gb": 400.0,
    "h100 nvl": 400.0,
    "h100 80gb hbm3": 700.0,
    "h100 pcie": 350.0,
    "h200": 700.0,
}


# DCGM's `modelName` is NVML's device name (what `nvidia-smi --query-gpu=name` prints) -> the
# resource names KubeVirt's permitted host devices and Hikube advertise it under, preferred first.
# Matched whole, never by prefix: "NVIDIA L40" is not an L40S, "NVIDIA A10" not an A100.
NVML_MODELS: dict[str, tuple[str, ...]] = {
    "nvidia l40s": ("nvidia.com/AD102GL_L40S",),
    "nvidia l40": ("nvidia.com/AD102GL_L40",),
    "nvidia l4": ("nvidia.com/AD104GL_L4",),
    "nvidia a100 80gb pcie": ("nvidia.com/GA100_A100_PCIE_80GB",),
    "nvidia a100-pcie-40gb": ("nvidia.com/GA100_A100_PCIE_40GB",),
    "nvidia a100-sxm4-80gb": ("nvidia.com/GA100_A100_SXM4_80GB",),
    "nvidia a100-sxm4-40gb": ("nvidia.com/GA100_A100_SXM4_40GB",),
    "nvidia a30": ("nvidia.com/GA100GL_A30_PCIE",),
    "nvidia a40": ("nvidia.com/GA102GL_A40",),
    "nvidia a10": ("nvidia.com/GA102GL_A10",),
    # Hikube's H100_94GB and Cozystack's default GH100_H100L_94GB are both the H100 NVL.
    "nvidia h100 nvl": ("nvidia.com/H100_94GB", "nvidia.com/GH100_H100L_94GB"),
    "nvidia h100 80gb hbm3": ("nvidia.com/GH100_H100_SXM5_80GB",),
    "nvidia h100 pcie": ("nvidia.com/GH100_H100_PCIE",),
    "nvidia h200": ("nvidia.com/GH100_H200_SXM_141GB",),
    "tesla t4": ("nvidia.com/TU104GL_TESLA_T4",),
    "tesla v100-sxm2-16gb": ("nvidia.com/GV100GL_TESLA_V100_SXM2_16GB",),
    "tesla v100-sxm2-32gb": ("nvidia.com/GV100GL_TESLA_V100_SXM2_32GB",),
    "tesla v100-pcie-16gb": ("nvidia.com/GV100GL_TESLA_V100_PCIE_16GB",),
    "tesla v100s-pcie-32gb": ("nvidia.com/GV100GL_TESLA_V100S_PCIE_32GB",),
}


def model_key(model_name: str) -> str:
    """A DCGM model name as compared: lower case, single spaces."""
    return " ".join(model_name.lower().split())


def board_power(model_name: str, reported: float | None = None) -> float | None:
    if reported:
        return reported
    return BOARD_POWER_W.get(model_key(model_name).removeprefix("nvidia "))


# Health flags when the exporter sends no clock-event reasons (the default DCGM set has none).
# At the cap: a bucket's peak power within 2 % of the limit (nvidia-smi's "SW Power Cap" holds
# draw at the enforced limit). Hot: 85 °C, the "GPU Max Operating Temp" nvidia-smi -q reports
# for data-centre boards such as the A100 PCIe and L40S; the slowdown threshold lies a few
# degrees above it (DCGM_FI_DEV_SLOWDOWN_TEMP, not in the default set either).
POWER_CAP_SHARE = 0.98
HOT_C = 85.0
