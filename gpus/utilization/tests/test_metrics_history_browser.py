"""Query-API mode in headless Chromium with a real Celery worker: the one-GPU page says it is
loading, htmx polls until the worker has read the history from a real Prometheus into the cache,
then the chart is drawn (<= 2,000 points a line) and the polling stops (286)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from gpus.inventory.models import Cluster
from gpus.utilization.models import GpuDevice, MetricSource

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
]


def test_page_polls_until_the_worker_filled_the_cache(
    page,
    live_server,
    platform_admin,
    acme,
    metric_history,
    worker,
    log_in,
):
    gpu = metric_history.uuid
    cluster = Cluster.objects.create(name="prod")
    MetricSource.objects.create(cluster=cluster, kind="prometheus", url=metric_history.prometheus)
    GpuDevice.objects.create(
        uuid=gpu, cluster=cluster, tenant=acme, model_name="NVIDIA L40S", hostname="node-a"
    )
    history_url = reverse("gpus:util_gpu_history", args=[gpu])
    polls: list[int] = []
    page.on("response", lambda r: polls.append(r.status) if history_url in r.url else None)
    log_in("admin")
    # A custom range of 20 days: its own cache key, whatever other tests left.
    start = (dt.datetime.now() - dt.timedelta(days=20)).strftime("%Y-%m-%dT%H:%M")
    page.goto(
        live_server.url + reverse("gpus:util_gpu", args=[gpu]) + f"?range=custom&start={start}"
    )
    page.wait_for_selector("#chart-gpu[data-state=drawn]", timeout=60_000)
    points = page.evaluate(
        "Math.max(...document.getElementById('chart-gpu').data.map(t => (t.x || []).length))"
    )
    assert 1000 < points <= 2000  # 20 days of 5-minute data, at most 2,000 points
    assert polls[0] == 200 and polls[-1] == 286  # "loading", then the chart that stops it
    seen = len(polls)
    page.wait_for_timeout(5000)  # more than two poll periods
    assert len(polls) == seen  # no poll after the 286
