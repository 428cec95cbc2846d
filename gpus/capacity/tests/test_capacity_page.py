"""The admin capacity page (#18 item 2): cards, chart, forecast, tables, a fixed number of
queries, admin-only."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from gpus.capacity import history
from gpus.capacity.models import Bucket, CapacityRollup, RefusedRequest
from gpus.catalog.models import GpuModel
from gpus.provisioning.choices import OperationState
from gpus.provisioning.models import GpuQuota, Operation
from gpus.testing import H100, L40S
from gpus.utilization.models import GpuDevice, GpuRollup

pytestmark = pytest.mark.django_db


def backfill(cluster, model, days=14, start=40, per_day=4.0, installed=100):
    """Hourly rollups of a known allocation trend, as the rollup task would have written."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    rows = []
    for h in range(days * 24):
        ts = now - dt.timedelta(hours=days * 24 - 1 - h)
        a = start + per_day * h / 24
        rows.append(
            CapacityRollup(
                bucket=Bucket.HOUR,
                ts=ts,
                cluster=cluster,
                gpu_model=model,
                samples=6,
                installed=installed,
                allocated=a,
                allocated_max=round(a),
                free=installed - a,
                free_min=round(installed - a),
                queued_max=2 if h % 24 == 0 else 0,
            )
        )
    CapacityRollup.objects.bulk_create(rows)


@pytest.mark.parametrize("url", ["gpus:capacity", "gpus:capacity_chart"])
def test_admin_only(url, alice_client, admin_client_, snapshot):
    assert alice_client.get(reverse(url)).status_code == 404
    assert admin_client_.get(reverse(url)).status_code == 200


def test_cards_busy_demand_and_forecast(
    admin_client_, snapshot, acme, globex, django_assert_max_num_queries
):
    l40s = GpuModel.objects.get(resource_name=L40S)
    h100 = GpuModel.objects.get(resource_name=H100)
    backfill(snapshot, h100, installed=8, start=0.5, per_day=0.2)
    # Telemetry from one of globex's 2 allocated H100: 62 % busy.
    device = GpuDevice.objects.create(uuid="GPU-1", cluster=snapshot, gpu_model=h100)
    GpuRollup.objects.create(
        bucket="5m", ts=timezone.now(), device=device, allocated=True, busy_avg=62.0, samples=5
    )
    Operation.objects.create(
        cluster=snapshot,
        tenant=acme,
        actor_name="alice",
        kind="create",
        namespace=acme.namespace,
        app_kind="VMInstance",
        name="wait",
        gpu_model=h100,
        gpu_count=8,
        state=OperationState.QUEUED,
    )
    RefusedRequest.objects.create(
        cluster=snapshot, tenant=globex, gpu_model=h100, gpus=3, actor_name="bob"
    )
    GpuQuota.objects.create(tenant=globex, gpu_model=h100, limit=2)
    history.record_samples(snapshot.pk, timezone.now())
    with django_assert_max_num_queries(20):
        response = admin_client_.get(reverse("gpus:capacity"))
    body = response.content.decode()
    cards = {c.model_id: c for c in response.context["cards"]}
    assert (cards[h100.pk].installed, cards[h100.pk].allocated) == (8, 2)
    assert (cards[h100.pk].queued, cards[h100.pk].refused_24h) == (8, 3)
    assert "62 % busy on the 1 of 2 that report" in body
    french = admin_client_.get(reverse("gpus:capacity"), HTTP_ACCEPT_LANGUAGE="fr")
    assert "62\u00a0% d’occupation, mesurée sur 1 des 2 GPU" in french.content.decode()
    # 0.5 + 0.2/day: 3.3 held after 14 days, (8 - 3.3) / 0.2 = 23.5 days.
    forecast = cards[h100.pk].forecast
    assert forecast.running_out and forecast.days == pytest.approx(23.5, rel=0.05)
    assert not cards[l40s.pk].forecast.enough_history
    assert "not enough history" in body
    # globex holds its whole quota; the waiting and refused requests are listed with who.
    assert [q["tenant"] for q in response.context["quota_pressure"]] == [globex]
    assert "wait" in body and "bob" in body
    # More history, more requests: the same number of queries.
    with CaptureQueriesContext(connection) as before:
        admin_client_.get(reverse("gpus:capacity"))
    backfill(snapshot, l40s)
    RefusedRequest.objects.create(
        cluster=snapshot, tenant=acme, gpu_model=l40s, gpus=1, actor_name="alice"
    )
    with CaptureQueriesContext(connection) as after:
        admin_client_.get(reverse("gpus:capacity"))
    assert len(after) == len(before)


def test_chart_draws_allocated_free_and_demand(admin_client_, snapshot):
    h100 = GpuModel.objects.get(resource_name=H100)
    backfill(snapshot, h100, days=3)
    data = admin_client_.get(reverse("gpus:capacity_chart"), {"range": "7"}).json()
    names = [t["name"] for t in data["figure"]["data"]]
    assert names == ["allocated", "free", "demand (waiting + refused)"]
    assert data["points"] == 72
    assert data["figure"]["data"][0]["stackgroup"] == data["figure"]["data"][1]["stackgroup"]
    # 90 days reads the daily rollups (none yet): said in words, not drawn as zero.
    assert "empty" in admin_client_.get(reverse("gpus:capacity_chart"), {"range": "90"}).json()
    # A bad range or model falls back; never a 500.
    assert (
        admin_client_.get(reverse("gpus:capacity_chart"), {"range": "x", "model": "y"}).status_code
        == 200
    )
