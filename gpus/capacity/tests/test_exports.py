"""Exports (#18 item 7): CSV of the capacity history and of GPU-hours per tenant, the same rows
as JSON through the API; admin-only; formula-escaped cells."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gpus.accounts.services import create_token
from gpus.capacity import exports
from gpus.capacity.forms import ExportForm
from gpus.capacity.models import Bucket, TenantUsage
from gpus.capacity.tests.test_capacity_page import backfill
from gpus.catalog.models import GpuModel
from gpus.testing import H100
from gpus.web.exports import safe_cell as cell

pytestmark = pytest.mark.django_db


def read_csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_cells_that_a_spreadsheet_would_run_are_escaped():
    assert cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert cell("+1") == "'+1" and cell("@x") == "'@x" and cell("-x") == "'-x"
    assert cell(-3) == -3 and cell(2.5) == 2.5 and cell("tenant-acme") == "tenant-acme"


def test_csv_and_json_agree_and_are_admin_only(
    admin_client_, platform_admin, alice, alice_client, snapshot, acme
):
    h100 = GpuModel.objects.get(resource_name=H100)
    backfill(snapshot, h100, days=2)
    today = timezone.now().date()
    TenantUsage.objects.create(
        bucket=Bucket.DAY,
        ts=dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC),
        cluster=snapshot,
        tenant=acme,
        gpu_model=h100,
        gpus_max=2,
        gpu_hours=12.5,
    )
    params = {"start": str(today - dt.timedelta(days=3)), "end": str(today + dt.timedelta(1))}
    rows = read_csv(
        admin_client_.get(reverse("gpus:capacity_export_history"), {**params, "bucket": "1h"})
    )
    assert len(rows) == 48 and rows[0]["gpu_model_name"] == H100
    usage = read_csv(admin_client_.get(reverse("gpus:capacity_export_gpu_hours"), params))
    assert usage == [
        {
            "tenant": "tenant-acme",
            "cluster": "prod",
            "gpu_model": H100,
            "gpu_hours": "12.5",
            "gpus_max": "2",
        }
    ]
    # The API: the same rows for an admin's token, a 404 for a tenant's.
    admin_token = create_token(admin_client_.get(reverse("gpus:capacity")).wsgi_request.user, "ci")[
        1
    ]
    api = Client()
    got = api.get(
        "/api/v1/capacity/history",
        {**params, "bucket": "1h"},
        HTTP_AUTHORIZATION=f"Bearer {admin_token}",
    ).json()
    assert len(got) == 48 and got[0]["allocated"] == pytest.approx(float(rows[0]["allocated"]))
    hours = api.get(
        "/api/v1/capacity/gpu-hours", params, HTTP_AUTHORIZATION=f"Bearer {admin_token}"
    ).json()
    assert hours == [{**usage[0], "gpu_hours": 12.5, "gpus_max": 2}]
    tenant_token = create_token(alice, "ci")[1]
    for url in ("/api/v1/capacity/history", "/api/v1/capacity/gpu-hours"):
        assert api.get(url, HTTP_AUTHORIZATION=f"Bearer {tenant_token}").status_code == 404
    for name in ("gpus:capacity_export_history", "gpus:capacity_export_gpu_hours"):
        assert alice_client.get(reverse(name)).status_code == 404
    # Bad input: the field's error, never a 500.
    bad = {"start": "2026-01-10", "end": "2026-01-01"}
    response = admin_client_.get(reverse("gpus:capacity_export_history"), bad)
    assert response.status_code == 400 and "end" in response.json()
    response = api.get("/api/v1/capacity/history", bad, HTTP_AUTHORIZATION=f"Bearer {admin_token}")
    assert response.status_code == 422 and "end" in response.json()["errors"]
    response = api.get(
        "/api/v1/capacity/history", {"start": "x"}, HTTP_AUTHORIZATION=f"Bearer {admin_token}"
    )
    assert response.status_code == 422 and "start" in response.json()["errors"]


def test_the_history_export_matches_the_api_and_escapes_names(admin_client_, snapshot):
    """The history CSV names each cluster and model (made safe once, not per row) and rounds
    the means as the API does: every cell equals the API's row."""
    h100 = GpuModel.objects.get(resource_name=H100)
    snapshot.name = "=HYPERLINK(1)"
    snapshot.save(update_fields=["name"])
    backfill(snapshot, h100, days=1, per_day=1 / 3)
    today = timezone.now().date()
    params = {"start": str(today - dt.timedelta(days=2)), "end": str(today + dt.timedelta(1))}
    rows = read_csv(
        admin_client_.get(reverse("gpus:capacity_export_history"), {**params, "bucket": "1h"})
    )
    form = ExportForm({**params, "bucket": "1h"})
    assert form.is_valid()
    api_rows = list(exports.history_dicts(*form.period(), "1h"))
    assert len(rows) == len(api_rows) == 24
    for row, api_row in zip(rows, api_rows, strict=True):
        assert row["cluster_name"] == "'=HYPERLINK(1)" and row["gpu_model_name"] == H100
        assert row["ts"] == api_row["ts"].isoformat()
        for name in ("installed", "allocated", "free", "unavailable", "samples", "free_min"):
            assert row[name] == str(api_row[name]), name
