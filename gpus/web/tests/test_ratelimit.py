"""The per-key rate limit (gpus.web.ratelimit) on Django's cache: a sliding window, so the
limit holds across a window's end."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from gpus.web import ratelimit

# It counts in the cache, which the embedded pass swaps: marked like the database tests.
pytestmark = pytest.mark.django_db


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 60 * 16_667 + 58.0}  # two seconds before a window ends
    monkeypatch.setattr(ratelimit.time, "time", lambda: now["t"])
    cache.clear()
    return now


def test_the_limit_holds_across_the_end_of_a_window(clock) -> None:
    key = "test:across"
    assert ratelimit.hit(key, 2) == 0
    assert ratelimit.hit(key, 2) == 0
    clock["t"] += 3  # one second into the next window: both hits are 3 s old
    wait = ratelimit.hit(key, 2)
    # A fixed window would let it through; the last 60 s already hold two hits.
    assert wait > 0
    # The wait is until the hits so far (the refused one counts too) leave room for one more.
    clock["t"] += wait - 2
    assert ratelimit.hit(key, 3) > 0
    clock["t"] += 2
    assert ratelimit.hit(key, 4) == 0


def test_within_the_limit_nothing_waits_and_past_it_the_wait_is_at_most_a_window(clock) -> None:
    key = "test:plain"
    assert [ratelimit.hit(key, 3) for _ in range(3)] == [0, 0, 0]
    wait = ratelimit.hit(key, 3)
    assert 1 <= wait <= 60
    clock["t"] += 121  # two windows later nothing is left
    assert ratelimit.hit(key, 3) == 0
