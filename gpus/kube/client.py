"""Client factory, per-cluster rate limit (``ratelimit``) and the one door every call goes through.

Django code builds a ``ClusterConfig`` from its ``Cluster`` row (plain values) and
hands it here; nothing in this package imports Django.

Impersonation with several groups
---------------------------------
The API server reads ``Impersonate-Group`` as a *repeated* header (Go's
``req.Header["Impersonate-Group"]``; ``kubectl --as-group a --as-group b`` sends two
lines). A comma-joined value would be read as ONE group named ``"a,b"``. The
kubernetes client keeps headers in a plain dict, so we pass a *list* as the header
value and ``PortalApiClient.call_api`` expands list values into an urllib3
``HTTPHeaderDict``, which sends one header line per value. Kubernetes also requires
``Impersonate-User`` whenever groups are impersonated, so groups without a user are
refused here.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3._collections import HTTPHeaderDict
from urllib3.util.retry import Retry

from gpus.kube.errors import KubeError, is_translatable, translate
from gpus.kube.ratelimit import Limiter, SharedLimiter, TokenBucket, limiter_for

T = TypeVar("T")

USER_AGENT = "hikube-portal/gpus.kube"
IMPERSONATE_USER = "Impersonate-User"
IMPERSONATE_GROUP = "Impersonate-Group"


@dataclass(frozen=True)
class ClusterConfig:
    """How to reach one cluster. ``name`` keys the shared rate limiter."""

    name: str
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    timeout: float = 10.0
    qps: float = 10.0
    burst: int = 20
    # Redis URL of the limit shared by every worker process; None: this process's own bucket.
    rate_limit_url: str | None = None


# --- rate limiting -------------------------------------------------------------


def bucket_for(config: ClusterConfig) -> TokenBucket | SharedLimiter:
    """The one limiter shared by every client of the cluster named ``config.name``: in Redis
    (every process) when ``config.rate_limit_url`` names one, else in this process."""
    return limiter_for(config.name, config.qps, config.burst, config.rate_limit_url)


# --- client factory ------------------------------------------------------------


class PortalApiClient(k8s.ApiClient):
    """ApiClient that can send a header several times (needed for Impersonate-Group)."""

    def call_api(  # type: ignore[override]
        self,
        method: str,
        url: str,
        header_params: Mapping[str, Any] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        if header_params and any(isinstance(v, (list, tuple)) for v in header_params.values()):
            headers = HTTPHeaderDict()
            for key, value in header_params.items():
                if isinstance(value, (list, tuple)):
                    for item in value:
                        headers.add(key, str(item))
                elif value is not None:
                    headers.add(key, str(value))
            header_params = headers
        return super().call_api(method, url, header_params, body, post_params, _request_timeout)


TENANT_ROLES = ("view", "use", "admin", "super-admin")


def tenant_groups(namespace: str, role: str = "admin") -> list[str]:
    """The Cozystack group that carries ``role`` in a tenant namespace.

    Cozystack binds only ``<ns>-view``, ``-use``, ``-admin`` and ``-super-admin``
    (apps/tenant/templates/tenant.yaml); no group named like the namespace grants anything.
    """
    if role not in TENANT_ROLES:
        raise ValueError(f"unknown tenant role {role!r} (expected one of {TENANT_ROLES})")
    return [f"{namespace}-{role}"]


def impersonation_headers(user: str | None, groups: Iterable[str] = ()) -> dict[str, Any]:
    """Headers for impersonation; the group value is a list (one header line each)."""
    groups = [g for g in groups if g]
    if any("," in g for g in groups):
        # The apiserver would read "a,b" as one group named "a,b": always a mistake here.
        raise ValueError("one Impersonate-Group header is one group: pass groups as a list")
    if groups and not user:
        raise ValueError("Kubernetes requires Impersonate-User when impersonating groups")
    headers: dict[str, Any] = {}
    if user:
        headers[IMPERSONATE_USER] = user
    if groups:
        headers[IMPERSONATE_GROUP] = groups
    return headers


@functools.lru_cache(maxsize=32)
def _parsed_kubeconfig(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """A kubeconfig file's YAML, parsed once while the file is unchanged: one with a context
    per tenant takes a second to parse, and every poll builds a client."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def build_configuration(config: ClusterConfig) -> k8s.Configuration:
    cfg = k8s.Configuration()
    if config.in_cluster:
        k8s_config.load_incluster_config(client_configuration=cfg)
    elif config.kubeconfig and os.path.isfile(config.kubeconfig):
        stat = os.stat(config.kubeconfig)
        parsed = _parsed_kubeconfig(config.kubeconfig, stat.st_mtime_ns, stat.st_size)
        # The loader may write into what it is given (a refreshed token): a copy each time.
        k8s_config.load_kube_config_from_dict(
            copy.deepcopy(parsed),
            context=config.context,
            client_configuration=cfg,
            persist_config=False,
        )
    else:
        k8s_config.load_kube_config(
            config_file=config.kubeconfig,
            context=config.context,
            client_configuration=cfg,
            persist_config=False,
        )
    # Retries are the caller's business (Celery backoff honouring Retry-After). We keep
    # only one quick retry for a stale pooled connection: urllib3 re-sends on read errors
    # only for idempotent methods, so a POST is never sent twice behind our back.
    # urllib3 must not act on Retry-After itself (it would sleep, then raise MaxRetryError
    # and hide the 429): the response comes back to us and becomes a TransientError.
    cfg.retries = Retry(
        total=1,
        connect=1,
        read=1,
        redirect=0,
        status=0,
        other=0,
        respect_retry_after_header=False,
        raise_on_status=False,
    )
    return cfg


