"""The fleet-wide operations list filtered by dates alone reads the (created_at, id) index:
its pages, forward and back, still give every operation once, newest first."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from gpus.capacity import selectors
from gpus.capacity.tests.test_fleet_operations import make_ops
from gpus.provisioning.models import Operation

pytestmark = pytest.mark.django_db

URL = reverse("gpus:capacity_operations")


def ids(response) -> list[int]:
    return [op.pk for op in response.context["page"].rows]


def test_dates_alone_page_by_created_at(admin_client_, snapshot, acme, globex, monkeypatch):
    monkeypatch.setattr(selectors, "OPERATIONS_PER_PAGE", 2)
    recent = make_ops(snapshot, acme, 2)
    old = make_ops(snapshot, globex, 3)  # one bulk insert: one created_at, ties on the id
    older = make_ops(snapshot, acme, 1)[0]  # a later id, but the oldest submission
    ten_days = timezone.now() - dt.timedelta(days=10)
    Operation.objects.filter(pk__in=[o.pk for o in old]).update(created_at=ten_days)
    Operation.objects.filter(pk=older.pk).update(created_at=ten_days - dt.timedelta(days=1))
    query = {"end": timezone.localdate() - dt.timedelta(days=5)}
    pages = [admin_client_.get(URL, query)]
    while pages[-1].context["page"].has_next:
        pages.append(
            admin_client_.get(URL, {**query, "after": pages[-1].context["page"].next_cursor})
        )
    # Newest submission first (not highest id): the three of one instant by id, then `older`.
    expected = [o.pk for o in sorted(old, key=lambda o: -o.pk)] + [older.pk]
    assert [pk for p in pages for pk in ids(p)] == expected
    assert not {o.pk for o in recent} & {pk for p in pages for pk in ids(p)}
    back = admin_client_.get(URL, {**query, "before": pages[-1].context["page"].previous_cursor})
    assert ids(back) == ids(pages[-2])
