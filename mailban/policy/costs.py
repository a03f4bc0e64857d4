"""What the policy service's process spends besides answering: the cycle collector's pauses and
the loop turns spent saving windows, measured in the child and reported to the daemon on request
(bench/policy.py prints them; they do not depend on how loaded the machine is, unlike latency).

Inputs: gc.callbacks' start/stop calls (`GcTimer`), the durations the loop hands to `Spans`.
Outputs: `report()`, a dict of plain numbers.
Must never: keep unbounded memory (Spans keeps the last MAX_SPANS in an array of doubles, which
the collector does not traverse) or cost a request more than two clock reads per collection.
"""

from __future__ import annotations

import gc
import time
from array import array
from typing import Any

MAX_SPANS = 1 << 17


class GcTimer:
    """Times every collection: seconds and count per generation, the longest pause."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self.longest = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        took = time.perf_counter() - self._start
        generation = info.get("generation", 2)
        self.seconds[generation] += took
        self.count[generation] += 1
        if took > self.longest:
            self.longest = took

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def report(self) -> dict[str, Any]:
        return {"gc_seconds": list(self.seconds), "gc_count": list(self.count), "gc_longest": self.longest}


class Spans:
    """Durations of one kind of work (seconds), for percentiles."""

    def __init__(self) -> None:
        self.spans = array("d")
        self.total = 0.0
        self.n = 0

    def add(self, seconds: float) -> None:
        if len(self.spans) >= MAX_SPANS:
            del self.spans[: MAX_SPANS // 2]
        self.spans.append(seconds)
        self.total += seconds
        self.n += 1

    def report(self, name: str) -> dict[str, Any]:
        ordered = sorted(self.spans)

        def at(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0

        return {f"{name}_n": self.n, f"{name}_seconds": self.total, f"{name}_p50": at(0.5),
                f"{name}_p99": at(0.99), f"{name}_max": at(1.0)}
