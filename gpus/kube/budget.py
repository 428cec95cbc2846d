"""One retry budget for a whole job (an inventory sync), whatever the number of requests.

Page-level retries (``with_retries``) keep a 429 in a 12,500-node list from restarting the list,
but per page they multiply: 5 tries x 25 pages x task retries. A ``BudgetedSession`` wraps the
cluster's ``Session``: every transient failure draws on one budget, the first one is reported at
once (``on_first_failure``), and once the budget is spent the next failure raises
``RetryBudgetSpent``, which is not transient, so nothing retries it: the job gives up and the
caller backs off the cluster as a whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gpus.kube.client import Session
from gpus.kube.errors import ExpiredError, KubeError, TransientError


class RetryBudgetSpent(KubeError):
    """The job's transient failures used up its retries; ``cause`` is the last one."""

    def __init__(self, cause: TransientError, failures: int) -> None:
        super().__init__(
            f"Gave up after {failures} failed requests: {cause}",
            status=cause.status,
            reason=cause.reason,
        )
        self.cause = cause
        self.failures = failures
        # What the server last asked for, so the caller's backoff honours it.
        self.retry_after = cause.retry_after


class RetryBudget:
    def __init__(
        self,
        retries: int,
        on_first_failure: Callable[[TransientError], None] | None = None,
    ) -> None:
        self.retries = retries
        self.failures = 0
        self.on_first_failure = on_first_failure
        self._lock = threading.Lock()

    def spend(self, exc: TransientError) -> None:
        """Count a failure; raise ``RetryBudgetSpent`` if no retry is left for it."""
        with self._lock:
            self.failures += 1
            failures = self.failures
        if failures == 1 and self.on_first_failure is not None:
            self.on_first_failure(exc)
        if failures > self.retries:
            raise RetryBudgetSpent(exc, failures) from exc


class BudgetedSession:
    """A ``Session`` whose transient failures draw on one ``RetryBudget``."""

    def __init__(self, session: Session, budget: RetryBudget) -> None:
        self.session = session
        self.budget = budget

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def _guard(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ExpiredError:
            raise  # an expired continue token is not the cluster failing: the list restarts
        except TransientError as exc:
            self.budget.spend(exc)
            raise

    def call(self, *args: Any, **kwargs: Any) -> Any:
        return self._guard(self.session.call, *args, **kwargs)

    def call_json(self, *args: Any, **kwargs: Any) -> Any:
        return self._guard(self.session.call_json, *args, **kwargs)

    def request_json(self, *args: Any, **kwargs: Any) -> Any:
        return self._guard(self.session.request_json, *args, **kwargs)
