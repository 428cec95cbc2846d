"""#18 item 8's browser test, in headless Chromium, English and French: an admin sets a quota on
the tenant's quota page and a price on the price list, the tenant sees its headroom and the cost
on the VM form, joins the waitlist, and after a sync that frees GPUs sees the notification in the
page (and gets one email)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext

from gpus.capacity import selectors
from gpus.capacity.models import Notification, PriceList, WaitlistEntry
from gpus.capacity.pricing import money
from gpus.catalog.models import GpuModel
from gpus.inventory.models import Cluster
from gpus.inventory.sync import store_snapshot
from gpus.kube.records import FleetReading, GpuPod
from gpus.provisioning.models import GpuQuota
from gpus.testing import H100, L40S, PASSWORD, node_info

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seeded_catalog"),
]
TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def _sync(cluster: Cluster, acme_l40s: int, minutes: int) -> None:
    """The snapshot fixture's fleet again, acme's VM holding `acme_l40s` L40S (0: it is gone)."""
    pods = [
        GpuPod(
            namespace="tenant-globex",
            name="trainer-0",
            node_name="gpu-h100-worker-01",
            phase="Running",
            gpus={H100: 2},
            labels={},
            owner_kind="StatefulSet",
            owner_name="trainer",
        )
    ]
    if acme_l40s:
        pods.append(
            GpuPod(
                namespace="tenant-acme",
                name="virt-launcher-vm-instance-ws-abcde",
                node_name="gpu-l40s-worker-01",
                phase="Running",
                gpus={L40S: acme_l40s},
                labels={"vm.kubevirt.io/name": "vm-instance-ws"},
            )
        )
    reading = FleetReading(
        nodes=[
            node_info("gpu-l40s-worker-01", {L40S: 4}, taints=[TAINT]),
            node_info("gpu-h100-worker-01", {H100: 8}),
        ],
        pods=pods,
        vm_kind="VMInstance",
        disk_field="ephemeralStorage",
    )
    store_snapshot(cluster, reading, timezone.now() + dt.timedelta(minutes=minutes))


def _signed_in(browser, live_server, username: str, language: str):
    context = browser.new_context(locale=language)
    page = context.new_page()
    page.goto(live_server.url + reverse("login"))
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("main button[type=submit]").click()
    page.wait_for_load_state()
    assert "/login" not in page.url
    return context, page


@pytest.mark.parametrize("language", ["en", "fr"])
def test_quota_headroom_waitlist_and_notification(
    browser, live_server, snapshot, acme, alice, platform_admin, language
):
    alice.email = "alice@example.com"
    alice.save()
    l40s = GpuModel.objects.get(resource_name=L40S)
    with translation.override(language):
        saved = gettext("Quota saved.")
        told = gettext("You will be told here and by email when the GPUs are free.")

    # The admin sets acme's L40S quota to 4 on the tenant's quota page.
    admin_context, admin = _signed_in(browser, live_server, "admin", language)
    admin.goto(live_server.url + reverse("gpus:capacity_quotas", args=[acme.namespace]))
    admin.locator("#id_gpu_model").select_option(str(l40s.pk))
    admin.locator("#id_limit").fill("4")
    admin.locator("#quota-form button[type=submit]").click()
    admin.wait_for_load_state()
    assert saved in admin.locator("main").inner_text()
    assert GpuQuota.objects.get(tenant=acme, gpu_model=l40s).limit == 4

    # And a price list from today on, on the portal's price page.
    with translation.override(language):
        price_saved = gettext("Price list saved.")
    admin.goto(live_server.url + reverse("gpus:capacity_prices"))
    admin.locator("#id_currency").select_option("CHF")
    admin.locator("#id_vcpu_hour").fill("0.02")
    admin.locator("#id_memory_gib_hour").fill("0.005")
    admin.locator("#id_disk_gib_month").fill("0.1")
    admin.locator(f"#id_gpu_{l40s.pk}").fill("1.2")
    admin.locator("#price-form button[type=submit]").click()
    admin.wait_for_load_state()
    assert price_saved in admin.locator("main").inner_text()
    assert PriceList.objects.get().set_by == "admin"
    admin_context.close()

    # Alice sees her headroom on the VM form before sending anything (what she holds and has
    # in flight counted against the 4).
    (room,) = [h for h in selectors.headroom(acme) if h.model == l40s]
    assert room.limit == 4 and 0 <= room.left < 4
    with translation.override(language):
        left = gettext("%(left)s of %(limit)s %(model)s left") % {
            "left": room.left,
            "limit": 4,
            "model": l40s.display_name,
        }
    context, page = _signed_in(browser, live_server, "alice", language)
    page.goto(live_server.url + reverse("gpus:vm_new", args=[acme.namespace]))
    line = page.locator(f"#headroom-{acme.namespace}")
    line.wait_for()
    assert left in line.inner_text()
    # ...and, as she picks the model, what it costs (1 L40S, u1.2xlarge: 8 vCPU and 32 GiB, a
    # 50 GiB disk priced per GiB-month of 730 hours), before anything is sent.
    hour = Decimal("1.2") + 8 * Decimal("0.02") + 32 * Decimal("0.005") + 50 * Decimal("0.1") / 730
    with translation.override(language):
        cost = gettext("%(hour)s an hour, %(month)s a month") % {
            "hour": money(hour, "CHF"),
            "month": money(hour * 730, "CHF"),
        }
    page.locator("#id_gpu_model").select_option(L40S)
    page.locator("#id_gpu_count").fill("1")
    estimate = page.locator("#cost-estimate")
    estimate.wait_for()
    assert cost in estimate.inner_text()

    # The L40S server has 3 free: she asks to be told when all 4 are, on one server.
    line.locator(f"a[href='{reverse('gpus:capacity_waitlist', args=[acme.namespace])}']").click()
    page.wait_for_url(f"**{reverse('gpus:capacity_waitlist', args=[acme.namespace])}")
    page.locator("#id_gpu_model").select_option(str(l40s.pk))
    page.locator("#id_count").fill("4")
    page.locator("#id_one_server").check()
    page.locator("#waitlist-form button[type=submit]").click()
    page.wait_for_load_state()
    assert told in page.locator("main").inner_text()
    assert "4 \u00d7 " + l40s.display_name in page.locator("#waitlist").inner_text()

    # A sync that frees nothing tells nobody; the one where her VM is gone does, once.
    _sync(snapshot, acme_l40s=1, minutes=1)
    assert not Notification.objects.exists()
    _sync(snapshot, acme_l40s=0, minutes=2)
    _sync(snapshot, acme_l40s=0, minutes=3)
    note = Notification.objects.get()
    assert note.user == alice and not WaitlistEntry.objects.exists()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.com"]

    page.goto(live_server.url + reverse("gpus:catalog"))
    banner = page.locator("#unread-notifications li")
    banner.wait_for()
    # In the language she asked in, though the sync ran in the default one.
    with translation.override(language):
        free = gettext("%(n)d × %(model)s are free on one server now (%(free)d free in all).") % {
            "n": 4,
            "model": l40s.display_name,
            "free": 4,
        }
    assert note.text == free and free in banner.inner_text()
    assert banner.locator("a").get_attribute("href") == reverse(
        "gpus:vm_new", args=[acme.namespace]
    )
    banner.locator("button[type=submit]").click()
    banner.wait_for(state="detached")
    note.refresh_from_db()
    assert note.read_at is not None
    context.close()
