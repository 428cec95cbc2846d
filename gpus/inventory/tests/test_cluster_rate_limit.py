"""A Cluster row's client shares its rate limit through CLUSTER_RATE_LIMIT_URL (#17 item 4)."""

from __future__ import annotations

from gpus.inventory.clusters import cluster_config
from gpus.inventory.models import Cluster


def test_the_client_config_carries_the_shared_limit_url(settings):
    settings.CLUSTER_RATE_LIMIT_URL = "redis://127.0.0.1:6379/3"
    settings.CLUSTER_QPS, settings.CLUSTER_BURST = 4.0, 8
    config = cluster_config(Cluster(name="hikube"))
    assert (config.rate_limit_url, config.qps, config.burst) == ("redis://127.0.0.1:6379/3", 4.0, 8)


def test_embedded_mode_keeps_a_limit_per_process(settings):
    settings.CLUSTER_RATE_LIMIT_URL = ""
    assert cluster_config(Cluster(name="hikube")).rate_limit_url is None
