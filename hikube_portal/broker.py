"""kombu's filesystem transport, with messages that appear whole.

Upstream `Channel._put` opens `<name>.msg` in the queue folder, then locks and writes it. A worker
polling the folder can move the file away between the open and the write and read an empty
message: `JSONDecodeError`, and the worker's consumer dies for good (seen under `make run` and in
the embedded test pass). Here the message is written under a name the reader skips, then renamed
into place, which is atomic on one filesystem (`os.replace`)."""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Starts with a dot and ends in .part: `_get` only takes `<stamp>_<uuid>.<queue>.msg`.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
