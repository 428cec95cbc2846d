"""Real Prometheus and VictoriaMetrics (Debian packages) on free ports, for tests and benchmarks:
started in a temporary folder, waited on, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from gpus.testing_ports import free_port


def _scrape_config(sd_url: str | None, interval: str, refresh: bool = True) -> str:
    if not sd_url:
        return json.dumps({"global": {"scrape_interval": interval}})
    return json.dumps(
        {
            "global": {"scrape_interval": interval, "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    # vmagent with the chart's ServiceMonitor: honorLabels false.
                    "job_name": "nvidia-dcgm-exporter",
                    "honor_labels": False,
                    "http_sd_configs": [
                        {"url": sd_url, "refresh_interval": "1s"} if refresh else {"url": sd_url}
                    ],
                }
            ],
        }
    )


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - local
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _run(cmd: list[str], ready: str, folder: Path) -> Iterator[None]:
    log = folder / "log.txt"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(ready, proc, log)
        yield
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def run_prometheus(
    folder: Path, sd_url: str | None = None, interval: str = "1s", tsdb: Path | None = None
) -> Iterator[str]:
    """Prometheus scraping `sd_url` (HTTP SD) or serving an existing TSDB; yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(_scrape_config(sd_url, interval))
    port = free_port()
    cmd = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tsdb or folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=400d",
        "--query.lookback-delta=5m",
    ]
    url = f"http://127.0.0.1:{port}"
    with _run(cmd, f"{url}/-/ready", folder):
        yield url


@contextlib.contextmanager
def run_victoria_metrics(
    folder: Path, sd_url: str | None = None, interval: str = "1s"
) -> Iterator[str]:
    """VictoriaMetrics single-node, scraping `sd_url` if given; yields its URL (the Prometheus
    query API is at the root, as vmselect's is under /select/0/prometheus)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        "victoria-metrics",
        f"-storageDataPath={folder / 'data'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=10y",
        "-search.latencyOffset=0s",
        "-search.disableCache",
    ]
    if sd_url:
        config = folder / "scrape.yml"
        config.write_text(_scrape_config(sd_url, interval, refresh=False))
        cmd += [f"-promscrape.config={config}", "-promscrape.httpSDCheckInterval=1s"]
    url = f"http://127.0.0.1:{port}"
    with _run(cmd, f"{url}/health", folder):
        yield url


def wait_for_series(url: str, query: str, n: int = 1, timeout: float = 60) -> list:
    """Poll an instant query until it returns at least n series."""
    deadline = time.monotonic() + timeout
    q = urllib.parse.urlencode({"query": query})
    result: list = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as r:  # noqa: S310
            result = json.loads(r.read())["data"]["result"]
        if len(result) >= n:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{query}: {len(result)} series after {timeout}s")
