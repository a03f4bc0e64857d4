"""What the policy service's process spends besides answering: the cycle collector's pauses and
the loop turns spent saving windows, measured in the child and reported to the daemon on request
(bench/policy.py prints them; they do not depend on how loaded the machine is, unlike latency);
and how long the service held each request (Histogram: from the loop's wake-up that read it to
its answer written) and each loop turn, which tells the service's own delays from the client's.

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


class Histogram:
    """Durations counted in STEP-wide buckets up to STEP * BUCKETS (longer ones kept apart, in
    an array of doubles), for percentiles of something that happens per request: one index and
    one addition each, no allocation."""

    STEP = 25e-6
    BUCKETS = 800  # up to 20 ms

    def __init__(self) -> None:
        self.counts = array("L", [0] * self.BUCKETS)
        self.longer = array("d")
        self.n = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.n += 1
        i = int(seconds * 40000.0)  # / STEP, as a constant: this runs for every request
        if i < 800:
            self.counts[i] += 1
        else:
            if len(self.longer) < MAX_SPANS:
                self.longer.append(seconds)
            if seconds > self.max:
                self.max = seconds

    def percentile(self, p: float) -> float:
        """The upper edge of the bucket holding the p-th (0-1) duration (the duration itself past
        the buckets)."""
        if not self.n:
            return 0.0
        rank = min(self.n - 1, int(self.n * p))
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen > rank:
                return (i + 1) * self.STEP
        longer = sorted(self.longer)
        return longer[min(len(longer) - 1, rank - seen)] if longer else self.max

    def report(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {f"{name}_n": self.n}
        for label, p in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
            out[f"{name}_{label}"] = self.percentile(p)
        top = max((i for i, c in enumerate(self.counts) if c), default=-1)
        out[f"{name}_max"] = self.max if self.longer else (top + 1) * self.STEP
        return out
