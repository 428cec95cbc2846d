"""The embedded broker writes each message whole before a worker can see it (kombu's filesystem
transport lets a polling worker take a message file before it is written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import filesystem

from hikube_portal import broker

QUEUE = "celery"


def _visible_while_writing(
    monkeypatch: pytest.MonkeyPatch, module: Any, transport: Any, folder: Path
) -> list[tuple[str, int]]:
    """Put one message; return the queue's message files (name, size) a reader could take
    at the moment the payload is being serialised, i.e. after the file was opened."""
    seen: list[tuple[str, int]] = []
    real_dumps = module.dumps

    def dumps(payload: Any) -> str:
        seen.extend((p.name, p.stat().st_size) for p in folder.iterdir() if p.name.endswith(".msg"))
        return real_dumps(payload)

    monkeypatch.setattr(module, "dumps", dumps)
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with Connection(transport=transport, transport_options=options) as conn:
        channel = conn.default_channel
        channel._put(QUEUE, {"body": "hello"})
        assert channel._get(QUEUE) == {"body": "hello"}
    return seen


def test_upstream_transport_shows_an_empty_message_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Why hikube_portal.broker exists: upstream, a worker can see the file while it is empty.
    seen = _visible_while_writing(monkeypatch, filesystem, filesystem.Transport, tmp_path)
    assert seen and seen[0][1] == 0


def test_portal_transport_shows_no_message_until_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert _visible_while_writing(monkeypatch, broker, broker.Transport, tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
