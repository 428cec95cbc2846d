"""Parser (real exporter format, label variants, sentinels), agent CSV, downsampling, charts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpus.utilization import charts
from gpus.utilization.downsample import downsample
from gpus.utilization.metrics.parse import parse_exposition
from gpus.utilization.metrics.sources import step_for
from gpus.utilization.selectors import decode_throttle

# ruff: noqa: E501 - exposition lines are long, as the exporter writes them
# The exposition block of the domain reference §6.3, built from dcgm-exporter's render template.
EXPORTER_TEXT = """\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-5b6c0f6e-1111-2222-3333-444455556666",pci_bus_id="00000000:00:06.0",device="nvidia0",modelName="NVIDIA L40S",Hostname="kubernetes-ml-gpu-abcde-xyz12",DCGM_FI_DRIVER_VERSION="550.127.05",container="trainer",namespace="default",pod="train-0"} 87
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-5b6c0f6e-1111-2222-3333-444455556666",pci_bus_id="00000000:00:06.0",device="nvidia0",modelName="NVIDIA L40S",Hostname="kubernetes-ml-gpu-abcde-xyz12",DCGM_FI_DRIVER_VERSION="550.127.05"} 31245
# HELP DCGM_FI_DEV_FB_FREE Framebuffer memory free (in MiB).
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-5b6c0f6e-1111-2222-3333-444455556666",pci_bus_id="00000000:00:06.0",device="nvidia0",modelName="NVIDIA L40S",Hostname="kubernetes-ml-gpu-abcde-xyz12",DCGM_FI_DRIVER_VERSION="550.127.05"} 14823.000000
# HELP DCGM_FI_DEV_MEMORY_TEMP Memory temperature (in C).
# TYPE DCGM_FI_DEV_MEMORY_TEMP gauge
DCGM_FI_DEV_MEMORY_TEMP{gpu="0",UUID="GPU-5b6c0f6e-1111-2222-3333-444455556666",pci_bus_id="00000000:00:06.0",device="nvidia0",modelName="NVIDIA L40S",Hostname="kubernetes-ml-gpu-abcde-xyz12",DCGM_FI_DRIVER_VERSION="550.127.05"} 9223372036854775794
# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-5b6c0f6e-1111-2222-3333-444455556666",pci_bus_id="00000000:00:06.0",device="nvidia0",modelName="NVIDIA L40S",Hostname="kubernetes-ml-gpu-abcde-xyz12",DCGM_FI_DRIVER_VERSION="550.127.05"} 9223372036854775794
# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.
# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge
DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-5b6c0f6e-1111-2222-3333-444455556666",pci_bus_id="00000000:00:06.0",device="nvidia0",modelName="NVIDIA L40S",Hostname="kubernetes-ml-gpu-abcde-xyz12",DCGM_FI_DRIVER_VERSION="550.127.05",container="trainer",namespace="default",pod="train-0"} 0.812345
"""


def test_parser_reads_the_exporter_format_and_drops_sentinels() -> None:
    (r,) = parse_exposition(EXPORTER_TEXT, 1000.0, {"cluster": "kubernetes-ml", "tenant": "t"})
    assert r.uuid == "GPU-5b6c0f6e-1111-2222-3333-444455556666"
    assert (r.hostname, r.model_name, r.index) == (
        "kubernetes-ml-gpu-abcde-xyz12",
        "NVIDIA L40S",
        0,
    )
    assert (r.namespace, r.pod, r.cluster, r.tenant) == ("default", "train-0", "kubernetes-ml", "t")
    assert r.values["util"] == 87 and r.values["mem_used"] == 31245
    assert r.mem_total() == 31245 + 14823
    assert "power" not in r.values  # 9223372036854775794 is DCGM's "not supported"
    busy, metric = r.busy()
    assert busy == pytest.approx(81.2345) and metric == "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
    assert r.allocated


def test_parser_label_variants() -> None:
    # Upstream's lowercase `hostname`; honorLabels false: exported_* are the workload's and
    # `namespace` is the exporter's own.
    text = (
        'DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-a",modelName="NVIDIA A100 80GB PCIe",'
        'hostname="w1",exported_namespace="ml",exported_pod="train-1",'
        'namespace="cozy-gpu-operator",pod="nvidia-dcgm-exporter-x"} 3\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-b",modelName="NVIDIA A100 80GB PCIe",'
        'Hostname="w2"} 0\n'
    )
    a, b = sorted(parse_exposition(text, 1.0), key=lambda r: r.uuid)
    assert (a.hostname, a.namespace, a.pod) == ("w1", "ml", "train-1")
    assert a.busy() == (3, "DCGM_FI_DEV_GPU_UTIL")  # no profiling metric: says which it used
    assert (b.hostname, b.pod, b.allocated) == ("w2", "", False)  # no pod holds it


def test_the_same_uuid_in_two_clusters_stays_two_readings() -> None:
    line = 'DCGM_FI_DEV_GPU_UTIL{{UUID="GPU-a",cluster="{c}",Hostname="h"}} 5\n'
    got = parse_exposition(line.format(c="kubernetes-x") + line.format(c="kubernetes-y"), 1.0)
    assert len(got) == 2


def test_throttle_bitmask_decoded() -> None:
    assert decode_throttle(0x80 | 0x40 | 0x8 | 0x1) == [
        "hardware slowdown",
        "thermal (hardware)",
        "power brake",
    ]
    assert decode_throttle(0x1) == []  # idle is not throttling


def test_minmaxlttb_keeps_extremes_and_caps_points() -> None:
    x = np.arange(200_000, dtype=float)
    y = 50 + 10 * np.sin(x / 500)
    y[12_345], y[150_000] = 100.0, 0.0
    gappy = y.copy()
    gappy[1000:50_000] = np.nan
    xs, (ys, gs) = downsample(x, [y, gappy])
    assert len(xs) <= 2000
    assert ys.max() == 100.0 and ys.min() == 0.0  # the single-sample spike and dip survive
    assert np.isnan(gs).any()  # the gap is kept as a gap, not bridged


def test_step_keeps_a_range_under_2000_points() -> None:
    step = step_for(0, 30 * 86400)
    assert 30 * 86400 / step + 1 <= 2000


def test_fleet_chart_from_rows() -> None:
    ts = [float(t) for t in range(0, 30 * 86400, 300)]
    vals = [50.0] * len(ts)
    vals[10] = None
    s = charts.Series(ts, {"avg": vals, "p05": [10.0] * len(ts), "p95": [90.0] * len(ts)})
    fig = charts.fleet_by_model({"NVIDIA L40S": s}, "t", "mean", "p5-p95")
    assert charts.points_per_line(fig) <= 2000
    doc = json.loads(charts.to_json(fig))
    assert len(doc["data"]) == 3 and doc["data"][1]["fill"] == "tonexty"


def test_a_lone_reading_is_a_dot_not_nothing() -> None:
    """The first 5-minute bucket of a fresh install sits between gaps: a line alone draws nothing."""
    ts = [float(t) for t in range(0, 86400, 300)]
    nan = [None] * len(ts)
    avg = [*nan[:-3], 40.0, None, None]  # one reading, gaps on both sides
    s = charts.Series(ts, {"avg": avg, "p05": avg, "p95": avg})
    doc = json.loads(charts.to_json(charts.fleet_by_model({"NVIDIA L40S": s}, "t", "m", "b")))
    mean = doc["data"][2]
    assert mean["mode"] == "lines+markers"
    sizes = mean["marker"]["size"]
    assert sizes[-3] > 0 and sum(1 for v in sizes if v) == 1
    band_edge = doc["data"][0]
    assert band_edge["mode"] == "lines"  # the band's invisible edges get no dots


def test_a_continuous_line_gets_no_dots() -> None:
    ts = [float(t) for t in range(0, 3600, 300)]
    s = charts.Series(ts, {"avg": [50.0] * len(ts), "p05": [1.0] * len(ts), "p95": [9.0] * len(ts)})
    doc = json.loads(charts.to_json(charts.fleet_by_model({"NVIDIA L40S": s}, "t", "m", "b")))
    assert all(t["mode"] == "lines" for t in doc["data"])


def test_allocation_leaves_gaps_empty_instead_of_stacking_zeros() -> None:
    """Plotly's stackgroup stacks a missing reading as zero (ramps down to 0 GPUs into each gap and
    at the still-open bucket); stacked bars leave the gap empty and show a lone bucket."""
    ts = [float(t) for t in range(0, 7200, 300)]
    n = [4.0] * len(ts)
    n[5] = n[6] = n[-1] = None
    s = charts.Series(ts, {"gpus": n, "allocated": n, "busy": n})
    labels = {"busy": "b", "idle": "i", "free": "f", "axis": "GPUs"}
    doc = json.loads(charts.to_json(charts.allocation(s, "t", labels)))
    assert doc["layout"]["barmode"] == "stack"
    for trace in doc["data"]:
        assert trace["type"] == "bar" and "stackgroup" not in trace
    busy = _decoded(doc["data"][0]["y"])
    assert np.isnan(busy[5]) and np.isnan(busy[-1]) and busy[4] == 4.0


def test_a_tenant_with_one_workload_still_sees_its_name() -> None:
    ts = [float(t) for t in range(0, 3600, 300)]
    s = charts.Series(ts, {"util": [50.0] * len(ts)})
    doc = json.loads(charts.to_json(charts.lines({"ml/gpu": s}, "util", "t", "%")))
    assert doc["layout"]["showlegend"] is True and doc["data"][0]["name"] == "ml/gpu"


def _decoded(y: object) -> np.ndarray:
    """Plotly's JSON holds numpy arrays as {"dtype", "bdata"} (base64)."""
    import base64

    if isinstance(y, dict):
        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"])
    return np.asarray(y, dtype=float)


@pytest.mark.parametrize(("gpus", "dtick"), [(2, 1), (10, 1), (400, None)])
def test_gpu_counts_are_whole_numbers_on_the_axis(gpus: int, dtick: int | None) -> None:
    """Two GPUs read 0, 1, 2 on the axis, never 0.5 or 1.5; a big fleet keeps Plotly's ticks."""
    ts = [float(t) for t in range(0, 3600, 300)]
    n = [float(gpus)] * len(ts)
    s = charts.Series(ts, {"gpus": n, "allocated": n, "busy": [0.0] * len(ts)})
    labels = {"busy": "b", "idle": "i", "free": "f", "axis": "GPUs"}
    doc = json.loads(charts.to_json(charts.allocation(s, "t", labels)))
    assert doc["layout"]["yaxis"].get("dtick") == dtick
