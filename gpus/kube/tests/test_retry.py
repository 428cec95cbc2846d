"""The one retry policy: exponential backoff with a cap, Retry-After honoured."""

from __future__ import annotations

from gpus.kube.retry import Backoff, parse_retry_after


def test_doubles_from_the_base_up_to_the_cap():
    # The inventory sync's numbers: its 30 s interval, up to 600 s.
    sync = Backoff(30, 600)
    assert [sync.delay(n) for n in range(7)] == [30, 60, 120, 240, 480, 600, 600]
    # An operation's apply: 2 s after the first attempt, up to 30 s.
    apply = Backoff(2, 30)
    assert [apply.delay(n) for n in range(6)] == [2, 4, 8, 16, 30, 30]
    assert apply.delay(10_000) == 30  # no overflow however long it has failed


def test_retry_after_is_a_floor_and_the_cap_still_holds():
    policy = Backoff(2, 30)
    assert policy.delay(0, retry_after=7) == 7
    assert policy.delay(3, retry_after=1) == 16  # a busy server is not hammered faster
    assert policy.delay(0, retry_after=3600) == 30  # nor can it park the job for an hour
    assert policy.delay(0, retry_after=0) == 2


def test_jitter_scales_the_backoff_not_the_servers_word():
    policy = Backoff(1, 30)
    assert policy.delay(2, jitter=0.5) == 2
    assert policy.delay(2, retry_after=3, jitter=0.5) == 3


def test_retry_after_in_seconds_or_as_a_date():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("") is None and parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
