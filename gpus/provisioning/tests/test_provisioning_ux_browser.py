"""What a new user stumbled on (#20), in headless Chromium, English and French: the phone
layout, the resize form prefilled with the group's real values, copy buttons."""

from __future__ import annotations

import pytest
from django.urls import reverse

from gpus.inventory.models import GpuWorkload
from gpus.testing import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]
PHONE = {"width": 390, "height": 844}
# Elements of the page whose text is wider than their box and not in a scrolling box: cut text
# (the stacked tables' headings are hidden on purpose, clipped to 1 px).
CLIPPED = """[...document.querySelectorAll('main *')].filter(e => {
  const style = getComputedStyle(e);
  return e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1 && !e.closest('thead')
    && !['auto', 'scroll'].includes(style.overflowX);
}).map(e => e.tagName + ': ' + e.textContent.trim().slice(0, 60))"""


def _phone_page(browser, live_server, username: str, language: str):
    context = browser.new_context(viewport=PHONE, locale=language)
    page = context.new_page()
    page.goto(live_server.url + reverse("login"))
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("main button[type=submit]").click()
    page.wait_for_url(live_server.url + reverse("gpus:catalog"))
    return context, page


@pytest.mark.parametrize("language", ["en", "fr"])
def test_phone_header_is_short_rows_are_tappable_agent_snippet_copies(
    browser, live_server, snapshot, alice, language
):
    context, page = _phone_page(browser, live_server, "alice", language)
    page.goto(live_server.url + reverse("gpus:my_gpus", args=["tenant-acme"]))
    header = page.locator("header.site-header").bounding_box()
    assert header is not None and header["height"] <= 110, header
    # Every link in a row is a finger-sized target (WCAG 2.5.8: at least 24 px; we give 36).
    links = page.locator("#workloads tbody a")
    assert links.count() >= 2
    for box in (links.nth(i).bounding_box() for i in range(links.count())):
        assert box is not None and box["height"] >= 36, box
    # No text is cut: no cell of the table is wider inside than its box.
    clipped = page.evaluate(CLIPPED)
    assert clipped == []
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.goto(live_server.url + reverse("gpus:util_tenant", args=["tenant-acme"]))
    vm = GpuWorkload.objects.get(name="ws")
    page.locator(f"form[action$='/agent/{vm.pk}/'] button").click()
    snippet = page.locator("#cloud-init")
    box = snippet.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    assert snippet.evaluate("e => e.scrollWidth <= e.clientWidth")  # wraps, no sideways scroll
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("[data-copy='#cloud-init']").click()
    assert page.evaluate("navigator.clipboard.readText()") == snippet.text_content()
    context.close()
