"""Rows in, Plotly figure out: no queries here. Lines are downsampled with MinMaxLTTB to at
most 2,000 points; missing data stays a gap (never drawn as zero)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gpus.utilization.downsample import MAX_POINTS, _floats, downsample

# A white background with light grids, set directly: a named template is deep-copied per figure.
GRID = {"gridcolor": "#e5e7eb", "zerolinecolor": "#cbd5e1", "linecolor": "#cbd5e1"}
PLAIN = {
    "template": "none",
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
    "xaxis": GRID,
    "yaxis": GRID,
}
COLORS = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f"]


@dataclass
class Series:
    """Lines over one time axis (epoch seconds); None marks missing data."""

    ts: Sequence[float]
    lines: dict[str, Sequence[float | None]] = field(default_factory=dict)


def _x(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[s]")


def trim_leading_gap(
    per_line: Mapping[str, Series], share: float = 0.5
) -> tuple[dict[str, Series], float | None]:
    """Lines on a full time axis whose data covers less than `share` of it (a fleet installed
    an hour ago, seen over 24 h): cut the empty start, so the data is not a sliver at the right
    edge. Returns the lines and where the data starts (None when nothing was cut)."""
    firsts = []
    size = 0
    for s in per_line.values():
        size = max(size, len(s.ts))
        for line in s.lines.values():
            finite = np.flatnonzero(np.isfinite(_floats(line)))
            if finite.size:
                firsts.append(int(finite[0]))
    if not firsts or size == 0:
        return dict(per_line), None
    first = min(firsts)
    if first == 0 or (size - first) / size >= share:
        return dict(per_line), None
    start = max(first - 1, 0)  # one empty bucket before: a lone first reading stays a dot
    out = {
        k: Series(list(s.ts)[start:], {n: list(v)[start:] for n, v in s.lines.items()})
        for k, s in per_line.items()
    }
    return out, float(next(iter(per_line.values())).ts[first])


def finish(fig: go.Figure | PlainFigure, zone: str) -> go.Figure | PlainFigure:
    """What every chart's tooltip says: values with one decimal, the time with its zone."""
    hover = f"%-d %b %Y %H:%M {zone}".rstrip()
    if isinstance(fig, PlainFigure):
        fig.layout["xaxis"]["hoverformat"] = hover
        for trace in fig.data:
            trace["yhoverformat"] = ".1f"
        return fig
    fig.update_xaxes(hoverformat=hover)
    for trace in fig.data:
        if trace.type == "heatmap":
            trace.zhoverformat = ".1f"
        else:
            trace.yhoverformat = ".1f"
    return fig


def local(s: Series, offset: float) -> Series:
    """Epoch seconds shifted by the display time zone's UTC offset: Plotly draws naive times."""
    return Series([t + offset for t in s.ts], s.lines)


def _layout(fig: go.Figure, title: str, y_title: str = "", y_range: list | None = None) -> None:
    fig.update_layout(
        title={"text": title, "x": 0, "font": {"size": 15}},
        margin={"l": 56, "r": 16, "t": 48, "b": 40},
        height=360,
        hovermode="x unified",
        legend={"orientation": "h", "y": -0.18},
        **PLAIN,
    )
    fig.update_yaxes(title_text=y_title, range=y_range, rangemode="tozero")


def _dot_lonely_points(fig: go.Figure) -> None:
    """A reading with gaps on both sides (the first 5-minute bucket, or one between outages)
    draws no line: give it a dot, so a range with data never looks empty."""
    for trace in fig.data:
        if trace.type != "scatter" or trace.mode != "lines" or trace.stackgroup:
            continue
        if trace.line.width == 0 or trace.y is None:
            continue  # the invisible edges of a band
        y = np.isfinite(_floats(trace.y))
        before = np.concatenate(([False], y[:-1]))
        after = np.concatenate((y[1:], [False]))
        lonely = y & ~before & ~after
        if lonely.any():
            trace.mode = "lines+markers"
            trace.marker = {"size": np.where(lonely, 6, 0).tolist(), "color": trace.line.color}


