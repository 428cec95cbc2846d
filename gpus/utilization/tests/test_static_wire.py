"""Static files under `make run` (DEBUG) as in production (issue 17.5): collected with hashed
names, served compressed with a year's caching; the utilization pages load the cartesian
plotly.js bundle, not the 4.8 MB full one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

CHECK = r"""
import django, os
django.setup()
from django.conf import settings
from django.templatetags.static import static
from django.test import Client
url = static("vendor/plotly/plotly-cartesian.min.js")
assert "plotly-cartesian." in url and url.count(".") >= 3, url  # a hashed name
for enc, expected in (("br", "br"), ("gzip", "gzip")):
    r = Client().get(url, headers={"accept-encoding": enc})
    assert r.status_code == 200, r.status_code
    assert r["Content-Encoding"] == expected, r.headers
    cache = r["Cache-Control"]
    assert "immutable" in cache and "max-age=315360000" in cache, r.headers
    size = int(r["Content-Length"])
    assert size < 520_000, size
print("ok", url)
"""


@pytest.mark.integration
def test_make_run_serves_static_hashed_compressed_and_cached(tmp_path) -> None:
    env = {
        **os.environ,
        "DEBUG": "true",
        "STATIC_COLLECTED": "true",
        "STATIC_ROOT": str(tmp_path / "static"),
        "DJANGO_SETTINGS_MODULE": "hikube_portal.settings",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    out = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "static" / "vendor" / "plotly" / "LICENSE").exists()


def test_pages_load_the_cartesian_bundle(admin_client_) -> None:
    from django.urls import reverse

    body = admin_client_.get(reverse("gpus:util_fleet")).content.decode()
    assert "vendor/plotly/plotly-cartesian.min.js" in body
    assert "plotly.min.js" not in body
