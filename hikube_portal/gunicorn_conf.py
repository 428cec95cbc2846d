"""gunicorn's settings for the web container (``gunicorn -c python:hikube_portal.gunicorn_conf``).

Command-line flags still win. With ``PROMETHEUS_MULTIPROC_DIR`` set, every worker writes its request
histogram there and /metrics sums them: the folder is emptied when gunicorn starts, and a dead
worker's live gauges are dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Kubernetes stops a pod with SIGTERM, then waits terminationGracePeriodSeconds (30 s).
graceful_timeout = 25
# The heartbeat files: /tmp is an emptyDir in deploy/ (the root filesystem is read-only).
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None
# No control socket (gunicorn 27 opens one under $HOME): nothing here uses gunicornc.
control_socket_disable = True

# LOG_FORMAT=json: gunicorn's own lines (start, workers, signals) as JSON too, like the portal's.
if os.environ.get("LOG_FORMAT", "text").lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "gpus.web.logs.JsonFormatter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }


def on_starting(server: Any) -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