@dataclass
class PlainFigure:
    """A figure as the plain dict plotly.js reads, built without plotly's graph objects: their
    validators checked every property of every trace and cost most of a 30-day chart's time.
    For the charts whose shape is fixed (the fleet chart); the others use graph objects."""

    data: list[dict]
    layout: dict

    def to_plotly_json(self) -> dict:
        return {"data": self.data, "layout": self.layout}


def _plain_layout(title: str, y_title: str = "", y_range: list | None = None) -> dict:
    """What _layout sets, as a dict (template "none" is no template at all)."""
    return {
        "title": {"text": title, "x": 0, "font": {"size": 15}},
        "margin": {"l": 56, "r": 16, "t": 48, "b": 40},
        "height": 360,
        "hovermode": "x unified",
        "legend": {"orientation": "h", "y": -0.18},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "xaxis": dict(GRID),
        "yaxis": {
            **GRID,
            "title": {"text": y_title},
            "rangemode": "tozero",
            **({"range": y_range} if y_range is not None else {}),
        },
    }


def _lonely_marker(y: np.ndarray, color: str) -> dict | None:
    """_dot_lonely_points for one plain trace: dots where a reading has gaps on both sides."""
    ok = np.isfinite(y)
    before = np.concatenate(([False], ok[:-1]))
    after = np.concatenate((ok[1:], [False]))
    lonely = ok & ~before & ~after
    if not lonely.any():
        return None
    return {"size": np.where(lonely, 6, 0).tolist(), "color": color}


def fleet_by_model(
    per_model: Mapping[str, Series], title: str, mean_label: str, band_label: str
) -> PlainFigure:
    """Mean utilization per model with a p5-p95 band across its GPUs."""
    data: list[dict] = []
    for i, (model, s) in enumerate(sorted(per_model.items())):
        color = COLORS[i % len(COLORS)]
        x, (avg, lo, hi) = downsample(s.ts, [s.lines["avg"], s.lines["p05"], s.lines["p95"]])
        xs = _x(x)
        edge = {"type": "scatter", "x": xs, "mode": "lines", "connectgaps": False}
        data.append(
            {
                **edge,
                "y": lo,
                "line": {"width": 0},
                "showlegend": False,
                "legendgroup": model,
                "hoverinfo": "skip",
            }
        )
        data.append(
            {
                **edge,
                "y": hi,
                "line": {"width": 0},
                "fill": "tonexty",
                "fillcolor": _alpha(color, 0.18),
                "name": f"{model} {band_label}",
                "legendgroup": model,
            }
        )
        mean = {
            **edge,
            "y": avg,
            "line": {"color": color, "width": 2},
            "name": f"{model} {mean_label}",
            "legendgroup": model,
        }
        marker = _lonely_marker(avg, color)
        if marker is not None:
            mean |= {"mode": "lines+markers", "marker": marker}
        data.append(mean)
    return PlainFigure(data, _plain_layout(title, "%", [0, 100]))


def _alpha(hex_color: str, a: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{a})"


def allocation(s: Series, title: str, labels: Mapping[str, str]) -> go.Figure:
    """Stacked GPU counts per bucket: busy, allocated but idle, not allocated: idle allocation
    stands out."""
    gpus_a, alloc_a, busy_a = (_floats(s.lines[k]) for k in ("gpus", "allocated", "busy"))
    busy_a = np.minimum(busy_a, alloc_a)
    idle = alloc_a - busy_a
    free = np.clip(gpus_a - alloc_a, 0, None)
    x, (b, i, f) = downsample(s.ts, [busy_a, idle, free])
    fig = go.Figure()
    xs = _x(x)
    # Stacked bars, one per bucket, not a stacked area: Plotly stacks a missing reading as zero,
    # which drew ramps down to 0 GPUs into every gap and at the still-open latest bucket; a bar
    # is simply absent where there is no data, and a lone bucket still shows.
    for y, key, color in ((b, "busy", "#059669"), (i, "idle", "#dc2626"), (f, "free", "#cbd5e1")):
        fig.add_bar(x=xs, y=y, name=labels[key], marker={"color": color, "line": {"width": 0}})
    _layout(fig, title, labels["axis"])
    # A count of GPUs: a small one would otherwise get ticks at 0.5, 1.5...
    top = float(np.nanmax(np.maximum(gpus_a, alloc_a), initial=0))
    if top <= 10:
        fig.update_yaxes(dtick=1)
    fig.update_layout(barmode="stack", bargap=0)
    return fig


