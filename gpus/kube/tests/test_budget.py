"""One retry budget for a whole sync: bounded retries, the first failure reported at once."""

from __future__ import annotations

import pytest

from gpus.kube.budget import BudgetedSession, RetryBudget, RetryBudgetSpent
from gpus.kube.errors import ExpiredError, TransientError
from gpus.kube.gateway import with_retries


class FlakySession:
    """Fails the first `failures` calls with a 503, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def call_json(self, fn, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError("HTTP 503: unavailable", status=503)
        return {"items": [{"n": self.calls}]}


def test_retries_within_the_budget_succeed_and_the_first_failure_is_reported_once():
    reported = []
    budget = RetryBudget(3, on_first_failure=reported.append)
    session = BudgetedSession(FlakySession(failures=2), budget)  # type: ignore[arg-type]
    result = with_retries(lambda: session.call_json(None), attempts=5, sleep=lambda s: None)
    assert result == {"items": [{"n": 3}]}
    assert budget.failures == 2 and len(reported) == 1 and reported[0].status == 503


def test_the_budget_is_shared_by_all_pages_and_then_nothing_retries():
    class TwoBadPatches(FlakySession):
        def call_json(self, fn, *args, **kwargs):
            self.calls += 1
            if self.calls in (1, 2, 4, 5, 6):
                raise TransientError("HTTP 503: unavailable", status=503)
            return {"items": [{"n": self.calls}]}

    budget = RetryBudget(3)
    flaky = TwoBadPatches(0)
    session = BudgetedSession(flaky, budget)  # type: ignore[arg-type]
    # Page 1: two failures, then it answers (2 of 3 retries spent).
    assert with_retries(lambda: session.call_json(None), attempts=5, sleep=lambda s: None)
    # Page 2: one more retry is left; the next failure ends the sync although the page
    # itself had tries left.
    with pytest.raises(RetryBudgetSpent) as caught:
        with_retries(lambda: session.call_json(None), attempts=5, sleep=lambda s: None)
    assert flaky.calls == 5 and budget.failures == 4
    assert caught.value.cause.status == 503
    assert "Gave up after 4 failed requests" in str(caught.value)
    assert not isinstance(caught.value, TransientError)  # nothing above retries it again


def test_an_expired_continue_token_does_not_draw_on_the_budget():
    class Expiring:
        def call_json(self, *a, **k):
            raise ExpiredError("continue token expired", status=410)

    budget = RetryBudget(0)
    with pytest.raises(ExpiredError):
        BudgetedSession(Expiring(), budget).call_json(None)  # type: ignore[arg-type]
    assert budget.failures == 0
