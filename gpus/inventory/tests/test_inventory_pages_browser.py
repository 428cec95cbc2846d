"""The node list's keyset pager and cluster narrowing in headless Chromium (htmx swaps)."""

import pytest
from django.urls import reverse
from django.utils import timezone

from gpus.catalog.models import GpuModel
from gpus.inventory.models import Cluster

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]


def test_pager_and_cluster_filter_swap_the_table(
    page, live_server, platform_admin, make_nodes, log_in
):
    l40s = GpuModel.objects.get(resource_name="nvidia.com/AD102GL_L40S")
    east = Cluster.objects.create(name="east", last_synced_at=timezone.now())
    west = Cluster.objects.create(name="west", last_synced_at=timezone.now())
    make_nodes(east, 90, l40s, prefix="east")
    make_nodes(west, 40, l40s, prefix="west")
    log_in("admin")
    page.goto(live_server.url + reverse("gpus:nodes"))
    page.evaluate("window.__marker = 'same-page'")
    assert page.locator("#node-count").inner_text() == "130 nodes"
    first_rows = page.locator("#nodes tbody tr").all_inner_texts()
    assert len(first_rows) == 50 and first_rows[0].startswith("east-00-0000")

    page.locator("#node-table a[rel=next]").click()
    page.wait_for_url("**after=**")
    page.wait_for_function("!document.querySelector('#nodes').innerText.includes('east-00-0000')")
    second_rows = page.locator("#nodes tbody tr").all_inner_texts()
    assert len(second_rows) == 50 and not set(first_rows) & set(second_rows)

    page.locator("#node-table a[rel=last]").click()
    page.wait_for_url("**page=last**")
    page.locator("#node-table a[rel=prev]").wait_for()
    assert page.locator("#node-table a[rel=next]").count() == 0

    page.get_by_label("Cluster").select_option("west")
    page.wait_for_function("document.querySelector('#node-count').innerText === '40 nodes'")
    rows = page.locator("#nodes tbody tr").all_inner_texts()
    assert len(rows) == 40 and all("\twest\t" in r for r in rows)
    assert "Cluster west: data as of" in page.locator("#sync-status").inner_text()
    assert page.evaluate("window.__marker") == "same-page"  # htmx swaps, no reload
