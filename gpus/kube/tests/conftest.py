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


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill schema defaults like cozystack-api does server-side before validation.

    The charts mark nested keys ``required`` that users never send (e.g.
    ``controlPlane.apiServer``); the server fills them from ``default``, so a spec is
    judged after defaulting, as here.
    """
    if not isinstance(value, dict) or schema.get("type") not in (None, "object"):
        return value
    out = copy.deepcopy(value)
    props = schema.get("properties") or {}
    for key, sub in props.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = apply_defaults(sub, out[key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in list(out):
            if key not in props:
                out[key] = apply_defaults(extra, out[key])
    return out


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
