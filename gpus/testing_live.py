"""Fixtures with live parts, shared by every app's tests: real Celery workers (with or without
their beat) on the test database and the configured broker, a devcluster registered as a
cluster, waiting for the snapshot a worker's beat keeps fresh, and a real Prometheus and
VictoriaMetrics loaded with 30 days of one GPU. Loaded by the root conftest.py as a pytest
plugin, beside gpus.testing."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import pytest
from django.db import connection
from django.utils import timezone

from devcluster.testing import DevCluster
from gpus.inventory import schemas, sync
from gpus.inventory.models import Cluster
from gpus.utilization.tests.tsdb import run_prometheus, run_victoria_metrics

ROOT = Path(__file__).resolve().parents[1]

# Fast loops for tests: poll every 0.5 s, a lost task is re-enqueued after 2 s.
FAST = {
    "OPERATION_POLL_SECONDS": "0.5",
    "OPERATION_RECONCILE_SECONDS": "1",
    "OPERATION_RECONCILE_AFTER_SECONDS": "2",
    "OPERATION_LEASE_SECONDS": "4",
    "OPERATION_UNSCHEDULABLE_GRACE_SECONDS": "30",
    "INVENTORY_SYNC_SECONDS": "2",
    "OPERATION_RETRY_MAX_SECONDS": "2",
}


def database_url() -> str:
    """The test database as a DATABASE_URL, for a worker process to use it too."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """`celery worker` (with its beat unless beat=False) in its own process group, on the test
    database and this test process's broker (the environment it inherits). Restartable.

    Stopped with SIGKILL: a warm shutdown waits for the task in hand, which only costs time
    here. Its output goes to a file per start, not a pipe nobody reads (a full pipe would block
    the worker mid-task)."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None, *, beat: bool = True) -> None:
        self.tmp = tmp
        self.beat = beat
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DEBUG": "true",
            **FAST,
            **(env or {}),
        }
        self.proc: subprocess.Popen[str] | None = None
        self.log: IO[str] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.tmp / f"worker-{self.starts}.log"

    def start(self) -> None:
        self.kill()
        self.starts += 1
        self.log = self.log_path.open("w")
        beat = ["-B", "-s", str(self.tmp / f"beat-{self.starts}")] if self.beat else []
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "hikube_portal", "worker"),
                *("--pool=solo", "--loglevel=INFO"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
                *beat,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the worker says it is ready: connected to its broker, consuming."""
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_path.read_text():
            assert self.alive(), f"the worker exited:\n{self.logs()}"
            assert time.monotonic() < deadline, f"the worker is not ready:\n{self.logs()}"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the worker and its beat (the whole process group)."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.log is not None:
            self.log.close()
            self.log = None

    def logs(self) -> str:
        return "".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob("worker-*.log"))[-2:])


@pytest.fixture
def worker_factory(transactional_db, tmp_path) -> Iterator[Callable[..., Worker]]:
    """Real Celery workers (with beat) for provisioning tests; killed at the end."""
    workers: list[Worker] = []

    def make(env: dict[str, str] | None = None) -> Worker:
        w = Worker(tmp_path, env)
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.kill()


@pytest.fixture
def worker(transactional_db, tmp_path) -> Iterator[Worker]:
    """One running `celery worker` without beat, pointed at the test database."""
    w = Worker(tmp_path, beat=False)
    w.start()
    try:
        yield w
    finally:
        w.kill()


@pytest.fixture
def register(db) -> Callable[..., Cluster]:
    """register(dc, name="dc", context="admin"): a devcluster as a cluster record, synced, its
    schemas read; context ``portal`` is the portal's own least-privilege account."""

    def register(dc: DevCluster, name: str = "dc", context: str = "admin") -> Cluster:
        cluster = Cluster.objects.create(name=name, kubeconfig=str(dc.kubeconfig), context=context)
        sync.sync_cluster(cluster.pk)
        schemas.refresh_served_schemas(cluster.pk)
        cluster.refresh_from_db()
        return cluster

    return register


@pytest.fixture
def fresh_snapshot(db) -> Callable[..., Cluster]:
    """fresh_snapshot(cluster): wait for the cluster's own sync (the running worker's beat syncs
    every INVENTORY_SYNC_SECONDS) to store a snapshot read after this call. A test that synced
    by itself instead would race the beat for the cluster's sync lease (SyncInProgress)."""

    def fresh_snapshot(cluster: Cluster, timeout: float = 60.0) -> Cluster:
        asked: datetime = timezone.now()
        deadline = time.monotonic() + timeout
        while True:
            cluster.refresh_from_db()
            if cluster.last_synced_at and cluster.last_synced_at > asked:
                return cluster
            assert time.monotonic() < deadline, (
                f"no sync of {cluster.name} since {asked}: last {cluster.last_synced_at}, "
                f"last error {cluster.last_error!r}"
            )
            time.sleep(0.1)

    return fresh_snapshot


# --- one GPU's history in a real Prometheus and VictoriaMetrics --------------------------


@dataclass(frozen=True)
class MetricHistory:
    """Where 30 days of one GPU (`uuid`) can be read: each source's query API."""

    uuid: str
    prometheus: str
    victoriametrics: str


def _history_samples(folder: Path, uuid: str) -> tuple[Path, Path]:
    """Every 5 minutes for 30 days, then every 10 s over the last hour, of three DCGM series:
    as OpenMetrics (for promtool) and as Prometheus text with millisecond times (for
    VictoriaMetrics' import)."""
    labels = (
        f'UUID="{uuid}",gpu="0",modelName="NVIDIA L40S",Hostname="node-a",'
        'cluster="kubernetes-ml",tenant="tenant-acme",exported_namespace="ml",exported_pod="train-0"'
    )
    end = int(time.time()) // 60 * 60
    times = list(range(end - 30 * 86400, end - 3600, 300)) + list(range(end - 3600, end + 1, 10))
    metrics = {
        "DCGM_FI_DEV_GPU_UTIL": lambda i: i % 100,
        "DCGM_FI_DEV_POWER_USAGE": lambda i: 100 + i % 200,
        "DCGM_FI_DEV_FB_USED": lambda i: 1000 + i % 5000,
    }
    om, prom = folder / "gpu.om", folder / "gpu.prom"
    with open(om, "w") as a, open(prom, "w") as b:
        for name, value in metrics.items():
            a.write(f"# TYPE {name} gauge\n")
            for i, t in enumerate(times):
                a.write(f"{name}{{{labels}}} {value(i)} {t}\n")
                b.write(f"{name}{{{labels}}} {value(i)} {t * 1000}\n")
        a.write("# EOF\n")
    return om, prom


@pytest.fixture(scope="session")
def metric_history(tmp_path_factory, worker_id) -> Iterator[MetricHistory]:
    """A real Prometheus (backfilled with promtool) and a real VictoriaMetrics (imported), both
    holding 30 days of one GPU with a fresh UUID (fresh cache keys on every run).

    promtool writes 360 two-hour blocks, ~10 s of CPU: under pytest-xdist the first worker that
    needs them writes them once into the run's shared temporary folder (a file lock), and every
    worker starts its own servers on a copy."""
    if worker_id == "master":
        shared = tmp_path_factory.mktemp("history-shared")
    else:
        shared = tmp_path_factory.getbasetemp().parent / "metric-history"
        shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "done").exists():
            gpu = f"GPU-{uuidlib.uuid4()}"
            om, _ = _history_samples(shared, gpu)
            backfill = ["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(om)]
            subprocess.run([*backfill, str(shared / "db")], check=True, capture_output=True)
            (shared / "uuid").write_text(gpu)
            (shared / "done").touch()
    gpu = (shared / "uuid").read_text()
    work = tmp_path_factory.mktemp("history")
    shutil.copytree(shared / "db", work / "db")
    with (
        run_prometheus(work / "p", tsdb=work / "db") as p_url,
        run_victoria_metrics(work / "v") as v_url,
    ):
        req = urllib.request.Request(  # noqa: S310 - the local VictoriaMetrics
            f"{v_url}/api/v1/import/prometheus",
            data=(shared / "gpu.prom").read_bytes(),
            method="POST",
        )
        urllib.request.urlopen(req, timeout=60).read()  # noqa: S310 - local
        urllib.request.urlopen(f"{v_url}/internal/force_flush", timeout=60).read()  # noqa: S310
        yield MetricHistory(uuid=gpu, prometheus=p_url, victoriametrics=v_url)
