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
        self.cpu = [0.0, 0.0, 0.0]  # the thread's CPU time: what a loaded machine does not inflate
        self.count = [0, 0, 0]
        self.longest = self.longest_cpu = 0.0
        self._start = self._start_cpu = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start, self._start_cpu = time.perf_counter(), time.thread_time()
            return
        took, cpu = time.perf_counter() - self._start, time.thread_time() - self._start_cpu
        generation = info.get("generation", 2)
        self.seconds[generation] += took
        self.cpu[generation] += cpu
        self.count[generation] += 1
        self.longest = max(self.longest, took)
        self.longest_cpu = max(self.longest_cpu, cpu)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def report(self) -> dict[str, Any]:
        return {"gc_seconds": list(self.seconds), "gc_cpu": list(self.cpu), "gc_count": list(self.count),
                "gc_longest": self.longest, "gc_longest_cpu": self.longest_cpu}


class Spans:
    """Durations of one kind of work in one thread (wall and the thread's CPU seconds), for
    percentiles: `began()` before, `add(*began)` after."""

    def __init__(self) -> None:
        self.spans, self.cpu_spans = array("d"), array("d")
        self.total = self.cpu = 0.0
        self.n = 0

    @staticmethod
    def began() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def add(self, wall0: float, cpu0: float) -> None:
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        if len(self.spans) >= MAX_SPANS:
            del self.spans[: MAX_SPANS // 2]
            del self.cpu_spans[: MAX_SPANS // 2]
        self.spans.append(wall)
        self.cpu_spans.append(cpu)
        self.total += wall
        self.cpu += cpu
        self.n += 1

    def report(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {f"{name}_n": self.n, f"{name}_seconds": self.total, f"{name}_cpu": self.cpu}
        for kind, spans in (("", self.spans), ("_cpu", self.cpu_spans)):
            ordered = sorted(spans)
            for label, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
                out[f"{name}{kind}_{label}"] = ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0
        return out
