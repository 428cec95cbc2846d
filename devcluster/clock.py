"""Wall clock that bootstrap can temporarily replace, so demo workloads look an hour old."""

from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self.fixed: float | None = None

    def now(self) -> float:
        return time.time() if self.fixed is None else self.fixed
