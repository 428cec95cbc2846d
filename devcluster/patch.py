"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), the two patch types CRDs accept."""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _unescape(tok: str) -> str:
    return tok.replace("~1", "/").replace("~0", "~")


def _parts(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [_unescape(p) for p in pointer[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict):
            if p not in cur:
                raise PatchError(f"path not found: /{'/'.join(parts)}")
            cur = cur[p]
        elif isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError) as e:
                raise PatchError(f"bad index {p!r}") from e
        else:
            raise PatchError(f"cannot descend into {type(cur).__name__}")
    return cur


def _add(doc: Any, parts: list[str], value: Any, replace: bool = False) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"replace: missing key {last!r}")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                idx = int(last)
            except ValueError as e:
                raise PatchError(f"bad index {last!r}") from e
            if replace:
                if not 0 <= idx < len(parent):
                    raise PatchError(f"index {idx} out of range")
                parent[idx] = value
            else:
                if not 0 <= idx <= len(parent):
                    raise PatchError(f"index {idx} out of range")
                parent.insert(idx, value)
    else:
        raise PatchError("cannot add to a scalar")
    return doc


def _remove(doc: Any, parts: list[str]) -> tuple[Any, Any]:
    if not parts:
        raise PatchError("cannot remove the root")
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"remove: missing key {last!r}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            return doc, parent.pop(int(last))
        except (ValueError, IndexError) as e:
            raise PatchError(f"bad index {last!r}") from e
    raise PatchError("cannot remove from a scalar")


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, parts = op["op"], _parts(op["path"])
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "replace":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "remove":
            doc, _ = _remove(doc, parts)
        elif kind in ("move", "copy"):
            src = _parts(op.get("from", ""))
            if kind == "move":
                doc, val = _remove(doc, src)
            else:
                val = copy.deepcopy(_resolve(doc, src))
            doc = _add(doc, parts, val)
        elif kind == "test":
            if _resolve(doc, parts) != op.get("value"):
                raise PatchError(f"test failed at {op['path']}")
        else:
            raise PatchError(f"unknown op {kind!r}")
    return doc
