"""Content-Security-Policy and Permissions-Policy with DEBUG off (#20 item 8): on every response,
and the pages still work under them in a real Chromium (htmx live checks, Plotly charts)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from gpus.testing import PASSWORD
from gpus.utilization.models import Bucket, GroupRollup, Scope

ROOT = Path(__file__).resolve().parents[3]


def _directives(policy: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}


@pytest.mark.django_db
def test_every_response_carries_both_headers(alice_client) -> None:
    for client, path in (
        (Client(), reverse("login")),
        (alice_client, reverse("gpus:catalog")),
        (Client(), "/api/v1/openapi.json"),
        (Client(), "/no-such-page/"),
    ):
        response = client.get(path)
        csp = _directives(response["Content-Security-Policy"])
        assert csp["script-src"] == ["'self'"], path  # no inline script, nothing evaluated
        assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
        assert csp["base-uri"] == ["'self'"] and "'self'" in csp["form-action"]
        assert "camera=()" in response["Permissions-Policy"], path
    with override_settings(DEBUG=True):  # Django's debug pages run inline scripts
        assert "Content-Security-Policy" not in Client().get(reverse("login"))


def test_templates_and_scripts_need_no_inline_script_nor_eval() -> None:
    """What script-src 'self' relies on: no <script> without src, no on...= handler, no hx-on,
    no javascript: URL in any template; no eval in the portal's own scripts."""
    inline = re.compile(
        r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+=|hx-on|javascript:|hx-vals=.js:", re.I
    )
    templates = [*ROOT.glob("templates/**/*.html"), *ROOT.glob("gpus/*/templates/**/*.html")]
    assert templates
    found = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in templates
        for m in inline.finditer(p.read_text())
    ]
    assert found == []
    for js in ROOT.glob("static/js/*.js"):
        assert not re.search(r"\beval\(|new Function\(", js.read_text()), js


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("seeded_catalog")
def test_pages_work_under_the_policy(browser, live_server, platform_admin, alice, snapshot):
    """A Plotly chart draws and an htmx live check answers, and Chromium reports no violation
    (a context of its own: the other browser tests bypass the policy, see conftest.py)."""
    now = timezone.now()
    start = int(now.timestamp()) // 300 * 300 - 2 * 3600
    GroupRollup.objects.bulk_create(
        GroupRollup(
            bucket=Bucket.FIVE_MINUTES, scope=Scope.FLEET, key="", epoch=t,
            ts=dt.datetime.fromtimestamp(t, tz=dt.UTC), gpus=8, allocated=6, busy=4,
        )
        for t in range(start, start + 2 * 3600, 300)
    )  # fmt: skip
    context = browser.new_context(bypass_csp=False)
    page = context.new_page()

    def log_in(username: str) -> None:
        page.goto(live_server.url + reverse("login"))
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(live_server.url + reverse("gpus:catalog"))

    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("pageerror", lambda e: violations.append(str(e)))
    log_in("admin")
    response = page.goto(live_server.url + reverse("gpus:util_fleet"))
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#chart-allocation[data-state=drawn]", timeout=20_000)
    assert page.locator("#chart-allocation .main-svg").count() > 0
    page.context.clear_cookies()
    log_in("alice")
    page.goto(live_server.url + reverse("gpus:vm_new", args=["tenant-acme"]))
    page.get_by_label("Name").fill("Bad_Name")
    page.wait_for_selector("#err-name:has-text('lowercase')", timeout=10_000)
    # The API's docs: Swagger UI from the portal's static files draws every route.
    page.goto(live_server.url + "/api/v1/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    assert page.locator(".opblock").count() >= 12
    assert violations == []
    context.close()
