"""The production path, for real: the image's build step (collectstatic with the production
settings), then gunicorn with the environment docker-compose.yml gives the web container."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from gpus.testing_ports import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SECRET = "x7Jq2v9LmP4rT8wZ1nB6cY3kH5dF0gS-aE_uR9tQ2pLo7Vi3Xb"

pytestmark = pytest.mark.integration


def compose_environment() -> dict[str, str]:
    """The web container's variables, with docker compose's ${X:-default} defaults applied."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["x-portal"]["environment"]

    def resolve(value: object) -> str:
        text = str(value)
        text = re.sub(r"\$\{SECRET_KEY:\?[^}]*\}", SECRET, text)
        return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)

    return {key: resolve(value) for key, value in env.items()}


def get(url: str) -> tuple[int, str, dict[str, str]]:
    # The proxy in front of the portal says the request came over HTTPS.
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https"})  # noqa: S310
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace"), dict(error.headers)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


@pytest.fixture
def production_env(tmp_path) -> dict[str, str]:
    dropped = {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    base = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("TEST_")}
    env = {**base, **compose_environment()}
    assert env["DEBUG"] == "false"
    # No PostgreSQL or Redis host named "postgres" or "redis" here: a SQLite file stands in for
    # the database, and the cache falls back to REDIS_URL or files under VAR_DIR.
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        CACHE_URL="",
        VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(tmp_path / "static"),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHON=sys.executable,
    )
    return env


def test_built_image_serves_pages_with_production_settings(production_env, tmp_path):
    env = production_env
    build = subprocess.run(
        ["sh", "bin/build-assets"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert (tmp_path / "static" / "staticfiles.json").exists(), "no static manifest was written"
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    port = free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [
            *(str(VENV_BIN / "gunicorn"), "hikube_portal.wsgi:application"),
            *("--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "30"),
        ],
        cwd=ROOT,
        env={**env, "SECRET_KEY": SECRET},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        status = None
        for _ in range(300):
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                status, body, _headers = get(base + "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200, (tmp_path / "gunicorn.log").read_text()
        assert body.strip() == "ok"

        status, login, headers = get(base + "/accounts/login/")
        assert status == 200, (tmp_path / "gunicorn.log").read_text()[-3000:]
        # DEBUG off: the browser is told where scripts may come from and what it may use (#20 8).
        assert "script-src 'self';" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "camera=()" in headers["Permissions-Policy"]
        css = re.search(r'href="(/static/css/portal\.[0-9a-f]{12}\.css)"', login)
        assert css, "the login page does not link the hashed stylesheet"
        status, stylesheet, headers = get(base + css.group(1))
        assert status == 200 and ".site-header" in stylesheet
        assert "max-age" in headers.get("Cache-Control", "")

        status, _body, headers = get(base + "/favicon.ico")
        assert status == 301
        assert re.search(r"/static/favicon\.[0-9a-f]{12}\.svg$", headers["Location"])
        status, _page, _headers = get(base + "/no-such-page/")
        assert status in (302, 404)  # anonymous: to the login page, never a 500
    finally:
        server.terminate()
        server.wait(15)
        log.close()


def test_gunicorn_workers_metrics_add_up_and_logs_are_json(production_env, tmp_path):
    """The web container's command (deploy/base/web.yaml): gunicorn with its config file, two
    workers and PROMETHEUS_MULTIPROC_DIR. A scrape, whichever worker answers it, counts every
    request of both; probes answer the pod's address over plain HTTP; logs are JSON lines."""
    env = {
        **production_env,
        "SECRET_KEY": SECRET,
        "PORTAL_METRICS_TOKEN": "scrape-token-0123456789",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "GUNICORN_WORKERS": "2",
        "LOG_FORMAT": "json",
        # compose's host "redis" does not resolve here: the broker the tests were given, if any.
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "filesystem://"),
        "CELERY_RESULT_BACKEND": os.environ.get(
            "CELERY_RESULT_BACKEND", f"file://{tmp_path / 'results'}"
        ),
    }
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    port = free_port()
    env["GUNICORN_BIND"] = f"127.0.0.1:{port}"
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

    def plain(path: str, **headers: str) -> tuple[int, str]:
        # As the kubelet asks: the pod's address as Host, plain HTTP, no X-Forwarded-Proto.
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", headers={"Host": f"10.0.0.7:{port}", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    try:
        for _ in range(300):
            assert server.poll() is None, log_path.read_text()
            try:
                status, _body = plain("/livez")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200
        # Probes in parallel until both workers have served some (the kernel picks which worker
        # accepts a connection: sequential probes may all land on one).
        probes = 1
        workers_seen: set[str] = set()
        for _ in range(20):
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda _: plain("/livez")[0], range(39)))
            assert statuses == [200] * 39
            probes += 39
            files = (tmp_path / "prometheus").glob("*.db")
            workers_seen = {re.sub(r"\D", "", f.name) for f in files}
            if len(workers_seen) >= 2:
                break
        assert plain("/readyz")[0] == 200
        assert plain("/metrics")[0] == 401
        counts = []
        for _ in range(4):  # several scrapes: both workers answer some
            status, text = plain("/metrics", Authorization="Bearer scrape-token-0123456789")
            assert status == 200, text
            found = re.search(
                r'^hikube_portal_http_request_duration_seconds_count\{method="GET",status="2xx",'
                r'view="livez"\} (\S+)$',
                text,
                flags=re.MULTILINE,
            )
            assert found, text
            counts.append(float(found.group(1)))
        # Every probe, however gunicorn spread them over its two workers.
        assert counts == [float(probes)] * 4
        assert 'hikube_portal_operations{state="pending"} 0.0' in text
        assert len(workers_seen) >= 2, workers_seen  # both workers wrote
    finally:
        server.terminate()
        server.wait(15)
        log.close()
    records = [
        json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
    ]
    # gunicorn's own lines and Django's are JSON; the refused scrape's line names its request.
    assert any(r["logger"] == "gunicorn.error" for r in records), log_path.read_text()
    (refused,) = [r for r in records if r["message"] == "Unauthorized: /metrics"]
    assert re.fullmatch(r"[0-9a-f]{32}", refused["request_id"]) and refused["status_code"] == 401
