"""Django set up for an in-process benchmark: the production settings (DEBUG off), minus the HTTPS
redirect the in-process test client can't follow, with the bench's own VAR_DIR."""

from __future__ import annotations

import os
from pathlib import Path


def setup_production_django(var_dir: Path, allowed_hosts: str = "testserver") -> None:
    os.environ.update(
        DEBUG="false",
        SECRET_KEY="bench-only-secret-key-not-used-anywhere-else-0123456789",
        SECURE_SSL_REDIRECT="false",
        ALLOWED_HOSTS=allowed_hosts,
        VAR_DIR=str(var_dir),
        STATIC_ROOT=str(var_dir / "static"),
    )
    # One tenant submits the bench's operations back to back: measure latency, not the limiter.
    os.environ.setdefault("OPERATION_RATE_PER_MINUTE", "100000")
    os.environ.setdefault("OPERATION_TENANT_MAX_WAITING", "100000")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hikube_portal.settings")
    import django

    django.setup()
