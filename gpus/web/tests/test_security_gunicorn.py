"""#20's security items through the stack the compose file runs: the production settings (DEBUG
off, collected static files), gunicorn with 3 workers, PostgreSQL and Redis, probed over HTTP with
real sessions, cookies and CSRF tokens (the other tests of these items use Django's test client)."""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from gpus.inventory.choices import WorkloadKind
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.provisioning.models import Operation
from gpus.provisioning.tests.test_input_bounds import EVERY_PORT
from gpus.provisioning.tests.test_provisioning_views import cluster, form_data  # noqa: F401
from gpus.testing import PASSWORD
from gpus.testing_ports import free_port
from gpus.utilization.agent import issue_token
from gpus.utilization.models import GpuDevice
from gpus.utilization.tests.test_agent_security import BOB_UUID, line, vms  # noqa: F401
from gpus.web.tests.test_exports import HYPERLINK
from hikube_portal.test_settings import xdist_worker_index
from hikube_portal.tests.test_production import ROOT, SECRET, VENV_BIN, compose_environment

pytestmark = [pytest.mark.once, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# gunicorn's broker, result and cache databases: the top of the Redis server, which the test
# settings' own databases (a few per xdist worker from 0 up) never reach, three per xdist worker.
# One set per worker: this module's tests run side by side on several workers, and each fixture
# flushes its databases, which would reset another worker's rate counts mid-test.
BROKER_DB = 61 - 3 * xdist_worker_index()
CACHE_DB = BROKER_DB + 2


def _redis(db: int) -> str:
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def static_root(tmp_path_factory) -> Path:
    """The image's build step once for the whole run: the production storage reads its
    manifest. Under pytest-xdist the workers share one build (the run's common temporary
    folder, under a file lock): each of this module's tests may land on its own worker, and
    three builds side by side cost minutes on two cores (test_production tests the build)."""
    shared = tmp_path_factory.getbasetemp().parent
    root = shared / "production-static"
    with (shared / "production-static.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "staticfiles.json").exists():
            env = {**os.environ, "STATIC_ROOT": str(root), "PYTHON": sys.executable}
            env.pop("DJANGO_SETTINGS_MODULE", None)
            build = subprocess.run(
                ["sh", "bin/build-assets"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert build.returncode == 0, build.stdout + build.stderr
    return root


class Browser:
    """A client as a browser behind the TLS proxy is: cookies kept by hand (they are Secure, and
    this is plain HTTP to gunicorn), the CSRF cookie sent back as the header htmx sends."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        headers = {"X-Forwarded-Proto": "https", "Origin": "https://localhost"}
        if "csrftoken" in self.cookies:
            headers["X-CSRFToken"] = self.cookies["csrftoken"]
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers.update(kwargs.pop("headers", {}))
        response = httpx.request(method, self.base + path, headers=headers, timeout=60, **kwargs)
        self.cookies.update({c.name: c.value for c in response.cookies.jar if c.value})
        return response

    def get(self, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        return self.request("POST", path, **kwargs)

    def log_in(self, username: str) -> Browser:
        # The tests' fast MD5 hasher is not one the production settings accept: a PBKDF2 hash.
        get_user_model().objects.filter(username=username).update(
            password=PBKDF2PasswordHasher().encode(PASSWORD, "gunicornsalt", iterations=1000)
        )
        page = self.get(reverse("login"))
        assert page.status_code == 200 and "csrftoken" in self.cookies
        signed = self.post(reverse("login"), data={"username": username, "password": PASSWORD})
        assert signed.status_code == 302, signed.text[-2000:]
        assert "sessionid" in self.cookies
        return self


@pytest.fixture
def portal(static_root, seeded_catalog, tmp_path, request) -> Iterator[str]:
    """gunicorn as the web container starts it, on this test's PostgreSQL database."""
    assert connection.vendor == "postgresql"
    db = connection.settings_dict
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "DJANGO_SETTINGS_MODULE"} and not k.startswith("TEST_")
    }
    env.update(compose_environment())
    port = free_port()
    env.update(
        SECRET_KEY=SECRET,
        DATABASE_URL=f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        CELERY_BROKER_URL=_redis(BROKER_DB),
        CELERY_RESULT_BACKEND=_redis(BROKER_DB + 1),
        CACHE_URL=_redis(CACHE_DB),
        VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(static_root),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        METRICS_AGENT_MIN_INTERVAL="0",
        **getattr(request, "param", {}),
    )
    assert env["DEBUG"] == "false" and env.get("GUNICORN_WORKERS", "3") == "3"
    for db_number in (BROKER_DB, BROKER_DB + 1, CACHE_DB):
        redis.Redis.from_url(_redis(db_number)).flushdb()
    log_path = tmp_path / "gunicorn.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            str(VENV_BIN / "gunicorn"),
            *("-c", "python:hikube_portal.gunicorn_conf", "hikube_portal.wsgi:application"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert server.poll() is None, log_path.read_text()
            try:
                if httpx.get(base + "/livez", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(log_path.read_text())
        yield base
        assert server.poll() is None, log_path.read_text()[-3000:]
        assert "WORKER TIMEOUT" not in log_path.read_text()
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        for db_number in (BROKER_DB, BROKER_DB + 1, CACHE_DB):
            redis.Redis.from_url(_redis(db_number)).flushdb()


def test_headers_and_agent_takeover_refused(portal, vms, alice, bob) -> None:  # noqa: F811
    alice_vm, bob_vm = vms
    agent = reverse("gpus:agent_ingest")

    def post(token: str, body: str) -> httpx.Response:
        return httpx.post(
            portal + agent,
            content=body.encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "text/csv",
                "X-Forwarded-Proto": "https",
            },
            timeout=30,
        )

    # Item 8: the browser is told what scripts may run and which features the pages may use.
    login = Browser(portal).get(reverse("login"))
    assert login.status_code == 200
    assert "script-src 'self'" in login.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in login.headers["Content-Security-Policy"]
    assert "camera=()" in login.headers["Permissions-Policy"]

    # Item 1: bob's agent reports his GPU; alice's agent posting it is refused, nothing changes.
    assert post(issue_token(bob_vm), line(BOB_UUID)).status_code == 202
    refused = post(issue_token(alice_vm), line(BOB_UUID))
    assert refused.status_code == 403
    assert refused.json()["error"] == f"GPU {BOB_UUID} is not passed through to VM ws"
    assert GpuDevice.objects.get(uuid=BOB_UUID).workload_id == bob_vm.pk

    alice_browser = Browser(portal).log_in("alice")
    page = alice_browser.get(reverse("gpus:util_tenant_gpu", args=["tenant-acme", BOB_UUID]))
    assert page.status_code == 404
    assert alice_browser.get(reverse("gpus:util_tenant", args=["tenant-acme"])).status_code == 200
    bobs = Browser(portal).log_in("bob")
    page = bobs.get(reverse("gpus:util_tenant_gpu", args=["tenant-globex", BOB_UUID]))
    assert page.status_code == 200 and BOB_UUID in page.text


@pytest.mark.parametrize("portal", [{"OPERATION_RATE_PER_MINUTE": "2"}], indirect=True)
def test_every_port_is_a_form_error_and_the_tenant_rate_is_plain(portal, alice, cluster) -> None:  # noqa: F811
    browser = Browser(portal).log_in("alice")
    url = "/tenants/tenant-acme/vms/new/"
    # Item 3: the 382 KB ports string is an error next to its field, on the live check and the
    # submit, from a worker that answers (the fixture fails on a WORKER TIMEOUT in gunicorn's log).
    for path in (url + "check/", url):
        page = browser.post(path, data=form_data(external_ports=EVERY_PORT))
        assert page.status_code == 200, (path, page.text[-2000:])
        assert 'id="err-external_ports"' in page.text and "at most 400 characters" in page.text
    assert not Operation.objects.exists()

    # Item 6: past OPERATION_RATE_PER_MINUTE submits, the tenant is told in plain words.
    for name in ("rate-a", "rate-b"):
        assert browser.post(url, data=form_data(name=name)).status_code == 302
    page = browser.post(url, data=form_data(name="rate-c"))
    assert page.status_code == 200
    found = re.search(r"Too many requests for this tenant: try again in (\d+) s\.", page.text)
    assert found and 1 <= int(found[1]) <= 60, page.text[-3000:]
    assert sorted(Operation.objects.values_list("name", flat=True)) == ["rate-a", "rate-b"]


def test_a_formula_reaches_the_admins_csv_as_text(portal, acme, platform_admin) -> None:
    # Item 7: an agent-posted model name that a spreadsheet would run is written as text.
    vm = GpuWorkload.objects.create(
        cluster=Cluster.objects.create(name="prod"), tenant=acme, kind=WorkloadKind.VM,
        app_kind="VMInstance", name="ws", gpus_per_instance=1, gpus_held=1,
    )  # fmt: skip
    GpuDevice.objects.create(
        uuid="GPU-1",
        model_name=HYPERLINK,
        hostname="@host",
        tenant=acme,
        workload=vm,
        idle_since=timezone.now() - dt.timedelta(days=2),
        busy_metric="-x",
    )
    response = Browser(portal).log_in("admin").get(reverse("gpus:util_idle") + "?format=csv")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:2] == ["uuid", "model"]
    assert rows[1][1] == "'" + HYPERLINK and rows[1][2] == "'@host" and rows[1][7] == "'-x"
