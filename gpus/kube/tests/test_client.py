"""Rate limiter (fake clock), client factory, impersonation headers on the wire."""

from __future__ import annotations

import socket
import threading

import pytest

from gpus.kube import client as kc
from gpus.kube import errors as e
from gpus.kube.tests.fakeapi import Recorded, fake_api


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# --- token bucket ---------------------------------------------------------------------


def test_burst_is_free_then_paced_at_qps():
    clock = FakeClock()
    bucket = kc.TokenBucket(rate=10, burst=20, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        assert bucket.acquire() == 0.0
    assert clock.slept == []
    waits = [bucket.acquire() for _ in range(10)]
    assert waits == pytest.approx([0.1] * 10)
    assert clock.now == pytest.approx(101.0)  # 10 more calls took 1 s at 10/s


def test_tokens_refill_with_time_up_to_burst():
    clock = FakeClock()
    bucket = kc.TokenBucket(rate=5, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        bucket.acquire()
    clock.now += 0.4  # 2 tokens back
    assert [bucket.acquire() for _ in range(2)] == [0.0, 0.0]
    assert bucket.acquire() == pytest.approx(0.2)
    clock.now += 3600  # idle an hour: never more than the burst
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() == pytest.approx(0.2)


def test_reservations_queue_up_across_threads():
    clock = FakeClock()
    lock = threading.Lock()

    def locked_clock() -> float:
        with lock:
            return clock.now

    # Sleeps are recorded, not performed: each thread gets a distinct place in line.
    bucket = kc.TokenBucket(rate=10, burst=1, clock=locked_clock, sleep=lambda s: None)
    waits: list[float] = []

    def worker() -> None:
        w = bucket.reserve()
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])


def test_bucket_shared_per_cluster_name_and_reconfigured():
    a1 = kc.bucket_for(kc.ClusterConfig(name="shared-test-a"))
    a2 = kc.bucket_for(kc.ClusterConfig(name="shared-test-a", kubeconfig="/other"))
    b = kc.bucket_for(kc.ClusterConfig(name="shared-test-b"))
    assert a1 is a2 and a1 is not b
    a3 = kc.bucket_for(kc.ClusterConfig(name="shared-test-a", qps=2.0, burst=4))
    assert a3 is a1 and (a1.rate, a1.burst) == (2.0, 4)


def test_bad_bucket_settings():
    with pytest.raises(ValueError):
        kc.TokenBucket(rate=0, burst=1)


def test_config_defaults():
    cfg = kc.ClusterConfig(name="c")
    assert (cfg.timeout, cfg.qps, cfg.burst, cfg.in_cluster) == (10, 10.0, 20, False)
    with pytest.raises(AttributeError):
        cfg.name = "other"  # frozen


# --- impersonation headers -----------------------------------------------------------


def test_impersonation_headers():
    assert kc.impersonation_headers(None) == {}
    assert kc.impersonation_headers("alice", ["g1", "g2"]) == {
        "Impersonate-User": "alice",
        "Impersonate-Group": ["g1", "g2"],
    }
    with pytest.raises(ValueError):
        kc.impersonation_headers(None, ["g1"])


def _nodes(rec: Recorded):
    return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": []}, {}


def test_repeated_group_headers_on_the_wire(tmp_path):
    with fake_api(tmp_path, _nodes) as api:
        cfg = kc.ClusterConfig(name="wire-test", kubeconfig=str(api.kubeconfig))
        session = kc.Session(cfg)
        session.call_json(
            session.core().list_node,
            impersonate_user="acme-admin",
            impersonate_groups=["tenant-acme-admins", "system:authenticated"],
        )
        session.call_json(session.core().list_node)  # no impersonation leaks to the next call
        first, second = api.requests
    assert first.all("Impersonate-User") == ["acme-admin"]
    assert first.all("Impersonate-Group") == ["tenant-acme-admins", "system:authenticated"]
    assert first.all("Authorization") == ["Bearer t0ken"]
    assert second.all("Impersonate-User") == [] and second.all("Impersonate-Group") == []


def test_api_client_default_impersonation(tmp_path):
    with fake_api(tmp_path, _nodes) as api:
        cfg = kc.ClusterConfig(name="wire-test-2", kubeconfig=str(api.kubeconfig))
        client = kc.api_client(cfg, impersonate_user="bob", impersonate_groups=["g1", "g2"])
        session = kc.Session(cfg, client=client)
        session.call_json(session.core().list_node)
        session.request_json("GET", "/apis/apps.cozystack.io/v1alpha1")
    for rec in api.requests:
        assert rec.all("Impersonate-User") == ["bob"]
        assert rec.all("Impersonate-Group") == ["g1", "g2"]
        assert rec.all("User-Agent") == [kc.USER_AGENT]


def test_kubeconfig_context_is_used(tmp_path):
    with fake_api(tmp_path, _nodes) as api:
        cfg = kc.ClusterConfig(name="ctx", kubeconfig=str(api.kubeconfig), context="missing")
        with pytest.raises(e.KubeError, match="connection settings"):
            kc.Session(cfg).request_json("GET", "/api")


