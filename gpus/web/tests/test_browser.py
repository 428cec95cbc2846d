"""Browser journeys in headless Chromium (Debian's), driven by Playwright."""

import pytest
from django.urls import reverse

from gpus.testing import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]


def test_compare_page_table_reads_right(page, live_server, alice, log_in):
    log_in("alice")
    page.get_by_role("link", name="Compare", exact=True).click()
    table = page.locator("#compare-table")
    headers = table.locator("thead th").all_inner_texts()
    assert headers == ["Specification", "NVIDIA L40S", "NVIDIA A100", "NVIDIA H100 NVL"]
    int8_row = table.locator("tbody tr", has_text="INT8")
    assert int8_row.locator("td.best").inner_text().startswith("1670.5 TOPS")
    approach = page.locator("#approach-table tbody tr").all_inner_texts()
    assert any("Isolation" in row and "Complete (1 GPU = 1 VM)" in row for row in approach)


def test_compare_updates_with_htmx_without_reload(page, live_server, alice, log_in):
    log_in("alice")
    page.goto(live_server.url + reverse("gpus:compare"))
    page.evaluate("window.__marker = 'same-page'")
    page.get_by_label("NVIDIA A100", exact=True).uncheck()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function("document.querySelectorAll('#compare-table thead th').length === 3")
    assert page.evaluate("window.__marker") == "same-page"
    assert page.locator("#approach-table").count() == 1


def test_advisor_in_french(page, live_server, alice, log_in):
    log_in("alice")
    page.goto(live_server.url + reverse("gpus:advisor"))
    page.locator("#language-select").select_option("fr")
    page.get_by_role("button", name="Change").click()
    page.wait_for_selector("html[lang=fr]")
    page.get_by_label("Rendu, CAO ou autres graphismes").check()
    page.get_by_role("button", name="Me conseiller").click()
    advice = page.locator("#advice")
    advice.get_by_text("NVIDIA L40S").wait_for()
    assert "Machine virtuelle GPU" in advice.inner_text()


def test_inventory_refreshes_itself_without_a_reload(page, live_server, alice, settings, log_in):
    from django.utils import timezone

    from gpus.catalog.models import GpuModel
    from gpus.inventory.models import Cluster, ModelInventory

    settings.PAGE_REFRESH_SECONDS = 1
    cluster = Cluster.objects.create(name="c", last_synced_at=timezone.now())
    l40s = GpuModel.objects.get(resource_name="nvidia.com/AD102GL_L40S")
    row = ModelInventory.objects.create(
        cluster=cluster, gpu_model=l40s, installed=16, allocated=4, free=8, unavailable=4
    )
    log_in("alice")
    page.goto(live_server.url + reverse("gpus:inventory"))
    free_cell = page.locator('tr[data-model="nvidia.com/AD102GL_L40S"] td.free')
    assert free_cell.inner_text() == "8"
    page.evaluate("window.__marker = 'same-page'")
    row.free, row.allocated = 5, 7
    row.save()
    selector = 'tr[data-model="nvidia.com/AD102GL_L40S"] td.free'
    page.wait_for_function(
        "s => document.querySelector(s).innerText === '5'", arg=selector, timeout=10_000
    )
    assert page.evaluate("window.__marker") == "same-page"


PHONE = {"width": 390, "height": 844}


@pytest.mark.parametrize("language", ["en", "fr"])
def test_phone_layout_never_scrolls_sideways(
    browser, live_server, snapshot, platform_admin, language
):
    """At 390 px the compare page, the node list and a node's page fit the screen: tables
    adapt (no page-wide horizontal scroll), node names stay whole words, counts stay visible."""
    from gpus.inventory.models import Node

    context = browser.new_context(viewport=PHONE, locale=language)
    page = context.new_page()
    page.goto(live_server.url + reverse("login"))
    page.locator("#id_username").fill("admin")
    page.locator("#id_password").fill(PASSWORD)
    page.locator("main button[type=submit]").click()
    page.wait_for_url(live_server.url + reverse("gpus:catalog"))
    node = Node.objects.get(name="gpu-l40s-worker-01")
    for url in (
        reverse("gpus:compare"),
        reverse("gpus:nodes"),
        reverse("gpus:node", args=[node.pk]),
        reverse("gpus:my_gpus", args=["tenant-acme"]),
        reverse("gpus:inventory"),
    ):
        page.goto(live_server.url + url)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{url} is {width} px wide at {PHONE['width']} px"
    page.goto(live_server.url + reverse("gpus:nodes"))
    name = page.locator("#nodes tbody tr", has_text="gpu-l40s-worker-01").locator("code").first
    assert name.evaluate("e => e.getClientRects().length") == 1  # one line: not cut mid-word
    for cell in (
        ("Installed", "Allocated", "Free")
        if language == "en"
        else ("Installés", "Alloués", "Libres")
    ):
        box = page.locator(f'#nodes tbody tr:first-child td[data-label="{cell}"]').bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    page.goto(live_server.url + reverse("gpus:compare"))
    spec = page.locator("#compare-table tbody th", has_text="Architecture").first
    assert spec.evaluate("e => e.getClientRects().length") == 1
    context.close()


def test_back_button_after_htmx_swaps_restores_the_whole_page(page, live_server, alice, log_in):
    """With nothing in htmx's history cache, Back asks the server (HX-History-Restore-Request)
    and must get the whole page, not the table alone."""
    log_in("alice")
    page.goto(live_server.url + reverse("gpus:compare"))
    page.evaluate("htmx.config.historyCacheSize = 0; localStorage.clear()")
    page.get_by_label("NVIDIA A100", exact=True).uncheck()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function("document.querySelectorAll('#compare-table thead th').length === 3")
    page.get_by_label("NVIDIA H100 NVL", exact=True).uncheck()
    page.get_by_label("NVIDIA A100", exact=True).check()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function(
        "[...document.querySelectorAll('#compare-table thead th')].map(e => e.innerText)"
        ".join() === 'Specification,NVIDIA L40S,NVIDIA A100'"
    )
    with page.expect_request(lambda r: "hx-history-restore-request" in r.headers) as restore:
        page.go_back()
    assert restore.value.headers["hx-history-restore-request"] == "true"
    page.wait_for_function(
        "[...document.querySelectorAll('#compare-table thead th')].map(e => e.innerText)"
        ".join() === 'Specification,NVIDIA L40S,NVIDIA H100 NVL'"
    )
    assert page.locator("header.site-header nav").count() == 1
    assert page.locator("h1").inner_text() == "Compare GPU models"
    assert page.locator("#approach-table").count() == 1
