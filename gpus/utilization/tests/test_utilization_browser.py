"""Utilization pages in headless Chromium: charts render with data points; a passthrough VM
without an agent is drawn as "no telemetry", with what to enable."""

from __future__ import annotations

import datetime as dt
import os
import re
import time
import urllib.request

import pytest
from django.urls import reverse
from django.utils import timezone

from devcluster.testing import run_devcluster
from gpus.inventory.models import Cluster, GpuWorkload
from gpus.inventory.sync import sync_cluster
from gpus.utilization import rollup
from gpus.utilization.collector import store
from gpus.utilization.metrics.parse import parse_exposition

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]
SHOTS = os.environ.get("UTILIZATION_SHOTS")  # a folder to save screenshots in (manual checks)


@pytest.fixture
def telemetry(tmp_path, acme, globex):
    """Inventory from devcluster, and two hours of its exporters' readings rolled up."""
    with run_devcluster(tmp_path / "dc", fleet="demo", speed=50.0) as dc:
        cluster = Cluster.objects.create(
            name="devcluster", kubeconfig=str(dc.kubeconfig), context="admin"
        )
        deadline = time.monotonic() + 20
        while not GpuWorkload.objects.filter(name="ml", gpus_held=2).exists():
            sync_cluster(cluster.pk)
            assert time.monotonic() < deadline
            time.sleep(0.2)
        targets = {
            "kubernetes-ml": ("/dcgm/kubernetes/tenant-acme/ml/metrics", "tenant-acme"),
            "kubernetes-serve": ("/dcgm/kubernetes/tenant-globex/serve/metrics", "tenant-globex"),
        }
        texts = {}
        for name, (path, tenant) in targets.items():
            with urllib.request.urlopen(dc.url + path, timeout=10) as r:  # noqa: S310 - local
                texts[name] = (r.read().decode(), tenant)
    now = timezone.now()
    t = (now - dt.timedelta(hours=2)).timestamp()
    while t <= now.timestamp():
        for name, (text, tenant) in texts.items():
            store(parse_exposition(text, t, {"cluster": name, "tenant": tenant}), cluster.pk)
        t += 60
    for b in rollup.pending_buckets(now):
        rollup.rollup_bucket(b)
    return cluster


def _chart_points(page, chart_id: str) -> int:
    page.wait_for_selector(f"#{chart_id}[data-state=drawn]", timeout=20_000)
    return page.evaluate(
        f"Math.max(...document.getElementById('{chart_id}').data.map(t => (t.x || []).length))"
    )


def test_tenant_chart_renders_and_passthrough_vm_says_no_telemetry(
    page, live_server, alice, telemetry, log_in
):
    log_in("alice")
    page.get_by_role("link", name="Utilization", exact=True).click()
    page.wait_for_url("**" + reverse("gpus:util_tenant", args=["tenant-acme"]))
    assert _chart_points(page, "chart-tenant") >= 12  # 2 h of 5-minute buckets
    assert _chart_points(page, "chart-allocation") >= 12
    card = page.locator(".workload-card", has_text="gpu-ws")
    assert "No telemetry." in card.inner_text()
    assert "guest agent" in card.inner_text()
    assert card.get_by_role("button", name="Set up the guest agent").is_visible()
    ml = page.locator(".workload-card", has_text="ml/gpu")
    assert ml.locator(".device-list li").count() == 2
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/tenant-en.png", full_page=True)


def test_ops_fleet_chart_in_french(page, live_server, platform_admin, telemetry, log_in):
    log_in("admin")
    page.goto(live_server.url + reverse("gpus:util_fleet"))
    page.locator("#language-select").select_option("fr")
    page.get_by_role("button", name="Change").click()
    page.wait_for_selector("html[lang=fr]")
    assert _chart_points(page, "chart-fleet") >= 12
    assert page.get_by_role("heading", name="GPU sans télémétrie").is_visible()
    page.get_by_role("button", name="7 j").click()
    assert _chart_points(page, "chart-fleet") >= 12
    # The time axis speaks French too: "23 nov.", never Plotly's English "Nov 23".
    ticks = " | ".join(page.locator("#chart-fleet .xtick text").all_text_contents())
    assert re.search(r"\d{1,2} (janv?|févr?|mars|avr|mai|juin|juil|août|sept|oct|nov|déc)", ticks)
    assert not re.search(r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d", ticks), ticks
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/fleet-fr.png", full_page=True)


def test_heatmap_leaves_the_plot_room_on_a_phone(
    page, live_server, platform_admin, telemetry, log_in
):
    """Full node names on a 390 px screen left the heatmap ~60 px wide and cut the longest name."""
    page.set_viewport_size({"width": 390, "height": 844})
    log_in("admin")
    page.goto(live_server.url + reverse("gpus:util_heatmap"))
    page.wait_for_selector("#chart-heatmap[data-state=drawn]", timeout=20_000)
    plot, width = page.evaluate(
        "(() => { const el = document.getElementById('chart-heatmap');"
        " return [el._fullLayout._size.w, el.clientWidth]; })()"
    )
    assert plot > 0.45 * width, (plot, width)
    left = page.evaluate(
        "Math.min(...[...document.querySelectorAll('#chart-heatmap .ytick text')]"
        ".map(t => t.getBoundingClientRect().left))"
    )
    chart_left = page.locator("#chart-heatmap").bounding_box()["x"]
    assert left >= chart_left - 1  # no name cut at the left edge
