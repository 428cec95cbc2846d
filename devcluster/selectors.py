"""Label and field selectors, parsed as the apiserver parses them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]


class SelectorError(ValueError):
    pass


def _split_top(expr: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` parentheses."""
    parts, depth, cur = [], 0, []
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^([A-Za-z0-9_./-]+)\s+(in|notin)\s*\(([^)]*)\)$")
_EQ_RE = re.compile(r"^([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)$")
_KEY_RE = re.compile(r"^(!?)([A-Za-z0-9_./-]+)$")


def parse_label_selector(expr: str | None) -> Matcher | None:
    if not expr:
        return None
    tests: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_top(expr):
        m = _SET_RE.match(part)
        if m:
            key, op, vals = (
                m.group(1),
                m.group(2),
                {v.strip() for v in m.group(3).split(",") if v.strip()},
            )
            if op == "in":
                tests.append(lambda lb, k=key, vs=vals: lb.get(k) in vs)
            else:
                tests.append(lambda lb, k=key, vs=vals: lb.get(k) not in vs)
            continue
        m = _EQ_RE.match(part)
        if m:
            key, op, val = m.groups()
            if op == "!=":
                tests.append(lambda lb, k=key, v=val: lb.get(k) != v)
            else:
                tests.append(lambda lb, k=key, v=val: lb.get(k) == v)
            continue
        m = _KEY_RE.match(part)
        if m:
            neg, key = m.groups()
            if neg:
                tests.append(lambda lb, k=key: k not in lb)
            else:
                tests.append(lambda lb, k=key: k in lb)
            continue
        raise SelectorError(f"unable to parse requirement: {part!r}")

    def match(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(t(labels) for t in tests)

    return match


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


SUPPORTED_FIELDS = {
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    "involvedObject.name",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "type",
    "spec.unschedulable",
}


def parse_field_selector(expr: str | None) -> Matcher | None:
    if not expr:
        return None
    tests: list[tuple[str, bool, str]] = []
    for part in _split_top(expr):
        m = re.match(r"^([A-Za-z.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid selector: {part!r}; can't understand {part!r}")
        field, op, val = m.groups()
        if field not in SUPPORTED_FIELDS:
            raise SelectorError(f"field label not supported: {field}")
        tests.append((field, op != "!=", val))

    def match(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, f) == v) == eq for f, eq, v in tests)

    return match
