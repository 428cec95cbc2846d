"""Server-side printing: meta.k8s.io/v1 Table responses, as `kubectl get` asks for them."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Any

from .resources import Resource


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    y = h // (24 * 365)
    if y < 8:
        return f"{y}y{(h // 24) % 365}d"
    return f"{y}y"


def age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        t = calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    return human_duration(time.time() - t)


def _event_last(ev: dict[str, Any]) -> str | None:
    """kubectl's rule: lastTimestamp, else series.lastObservedTime, else eventTime."""
    last = ev.get("lastTimestamp") or (ev.get("series") or {}).get("lastObservedTime")
    return (
        (last or ev.get("eventTime") or "").split(".")[0].rstrip("Z") + "Z"
        if (last or ev.get("eventTime"))
        else None
    )


def _cond(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


Column = tuple[
    str, str, str, int, Callable[[dict[str, Any]], Any]
]  # name, type, format, priority, cell


def _app_columns() -> list[Column]:
    def ready(o: dict[str, Any]) -> str:
        c = _cond(o, "Ready")
        return c.get("status", "Unknown") if c else "Unknown"

    def version(o: dict[str, Any]) -> str:
        v = (o.get("status") or {}).get("version", "")
        return v.split("+", 1)[1] if "+" in v else v

    return [
        ("NAME", "string", "name", 0, lambda o: o["metadata"]["name"]),
        ("READY", "string", "", 0, ready),
        ("AGE", "string", "", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
        ("VERSION", "string", "", 0, version),
    ]


def _node_status(o: dict[str, Any]) -> str:
    c = _cond(o, "Ready")
    s = "Ready" if c and c.get("status") == "True" else "NotReady"
    if (o.get("spec") or {}).get("unschedulable"):
        s += ",SchedulingDisabled"
    return s


def _roles(o: dict[str, Any]) -> str:
    roles = sorted(
        k.split("/", 1)[1]
        for k in (o["metadata"].get("labels") or {})
        if k.startswith("node-role.kubernetes.io/")
    )
    return ",".join(roles) or "<none>"


def _pod_ready(o: dict[str, Any]) -> str:
    cs = (o.get("status") or {}).get("containerStatuses") or []
    n = len((o.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for c in cs if c.get('ready'))}/{n}"


COLUMNS: dict[str, list[Column]] = {
    "nodes": [
        ("NAME", "string", "name", 0, lambda o: o["metadata"]["name"]),
        ("STATUS", "string", "", 0, _node_status),
        ("ROLES", "string", "", 0, _roles),
        ("AGE", "string", "", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
        ("VERSION", "string", "", 0, lambda o: o["status"]["nodeInfo"]["kubeletVersion"]),
        (
            "INTERNAL-IP",
            "string",
            "",
            1,
            lambda o: next(
                (
                    a["address"]
                    for a in o["status"].get("addresses", [])
                    if a["type"] == "InternalIP"
                ),
                "<none>",
            ),
        ),
        ("OS-IMAGE", "string", "", 1, lambda o: o["status"]["nodeInfo"]["osImage"]),
        ("KERNEL-VERSION", "string", "", 1, lambda o: o["status"]["nodeInfo"]["kernelVersion"]),
        (
            "CONTAINER-RUNTIME",
            "string",
            "",
            1,
            lambda o: o["status"]["nodeInfo"]["containerRuntimeVersion"],
        ),
    ],
    "pods": [
        ("NAME", "string", "name", 0, lambda o: o["metadata"]["name"]),
        ("READY", "string", "", 0, _pod_ready),
        ("STATUS", "string", "", 0, lambda o: o["status"].get("phase", "Unknown")),
        ("RESTARTS", "string", "", 0, lambda o: "0"),
        ("AGE", "string", "", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
        ("IP", "string", "", 1, lambda o: o["status"].get("podIP", "<none>")),
        ("NODE", "string", "", 1, lambda o: o["spec"].get("nodeName", "<none>")),
    ],
    "namespaces": [
        ("NAME", "string", "name", 0, lambda o: o["metadata"]["name"]),
        ("STATUS", "string", "", 0, lambda o: o.get("status", {}).get("phase", "Active")),
        ("AGE", "string", "", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
    "events": [
        ("LAST SEEN", "string", "", 0, lambda o: age(_event_last(o))),
        ("TYPE", "string", "", 0, lambda o: o.get("type", "")),
        ("REASON", "string", "", 0, lambda o: o.get("reason", "")),
        (
            "OBJECT",
            "string",
            "",
            0,
            lambda o: (
                f"{o['involvedObject'].get('kind', '').lower()}/"
                f"{o['involvedObject'].get('name', '')}"
            ),
        ),
        ("MESSAGE", "string", "", 0, lambda o: o.get("message", "")),
    ],
    "kubevirt.io/virtualmachines": [
        ("NAME", "string", "name", 0, lambda o: o["metadata"]["name"]),
        ("AGE", "string", "", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
        ("STATUS", "string", "", 0, lambda o: o.get("status", {}).get("printableStatus", "")),
        (
            "READY",
            "string",
            "",
            0,
            lambda o: (
                str(bool(o.get("status", {}).get("ready")))
                .lower()
                .replace("true", "True")
                .replace("false", "False")
            ),
        ),
    ],
    "workloadmonitors": [
        ("NAME", "string", "name", 0, lambda o: o["metadata"]["name"]),
        ("KIND", "string", "", 0, lambda o: o["spec"].get("kind", "")),
        ("TYPE", "string", "", 0, lambda o: o["spec"].get("type", "")),
        ("VERSION", "string", "", 0, lambda o: o["spec"].get("version", "")),
        # The CRD's printer columns (cozystack v1.1.0 api/v1alpha1/workloadmonitor_types.go); a
        # missing value is a null cell (kubectl prints <none>): worker monitors have no
        # replicas and no monitor has `operational` stored.
        ("REPLICAS", "integer", "", 0, lambda o: o["spec"].get("replicas")),
        ("MINREPLICAS", "integer", "", 0, lambda o: o["spec"].get("minReplicas")),
        ("AVAILABLE", "integer", "", 0, lambda o: o.get("status", {}).get("availableReplicas")),
        ("OBSERVED", "integer", "", 0, lambda o: o.get("status", {}).get("observedReplicas")),
        ("OPERATIONAL", "boolean", "", 0, lambda o: o.get("status", {}).get("operational")),
        ("AGE", "string", "", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
}


def columns_for(res: Resource) -> list[Column]:
    if res.is_app:
        return _app_columns()
    if res.group == "kubevirt.io":
        return COLUMNS["kubevirt.io/virtualmachines"]
    return COLUMNS.get(res.plural) or [
        ("NAME", "string", "name", 0, lambda o: o["metadata"]["name"]),
        ("AGE", "string", "", 0, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ]


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    md = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": md}


def to_table(
    res: Resource, objs: list[dict[str, Any]], list_meta: dict[str, Any], include: str = "Metadata"
) -> dict[str, Any]:
    cols = columns_for(res)
    rows = []
    for o in objs:
        row: dict[str, Any] = {"cells": [c[4](o) for c in cols]}
        if include == "Object":
            row["object"] = o
        elif include != "None":
            row["object"] = partial_metadata(o)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [
            {
                "name": c[0].title() if c[0] != "NAME" else "Name",
                "type": c[1],
                "format": c[2],
                "description": c[0].lower(),
                "priority": c[3],
            }
            for c in cols
        ],
        "rows": rows,
    }
