"""Kubernetes REST semantics without HTTP: routing, verbs, Status errors, paging, watch."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import re
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from . import openapi, quota, schemas, tables
from .clock import Clock
from .faults import Faults
from .fleet import stable_uuid
from .patch import PatchError, json_patch, merge_patch
from .rbac import Authorizer, Forbidden, Identity
from .resources import DATAVOLUMES, NAMESPACES, NODES, PODS, RESOURCEQUOTAS, Resource
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import Store, dumps, now_rfc3339

JSON = "application/json"
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
ALLOWED_TOP = {"apiVersion", "kind", "metadata", "spec", "status"}
ALLOWED_META = {
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
}
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
KEPT_META = ("labels", "annotations", "finalizers", "ownerReferences")


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None
    drop: bool = False
    content_type: str = JSON


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details, self.headers = (
            code,
            reason,
            message,
            details,
            headers,
        )

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        }
        if self.reason:  # metav1.Status.reason is omitempty (StatusReasonUnknown = "")
            st["reason"] = self.reason
        if self.details is not None:
            st["details"] = self.details
        return st

    def response(self) -> Response:
        return Response(self.code, dumps(self.status()), dict(self.headers or {}))


def _details(res: Resource, name: str | None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": res.plural}
    if name:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    d.update(extra)
    return d


HELMRELEASES = "helmreleases.helm.toolkit.fluxcd.io"
STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def helm_release_error(res: Resource, name: str, op: str, wrapped: bool) -> ApiError:
    """A HelmRelease create/update failure as cozystack-api returns it.

    v1.1 wraps it with fmt.Errorf (rest.go Create/Update), so the apiserver answers 500 with
    no reason (ErrorToAPIStatus); so does v1.6.2 (`head`: rest.go still `fmt.Errorf("failed to
    create HelmRelease: %v", err)`). `wrapped=False` (a 409 keeping the HelmRelease's reason)
    is what a cozystack-api using registry.WrapPreservingStatus would answer: none does yet.
    """
    release = f"{res.prefix}{name}"
    if op == "create":
        msg = f'failed to create HelmRelease: {HELMRELEASES} "{release}" already exists'
        reason = "AlreadyExists"
    else:
        msg = (
            "failed to update HelmRelease: Operation cannot be fulfilled on "
            f'{HELMRELEASES} "{release}": {STALE}'
        )
        reason = "Conflict"
    if wrapped:
        return ApiError(500, "", msg)
    details = {"name": release, "group": "helm.toolkit.fluxcd.io", "kind": "helmreleases"}
    return ApiError(409, reason, msg, details)


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{res.group_resource} "{name}" not found', _details(res, name)
    )


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case keys
    body: bytes
    identity: Identity | None = None


class Api:
    """One instance per server; every method runs in an HTTP worker thread."""

    def __init__(
        self,
        store: Store,
        resources: list[Resource],
        auth: Authorizer,
        faults: Faults,
        clock: Clock,
        seed: int = 1,
        speed: float = 1.0,
        flavour: str = "current",
    ) -> None:
        self.store = store
        self.speed = max(speed, 1e-6)
        # cozystack-api v1.1 (and the old API of `legacy`) wraps HelmRelease errors into 500s,
        # lists apps without paging and watches them without resourceVersion semantics.
        self.v11 = flavour in ("current", "legacy")
        # (resource key, ns, name) -> (monotonic deadline, object the cache still shows or None)
        self.recent: dict[tuple[str, str, str], tuple[float, dict[str, Any] | None]] = {}
        self.resources = resources
        self.auth = auth
        # The apiserver's audit log, for writes only: who (after impersonation) did what, and
        # whether RBAC let them (GET /devcluster/audit).
        self.audit: deque[dict[str, Any]] = deque(maxlen=2000)
        self.faults = faults
        self.clock = clock
        self.by_path: dict[tuple[str, str], Resource] = {
            (r.api_version, r.plural): r for r in resources
        }
        self.openapi_docs = openapi.build_docs(resources)
        for r in resources:
            if r.is_app:
                # Stored as the HelmRelease's values (raw); shown with the schema's defaults.
                store.views[r.key] = _defaulted_view(r.schema)
        self.rng = random.Random(seed)  # noqa: S311 - deterministic names/uids, not secrets
        self.rng_lock = threading.Lock()
        self.host = "127.0.0.1"
        self.stopping = threading.Event()
        self.extra_routes: list[tuple[str, Callable[[Request], Response]]] = []  # (prefix, handler)

    # --- entry point -------------------------------------------------------------------
    def knob_s(self, name: str) -> float:
        """A timing knob in wall seconds (knobs are seconds at --speed 1)."""
        return float(self.faults.knob(name)) / self.speed

    # --- the controller-runtime cache behind cozystack-api's app reads ----------------
    def _remember(self, res: Resource, ns: str, name: str, before: dict[str, Any] | None) -> None:
        lag = self.knob_s("cache_lag")
        if len(self.recent) > 4096:  # forget entries the cache has long caught up with
            now = time.monotonic()
            self.recent = {k: v for k, v in self.recent.items() if v[0] > now}
        if lag > 0:
            prev = self.recent.get((res.key, ns, name))
            if prev and prev[0] > time.monotonic():
                before = prev[1]  # the cache still lags behind the first of several writes
            self.recent[(res.key, ns, name)] = (time.monotonic() + lag, before)

    def _cached(
        self, res: Resource, ns: str, name: str, cur: dict[str, Any] | None
    ) -> tuple[bool, dict[str, Any] | None]:
        """(stale, object as the cache shows it) for an app read right after a write."""
        entry = self.recent.get((res.key, ns, name))
        if entry is None:
            return False, cur
        if entry[0] <= time.monotonic():
            del self.recent[(res.key, ns, name)]
            return False, cur
        return True, entry[1]

    def handle(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        groups: list[str] | None = None,
    ) -> Response:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        req = Request(method, parts.path.rstrip("/") or "/", query, headers, body)
        try:
            for prefix, handler in self.extra_routes:
                if req.path.startswith(prefix):
                    return handler(req)
            if req.path in ("/healthz", "/readyz", "/livez"):
                return Response(200, b"ok", content_type="text/plain; charset=utf-8")
            ident = self.auth.authenticate(headers.get("authorization"))
            if ident is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            ident = self._impersonate(ident, headers, groups or [])
            req.identity = ident
            return self._route(req)
        except ApiError as e:
            return e.response()

    def _impersonate(self, ident: Identity, headers: dict[str, str], groups: list[str]) -> Identity:
        user = headers.get("impersonate-user")
        groups = [g for g in groups if g]
        if not user and not groups:
            return ident
        if not user:
            raise ApiError(500, "InternalError", "requested impersonation of groups without a user")
        try:
            return self.auth.impersonate(ident, user, groups)
        except Forbidden as e:
            message, kind, name = e.args
            raise ApiError(403, "Forbidden", message, {"kind": kind, "name": name}) from e

    def _route(self, req: Request) -> Response:
        p = req.path
        if req.method == "GET":
            if p == "/version":
                return self._json(openapi.SERVER_VERSION)
            if p == "/api":
                return self._json(openapi.api_versions(self.host))
            if p == "/apis":
                return self._json(openapi.api_group_list(self.resources))
            if p == "/api/v1":
                return self._json(openapi.resource_list("v1", self.resources))
            if p == "/openapi/v3":
                return self._json(openapi.openapi_v3_root(self.resources, self.openapi_docs))
            if p.startswith("/openapi/v3/"):
                gv = p[len("/openapi/v3/") :].split("/", 1)[1] if p.count("/") >= 4 else ""
                if gv in self.openapi_docs:
                    return Response(
                        200, self.openapi_docs[gv], {"Cache-Control": "public, immutable"}
                    )
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            segs = p.strip("/").split("/")
            if segs[0] == "apis" and len(segs) == 2 and segs[1] in openapi.groups(self.resources):
                return self._json(openapi.api_group(segs[1], self.resources))
            if (
                segs[0] == "apis"
                and len(segs) == 3
                and any(r.api_version == f"{segs[1]}/{segs[2]}" for r in self.resources)
            ):
                return self._json(openapi.resource_list(f"{segs[1]}/{segs[2]}", self.resources))
        return self._resource_request(req)

    def _json(self, obj: Any, status: int = 200) -> Response:
        return Response(status, dumps(obj))

    # --- resource requests -------------------------------------------------------------
    def _parse(self, path: str) -> tuple[Resource, str | None, str | None, str | None]:
        segs = path.strip("/").split("/")
        if segs[0] == "api" and len(segs) >= 3:
            gv, rest = segs[1], segs[2:]
        elif segs[0] == "apis" and len(segs) >= 4:
            gv, rest = f"{segs[1]}/{segs[2]}", segs[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        elif rest[0] == "namespaces" and len(rest) == 2 and gv == "v1":
            return NAMESPACES, None, rest[1], None
        plural, name, sub = (
            rest[0],
            rest[1] if len(rest) > 1 else None,
            rest[2] if len(rest) > 2 else None,
        )
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res = self.by_path.get((gv, plural))
        if res is None or (ns is not None and not res.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub not in (None, "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return res, ns, name, sub

    def _verb(self, req: Request, name: str | None) -> str:
        m = req.method
        if m == "GET":
            if name:
                return "get"
            return "watch" if req.query.get("watch") in ("1", "true", "True") else "list"
        return {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(m, m.lower())

    def _resource_request(self, req: Request) -> Response:
        res, ns, name, sub = self._parse(req.path)
        verb = self._verb(req, name)
        assert req.identity is not None
        decision = self.faults.decide(verb, res.plural, ns)
        if decision:
            if decision.latency_ms:
                time.sleep(decision.latency_ms / 1000.0)
            if decision.drop:
                return Response(0, drop=True)
            if decision.status == 429:
                raise ApiError(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                    {"retryAfterSeconds": decision.retry_after},
                    headers={"Retry-After": str(decision.retry_after)},
                )
            if decision.status:
                reason = "InternalError" if decision.status == 500 else "ServiceUnavailable"
                raise ApiError(
                    decision.status,
                    reason,
                    "Internal error occurred: injected fault"
                    if decision.status == 500
                    else "the server is currently unable to handle the request",
                    headers={"Retry-After": str(decision.retry_after)}
                    if decision.status == 503
                    else None,
                )
        allowed = self.auth.allowed(req.identity, verb, res, ns if res.namespaced else None, name)
        if verb not in ("get", "list", "watch"):
            self.audit.append(
                {
                    "verb": verb,
                    "resource": res.group_resource,
                    "namespace": ns or "",
                    "name": name or _body_name(req.body),
                    "user": req.identity.user,
                    "groups": list(req.identity.groups),
                    "allowed": allowed,
                    # A patch's body as sent (the audit policy's Request level, for patches):
                    # a test can see which keys a merge patch carried.
                    **({"body": _json_or_none(req.body)} if verb == "patch" else {}),
                }
            )
        if not allowed:
            raise ApiError(
                403,
                "Forbidden",
                self.auth.forbidden_message(req.identity, verb, res, ns, name),
                _details(res, name),
            )
        if verb not in res.verbs and not (sub == "status" and verb == "get"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                _details(res, name),
            )
        if verb == "get":
            return self._get(req, res, ns, name)  # type: ignore[arg-type]
        if verb == "list":
            return self._list(req, res, ns)
        if verb == "watch":
            return self._watch(req, res, ns)
        if verb == "create":
            return self._create(req, res, ns)
        if verb == "update":
            return self._update(req, res, ns, name)  # type: ignore[arg-type]
        if verb == "patch":
            return self._patch(req, res, ns, name)  # type: ignore[arg-type]
        if verb == "delete":
            return self._delete(req, res, ns, name)  # type: ignore[arg-type]
        if verb == "deletecollection":
            return self._delete_collection(req, res, ns)
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    def _get(self, req: Request, res: Resource, ns: str | None, name: str) -> Response:
        with self.store.lock:
            key = (ns or "", name)
            obj = self.store.get(res.key, *key)
            stale = False
            if res.is_app:
                stale, obj = self._cached(res, key[0], name, obj)
            if obj is None:
                raise not_found(res, name)
            if stale:
                return Response(200, self.store.shown(res.key, obj))
            if "as=Table" in req.headers.get("accept", ""):
                include = req.query.get("includeObject", "Metadata")
                meta = {"resourceVersion": obj["metadata"]["resourceVersion"]}
                return Response(200, dumps(tables.to_table(res, [obj], meta, include)))
            return Response(200, self.store.raw(res.key, key))

    def _selectors(self, req: Request) -> tuple[Any, Any]:
        try:
            return parse_label_selector(req.query.get("labelSelector")), parse_field_selector(
                req.query.get("fieldSelector")
            )
        except SelectorError as e:
            raise ApiError(400, "BadRequest", str(e)) from e

    def _list(self, req: Request, res: Resource, ns: str | None) -> Response:
        lsel, fsel = self._selectors(req)
        try:
            limit = int(req.query.get("limit") or 0)
        except ValueError as e:
            raise ApiError(400, "BadRequest", "invalid limit") from e
        start: tuple[str, str] | None = None
        token = req.query.get("continue")
        issued = time.time()  # a token keeps the time of the list's first page
        if res.is_app and self.v11:
            # v1.1 lists HelmReleases from the cache with namespace + labels only (rest.go List).
            limit, token = 0, None
        if token:
            try:
                data = json.loads(base64.urlsafe_b64decode(token.encode() + b"==="))
                start = (data["start"][0], data["start"][1])
                list_rv = str(data["rv"])
                issued = float(data.get("t", 0))
            except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as e:
                raise ApiError(
                    400,
                    "BadRequest",
                    "continue key is not valid: incorrect encoded start "
                    "resourceVersion (version meta.k8s.io/v1)",
                ) from e
            # Wall seconds, not divided by --speed: it races the client's real paging, and a
            # real apiserver gives 5 minutes whatever the simulated clock does.
            if time.time() - issued > float(self.faults.knob("continue_ttl")):
                # etcd compacted the list's revision (apiserver: storage.NewResourceExpired).
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use "
                    "the continue token in this response to retrieve the remainder of the "
                    "results. Continuing with the provided token results in an inconsistent "
                    "list - objects that were created, modified, or deleted between the time "
                    "the first chunk was returned and now may show up in the list.",
                )
        table = "as=Table" in req.headers.get("accept", "")
        cache_view = res.is_app and bool(self.recent)  # app lists come from the same cache
        stale_raw: dict[tuple[str, str], bytes] = {}
        with self.store.lock:
            if not token:
                list_rv = str(self.store.rv)
            keys = self.store.sorted_keys(res.key)
            objs = self.store.objects.get(res.key, {})
            import bisect

            i = bisect.bisect_right(keys, start) if start else 0
            picked: list[tuple[tuple[str, str], dict[str, Any]]] = []
            more = False
            while i < len(keys):
                k = keys[i]
                i += 1
                if ns is not None and k[0] != ns:
                    continue
                obj = objs[k]
                if cache_view and (res.key, k[0], k[1]) in self.recent:
                    stale, shown = self._cached(res, k[0], k[1], obj)
                    if stale:
                        if shown is None:
                            continue  # created a moment ago: not in the cache yet
                        obj = shown
                        stale_raw[k] = self.store.shown(res.key, shown)
                if (lsel and not lsel(obj)) or (fsel and not fsel(obj)):
                    continue
                if limit and len(picked) >= limit:
                    more = True
                    i -= 1
                    break
                picked.append((k, obj))
            list_meta: dict[str, Any] = {"resourceVersion": list_rv}
            if more and picked:
                last = picked[-1][0]
                list_meta["continue"] = (
                    base64.urlsafe_b64encode(
                        json.dumps({"rv": int(list_rv), "start": list(last), "t": issued}).encode()
                    )
                    .decode()
                    .rstrip("=")
                )
                if not lsel and not fsel and ns is None:
                    list_meta["remainingItemCount"] = len(keys) - i
            if table:
                body = dumps(
                    tables.to_table(
                        res,
                        [o for _, o in picked],
                        list_meta,
                        req.query.get("includeObject", "Metadata"),
                    )
                )
                return Response(200, body)
            raws = [stale_raw.get(k) or self.store.raw(res.key, k) for k, _ in picked]
        head = dumps(
            {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": list_meta}
        )
        body = head[:-1] + b',"items":[' + b",".join(raws) + b"]}"
        return Response(200, body)

    def _watch(self, req: Request, res: Resource, ns: str | None) -> Response:
        lsel, fsel = self._selectors(req)
        rv_param = req.query.get("resourceVersion", "")
        try:
            timeout = float(req.query.get("timeoutSeconds") or 1800)
        except ValueError:
            timeout = 1800.0
        try:
            since = int(rv_param) if rv_param not in ("", "0") else None
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"invalid resource version: {rv_param}") from e
        bookmarks = req.query.get("allowWatchBookmarks") in ("1", "true")
        # v1.1 app watch (rest.go Watch): a fresh cache watch that re-sends current objects newer
        # than the resourceVersion as ADDED; never DELETED for the gap, never 410, no bookmarks.
        cache_watch = res.is_app and self.v11
        if cache_watch:
            bookmarks = False
        # WatchList (kubectl >= 1.32 `wait`, informers): initial state, then a bookmark
        # annotated k8s.io/initial-events-end, or the client waits forever.
        send_initial = req.query.get("sendInitialEvents") == "true"
        if send_initial:
            since = None

        def match(obj: dict[str, Any], obj_ns: str) -> bool:
            if ns is not None and obj_ns != ns:
                return False
            return not ((lsel and not lsel(obj)) or (fsel and not fsel(obj)))

        def line(etype: str, raw: bytes) -> bytes:
            return b'{"type":"' + etype.encode() + b'","object":' + raw + b"}\n"

        def gen() -> Iterator[bytes]:
            deadline = time.monotonic() + timeout
            with self.store.lock:
                if since is None:
                    last = self.store.rv
                    initial = [
                        line("ADDED", self.store.raw(res.key, k))
                        for k, o in self.store.iter_objects(res.key)
                        if match(o, k[0])
                    ]
                elif cache_watch:
                    last = self.store.rv
                    initial = [
                        line("ADDED", self.store.raw(res.key, k))
                        for k, o in self.store.iter_objects(res.key)
                        if match(o, k[0]) and int(o["metadata"]["resourceVersion"]) > since
                    ]
                else:
                    last = since
                    initial = []
                    if since < self.store.compacted_rv:
                        err = ApiError(
                            410,
                            "Expired",
                            f"too old resource version: {since} ({self.store.compacted_rv})",
                        ).status()
                        yield line("ERROR", dumps(err))
                        return
            if send_initial:
                initial.append(
                    line(
                        "BOOKMARK",
                        dumps(
                            {
                                "kind": res.kind,
                                "apiVersion": res.api_version,
                                "metadata": {
                                    "resourceVersion": str(last),
                                    "annotations": {"k8s.io/initial-events-end": "true"},
                                },
                            }
                        ),
                    )
                )
            if initial:
                yield b"".join(initial)
            last_bookmark = time.monotonic()
            while not self.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                with self.store.cond:
                    evs = self.store.events_since(last)
                    if not evs:
                        self.store.cond.wait(min(remaining, 1.0))
                        evs = self.store.events_since(last)
                    out = []
                    for ev in evs:
                        last = ev.rv
                        if ev.res == res.key and match(ev.obj, ev.ns):
                            out.append(line(ev.type, ev.raw))
                    current_rv = self.store.rv
                if out:
                    yield b"".join(out)
                elif bookmarks and time.monotonic() - last_bookmark > 5:
                    last_bookmark = time.monotonic()
                    yield line(
                        "BOOKMARK",
                        dumps(
                            {
                                "kind": res.kind,
                                "apiVersion": res.api_version,
                                "metadata": {"resourceVersion": str(current_rv)},
                            }
                        ),
                    )

        return Response(200, stream=gen())

    # --- writes ------------------------------------------------------------------------
    def _body(self, req: Request) -> Any:
        ctype = req.headers.get("content-type", JSON).split(";")[0].strip()
        try:
            if "yaml" in ctype:
                return yaml.safe_load(req.body.decode() or "null")
            return json.loads(req.body or b"null")
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"error decoding request body: {e}") from e

    def _strict_check(
        self, req: Request, obj: dict[str, Any], res: Resource | None = None
    ) -> list[str]:
        allowed = ALLOWED_TOP | set(res.top_fields if res else ())
        unknown = [f'unknown field "{k}"' for k in obj if k not in allowed]
        md = obj.get("metadata")
        if isinstance(md, dict):
            unknown += [f'unknown field "metadata.{k}"' for k in md if k not in ALLOWED_META]
        mode = req.query.get("fieldValidation", "Warn")
        if unknown and mode == "Strict":
            raise ApiError(400, "BadRequest", "strict decoding error: " + ", ".join(unknown))
        return unknown if mode != "Ignore" else []

    def _invalid(self, res: Resource, name: str, causes: list[dict[str, str]]) -> ApiError:
        return ApiError(
            422,
            "Invalid",
            f'{res.kind}.{res.group} "{name}" is invalid: {schemas.describe(causes)}',
            {"name": name, "group": res.group, "kind": res.kind, "causes": causes},
        )

    def _admit(
        self, res: Resource, obj: dict[str, Any], name: str, create: bool = True
    ) -> dict[str, Any]:
        """What cozystack-api checks (rest.go Create/Update): the name on create and reserved
        `_` keys; the spec itself goes into the HelmRelease values unchecked and undefaulted
        (Helm's schema check fails later, see the reconciler). Defaults are only shown on reads,
        as the conversion does (rest_defaulting.go `applySpecDefaults`)."""
        spec = obj.get("spec")
        if spec is None:
            spec = {}
        causes = schemas.validate_name(name, res.prefix) if create else []
        if causes:
            raise self._invalid(res, name, causes)
        if not isinstance(spec, dict):
            raise self._invalid(res, name, schemas.validate_spec(spec, res.schema))
        for key in spec:
            if key.startswith("_"):
                raise ApiError(
                    400,
                    "BadRequest",
                    f"values key {json.dumps(key)} is reserved (keys starting with '_' are "
                    "not allowed)",
                )
        return copy.deepcopy(spec)

    def _admit_quota(self, res: Resource, obj: dict[str, Any], name: str) -> dict[str, Any]:
        """``ValidateResourceQuota``: the hard limits must be quantities (names with a domain,
        ``requests.nvidia.com/X`` or ``nvidia.com/X``, are all accepted; only the former is
        enforced, see quota.py)."""
        spec = obj.get("spec") or {}
        if not isinstance(spec, dict):
            spec = {"hard": spec}
        causes = quota.validate_hard(spec.get("hard"))
        if causes:
            raise self._invalid(res, name, causes)
        return copy.deepcopy(spec)

    def quota_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        """What the quota controller writes (caller holds the lock): done at once here, so the
        admission never sees a quota without status (the real one answers ``status unknown for
        quota`` for a moment)."""
        ns = obj["metadata"]["namespace"]
        used = quota.usage(pod for _, pod in self.store.iter_objects(PODS.key, ns))
        return quota.status(obj, used)

    def _admit_object(self, res: Resource, name: str) -> Any:
        """A plain Kubernetes object's name: a DNS-1123 subdomain (instance types have dots)."""
        if len(name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(name):
            raise self._invalid(
                res,
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.name",
                        "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                        "consist of lower case alphanumeric characters, '-' or '.', and must "
                        "start and end with an alphanumeric character",
                    }
                ],
            )
        return None

    def _check_type(self, res: Resource, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        if obj.get("kind") not in (None, res.kind) or obj.get("apiVersion") not in (
            None,
            res.api_version,
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match "
                f"the expected API version ({res.api_version})",
            )
        if "metadata" in obj and not isinstance(obj["metadata"], dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        return obj

    def _random_suffix(self) -> str:
        with self.rng_lock:
            return "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))

    def _create(self, req: Request, res: Resource, ns: str | None, obj: Any = None) -> Response:
        obj = self._check_type(res, self._body(req) if obj is None else obj)
        warnings = self._strict_check(req, obj, res)
        md = obj.get("metadata") or {}
        if md.get("namespace") and ns and md["namespace"] != ns:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace "
                "sent on the request",
            )
        name = md.get("name") or ""
        if not name and md.get("generateName"):
            name = md["generateName"] + self._random_suffix()
        if not name:
            raise self._invalid(
                res,
                "",
                [
                    {
                        "reason": "FieldValueRequired",
                        "field": "metadata.name",
                        "message": "Required value: name or generateName is required",
                    }
                ],
            )
        if res.is_app:
            spec = self._admit(res, obj, name)
        else:
            self._admit_object(res, name)
            spec = self._admit_quota(res, obj, name) if res is RESOURCEQUOTAS else None
        with self.store.lock:
            if ns and self.store.get(NAMESPACES.key, "", ns) is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{ns}" not found',
                    {"name": ns, "kind": "namespaces"},
                )
            if self.store.get(res.key, ns or "", name) is not None:
                if not res.is_app:
                    raise ApiError(
                        409,
                        "AlreadyExists",
                        f'{res.group_resource} "{name}" already exists',
                        _details(res, name),
                    )
                # Also while it is Terminating: the HelmRelease still exists.
                raise helm_release_error(res, name, "create", True)
            now = self.clock.now()
            new_md: dict[str, Any] = {
                "name": name,
                "namespace": ns or "",
                "uid": stable_uuid("obj", res.key, ns, name, now, self._random_suffix()),
                "creationTimestamp": now_rfc3339(now),
            }
            for k in KEPT_META:
                if md.get(k):
                    new_md[k] = copy.deepcopy(md[k])
            new = {
                "apiVersion": res.api_version,
                "kind": res.kind,
                "metadata": new_md,
                "spec": spec,
                # A HelmRelease helm-controller has not looked at yet: no conditions; and no
                # generation (ConvertHelmReleaseToApplication does not copy it).
                "status": {},
            }
            if res is RESOURCEQUOTAS:
                new["status"] = self.quota_status(new)
            elif not res.is_app:  # a catalogue object (admins): kept as sent
                new = {
                    **{k: copy.deepcopy(v) for k, v in obj.items() if k not in ("status",)},
                    "apiVersion": res.api_version,
                    "kind": res.kind,
                    "metadata": new_md,
                }
                if res.key == DATAVOLUMES.key:  # CDI's import is not modelled: done at once
                    new["status"] = {"phase": "Succeeded", "progress": "100.0%", "claimName": name}
            if req.query.get("dryRun") == "All":
                new_md["resourceVersion"] = ""
                return self._with_warnings(Response(201, self.store.shown(res.key, new)), warnings)
            stored = self.store.put(res.key, new)
            if res.is_app:
                self._remember(res, ns or "", name, None)
            return self._with_warnings(
                Response(201, self.store.raw(res.key, (ns or "", name)) if stored else b""),
                warnings,
            )

    @staticmethod
    def _with_warnings(resp: Response, warnings: list[str]) -> Response:
        if warnings:
            resp.headers["Warning"] = ", ".join(f'299 - "{w}"' for w in warnings)
        return resp

    def _replace(
        self,
        req: Request,
        res: Resource,
        ns: str | None,
        name: str,
        new: dict[str, Any],
        cur: dict[str, Any],
        require_rv: bool,
    ) -> Response:
        """Shared by PUT and PATCH (caller holds the lock)."""
        warnings = self._strict_check(req, new)
        md = new.get("metadata") or {}
        if md.get("name") not in (None, name):
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({md.get('name')}) does not match the name "
                f"on the URL ({name})",
            )
        rv = md.get("resourceVersion")
        if require_rv and not rv:
            raise self._invalid(
                res,
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.resourceVersion",
                        "message": "Invalid value: 0x0: must be specified for an update",
                    }
                ],
            )
        if rv and rv != cur["metadata"]["resourceVersion"]:
            if res.is_app:
                raise helm_release_error(res, name, "update", True)
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.group_resource} "{name}": the '
                "object has been modified; please apply your changes to the latest "
                "version and try again",
                _details(res, name),
            )
        out_md = copy.deepcopy(cur["metadata"])
        for k in KEPT_META:
            if md.get(k):
                out_md[k] = copy.deepcopy(md[k])
            else:
                out_md.pop(k, None)
        out = dict(cur, metadata=out_md)
        if res.is_app:
            out["spec"] = self._admit(res, new, name, create=False)
        elif res is RESOURCEQUOTAS:
            out["spec"] = self._admit_quota(res, new, name)
            out["status"] = self.quota_status(out)
        elif res.key == NODES.key:
            out["spec"] = spec = copy.deepcopy(new.get("spec") or {})
            # The node lifecycle controller mirrors cordoning into a NoSchedule taint.
            taints = [t for t in spec.get("taints") or [] if t.get("key") != UNSCHEDULABLE_TAINT]
            if spec.get("unschedulable"):
                taints.append(
                    {
                        "key": UNSCHEDULABLE_TAINT,
                        "effect": "NoSchedule",
                        "timeAdded": now_rfc3339(self.clock.now()),
                    }
                )
            if taints:
                spec["taints"] = taints
            else:
                spec.pop("taints", None)
        if out == cur:
            return self._with_warnings(
                Response(200, self.store.raw(res.key, (ns or "", name))), warnings
            )
        if req.query.get("dryRun") == "All":
            return self._with_warnings(Response(200, self.store.shown(res.key, out)), warnings)
        self.store.put(res.key, out)
        if res.is_app:
            self._remember(res, ns or "", name, cur)
        return self._with_warnings(
            Response(200, self.store.raw(res.key, (ns or "", name))), warnings
        )

    def _update(self, req: Request, res: Resource, ns: str | None, name: str) -> Response:
        new = self._check_type(res, self._body(req))
        with self.store.lock:
            cur = self.store.get(res.key, ns or "", name)
            if res.is_app:
                # rest.go Update starts with r.Get from the cache.
                _, cached = self._cached(res, ns or "", name, cur)
                if cached is None:
                    cur = None
            if cur is None:
                raise not_found(res, name)
            return self._replace(req, res, ns, name, new, cur, require_rv=True)

    def _patch(self, req: Request, res: Resource, ns: str | None, name: str) -> Response:
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        patch = self._body(req)
        with self.store.lock:
            cur = self.store.get(res.key, ns or "", name)
            if ctype == "application/apply-patch+yaml":
                if not req.query.get("fieldManager"):
                    raise ApiError(
                        422,
                        "Invalid",
                        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                        "value: is required for apply patch",
                        {
                            "group": "meta.k8s.io",
                            "kind": "PatchOptions",
                            "causes": [
                                {
                                    "reason": "FieldValueRequired",
                                    "message": "Required value: is required for apply patch",
                                    "field": "fieldManager",
                                }
                            ],
                        },
                    )
                if cur is None:
                    if not isinstance(patch, dict):
                        raise ApiError(400, "BadRequest", "invalid apply configuration")
                    patch.setdefault("metadata", {})["name"] = name
                    resp = self._create(req, res, ns, patch)
                    return Response(201, resp.body, resp.headers)
            stale = False
            if res.is_app and cur is not None:
                # The patch applies to what the cache shows; a stale copy's resourceVersion
                # then fails the HelmRelease update.
                stale, cached = self._cached(res, ns or "", name, cur)
                if cached is None:
                    if ctype == "application/apply-patch+yaml":
                        # Update found nothing, so server-side apply creates: AlreadyExists.
                        raise helm_release_error(res, name, "create", True)
                    cur = None
            if cur is None:
                raise not_found(res, name)
            if stale:
                raise helm_release_error(res, name, "update", True)
            # rest.go Update patches what r.Get returns: the defaulted spec. What it then
            # stores is that, plus the patch (a group the patch adds stays as sent); so even a
            # patch that changes nothing a GET shows writes the defaults into the values.
            base = self.store.views[res.key](cur) if res.is_app else cur
            try:
                if ctype == "application/json-patch+json":
                    new = json_patch(base, patch)
                elif ctype in (
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                    "application/apply-patch+yaml",
                ):
                    if not isinstance(patch, dict):
                        raise PatchError("a merge patch must be an object")
                    # Apply: the applied configuration's fields win; no field ownership is tracked.
                    if ctype == "application/apply-patch+yaml":
                        patch = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
                        patch.get("metadata", {}).pop("resourceVersion", None)
                    new = merge_patch(base, patch)
                else:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - "
                        "accepted media types include: application/json-patch+json, "
                        "application/merge-patch+json, application/apply-patch+yaml",
                    )
            except PatchError as e:
                raise ApiError(
                    422 if ctype == "application/json-patch+json" else 400,
                    "Invalid" if ctype == "application/json-patch+json" else "BadRequest",
                    str(e),
                ) from e
            if not isinstance(new, dict):
                raise ApiError(400, "BadRequest", "patch result is not an object")
            return self._replace(req, res, ns, name, new, cur, require_rv=False)

    def _delete(self, req: Request, res: Resource, ns: str | None, name: str) -> Response:
        opts = {}
        if req.body:
            try:
                opts = json.loads(req.body) or {}
            except ValueError:
                opts = {}
        with self.store.lock:
            cur = self.store.get(res.key, ns or "", name)
            if cur is None:
                raise not_found(res, name)
            pre = (opts.get("preconditions") or {}) if isinstance(opts, dict) else {}
            if (pre.get("uid") and pre["uid"] != cur["metadata"].get("uid")) or (
                pre.get("resourceVersion")
                and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]
            ):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {res.group_resource} "{name}": '
                    "Precondition failed",
                    _details(res, name),
                )
            if req.query.get("dryRun") == "All":
                return Response(200, self.store.raw(res.key, (ns or "", name)))
            if res.is_app:
                self._terminate(res, cur)
                return self._json(self._deleted_status(res, name))
            gone = self.store.delete(res.key, ns or "", name)
        return Response(200, dumps(gone))

    def _terminate(self, res: Resource, cur: dict[str, Any]) -> None:
        """Deleting the HelmRelease only marks it: helm-controller's finalizer uninstalls and
        Helm waits for the resources to go (the reconciler removes the object then)."""
        if cur["metadata"].get("deletionTimestamp"):
            return
        md = dict(cur["metadata"])
        md["deletionTimestamp"] = now_rfc3339(self.clock.now())
        md["deletionGracePeriodSeconds"] = 0
        md["finalizers"] = ["finalizers.fluxcd.io"]
        self.store.put(res.key, dict(cur, metadata=md))

    @staticmethod
    def _deleted_status(res: Resource, name: str) -> dict[str, Any]:
        # rest.go Delete returns (nil, true): the apiserver answers a plain success Status.
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": res.group, "kind": res.plural},
        }

    def _delete_collection(self, req: Request, res: Resource, ns: str | None) -> Response:
        lsel, fsel = self._selectors(req)
        with self.store.lock:
            victims = [
                k
                for k, o in self.store.iter_objects(res.key, ns)
                if not ((lsel and not lsel(o)) or (fsel and not fsel(o)))
            ]
            if res.is_app:
                for k in victims:
                    self._terminate(res, self.store.get(res.key, *k))  # type: ignore[arg-type]
                items = [self.store.get(res.key, *k) for k in victims]
            else:
                items = [self.store.delete(res.key, *k) for k in victims]
        return self._json(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": items,
            }
        )


def _defaulted_view(schema: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def view(obj: dict[str, Any]) -> dict[str, Any]:
        spec = obj.get("spec")
        return dict(obj, spec=schemas.default_spec(spec if isinstance(spec, dict) else {}, schema))

    return view


def random_token(rng: random.Random, n: int = 40) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def _json_or_none(body: bytes | None) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return None


def _body_name(body: bytes) -> str:
    """metadata.name of a create's body, for the audit log ("" when unreadable)."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return ""
    return str(((doc if isinstance(doc, dict) else {}).get("metadata") or {}).get("name") or "")
