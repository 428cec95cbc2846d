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


def board_power(model_name: str, reported: float | None = None) -> float | None:
    if reported:
        return reported
    name = model_name.lower().removeprefix("nvidia ").strip()
    for key, watts in BOARD_POWER_W.items():
        if name.startswith(key):
            return watts
    return None


# Health flags when the exporter sends no clock-event reasons (the default DCGM set has none).
# At the cap: a bucket's peak power within 2 % of the limit (nvidia-smi's "SW Power Cap" holds
# draw at the enforced limit). Hot: 85 °C, the "GPU Max Operating Temp" nvidia-smi -q reports
# for data-centre boards such as the A100 PCIe and L40S; the slowdown threshold lies a few
# degrees above it (DCGM_FI_DEV_SLOWDOWN_TEMP, not in the default set either).
POWER_CAP_SHARE = 0.98
HOT_C = 85.0
