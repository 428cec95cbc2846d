"""Waitlist and notifications (#18 item 4): told once when GPUs free up, then forgotten;
operations that end tell the person who asked; everything scoped to its tenant and user."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from gpus.capacity import services
from gpus.capacity.models import Notification, NotificationKind, WaitlistEntry
from gpus.capacity.tests.test_history import reading
from gpus.catalog.models import GpuModel
from gpus.inventory.models import GpuWorkload
from gpus.inventory.selectors import most_gpus_on_one_server
from gpus.inventory.sync import store_snapshot
from gpus.provisioning import engine
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import Operation
from gpus.testing import L40S

pytestmark = pytest.mark.django_db


def sync(cluster, capture, minutes: int, l40s_held: int) -> None:
    with capture(execute=True):
        store_snapshot(
            cluster, reading(l40s_held=l40s_held), timezone.now() + dt.timedelta(minutes=minutes)
        )


def test_the_waitlist_fires_exactly_once(
    alice, alice_client, acme, snapshot, django_capture_on_commit_callbacks
):
    alice.email = "alice@example.com"
    alice.save()
    l40s = GpuModel.objects.get(resource_name=L40S)
    url = reverse("gpus:capacity_waitlist", args=[acme.namespace])
    response = alice_client.post(
        url, {"gpu_model": l40s.pk, "count": "2", "one_server": "on", "days": "7"}
    )
    assert response.status_code == 302
    assert "2 \u00d7 NVIDIA L40S" in alice_client.get(url).content.decode()
    # 3 of 4 held on the one ready server: 1 free there, not enough on one server.
    sync(snapshot, django_capture_on_commit_callbacks, 1, l40s_held=3)
    assert not Notification.objects.exists() and WaitlistEntry.objects.count() == 1
    # 1 held: 3 free on one server. Told once, by page and by email, and forgotten.
    sync(snapshot, django_capture_on_commit_callbacks, 2, l40s_held=1)
    sync(snapshot, django_capture_on_commit_callbacks, 3, l40s_held=1)
    note = Notification.objects.get()
    assert (note.user, note.kind) == (alice, NotificationKind.GPUS_FREE)
    assert "2 × NVIDIA L40S are free on one server now" in note.text
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.com"]
    assert not WaitlistEntry.objects.exists()
    # In the page (loaded by htmx after it), until dismissed.
    banner = alice_client.get(reverse("gpus:notifications_unread")).content.decode()
    assert "are free on one server now" in banner
    alice_client.post(reverse("gpus:notifications_read"), {"pk": note.pk})
    assert "free" not in alice_client.get(reverse("gpus:notifications_unread")).content.decode()
    assert "free on one server" in alice_client.get(reverse("gpus:notifications")).content.decode()


def test_a_wish_no_server_can_meet_is_refused_next_to_the_count(alice_client, acme, snapshot):
    l40s = GpuModel.objects.get(resource_name=L40S)
    most = most_gpus_on_one_server(l40s)
    assert most == 4  # the snapshot's L40S server
    url = reverse("gpus:capacity_waitlist", args=[acme.namespace])
    wish = {"gpu_model": l40s.pk, "count": str(most + 1), "one_server": "on", "days": "7"}
    response = alice_client.post(url, wish)
    assert response.status_code == 200 and not WaitlistEntry.objects.exists()
    after_count = response.content.decode().split('id="id_count"')[1]
    error = after_count.split('<div id="err-count">')[1].split("</div>")[0]
    assert "A server has at most 4 × NVIDIA L40S" in error
    # Over several servers (a node group), the same number is a wish that can come true.
    response = alice_client.post(url, {**wish, "one_server": ""})
    assert response.status_code == 302 and WaitlistEntry.objects.get().count == most + 1


def test_a_wish_expires_unfired(alice, acme, snapshot):
    l40s = GpuModel.objects.get(resource_name=L40S)
    wish = services.join_waitlist(alice, acme, l40s, 1, one_server=False, days=1)
    WaitlistEntry.objects.filter(pk=wish.pk).update(expires_at=timezone.now())
    assert services.fire_waitlist() == 0  # 3 are free, but the wish has expired
    assert services.expire_waitlist() == 1
    assert not Notification.objects.exists()


def test_waitlist_urls_are_404_for_other_tenants_and_viewers(
    alice, bob_client, carol, acme, snapshot
):
    from django.test import Client

    l40s = GpuModel.objects.get(resource_name=L40S)
    wish = services.join_waitlist(alice, acme, l40s, 1, one_server=True, days=1)
    url = reverse("gpus:capacity_waitlist", args=[acme.namespace])
    leave = reverse("gpus:capacity_waitlist_leave", args=[acme.namespace, wish.pk])
    assert bob_client.get(url).status_code == 404
    assert (
        bob_client.post(url, {"gpu_model": l40s.pk, "count": "1", "days": "1"}).status_code == 404
    )
    assert bob_client.post(leave).status_code == 404
    # globex's own waitlist URL cannot reach acme's wish either.
    assert (
        bob_client.post(
            reverse("gpus:capacity_waitlist_leave", args=["tenant-globex", wish.pk])
        ).status_code
        == 404
    )
    viewer = Client()
    viewer.force_login(carol)
    assert viewer.get(url).status_code == 200
    assert viewer.post(leave).status_code == 404
    assert WaitlistEntry.objects.filter(pk=wish.pk).exists()
    # Bad input: errors next to the fields.
    page = viewer.post(url, {"gpu_model": l40s.pk, "count": "0", "days": "99"})
    assert page.status_code == 404  # a viewer may not ask; an operator gets field errors:
    operator = Client()
    operator.force_login(alice)
    page = operator.post(url, {"gpu_model": l40s.pk, "count": "0", "days": "99"})
    assert page.status_code == 200 and page.context["form"].errors.keys() == {"count", "days"}


def test_an_operation_that_ends_tells_who_asked_once(
    alice, bob, acme, snapshot, django_capture_on_commit_callbacks
):
    op = Operation.objects.create(
        cluster=snapshot,
        tenant=acme,
        actor=alice,
        actor_name="alice",
        kind="create",
        namespace=acme.namespace,
        app_kind="VMInstance",
        name="ws2",
        state=OperationState.PROVISIONING,
    )
    with django_capture_on_commit_callbacks(execute=True):
        engine.fail(op, "Unschedulable", "no server has 8 free")
        engine.fail(op, "Unschedulable", "again")  # already terminal: no second notice
    note = Notification.objects.get()
    assert note.user == alice and note.kind == NotificationKind.OPERATION_FAILED
    assert "no server has 8 free" in note.text
    assert note.link == reverse("gpus:operation", args=[acme.namespace, op.pk])
    # Notifications are the person's own.
    from django.test import Client

    other = Client()
    other.force_login(bob)
    assert "no server" not in other.get(reverse("gpus:notifications")).content.decode()
    assert other.post(reverse("gpus:notifications_read"), {"pk": note.pk}).status_code == 302
    assert Notification.objects.get().read_at is None


def test_an_operations_end_is_told_in_the_language_it_was_asked_in(
    alice, acme, snapshot, django_capture_on_commit_callbacks
):
    """The worker ends it with no request's language active: the notice (and its email) is
    in the words of the page the person asked from (#20 tryout: French pages said "done")."""
    from django.utils import translation

    from gpus.provisioning.choices import OperationKind
    from gpus.provisioning.services import submit_vm_action

    vm = GpuWorkload.objects.filter(tenant=acme, node_group="", kind="vm").first()
    assert vm is not None
    with translation.override("fr"):  # the request's language, as LocaleMiddleware sets it
        op = submit_vm_action(alice, vm, OperationKind.STOP)
    assert op.language == "fr"
    with django_capture_on_commit_callbacks(execute=True):
        engine.succeed(op, "", "")
    assert Notification.objects.get().text == f"Arrêter {vm.name}\u00a0: terminé."


def test_several_unread_notifications_are_dismissed_at_once(alice, acme, client):
    """Five stacked notices pushed every page down by 250 px (#20 tryout): one button for all."""
    for n in range(3):
        services.notify(alice, acme, NotificationKind.OPERATION_DONE, f"Stop ws{n}: done.")
    client.force_login(alice)
    banner = client.get(reverse("gpus:notifications_unread"), HTTP_ACCEPT_LANGUAGE="fr")
    assert banner.content.decode().count('class="message message-info"') == 3
    assert (
        "Tout masquer" in banner.content.decode() and 'id="dismiss-all"' in banner.content.decode()
    )
    assert (
        client.post(reverse("gpus:notifications_read"), HTTP_HX_REQUEST="true").status_code == 200
    )
    assert not Notification.objects.filter(read_at__isnull=True).exists()
    assert client.get(reverse("gpus:notifications_unread")).content.decode().strip() == ""
    # One notice alone has its own button only.
    services.notify(alice, acme, NotificationKind.OPERATION_DONE, "Stop ws9: done.")
    assert (
        'id="dismiss-all"' not in client.get(reverse("gpus:notifications_unread")).content.decode()
    )


def test_the_waitlist_tells_in_the_language_it_was_asked_in(
    alice, alice_client, acme, snapshot, django_capture_on_commit_callbacks
):
    l40s = GpuModel.objects.get(resource_name=L40S)
    alice_client.post(
        reverse("gpus:capacity_waitlist", args=[acme.namespace]),
        {"gpu_model": l40s.pk, "count": "2", "one_server": "on", "days": "7"},
        headers={"accept-language": "fr"},
    )
    assert WaitlistEntry.objects.get().language == "fr"
    sync(snapshot, django_capture_on_commit_callbacks, 2, l40s_held=1)  # the sync speaks English
    assert "sont libres sur un seul serveur" in Notification.objects.get().text
