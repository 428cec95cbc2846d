"""Pages timed over HTTP through gunicorn (production settings): the one loop the capacity and
right-sizing benches share. Pages are interleaved (each round requests every page once), so a
burst of load on the machine lands on all of them rather than on whichever ran then."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def session_cookie(user_id: int) -> str:
    """A signed-in session for the user (Django must be set up): the value of its cookie."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(pk=user_id))
    return client.cookies["sessionid"].value


def session(cookie: str) -> requests.Session:
    s = requests.Session()
    s.cookies.set("sessionid", cookie)
    return s


@contextmanager
def gunicorn(workers: int = 2) -> Iterator[str]:
    """gunicorn serving the portal (the environment's settings) on a free port: its base URL,
    once /livez answers; stopped on exit."""
    from gpus.testing_ports import free_port

    port = free_port()
    env = {**os.environ, "ALLOWED_HOSTS": "127.0.0.1", "GUNICORN_BIND": f"127.0.0.1:{port}"}
    env["GUNICORN_WORKERS"] = str(workers)
    web = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-c",
            "python:hikube_portal.gunicorn_conf",
            "hikube_portal.wsgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(base + "/livez", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        yield base
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)


def timed_get(s: requests.Session, url: str, timeout: float = 30) -> float:
    """One request, its whole body read: milliseconds. Anything but a 200 stops the bench."""
    t0 = time.perf_counter()
    r = s.get(url, timeout=timeout)
    _ = r.content
    ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200, (url, r.status_code)
    return ms


def time_pages(
    base: str,
    pages: dict[str, tuple[requests.Session, str]],
    runs: int,
    *,
    warmup: int = 3,
    timeout: float = 30,
    after_round: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Each page (name: (session, path)) `runs` times, interleaved, after `warmup` untimed
    rounds: the milliseconds per page. `after_round(i)` runs after round i (untimed)."""
    for _ in range(warmup):
        for s, path in pages.values():
            timed_get(s, base + path, timeout)
    times: dict[str, list[float]] = {name: [] for name in pages}
    for i in range(runs):
        for name, (s, path) in pages.items():
            times[name].append(timed_get(s, base + path, timeout))
        if after_round is not None:
            after_round(i)
    return times
