"""Assembly (store, fleet, reconciler, API, metrics, faults, state file) and the HTTP layer."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import metrics
from .api import Api, ApiError, Request, Response
from .catalogue import IMAGE_NAMESPACE, catalogue_objects
from .clock import Clock
from .faults import Faults
from .fleet import Fleet, load_fleet, make_namespace, make_node
from .kubeconfig import make_token, write_kubeconfig
from .rbac import Authorizer
from .reconciler import Reconciler
from .resources import NAMESPACES, NODES, resources_for
from .store import Store, dumps
from .tenant_api import PATH_PREFIX as TENANT_PATH_PREFIX
from .tenant_api import TenantApi

STATE_VERSION = 1


class DevCluster:
    """Everything but the socket: usable in-process (backfill, unit tests) or behind HTTPServer."""

    def __init__(
        self,
        fleet: str = "demo",
        flavour: str = "current",
        seed: int = 1,
        speed: float = 1.0,
        faults: dict[str, Any] | None = None,
        state_file: str | None = None,
        watch_history: int = 20000,
        knobs: dict[str, Any] | None = None,
    ) -> None:
        self.seed = seed
        self.flavour = flavour
        self.resources = resources_for(flavour)
        self.clock = Clock()
        self.store = Store(history=watch_history)
        self.faults = Faults(seed, faults, knobs)
        self.fleet: Fleet = load_fleet(fleet, flavour)
        self.admin_token = make_token(seed, "admin")
        self.tenant_tokens = {ns: make_token(seed, ns) for ns in self.fleet.tenants}
        self.portal_token = make_token(seed, "portal")
        self.auth = Authorizer(
            self.admin_token,
            self.tenant_tokens,
            lambda ns: self.store.get(NAMESPACES.key, "", ns) is not None,
            portal_token=self.portal_token,
        )
        self.reconciler = Reconciler(
            self.store, self.resources, self.clock, speed, seed, self.faults, flavour
        )
        self.api = Api(
            self.store, self.resources, self.auth, self.faults, self.clock, seed, speed, flavour
        )
        self.dcgm = metrics.Dcgm(self)
        self.tenant_api = TenantApi(self)
        self.api.extra_routes = [
            ("/devcluster/", self._admin_route),
            ("/dcgm/", self._dcgm_route),
            (TENANT_PATH_PREFIX, self.tenant_api.route),
        ]
        self.state_file = Path(state_file) if state_file else None
        self.port = 0
        self._saver: threading.Thread | None = None
        if self.state_file and self.state_file.exists():
            self._load_state()
        else:
            self._bootstrap()

    # --- bootstrap and state -----------------------------------------------------------
    def _bootstrap(self) -> None:
        now = time.time()
        created = now - 30 * 86400
        for ns in [*self.fleet.tenants, "default", "kube-system", "cozy-system", IMAGE_NAMESPACE]:
            if self.store.get(NAMESPACES.key, "", ns) is None:
                monitoring = self.fleet.monitoring.get(ns, "") if ns.startswith("tenant-") else None
                self.store.load_raw(NAMESPACES.key, make_namespace(ns, created, monitoring))
        for spec in self.fleet.nodes:
            self.store.load_raw(NODES.key, make_node(spec, self.seed, created))
        for key, obj in catalogue_objects(created):
            self.store.load_raw(key, obj)
        self.store.rv = 1
        if not self.fleet.workloads:
            return
        # Workloads are created through the API "an hour ago" and fast-forwarded: they come up
        # Running.
        start = now - 3600
        self.clock.fixed = start
        for manifest in self.fleet.workloads:
            self.create_manifest(manifest)
        self.reconciler.fast_forward(start, now - 60, step=20.0)
        self.api.recent.clear()  # bootstrap writes are long settled in the cache

    def create_manifest(self, manifest: dict[str, Any]) -> dict[str, Any]:
        api_version, kind = manifest.get("apiVersion", ""), manifest.get("kind", "")
        res = next(
            (r for r in self.resources if r.api_version == api_version and r.kind == kind), None
        )
        if res is None:
            raise ValueError(
                f"fleet workload: {api_version} {kind} is not served by flavour {self.flavour}"
            )
        ns = manifest.get("metadata", {}).get("namespace", "tenant-root")
        req = Request("POST", "", {}, {}, b"")
        resp = self.api._create(req, res, ns, json.loads(json.dumps(manifest)))
        return json.loads(resp.body)

    def _load_state(self) -> None:
        assert self.state_file is not None
        data = json.loads(self.state_file.read_text())
        if data.get("version") != STATE_VERSION:
            raise SystemExit(f"{self.state_file}: unsupported state version {data.get('version')}")
        self.store.restore(data["store"])
        self.reconciler.load_state(data["reconciler"])
        self.faults.set(data.get("faults") or {"rules": []})

    def save_state(self) -> None:
        if not self.state_file:
            return
        with self.store.lock:
            # Assemble from the cached per-object JSON: cheap even with 12,500 nodes.
            parts = []
            for res in list(self.store.objects):
                raws = [self.store.stored_raw(res, k) for k in self.store.sorted_keys(res)]
                parts.append(dumps(res) + b":[" + b",".join(raws) + b"]")
            store_json = (
                b'{"rv":' + str(self.store.rv).encode() + b',"objects":{' + b",".join(parts) + b"}}"
            )
            recon = dumps(self.reconciler.state())
            self.store.dirty.clear()
        body = (
            b'{"version":'
            + str(STATE_VERSION).encode()
            + b',"store":'
            + store_json
            + b',"reconciler":'
            + recon
            + b',"faults":'
            + dumps(self.faults.describe())
            + b"}"
        )
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_bytes(body)
        tmp.replace(self.state_file)

    def _save_loop(self) -> None:
        while not self.api.stopping.is_set():
            if self.store.dirty.wait(1.0) and not self.api.stopping.is_set():
                time.sleep(0.5)  # debounce bursts of writes
                self.save_state()

    # --- lifecycle ---------------------------------------------------------------------
    def start_background(self) -> None:
        self.reconciler.start()
        if self.state_file:
            self.save_state()
            self._saver = threading.Thread(target=self._save_loop, name="state-saver", daemon=True)
            self._saver.start()

    def shutdown(self) -> None:
        self.api.stopping.set()
        self.reconciler.stop()
        with self.store.cond:
            self.store.cond.notify_all()
        self.save_state()

    # --- admin endpoint ----------------------------------------------------------------
    def _admin_route(self, req: Request) -> Response:
        ident = self.auth.authenticate(req.headers.get("authorization"))
        if ident is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if not ident.cluster_admin:
            raise ApiError(
                403, "Forbidden", f'User "{ident.user}" cannot use the devcluster admin endpoint'
            )
        if req.path == "/devcluster/audit" and req.method == "GET":
            return Response(200, dumps({"items": list(self.api.audit)}))
        if req.path == "/devcluster/faults":
            if req.method in ("PUT", "POST"):
                try:
                    self.faults.set(json.loads(req.body or b"{}"))
                except (ValueError, TypeError) as e:
                    raise ApiError(400, "BadRequest", str(e)) from e
            elif req.method == "DELETE":
                self.faults.clear()
            self.store.dirty.set()
            return Response(200, dumps(self.faults.describe()))
        if req.path == "/devcluster/info":
            with self.store.lock:
                return Response(
                    200,
                    dumps(
                        {
                            "fleet": self.fleet.name,
                            "flavour": self.flavour,
                            "seed": self.seed,
                            "speed": self.reconciler.speed,
                            "nodes": self.store.count(NODES.key),
                            "resourceVersion": self.store.rv,
                            "tenants": sorted(self.tenant_tokens),
                            "units": {
                                k: {x: u[x] for x in ("phase", "node", "gpus")}
                                for k, u in self.reconciler.units.items()
                            },
                        }
                    ),
                )
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # --- DCGM: devcluster/metrics.py --------------------------------------------------
    def dcgm_targets(self, include_vms: bool = False) -> list[dict[str, Any]]:
        return self.dcgm.targets(include_vms)

    def _dcgm_route(self, req: Request) -> Response:
        return self.dcgm.route(req)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devcluster"
    sys_version = ""
    dc: DevCluster  # set on the subclass by serve()
    verbose = False

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        # A real apiserver reads each Impersonate-Group header as one group, commas included.
        groups = self.headers.get_all("Impersonate-Group") or []
        headers.pop("impersonate-group", None)
        resp = self.dc.api.handle(self.command, self.path, headers, body, groups)
        if resp.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if resp.stream is not None:
            self._stream(resp)
            return
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    def _stream(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()
        assert resp.stream is not None
        try:
            for chunk in resp.stream:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            close = getattr(resp.stream, "close", None)
            if close:
                close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")


def ensure_certificate(tls_dir: Path) -> Path:
    """A self-signed certificate for 127.0.0.1, localhost and devcluster, made once per directory.

    Generated with the system's openssl rather than shipped, so no private key lives in the repo.
    Returns the certificate path (the CA that kubeconfigs trust).
    """
    crt, key = tls_dir / "devcluster.crt", tls_dir / "devcluster.key"
    if not (crt.exists() and key.exists()):
        tls_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
             "-keyout", str(key), "-out", str(crt), "-days", "3650", "-subj", "/CN=devcluster",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:devcluster",
             "-addext", "basicConstraints=critical,CA:TRUE"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        key.chmod(0o600)
    return crt


def tls_context(tls_dir: Path) -> ssl.SSLContext:
    crt = ensure_certificate(tls_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, tls_dir / "devcluster.key")
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Server(ThreadingHTTPServer):
    """Plain HTTP and TLS on the same port: a connection starting with a TLS handshake gets TLS.

    kubectl (client-go's clientcmd) only sends a kubeconfig's bearer token over TLS, so the written
    kubeconfig uses https:// with the bundled dev certificate, while http:// keeps working for
    everything else (the Python client, curl, Prometheus).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    ssl_ctx: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = request
        try:
            request.settimeout(30)
            first = request.recv(1, socket.MSG_PEEK)
            request.settimeout(None)
            if first == b"\x16" and self.ssl_ctx is not None:
                conn = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()


def make_server(
    dc: DevCluster,
    port: int = 0,
    verbose: bool = False,
    host: str = "127.0.0.1",
    tls_dir: Path | None = None,
) -> Server:
    handler = type("BoundHandler", (Handler,), {"dc": dc, "verbose": verbose})
    srv = Server((host, port), handler)
    srv.ssl_ctx = tls_context(tls_dir or Path(default_kubeconfig_path()).parent / "tls")
    dc.port = srv.server_address[1]
    dc.api.host = f"127.0.0.1:{dc.port}"
    return srv


def default_kubeconfig_path() -> str:
    return os.path.join("var", "devcluster", "kubeconfig")


def run(args: Any) -> int:
    import signal

    faults = json.loads(args.faults) if args.faults else None
    dc = DevCluster(
        fleet=args.fleet,
        flavour=args.flavour,
        seed=args.seed,
        speed=args.speed,
        faults=faults,
        state_file=args.state,
        watch_history=args.watch_history,
        knobs={
            k[len("knob_") :]: v
            for k, v in vars(args).items()
            if k.startswith("knob_") and v is not None
        },
    )
    kubeconfig_out = Path(args.kubeconfig_out or default_kubeconfig_path())
    tls_dir = kubeconfig_out.parent / "tls"
    srv = make_server(dc, args.port, verbose=args.verbose, host=args.host, tls_dir=tls_dir)
    url = f"http://127.0.0.1:{dc.port}"
    path = write_kubeconfig(
        kubeconfig_out,
        args.kubeconfig_server or f"https://127.0.0.1:{dc.port}",
        dc.admin_token,
        dc.tenant_tokens,
        portal_token=dc.portal_token,
        ca_file=tls_dir / "devcluster.crt",
    )
    # Tenant clusters' admin kubeconfigs point at devcluster's tenant API (tenant_api.py).
    ca = base64.b64encode((tls_dir / "devcluster.crt").read_bytes()).decode()
    dc.reconciler.serve_tenant_apis(args.kubeconfig_server or f"https://127.0.0.1:{dc.port}", ca)
    dc.start_background()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
    )
    t.start()
    print(
        f"devcluster kubeconfig: {path.resolve()} (fleet {dc.fleet.name}, flavour {dc.flavour}, "
        f"{dc.store.count(NODES.key)} nodes)",
        flush=True,
    )
    print(f"devcluster listening on {url}", flush=True)
    stop.wait()
    dc.shutdown()
    srv.shutdown()
    srv.server_close()
    return 0
