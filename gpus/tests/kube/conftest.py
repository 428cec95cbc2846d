"""Fixtures for gpus/kube tests: the real chart schemas and a devcluster over HTTP.

No Django here: these tests also run with ``-p no:django``.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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


@dataclass
class _InProcessDevcluster:
    url: str
    kubeconfig: Path
    admin_token: str
    tenant_tokens: dict[str, str]
    dc: Any

    def set_faults(self, config: dict[str, Any]) -> None:
        self.dc.faults.set(config)

    def clear_faults(self) -> None:
        self.dc.faults.clear()


@contextmanager
def _in_process_devcluster(
    tmp_path: Path,
    fleet: str = "demo",
    flavour: str = "current",
    speed: float = 50.0,
    seed: int = 1,
) -> Iterator[_InProcessDevcluster]:
    """Stand-in for ``devcluster.testing.run_devcluster`` built from devcluster's own parts."""
    from devcluster.kubeconfig import write_kubeconfig
    from devcluster.server import TLS_DIR, DevCluster, make_server

    dc = DevCluster(fleet=fleet, flavour=flavour, seed=seed, speed=speed)
    srv = make_server(dc, 0)
    path = write_kubeconfig(
        tmp_path / "kubeconfig",
        f"https://127.0.0.1:{dc.port}",
        dc.admin_token,
        dc.tenant_tokens,
        ca_file=TLS_DIR / "devcluster.crt",
    )
    dc.start_background()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield _InProcessDevcluster(
            f"http://127.0.0.1:{dc.port}", path, dc.admin_token, dict(dc.tenant_tokens), dc
        )
    finally:
        dc.shutdown()
        srv.shutdown()
        srv.server_close()


def _run_devcluster():
    try:
        from devcluster.testing import run_devcluster
    except ImportError:
        try:
            import devcluster.server  # noqa: F401
        except ImportError:
            pytest.skip("devcluster is not available yet")
        return _in_process_devcluster
    return run_devcluster


@pytest.fixture(scope="module")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A devcluster (flavour current, demo fleet) shared by a test module."""
    run_devcluster = _run_devcluster()
    with run_devcluster(
        tmp_path_factory.mktemp("devcluster"), fleet="demo", flavour="current", seed=1
    ) as dc:
        yield dc


@pytest.fixture(scope="module")
def legacy_devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    run_devcluster = _run_devcluster()
    with run_devcluster(
        tmp_path_factory.mktemp("devcluster-legacy"), fleet="demo", flavour="legacy", seed=1
    ) as dc:
        yield dc
