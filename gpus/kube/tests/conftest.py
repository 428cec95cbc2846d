"""Fixtures for gpus/kube tests: the real chart schemas and a devcluster over HTTP.

No Django here: these tests also run with ``-p no:django``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.testing import run_devcluster

REPO_ROOT = Path(__file__).resolve().parents[3]

SCHEMA_DIRS = (
    REPO_ROOT / "devcluster" / "schemas",
    REPO_ROOT.parent / "shared" / "reference" / "cozystack-schemas",
)


def schema_dir() -> Path:
    for directory in SCHEMA_DIRS:
        if (directory / "vminstance.v1.1.0.json").is_file():
            return directory
    pytest.skip(f"no Cozystack chart schemas in {[str(d) for d in SCHEMA_DIRS]}")


def load_schema(filename: str) -> dict[str, Any]:
    return json.loads((schema_dir() / filename).read_text())


def _defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in (properties, and entries of a map)."""
    if not isinstance(value, dict) or schema.get("type") not in (None, "object"):
        return value
    out = copy.deepcopy(value)
    props = schema.get("properties") or {}
    for key, sub in props.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _defaults(sub, out[key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in list(out):
            if key not in props:
                out[key] = _defaults(extra, out[key])
    return out


def _coalesce(defaults: Any, values: Any) -> Any:
    if not isinstance(defaults, dict) or not isinstance(values, dict):
        return copy.deepcopy(values)
    out = copy.deepcopy(defaults)
    for key, value in values.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def helm_values(schema: dict[str, Any], spec: Any) -> Any:
    """What Helm validates: the chart's values.yaml (the schema's defaults applied to nothing:
    cozystack generates one from the other) coalesced with the spec as sent. cozystack-api
    stores the spec undefaulted (rest.go Create), so a node group the spec adds gets nothing
    from values.yaml, whose ``nodeGroups`` only holds md0: its required keys must be sent."""
    return _coalesce(_defaults(schema, {}), spec)


@pytest.fixture(scope="session")
def chart_schemas() -> dict[str, dict[str, Any]]:
    return {
        "VMInstance": load_schema("vminstance.v1.1.0.json"),
        "VMDisk": load_schema("vmdisk.v1.1.0.json"),
        "Kubernetes": load_schema("kubernetes.v1.1.0.json"),
        "Kubernetes-head": load_schema("kubernetes.v1.6-head.json"),
        "VirtualMachine": load_schema("virtualmachine.legacy.json"),
    }


# --- devcluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A devcluster (flavour current, demo fleet) shared by a test module."""
    with run_devcluster(
        tmp_path_factory.mktemp("devcluster"), fleet="demo", flavour="current", seed=1
    ) as dc:
        yield dc


@pytest.fixture(scope="module")
def legacy_devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with run_devcluster(
        tmp_path_factory.mktemp("devcluster-legacy"), fleet="demo", flavour="legacy", seed=1
    ) as dc:
        yield dc
