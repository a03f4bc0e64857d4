"""Find-time windows: what a jail remembers about one key.

Two kinds with the same interface (add, expire, total, lines, ips, live_ips, total_since):
- RingWindow keeps (time, weight) per counted event, at most `limit` of them (every entry weighs
  at least one, so `limit = maxretry` entries are enough to decide): exact, for short windows.
- BucketWindow keeps one counter per `resolution` (e.g. an hour) instead of one entry per event:
  a day-long window is 24 small counters whatever the number of events, which is what lets a
  long-window jail follow hundreds of thousands of slow attackers. The window's edge moves a
  bucket at a time (an event counts for up to `resolution` longer than findtime).
Must never: read the clock or perform I/O.
"""

from __future__ import annotations

from collections import deque

MAX_LINES_KEPT = 20
MAX_IPS_KEPT = 4096


class _Common:
    __slots__ = ("lines", "ips")

    def __init__(self, keep_ips: bool) -> None:
        self.lines: deque[str] = deque(maxlen=MAX_LINES_KEPT)
        # address -> (last time, events from it since it entered the window)
        self.ips: dict[str, tuple[float, int]] | None = {} if keep_ips else None

    def _note(self, when: float, line: str, ip: str | None, horizon: float) -> None:
        self.lines.append(line)
        ips = self.ips
        if ips is not None and ip is not None:
            last = ips.pop(ip, None)
            ips[ip] = (when, last[1] + 1 if last is not None and last[0] > horizon else 1)
            if len(ips) > MAX_IPS_KEPT:
                del ips[next(iter(ips))]

    def live_ips(self, horizon: float) -> dict[str, int]:
        """Addresses seen within the window, with their number of events."""
        if not self.ips:
            return {}
        return {ip: n for ip, (t, n) in self.ips.items() if t > horizon}


class RingWindow(_Common):
    """(time, weight) per counted event, at most `limit` entries."""

    __slots__ = ("entries", "total")

    def __init__(self, keep_ips: bool) -> None:
        super().__init__(keep_ips)
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def add(self, when: float, weight: int, line: str, ip: str | None, limit: int, horizon: float) -> None:
        entries = self.entries
        if len(entries) >= limit:
            self.total -= entries.popleft()[1]
        entries.append((when, weight))
        self.total += weight
        self._note(when, line, ip, horizon)

    def expire(self, horizon: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            self.total -= entries.popleft()[1]

    def total_since(self, horizon: float) -> int:
        return sum(w for t, w in self.entries if t > horizon)


class BucketWindow(_Common):
    """One counter per `resolution` seconds of log time."""

    __slots__ = ("resolution", "buckets", "total")

    def __init__(self, keep_ips: bool, resolution: float) -> None:
        super().__init__(keep_ips)
        self.resolution = resolution
        self.buckets: deque[list[float]] = deque()  # [bucket start index, weight], oldest first
        self.total = 0

    def add(self, when: float, weight: int, line: str, ip: str | None, limit: int, horizon: float) -> None:
        index = when // self.resolution
        buckets = self.buckets
        if buckets and buckets[-1][0] == index:
            buckets[-1][1] += weight
        elif buckets and buckets[-1][0] > index:
            buckets[-1][1] += weight  # a line out of order: counted in the newest bucket
        else:
            buckets.append([index, weight])
        self.total += weight
        self._note(when, line, ip, horizon)

    def expire(self, horizon: float) -> None:
        first = horizon // self.resolution  # buckets starting at or before the horizon's bucket go
        buckets = self.buckets
        while buckets and buckets[0][0] < first:
            self.total -= int(buckets.popleft()[1])

    def total_since(self, horizon: float) -> int:
        first = horizon // self.resolution
        return int(sum(w for i, w in self.buckets if i >= first))
