"""The shared `bench/results.json`: one object per figure, merged by name across the bench scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_JSON = Path(__file__).resolve().parent / "results.json"


def figure(
    name: str, value: float, unit: str, target: str, ok: bool, **extra: Any
) -> dict[str, Any]:
    """One figure. `target` says the goal in words (e.g. "<= 150"); `ok` is whether `value` meets it."""
    return {"name": name, "value": value, "unit": unit, "target": target, "ok": bool(ok), **extra}


def record(figures: list[dict[str, Any]]) -> None:
    """Merge `figures` into results.json, replacing entries of the same name, keeping the others."""
    current: list[dict[str, Any]] = []
    if RESULTS_JSON.exists():
        current = json.loads(RESULTS_JSON.read_text())
    by_name = {entry["name"]: entry for entry in current}
    for entry in figures:
        by_name[entry["name"]] = entry
    merged = sorted(by_name.values(), key=lambda entry: entry["name"])
    RESULTS_JSON.write_text(json.dumps(merged, indent=2) + "\n")
