"""Writes of capacity: quotas set in the portal (audited), the waitlist, notifications."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max, Sum
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from gpus.capacity import pricing
from gpus.capacity.models import GpuPrice, Notification, NotificationKind, PriceList, WaitlistEntry
from gpus.catalog.models import GpuModel
from gpus.inventory.models import NodeGpu
from gpus.provisioning.audit import audit
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import GpuQuota, Operation
from gpus.tenancy.models import Tenant

log = logging.getLogger(__name__)

# --- quotas -----------------------------------------------------------------------------


def set_quota(actor: Any, tenant: Tenant, model: GpuModel, limit: int | None) -> bool:
    """Set (or with None remove) a tenant's GPU quota for one model, audited. The request side
    (provisioning) enforces it on both forms and the API. Returns whether anything changed."""
    with transaction.atomic():
        current = (
            GpuQuota.objects.select_for_update().filter(tenant=tenant, gpu_model=model).first()
        )
        old = current.limit if current else None
        if old == limit:
            return False
        if limit is None:
            current.delete()  # type: ignore[union-attr]
        else:
            GpuQuota.objects.update_or_create(
                tenant=tenant, gpu_model=model, defaults={"limit": limit}
            )
        audit(
            None,
            tenant,
            actor.get_username(),
            "quota.set",
            {"model": model.resource_name, "old": old, "new": limit},
        )
    return True


# --- prices -----------------------------------------------------------------------------


def set_price_list(
    actor: Any,
    valid_from: dt.date,
    currency: str,
    vcpu_hour: Decimal,
    memory_gib_hour: Decimal,
    disk_gib_month: Decimal,
    gpu_prices: dict[GpuModel, Decimal],
    today: dt.date | None = None,
) -> PriceList | None:
    """Save a new price list, in force from `valid_from` (today or later, so spend already
    counted keeps its prices). Lists are append-only and record who saved them and when: the
    audit trail of prices. None when it would change nothing (the same prices as the list in
    force on that day)."""
    today = today or timezone.now().astimezone(dt.UTC).date()
    if valid_from < today:
        raise ValueError("A price list applies from today or later.")
    gpu = {m.pk: Decimal(v) for m, v in gpu_prices.items()}
    with transaction.atomic():
        current = pricing.rates_at(valid_from)
        if (
            current is not None
            and current.currency == currency
            and (current.vcpu_hour, current.memory_gib_hour, current.disk_gib_month)
            == (Decimal(vcpu_hour), Decimal(memory_gib_hour), Decimal(disk_gib_month))
            and current.gpu_hour == gpu
        ):
            return None
        price_list = PriceList.objects.create(
            valid_from=valid_from,
            currency=currency,
            vcpu_hour=vcpu_hour,
            memory_gib_hour=memory_gib_hour,
            disk_gib_month=disk_gib_month,
            set_by=actor.get_username(),
        )
        GpuPrice.objects.bulk_create(
            GpuPrice(price_list=price_list, gpu_model_id=pk, hour=hour) for pk, hour in gpu.items()
        )
        log.info(
            "Price list %s (%s from %s) saved by %s",
            price_list.pk,
            currency,
            valid_from,
            price_list.set_by,
        )
    return price_list


# --- notifications ----------------------------------------------------------------------


def notify(user: Any, tenant: Tenant, kind: str, text: str, link: str = "") -> Notification:
    """In the page until read, and one email when the person has an address (Django's email
    backend: the console under make run)."""
    note = Notification.objects.create(user=user, tenant=tenant, kind=kind, text=text, link=link)
    if getattr(user, "email", ""):
        body = text + (f"\n\n{settings.PORTAL_BASE_URL.rstrip('/')}{link}" if link else "")
        transaction.on_commit(lambda: _mail(user.email, text, body))
    return note


def _mail(to: str, subject: str, body: str) -> None:
    try:
        send_mail(f"Hikube Portal: {subject[:120]}", body, None, [to])
    except Exception:  # a mail server down must not undo the notification
        log.exception("Sending a notification email to %s failed", to)


def mark_read(user: Any, pk: int | None = None) -> int:
    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    if pk is not None:
        unread = unread.filter(pk=pk)
    return unread.update(read_at=timezone.now())


def notify_operation_end(operation_id: int) -> None:
    op = Operation.objects.select_related("tenant", "actor").filter(pk=operation_id).first()
    if op is None or op.actor is None:
        return
    if op.state not in (OperationState.SUCCEEDED, OperationState.FAILED):
        return
    if op.was_already_true:  # nothing happened; the operation page says so (#20 tryout item 4)
        return
    target = f"{op.name}/{op.node_group}" if op.node_group else op.name
    with translation.override(op.language):  # the asker's, not the worker's default
        values = {"kind": op.get_kind_display(), "target": target}
        if op.state == OperationState.SUCCEEDED:
            kind, text = NotificationKind.OPERATION_DONE, _("%(kind)s %(target)s: done.") % values
        else:
            kind = NotificationKind.OPERATION_FAILED
            text = _("%(kind)s %(target)s failed: %(why)s") % {
                **values,
                "why": (op.message or op.reason or _("see the operation"))[:300],
            }
    link = reverse("gpus:operation", args=[op.tenant.namespace, op.pk])
    notify(op.actor, op.tenant, kind, text, link)


# --- the waitlist -----------------------------------------------------------------------


def join_waitlist(
    user: Any, tenant: Tenant, model: GpuModel, count: int, one_server: bool, days: int
) -> WaitlistEntry:
    return WaitlistEntry.objects.create(
        tenant=tenant,
        user=user,
        gpu_model=model,
        count=count,
        one_server=one_server,
        expires_at=timezone.now() + dt.timedelta(days=days),
        language=translation.get_language() or "",
    )


def leave_waitlist(tenant: Tenant, pk: int) -> int:
    return WaitlistEntry.objects.filter(tenant=tenant, pk=pk).delete()[0]


def free_now(model_ids: set[int]) -> dict[int, tuple[int, int]]:
    """(free in all, most free on one server) per model over every cluster: one query."""
    rows = (
        NodeGpu.objects.filter(
            gpu_model_id__in=model_ids, node__ready=True, node__unschedulable=False
        )
        .values("gpu_model_id")
        .annotate(total=Sum("free"), most=Max("free"))
    )
    return {r["gpu_model_id"]: (r["total"] or 0, r["most"] or 0) for r in rows}


def fire_waitlist(now: dt.datetime | None = None) -> int:
    """After a sync: every live wish the snapshot satisfies is told once and forgotten. The
    delete is the claim: of two syncs racing, only the one that deleted the row notifies."""
    now = now or timezone.now()
    wishes = list(
        WaitlistEntry.objects.filter(expires_at__gt=now).select_related(
            "user", "tenant", "gpu_model"
        )
    )
    if not wishes:
        return 0
    free = free_now({w.gpu_model_id for w in wishes})
    fired = 0
    for wish in wishes:
        total, most = free.get(wish.gpu_model_id, (0, 0))
        if wish.count > (most if wish.one_server else total):
            continue
        with transaction.atomic():
            if not WaitlistEntry.objects.filter(pk=wish.pk).delete()[0]:
                continue
            values = {
                "n": wish.count,
                "model": wish.gpu_model.display_name,
                "free": total,
                "one": most,
            }
            # In the asker's language, not the syncing worker's default.
            with translation.override(wish.language or settings.LANGUAGE_CODE):
                text = (
                    _("%(n)d × %(model)s are free on one server now (%(free)d free in all).")
                    if wish.one_server
                    else _("%(n)d × %(model)s are free now (%(free)d free in all).")
                ) % values
            notify(
                wish.user,
                wish.tenant,
                NotificationKind.GPUS_FREE,
                text,
                reverse("gpus:vm_new", args=[wish.tenant.namespace]),
            )
            fired += 1
    return fired


def expire_waitlist(now: dt.datetime | None = None) -> int:
    return WaitlistEntry.objects.filter(expires_at__lte=now or timezone.now()).delete()[0]
