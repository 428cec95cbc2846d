"""A tiny HTTP server standing in for the API server at the socket boundary.

It records each request (with repeated headers intact) and answers from a routing
function, so client-level behaviour (headers, timeouts, error bodies) is tested over a
real connection with the real kubernetes client, without devcluster.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Recorded:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: Any

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


Reply = tuple[int, Any, dict[str, str]]  # status, JSON body (or bytes), headers


@dataclass
class FakeApi:
    url: str
    kubeconfig: Path
    requests: list[Recorded] = field(default_factory=list)


def write_kubeconfig(path: Path, url: str, token: str = "t0ken", context: str = "fake") -> Path:  # noqa: S107
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": context, "context": {"cluster": "fake", "user": "u"}}],
                "current-context": context,
            }
        )
    )
    return path


@contextmanager
def fake_api(tmp_path: Path, route: Callable[[Recorded], Reply]) -> Iterator[FakeApi]:
    state: dict[str, FakeApi] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            rec = Recorded(
                self.command,
                self.path,
                list(self.headers.items()),
                json.loads(raw) if raw else None,
            )
            state["api"].requests.append(rec)
            status, body, headers = route(rec)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (timeout tests)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    state["api"] = FakeApi(url, write_kubeconfig(tmp_path / "kubeconfig", url))
    try:
        yield state["api"]
    finally:
        server.shutdown()
        server.server_close()