def heatmap(
    nodes: Sequence[str],
    ts: Sequence[float],
    z: Sequence[Sequence[float | None]],
    title: str,
    colorbar: str,
) -> go.Figure:
    """Node x time, mean utilization of the node's GPUs; empty cells stay blank."""
    fig = go.Figure(
        go.Heatmap(
            x=_x(np.asarray(ts, dtype=float)),
            y=list(nodes),
            z=np.array([_floats(row) for row in z]) if len(z) else [],
            zmin=0,
            zmax=100,
            colorscale="Viridis",
            colorbar={"title": {"text": colorbar}},
            hoverongaps=False,
        )
    )
    _layout(fig, title)
    fig.update_layout(height=max(300, 22 * len(nodes) + 120))
    # Node names are long (kubernetes-<cluster>-<group>-<hash>-<hash>): let the axis make room.
    fig.update_yaxes(rangemode=None, type="category", autorange="reversed", automargin=True)
    return fig


def gpu_detail(
    s: Series,
    titles: Mapping[str, str],
    power_limit: float | None,
    span: tuple[float, float] | None = None,
) -> go.Figure:
    """One GPU: utilization (and busy/tensor), memory, power (with its limit), temperature,
    clocks, sharing one time axis; `span` (local epoch seconds) is the range asked for, so
    15 minutes of readings do not fill a "7 d" chart."""
    rows = [
        ("util_title", ["util", "busy", "tensor"]),
        ("memory", ["mem_used", "mem_total"]),
        ("power_title", ["power"]),
        ("temp_title", ["temp"]),
        ("clocks", ["sm_clock"]),
    ]
    names = [k for _, ks in rows for k in ks]
    x, cols = downsample(s.ts, [s.lines.get(k, [None] * len(s.ts)) for k in names])
    data = dict(zip(names, cols, strict=True))
    fig = make_subplots(
        rows=len(rows),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        subplot_titles=[titles[r] for r, _ in rows],
    )
    xs = _x(x)
    color = 0
    for row, (_, keys) in enumerate(rows, start=1):
        for k in keys:
            if np.all(np.isnan(data[k])):
                continue
            fig.add_scatter(
                x=xs,
                y=data[k],
                mode="lines",
                name=titles[k],
                row=row,
                col=1,
                line={"width": 1.5, "color": COLORS[color % len(COLORS)]},
                connectgaps=False,
            )
            color += 1
        if keys == ["power"] and power_limit:
            fig.add_hline(
                y=power_limit,
                line={"dash": "dot", "color": "#dc2626"},
                row=row,
                col=1,
                annotation_text=titles["power_limit"],
                annotation_position="top left",
            )
    fig.update_layout(
        height=900,
        margin={"l": 56, "r": 16, "t": 40, "b": 40},
        hovermode="x unified",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.06},
    )
    if span is not None:
        fig.update_xaxes(range=list(_x(np.asarray(span, dtype=float)).astype(str)))
    # Fixed scales: a busy GPU's 67-100 % or a capped one's 298-300 W would otherwise fill the
    # whole height and look like wild swings. Utilization 0-100 %, memory up to the board's
    # total, power up to the limit (its line stays in view), temperature from 0.
    fig.update_yaxes(range=[0, 100], row=1, col=1)
    top_mem = float(np.nanmax(np.concatenate([data["mem_total"], data["mem_used"]]), initial=0))
    if top_mem > 0:
        fig.update_yaxes(range=[0, top_mem * 1.05], row=2, col=1)
    top_power = float(np.nanmax(data["power"], initial=0))
    if power_limit or top_power:
        fig.update_yaxes(range=[0, max(power_limit or 0, top_power) * 1.08], row=3, col=1)
    top_temp = float(np.nanmax(data["temp"], initial=0))
    fig.update_yaxes(range=[0, max(100.0, top_temp + 5)], row=4, col=1)
    fig.update_yaxes(rangemode="tozero", row=5, col=1)
    _dot_lonely_points(fig)
    return fig


