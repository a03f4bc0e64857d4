"""A progress bar for `mailban test` and `replay` on large inputs: bytes done, lines/s, ETA.

Shown on standard error only when it is a terminal (piped or redirected output stays clean, and
standard output is never touched), redrawn at most ten times a second, erased at the end.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Iterator

MIN_BYTES = 8 << 20  # smaller inputs finish before a bar is worth drawing


class Progress:
    def __init__(self, paths: list[str], stream: IO[str] | None = None, force: bool = False) -> None:
        self.stream = stream or sys.stderr
        total = 0
        for path in paths:
            try:
                total += os.path.getsize(path) if path != "-" else 0
            except OSError:
                pass
        self.total = total
        self.enabled = force or (self.stream.isatty() and total >= MIN_BYTES)
        self.done_bytes = 0
        self.lines = 0
        self.started = time.monotonic()
        self.next_draw = 0.0
        self.drawn = False

    def advance(self, nbytes: int, lines: int) -> None:
        self.done_bytes += nbytes
        self.lines += lines
        now = time.monotonic()
        if now >= self.next_draw:
            self.next_draw = now + 0.1
            self.draw(now)

    def draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        share = min(self.done_bytes / self.total, 1.0) if self.total else 0.0
        rate = self.lines / elapsed
        eta = (elapsed / share - elapsed) if share > 0 else 0.0
        filled = int(share * 30)
        self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {share * 100:5.1f}%  "
                          f"{self.lines:,} lines  {rate:,.0f} lines/s  ETA {eta:,.0f}s ")
        self.stream.flush()
        self.drawn = True

    def lines_of(self, source: Iterator[bytes]) -> Iterator[bytes]:
        """Pass lines through, counting them (only wrapped in when the bar is shown)."""
        if not self.enabled:
            yield from source
            return
        nbytes = count = 0
        for line in source:
            nbytes += len(line) + 1
            count += 1
            if count == 20_000:
                self.advance(nbytes, count)
                nbytes = count = 0
            yield line
        self.advance(nbytes, count)

    def batches_of(self, source: Iterator[list[bytes]]) -> Iterator[list[bytes]]:
        """lines_of() for lists of lines."""
        if not self.enabled:
            yield from source
            return
        for lines in source:
            self.advance(sum(map(len, lines)) + len(lines), len(lines))
            yield lines

    def finish(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