# --- errors and timeouts over a real connection ---------------------------------------


def test_429_from_server_becomes_transient_with_retry_after(tmp_path):
    def route(rec: Recorded):
        body = {"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "slow"}
        return 429, body, {"Retry-After": "3"}

    with fake_api(tmp_path, route) as api:
        cfg = kc.ClusterConfig(name="t429", kubeconfig=str(api.kubeconfig))
        session = kc.Session(cfg)
        with pytest.raises(e.TransientError) as info:
            session.call_json(session.core().list_node)
        assert info.value.retry_after == 3.0
        with pytest.raises(e.TransientError):
            session.call(session.custom().get_api_resources, "apps.cozystack.io", "v1alpha1")
        with pytest.raises(e.TransientError):
            session.request_json("GET", "/api")


def test_timeout_is_passed_and_translated(tmp_path):
    gave_up = threading.Event()

    def slow(rec: Recorded):
        gave_up.wait(30)  # answers only once the client has given up
        return _nodes(rec)

    with fake_api(tmp_path, slow) as api:
        cfg = kc.ClusterConfig(name="slow", kubeconfig=str(api.kubeconfig), timeout=0.2)
        session = kc.Session(cfg)
        try:
            with pytest.raises(e.TransientError, match="did not answer in time"):
                session.call_json(session.core().list_node)
        finally:
            gave_up.set()


def test_connection_refused_is_transient(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from gpus.kube.tests.fakeapi import write_kubeconfig

    path = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")
    session = kc.Session(kc.ClusterConfig(name="down", kubeconfig=str(path), timeout=2))
    with pytest.raises(e.TransientError, match="refused"):
        session.call_json(session.core().list_node)


def test_call_helper_applies_timeout_and_translation():
    seen = {}

    def fn(**kwargs):
        seen.update(kwargs)
        raise ConnectionResetError(104, "Connection reset by peer")

    cfg = kc.ClusterConfig(name="helper", timeout=3.5)
    with pytest.raises(e.TransientError):
        kc.call(cfg, fn)
    assert seen["_request_timeout"] == 3.5


def test_bugs_are_not_swallowed():
    def fn(**kwargs):
        raise TypeError("programming error")

    with pytest.raises(TypeError):
        kc.call(kc.ClusterConfig(name="bug"), fn)


class CountingBucket:
    def __init__(self) -> None:
        self.acquired = 0

    def acquire(self) -> float:
        self.acquired += 1
        return 0.0


def test_every_request_takes_a_token(tmp_path):
    from gpus.kube.gateway import ClusterGateway

    def route(rec: Recorded):
        if "/nodes" in rec.path:
            q = rec.path.split("continue=")
            if len(q) == 1:
                return (
                    200,
                    {"metadata": {"continue": "2"}, "items": [{"metadata": {"name": "a"}}]},
                    {},
                )
            return 200, {"metadata": {}, "items": [{"metadata": {"name": "b"}}]}, {}
        return 200, {"resources": []}, {}

    with fake_api(tmp_path, route) as api:
        cfg = kc.ClusterConfig(name="count", kubeconfig=str(api.kubeconfig))
        bucket = CountingBucket()
        session = kc.Session(cfg, bucket=bucket)  # type: ignore[arg-type]
        gateway = ClusterGateway(cfg, session=session)
        assert [n.name for n in gateway.iter_nodes(page_size=1)] == ["a", "b"]
        session.request_json("GET", "/apis/apps.cozystack.io/v1alpha1")
        assert bucket.acquired == len(api.requests) == 3


def test_tenant_groups_are_cozystack_roles_one_per_header():
    from gpus.kube.client import impersonation_headers, tenant_groups

    assert tenant_groups("tenant-acme") == ["tenant-acme-admin"]
    assert tenant_groups("tenant-acme", "view") == ["tenant-acme-view"]
    with pytest.raises(ValueError):
        tenant_groups("tenant-acme", "owner")
    with pytest.raises(ValueError):
        impersonation_headers("bob", ["tenant-acme-admin,tenant-acme-view"])


def test_a_kubeconfig_is_parsed_once_while_unchanged(tmp_path, monkeypatch):
    """Every poll builds a client: a kubeconfig with a context per tenant is parsed once, and
    again only when the file changes."""
    import os

    import yaml

    from gpus.kube.tests.fakeapi import write_kubeconfig

    path = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    parsed = []
    real = yaml.safe_load
    monkeypatch.setattr(yaml, "safe_load", lambda stream: parsed.append(1) or real(stream))
    cfg = kc.ClusterConfig(name="parse-once", kubeconfig=str(path))
    first = kc.build_configuration(cfg)
    second = kc.build_configuration(cfg)
    assert len(parsed) == 1 and first.host == second.host == "http://127.0.0.1:1"
    text = path.read_text().replace("http://127.0.0.1:1", "http://127.0.0.1:2")
    path.write_text(text)
    os.utime(path, ns=(1, 1))  # a new mtime whatever the clock's resolution
    assert kc.build_configuration(cfg).host == "http://127.0.0.1:2"
    assert len(parsed) == 2