def lines(per_line: Mapping[str, Series], key: str, title: str, y_title: str) -> go.Figure:
    """One line per group (a tenant's VMs and node groups), in the order given."""
    fig = go.Figure()
    for i, (name, s) in enumerate(per_line.items()):
        x, (y,) = downsample(s.ts, [s.lines[key]])
        fig.add_scatter(
            x=_x(x),
            y=y,
            mode="lines",
            name=name,
            connectgaps=False,
            line={"color": COLORS[i % len(COLORS)], "width": 2},
        )
    _layout(fig, title, y_title, [0, 100] if y_title == "%" else None)
    # Plotly hides the legend of a lone trace: then nothing said which VM or node group it is.
    fig.update_layout(showlegend=True)
    _dot_lonely_points(fig)
    return fig


def to_json(fig: go.Figure | PlainFigure) -> str:
    """The figure for the wire: numbers rounded to one decimal as plain JSON numbers (a tooltip
    shows one decimal, below what DCGM measures anyway), gaps as null, times to the minute.
    Plain numbers gzip to a fraction of Plotly's base64 float64 arrays, and the arrays are
    encoded by numpy here, not checked value by value by plotly's validators."""
    return json.dumps(_plain(fig.to_plotly_json()), default=_wire, separators=(",", ":"))


def _plain(node: object) -> object:
    """Plotly's typed arrays ({"dtype", "bdata"[, "shape"]}) back to numpy, for _wire."""
    if isinstance(node, dict):
        if "bdata" in node and "dtype" in node:
            a = np.frombuffer(base64.b64decode(node["bdata"]), dtype=node["dtype"])
            if "shape" in node:
                shape = node["shape"]
                dims = [int(n) for n in shape.split(",")] if isinstance(shape, str) else shape
                a = a.reshape(dims)
            return a
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v) for v in node]
    return node


def _wire(value: object) -> object:
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "M":  # datetime64: "2026-12-05T14:05"
            return np.datetime_as_string(value, unit="m").tolist()
        if value.dtype.kind in "fiu":
            a = np.round(value.astype(np.float64, copy=False), 1)
            if not np.isnan(a).any():
                return a.tolist()
            # NaN is no JSON: a gap is null (also inside a heatmap's rows).
            return np.where(np.isnan(a), None, a).tolist()
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def points_per_line(fig: go.Figure | PlainFigure) -> int:
    if isinstance(fig, PlainFigure):
        return max((len(t["x"]) for t in fig.data if t.get("x") is not None), default=0)
    return max((len(t.x) for t in fig.data if t.x is not None), default=0)


def epoch(t: dt.datetime) -> float:
    return t.timestamp()


__all__ = ["MAX_POINTS", "Series", "allocation", "fleet_by_model", "gpu_detail", "heatmap", "lines"]


# How dates read on a time axis, per language (Plotly's own locale files, which the pip package
# does not ship, say the same); English keeps Plotly's defaults.
DATE_ORDER = {
    "fr": {"dayMonth": "%-d %b", "dayMonthYear": "%-d %b %Y", "month": "%b %Y", "year": "%Y"},
    "de": {"dayMonth": "%-d. %b", "dayMonthYear": "%-d. %b %Y", "month": "%b %Y", "year": "%Y"},
}


def plotly_locale(language: str) -> dict | None:
    """A Plotly locale module for the active language (month and day names from Django's
    translations, decimal and thousands separators from its formats), or None for English."""
    from django.utils import dates, formats

    base = language.split("-")[0]
    if base == "en":
        return None
    monday_first = [dates.WEEKDAYS[(i + 6) % 7] for i in range(7)]  # Plotly starts on Sunday
    return {
        "moduleType": "locale",
        "name": base,
        "dictionary": {},
        "format": {
            "days": [str(d) for d in monday_first],
            "shortDays": [str(dates.WEEKDAYS_ABBR[(i + 6) % 7]) for i in range(7)],
            "months": [str(dates.MONTHS[i]) for i in range(1, 13)],
            "shortMonths": [str(dates.MONTHS_AP[i]) for i in range(1, 13)],
            "decimal": formats.get_format("DECIMAL_SEPARATOR", base),
            "thousands": formats.get_format("THOUSAND_SEPARATOR", base),
            **DATE_ORDER.get(base, {}),
        },
    }