def api_client(
    config: ClusterConfig,
    impersonate_user: str | None = None,
    impersonate_groups: Iterable[str] = (),
) -> PortalApiClient:
    """A new ApiClient for ``config``; impersonation (if any) applies to every call it makes.

    Prefer one client per cluster with per-call impersonation (``Session.call(...,
    impersonate_user=...)``): building a client re-reads the kubeconfig and opens a pool.
    """
    client = PortalApiClient(build_configuration(config))
    client.user_agent = USER_AGENT
    for key, value in impersonation_headers(impersonate_user, impersonate_groups).items():
        client.set_default_header(key, value)
    return client


# --- the one door ----------------------------------------------------------------


class Session:
    """One cluster: a client, its shared rate limit, its timeout, error translation.

    Every outbound request of the portal goes through ``call`` or ``call_json``.
    """

    def __init__(
        self,
        config: ClusterConfig,
        client: k8s.ApiClient | None = None,
        bucket: Limiter | None = None,
    ) -> None:
        self.config = config
        self._client = client
        self.bucket = bucket or bucket_for(config)
        self._client_lock = threading.Lock()

    @property
    def client(self) -> k8s.ApiClient:
        # Lazy: building it reads files; a Session for a down cluster must still construct.
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    try:
                        self._client = api_client(self.config)
                    except Exception as exc:  # kubeconfig missing/invalid: permanent
                        raise KubeError(
                            "Cannot load the connection settings of cluster "
                            f"{self.config.name}: {exc}"
                        ) from exc
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.client)

    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.client)

    def _prepare(
        self,
        kwargs: dict[str, Any],
        impersonate_user: str | None,
        impersonate_groups: Iterable[str],
    ) -> None:
        kwargs.setdefault("_request_timeout", self.config.timeout)
        headers = impersonation_headers(impersonate_user, impersonate_groups)
        if headers:
            kwargs["_headers"] = {**(kwargs.get("_headers") or {}), **headers}

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
        **kwargs: Any,
    ) -> T:
        """Rate-limit, add the timeout (and impersonation), translate errors."""
        self._prepare(kwargs, impersonate_user, impersonate_groups)
        self.bucket.acquire()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_translatable(exc):
                raise translate(exc, self.config.name) from exc
            raise

    def call_json(
        self,
        fn: Callable[..., Any],
        *args: Any,
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
        **kwargs: Any,
    ) -> Any:
        """Like ``call`` but skips the strict pydantic models: raw body -> ``orjson.loads``.

        The body is read inside the guarded block so a read timeout is translated too.
        """
        self._prepare(kwargs, impersonate_user, impersonate_groups)
        kwargs["_preload_content"] = False
        self.bucket.acquire()
        try:
            resp = fn(*args, **kwargs)
            try:
                data = resp.data
            finally:
                resp.release_conn()
            return orjson.loads(data) if data else None
        except Exception as exc:
            if is_translatable(exc):
                raise translate(exc, self.config.name) from exc
            raise

    def request_json(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        impersonate_user: str | None = None,
        impersonate_groups: Iterable[str] = (),
    ) -> Any:
        """A raw request to any path (discovery, OpenAPI, kinds with no generated API)."""
        headers: dict[str, Any] = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        headers.update(impersonation_headers(impersonate_user, impersonate_groups))

        def do() -> Any:
            client = self.client
            method_, url, header_params, body_, post_params = client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = client.call_api(
                method_,
                url,
                header_params,
                body_,
                post_params,
                _request_timeout=self.config.timeout,
            )
            raw = resp.read()
            if not 200 <= resp.status <= 299:
                raise ApiException.from_response(http_resp=resp, body=None, data=None)
            return orjson.loads(raw) if raw else None

        self.bucket.acquire()
        try:
            return do()
        except Exception as exc:
            if is_translatable(exc):
                raise translate(exc, self.config.name) from exc
            raise


def call(config: ClusterConfig, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Functional shortcut: ``call(cfg, api.list_node, limit=10)`` through the shared bucket."""
    return Session(config).call(fn, *args, **kwargs)
