"""What the charts send and say (issues 17.5, 17.6 and 20.19): gzipped figure JSON under
100 KB for 30 days, HTML pages left uncompressed (CSRF tokens: BREACH), fixed axes, rounded
values, tooltips with the time zone, a note when the data fills a sliver of the range, and the
7-day view read from 5-minute rows while no hour has closed."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from gpus.utilization import charts, rollup
from gpus.utilization.models import Bucket, GroupRollup, Scope

pytestmark = pytest.mark.django_db
MODELS = ["NVIDIA A100 80GB PCIe", "NVIDIA H100 NVL", "NVIDIA L40S"]


def _model_rows(buckets: list[dt.datetime], bucket: str = Bucket.FIVE_MINUTES) -> None:
    rng = np.random.default_rng(1)
    GroupRollup.objects.bulk_create(
        GroupRollup(
            bucket=bucket,
            scope=scope,
            key=key,
            ts=b,
            epoch=int(b.timestamp()),
            gpus=8,
            allocated=6,
            busy=4,
            util_avg=float(rng.uniform(60, 100)),
            util_p05=float(rng.uniform(0, 40)),
            util_p95=float(rng.uniform(90, 100)),
        )
        for b in buckets
        for scope, key in [(Scope.MODEL, m) for m in MODELS]
        # A workload's rows always come with its tenant's (the tenant chart reads both).
        + [(Scope.FLEET, ""), (Scope.TENANT, "tenant-acme"), (Scope.WORKLOAD, "tenant-acme|ml/gpu")]
        + [(Scope.NODE, "w-1")]
    )


def _get(client, url: str, **headers):
    return client.get(url, headers=headers)


def test_thirty_days_gzipped_under_100_kb_and_pages_stay_plain(admin_client_) -> None:
    end = rollup.floor_ts(timezone.now(), 300)
    _model_rows([end - dt.timedelta(minutes=5 * k) for k in range(30 * 288)])
    url = reverse("gpus:util_chart", args=["fleet"]) + "?range=30d"
    r = _get(admin_client_, url, accept_encoding="gzip, br")
    assert r["Content-Encoding"] == "gzip" and "Accept-Encoding" in r["Vary"]
    assert len(r.content) < 100 * 1024, len(r.content)
    doc = json.loads(gzip.decompress(r.content))
    assert doc["points"] <= 2000
    # Values travel rounded to one decimal, as plain numbers.
    avg = doc["figure"]["data"][2]["y"]
    assert isinstance(avg, list) and all(v is None or round(v, 1) == v for v in avg)
    # A page with a CSRF token is never compressed (BREACH).
    page = _get(admin_client_, reverse("gpus:util_fleet"), accept_encoding="gzip")
    assert page.status_code == 200 and "Content-Encoding" not in page


def test_tooltips_round_and_say_the_time_zone(admin_client_) -> None:
    end = rollup.floor_ts(timezone.now(), 300)
    _model_rows([end - dt.timedelta(minutes=5 * k) for k in range(288)])
    doc = json.loads(_get(admin_client_, reverse("gpus:util_chart", args=["fleet"])).content)
    zone = timezone.localtime().tzname()
    assert doc["figure"]["layout"]["xaxis"]["hoverformat"].endswith(f"%H:%M {zone}")
    assert {t["yhoverformat"] for t in doc["figure"]["data"]} == {".1f"}
    assert doc["figure"]["layout"]["yaxis"]["range"] == [0, 100]
    assert doc["note"] == ""  # a full day of data: nothing cut


def test_a_new_fleet_is_not_a_sliver_of_the_day(admin_client_) -> None:
    end = rollup.floor_ts(timezone.now(), 300)
    _model_rows([end - dt.timedelta(minutes=5 * k) for k in range(12)])  # one hour
    for kind in ("fleet", "allocation"):
        r = _get(admin_client_, reverse("gpus:util_chart", args=[kind]) + "?range=24h")
        doc = json.loads(r.content)
        assert doc["note"].startswith("Data only since"), kind
        # The axis starts where the data does (one empty bucket before), not 23 hours earlier.
        assert max(len(t["x"]) for t in doc["figure"]["data"]) <= 14, kind


def test_seven_days_read_five_minute_rows_before_the_first_hour_closes(
    admin_client_, alice_client, acme
) -> None:
    end = rollup.floor_ts(timezone.now(), 300)
    _model_rows([end - dt.timedelta(minutes=5 * k) for k in range(6)])  # 30 minutes, no hour
    assert not GroupRollup.objects.filter(bucket=Bucket.HOUR).exists()
    for client, kind, extra in (
        (alice_client, "tenant", "&tenant=tenant-acme"),
        (admin_client_, "heatmap", ""),
        (admin_client_, "fleet", ""),
    ):
        doc = json.loads(
            _get(client, reverse("gpus:util_chart", args=[kind]) + "?range=7d" + extra).content
        )
        assert "figure" in doc, (kind, doc)


def test_gpu_detail_axes_are_fixed() -> None:
    ts = [float(t) for t in range(0, 3600, 60)]
    n = len(ts)
    s = charts.Series(
        ts,
        {
            "util": [67.0 + (i % 30) for i in range(n)],
            "mem_used": [1000.0] * n,
            "mem_total": [81920.0] * n,
            "power": [298.0 + (i % 3) for i in range(n)],
            "temp": [88.0] * n,
            "sm_clock": [1400.0] * n,
        },
    )
    keys = ["util_title", "memory", "power_title", "temp_title", "clocks", "util", "busy"]
    keys += ["tensor", "mem_used", "mem_total", "power", "power_limit", "temp", "sm_clock"]
    titles = {k: k for k in keys}
    layout = json.loads(charts.to_json(charts.gpu_detail(s, titles, 300.0)))["layout"]
    assert layout["yaxis"]["range"] == [0, 100]  # utilization: never 67-100 %
    low, high = layout["yaxis3"]["range"]  # power: from 0, the 300 W limit in view
    assert low == 0 and 300 < high <= 330
    assert layout["yaxis4"]["range"][0] == 0


def test_heatmap_gaps_are_json_nulls(admin_client_) -> None:
    """NaN is no JSON: a blank heatmap cell sent as NaN made the browser's JSON.parse fail."""
    end = rollup.floor_ts(timezone.now(), 300)
    _model_rows([end - dt.timedelta(minutes=5 * k) for k in (0, 2)])  # a gap between them
    r = _get(admin_client_, reverse("gpus:util_chart", args=["heatmap"]))
    assert b"NaN" not in r.content
    z = json.loads(r.content)["figure"]["data"][0]["z"]
    assert None in z[0] and any(v is not None for v in z[0])
