"""The fleet-wide operations list (#18 item 2, built for item 1 of the capacity2 brief):
admin-only, filters, keyset pages, a fixed number of queries."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from gpus.capacity import selectors
from gpus.catalog.models import GpuModel
from gpus.provisioning.choices import OperationKind, OperationState
from gpus.provisioning.models import Operation
from gpus.testing import H100, L40S

pytestmark = pytest.mark.django_db

URL = reverse("gpus:capacity_operations")


def make_ops(cluster, tenant, n, model=None, kind="create", state=OperationState.SUCCEEDED):
    ops = Operation.objects.bulk_create(
        Operation(
            cluster=cluster,
            tenant=tenant,
            actor_name="alice",
            kind=kind,
            namespace=tenant.namespace,
            app_kind="VMInstance",
            name=f"{tenant.namespace[:20]}-{kind}-{state}-{i}",
            gpu_model=model,
            gpu_count=1 if model else 0,
            state=state,
        )
        for i in range(n)
    )
    return ops


def names(response) -> list[str]:
    return [op.name for op in response.context["page"].rows]


def test_admin_only_and_linked_from_capacity(alice_client, admin_client_, snapshot):
    assert alice_client.get(URL).status_code == 404
    assert admin_client_.get(URL).status_code == 200
    page = admin_client_.get(reverse("gpus:capacity")).content.decode()
    assert f'href="{URL}"' in page


def test_filters(admin_client_, snapshot, acme, globex):
    h100 = GpuModel.objects.get(resource_name=H100)
    l40s = GpuModel.objects.get(resource_name=L40S)
    make_ops(snapshot, acme, 2, h100)
    make_ops(snapshot, globex, 1, l40s, kind=OperationKind.DELETE, state=OperationState.FAILED)
    old = make_ops(snapshot, globex, 1, None, kind=OperationKind.STOP)[0]
    Operation.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=10))

    assert len(names(admin_client_.get(URL))) == 4
    assert all("acme" in n for n in names(admin_client_.get(URL, {"tenant": acme.namespace})))
    assert len(names(admin_client_.get(URL, {"tenant": acme.namespace}))) == 2
    assert len(names(admin_client_.get(URL, {"kind": "delete"}))) == 1
    assert len(names(admin_client_.get(URL, {"state": "failed", "tenant": globex.namespace}))) == 1
    assert len(names(admin_client_.get(URL, {"gpu_model": h100.pk}))) == 2
    today = timezone.localdate()
    recent = names(admin_client_.get(URL, {"start": today - dt.timedelta(days=2)}))
    assert old.name not in recent and len(recent) == 3
    early = names(admin_client_.get(URL, {"end": today - dt.timedelta(days=5)}))
    assert early == [old.name]


def test_bad_filters_are_said_next_to_the_field(admin_client_, snapshot, acme):
    make_ops(snapshot, acme, 2)
    response = admin_client_.get(
        URL, {"start": "2026-05-10", "end": "2026-05-01", "kind": "nuke", "after": "%%%"}
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert "end" in form.errors and "kind" in form.errors
    # Each error in the field's own box, as on every form of the portal.
    page = response.content.decode()
    end_box = page.split('id="id_end"')[1].split('<div class="field')[0]
    assert 'class="field-error"' in end_box
    # The valid filter (start, in May 2026) still applies: today's operations are after it.
    assert len(names(response)) == 2


def test_keyset_pages_newest_first(admin_client_, snapshot, acme, globex, monkeypatch):
    monkeypatch.setattr(selectors, "OPERATIONS_PER_PAGE", 3)
    ops = make_ops(snapshot, acme, 4) + make_ops(snapshot, globex, 4)
    newest_first = [op.name for op in sorted(ops, key=lambda o: -o.pk)]
    seen: list[str] = []
    response = admin_client_.get(URL)
    while True:
        seen += names(response)
        page = response.context["page"]
        if not page.has_next:
            break
        response = admin_client_.get(URL, {"after": page.next_cursor})
    assert seen == newest_first
    # Paging keeps the filters.
    response = admin_client_.get(URL, {"tenant": acme.namespace})
    page = response.context["page"]
    assert f"tenant={acme.namespace}&amp;after={page.next_cursor}" in response.content.decode()
    second = admin_client_.get(URL, {"tenant": acme.namespace, "after": page.next_cursor})
    assert len(names(second)) == 1 and "acme" in names(second)[0]
    last = admin_client_.get(URL, {"page": "last"})
    assert names(last) == newest_first[-3:]


def test_fixed_number_of_queries(admin_client_, snapshot, acme, globex, django_assert_num_queries):
    h100 = GpuModel.objects.get(resource_name=H100)
    make_ops(snapshot, acme, 2, h100)
    admin_client_.get(URL)  # warm the session and caches
    with CaptureQueriesContext(connection) as few:
        admin_client_.get(URL, {"gpu_model": h100.pk})
    make_ops(snapshot, acme, 30, h100)
    make_ops(snapshot, globex, 30, h100, kind=OperationKind.DELETE)
    with django_assert_num_queries(len(few)):
        response = admin_client_.get(URL, {"gpu_model": h100.pk})
    assert len(names(response)) == selectors.OPERATIONS_PER_PAGE


def test_one_tenants_pages_walk_both_ways(admin_client_, snapshot, acme, globex, monkeypatch):
    """Filtered by tenant the list reads the tenant's index, keyed by (created_at, id): pages
    forward and back give every operation once, newest first, even submitted in one instant."""
    monkeypatch.setattr(selectors, "OPERATIONS_PER_PAGE", 2)
    make_ops(snapshot, acme, 3)
    mine = make_ops(snapshot, globex, 5)  # one bulk insert: one created_at, ties on the id
    Operation.objects.filter(pk=mine[0].pk).update(created_at=timezone.now() - dt.timedelta(days=1))
    expected = [op.name for op in sorted(mine[1:], key=lambda o: -o.pk)] + [mine[0].name]
    query = {"tenant": globex.namespace}
    pages = [admin_client_.get(URL, query)]
    while pages[-1].context["page"].has_next:
        pages.append(
            admin_client_.get(URL, {**query, "after": pages[-1].context["page"].next_cursor})
        )
    assert [name for p in pages for name in names(p)] == expected
    back = admin_client_.get(URL, {**query, "before": pages[-1].context["page"].previous_cursor})
    assert names(back) == names(pages[-2])
