"""Free TCP ports for the servers tests and benchmarks start themselves (Prometheus,
VictoriaMetrics, a private Redis, gunicorn). No Django here: the benchmarks use it too.

A port found by binding port 0 lies in Linux's ephemeral range, where another pytest-xdist worker
may pick the same one, or an outgoing connection take it, between the pick and the server's own
bind. Here each xdist worker picks from a range of its own below that range (20000-31999, 500
ports a worker), and checks that the port is free. (devcluster and Django's live server bind port
0 themselves and report it: they need none of this.)
"""

from __future__ import annotations

import os
import random
import socket

FIRST, LAST, PER_WORKER = 20000, 31999, 500


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    slots = (LAST - FIRST + 1) // PER_WORKER
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") else slots - 1
    low = FIRST + (index % slots) * PER_WORKER
    ports = list(range(low, low + PER_WORKER))
    random.shuffle(ports)  # two runs of the suite at once rarely meet
    for port in ports:
        if _is_free(port):
            return port
    raise RuntimeError(f"no free port in {low}-{low + PER_WORKER - 1}")
