"""One retry policy for every caller: exponential backoff with a cap, Retry-After honoured.

Each caller brings its own numbers: the inventory sync rests a failing cluster (from its sync
interval up to ``INVENTORY_SYNC_BACKOFF_MAX_SECONDS``), an operation's apply retries (from 2 s up
to ``OPERATION_RETRY_MAX_SECONDS``), a page of a list retries in place (``with_retries``, with
jitter), a metrics collection retries (from 5 s up to the collection interval). Plain Python,
so the kube boundary and the metric sources share it.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

# 2**64 x any base is past every cap; a bigger exponent would only risk a float overflow.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True)
class Backoff:
    base: float  # seconds before the first retry
    cap: float  # the longest wait, Retry-After included

    def delay(self, retry: int, retry_after: float | None = None, jitter: float = 1.0) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first).

        ``base x 2^retry`` up to the cap, times ``jitter`` (a factor that spreads clients which
        failed together); never sooner than the server's Retry-After, and never past the cap,
        so a server cannot park a job for an hour.
        """
        grown = self.base * 2 ** min(max(retry, 0), _MAX_DOUBLINGS)
        wait = min(self.cap, grown) * jitter
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.cap)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
