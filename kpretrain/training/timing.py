"""Where a unit's time goes: seconds in training and in evaluation, nested measurements subtracted."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict


class Clock:
    """`with clock.measure("training"): ...` adds the block's seconds, minus those of blocks measured inside it."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.started = time.perf_counter()
        self._inner: list[float] = []

    @contextlib.contextmanager
    def measure(self, what: str):
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            inner = self._inner.pop()
            total = time.perf_counter() - start
            self.seconds[what] += total - inner
            if self._inner:
                self._inner[-1] += total

    def split(self) -> dict[str, float]:
        """{training, evaluation, other, total} seconds since the clock was made."""
        total = time.perf_counter() - self.started
        training, evaluation = self.seconds.get("training", 0.0), self.seconds.get("evaluation", 0.0)
        return {"training": round(training, 3), "evaluation": round(evaluation, 3),
                "other": round(max(0.0, total - training - evaluation), 3), "total": round(total, 3)}


def measure(clock: Clock | None, what: str):
    """`clock.measure(what)`, or a no-op without a clock."""
    return clock.measure(what) if clock is not None else contextlib.nullcontext()
