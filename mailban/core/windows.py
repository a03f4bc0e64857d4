"""Find-time windows: what a jail remembers about one key.

Two kinds with the same interface (add, expire, total, lines, ips, live_ips, total_since, busy):
- RingWindow keeps (time, weight) per counted event, at most `limit` of them (every entry weighs
  at least one, so `limit = maxretry` entries are enough to decide): exact, for short windows.
- BucketWindow keeps one counter per `resolution` (e.g. an hour) instead of one entry per event:
  a day-long window is 24 small counters whatever the number of events, which is what lets a
  long-window jail follow hundreds of thousands of slow attackers. The window's edge moves a
  bucket at a time (an event counts for up to `resolution` longer than findtime).
Must never: read the clock or perform I/O.
"""

from __future__ import annotations

from typing import Iterable

MAX_LINES_KEPT = 20
MAX_IPS_KEPT = 4096


class _Common:
    """What both kinds keep besides their counts: the last lines and, for some jails, addresses.

    Stored compactly, as a spray of a million distinct addresses leaves a few hundred thousand
    windows of one event each (deques cost 760 bytes apiece): `_lines` is None, one line (str),
    or a list of the last MAX_LINES_KEPT. `lines` reads (and restoring sets) it as a list."""

    __slots__ = ("_lines", "_ips", "_one", "added", "sent")

    def __init__(self, keep_ips: bool) -> None:
        # Events added to this object in its life (each add appends one entry or adds to the
        # newest bucket, one line, touches at most one address), and the value it had when the
        # policy service last sent the window to the daemon (-1: never): what changed since is
        # the last `added - sent` of each, so only that is sent (policy/windowsync.py).
        self.added = 0
        self.sent = -1
        self._lines: str | list[str] | None = None
        # Addresses, for jails that keep them: while there is only one, it is `_one` =
        # (address, last time, events) and `_ips` is an empty marker dict shared by nobody
        # else; a second address moves both into `_ips` (address -> (last time, events)).
        self._ips: dict[str, tuple[float, int]] | None = {} if keep_ips else None
        self._one: tuple[str, float, int] | None = None

    @property
    def ips(self) -> dict[str, tuple[float, int]] | None:
        """address -> (last time, events from it since it entered the window); None if not kept."""
        if self._ips is None:
            return None
        if self._one is not None:
            ip, when, n = self._one
            return {ip: (when, n)}
        return self._ips

    @ips.setter
    def ips(self, value: dict[str, tuple[float, int]] | None) -> None:
        self._one = None
        self._ips = None if value is None else dict(value)

    @property
    def lines(self) -> list[str]:
        kept = self._lines
        if kept is None:
            return []
        if type(kept) is str:
            return [kept]
        return kept  # type: ignore[return-value]

    @lines.setter
    def lines(self, value: Iterable[str]) -> None:
        self._lines = list(value)[-MAX_LINES_KEPT:]

    def _note(self, when: float, line: str, ip: str | None, horizon: float) -> None:
        self.added += 1
        kept = self._lines
        if kept is None:
            self._lines = line
        elif type(kept) is str:
            self._lines = [kept, line]
        else:
            kept.append(line)  # type: ignore[union-attr]
            if len(kept) > MAX_LINES_KEPT:
                del kept[0]  # type: ignore[union-attr]
        ips = self._ips
        if ips is None or ip is None:
            return
        one = self._one
        if not ips:
            if one is None:
                self._one = (ip, when, 1)
                return
            if one[0] == ip:
                self._one = (ip, when, one[2] + 1 if one[1] > horizon else 1)
                return
            ips[one[0]] = (one[1], one[2])  # a second address: from now on, the dict
            self._one = None
        last = ips.pop(ip, None)
        ips[ip] = (when, last[1] + 1 if last is not None and last[0] > horizon else 1)
        if len(ips) > MAX_IPS_KEPT:
            del ips[next(iter(ips))]

    def live_ips(self, horizon: float) -> dict[str, int]:
        """Addresses seen within the window, with their number of events."""
        one = self._one
        if one is not None:
            return {one[0]: one[2]} if one[1] > horizon else {}
        if not self._ips:
            return {}
        return {ip: n for ip, (t, n) in self._ips.items() if t > horizon}


class RingWindow(_Common):
    """(time, weight) per counted event, at most `limit` entries; kept flat in one list
    (`_ring` = [t0, w0, t1, w1, ...], oldest first), read as pairs through `entries`."""

    __slots__ = ("_ring", "total")

    def __init__(self, keep_ips: bool) -> None:
        super().__init__(keep_ips)
        self._ring: list[float] = []
        self.total = 0

    @property
    def entries(self) -> list[tuple[float, int]]:
        ring = self._ring
        return [(ring[i], ring[i + 1]) for i in range(0, len(ring), 2)]  # type: ignore[misc]

    @entries.setter
    def entries(self, value: Iterable[tuple[float, int]]) -> None:
        self._ring = [x for pair in value for x in pair]

    def add(self, when: float, weight: int, line: str, ip: str | None, limit: int, horizon: float) -> None:
        ring = self._ring
        if not ring:
            self._ring = [when, weight]
        else:
            if len(ring) >= 2 * limit:
                self.total -= ring[1]  # type: ignore[assignment]
                del ring[:2]
            ring.append(when)
            ring.append(weight)
        self.total += weight
        self._note(when, line, ip, horizon)

    def expire(self, horizon: float) -> None:
        ring = self._ring
        while ring and ring[0] <= horizon:
            self.total -= ring[1]  # type: ignore[assignment]
            del ring[:2]

    def busy(self, horizon: float) -> bool:
        """More than one counted event within the window (eviction spares such keys first)."""
        ring = self._ring
        return len(ring) >= 4 and ring[-4] > horizon

    def total_since(self, horizon: float) -> int:
        ring = self._ring
        return int(sum(ring[i + 1] for i in range(0, len(ring), 2) if ring[i] > horizon))


class BucketWindow(_Common):
    """One counter per `resolution` seconds of log time; kept flat in one list (`_flat` =
    [index0, weight0, index1, weight1, ...], oldest first), read as pairs through `buckets`."""

    __slots__ = ("resolution", "_flat", "total")

    def __init__(self, keep_ips: bool, resolution: float) -> None:
        super().__init__(keep_ips)
        self.resolution = resolution
        self._flat: list[float] = []
        self.total = 0

    @property
    def buckets(self) -> list[list[float]]:
        flat = self._flat
        return [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]

    @buckets.setter
    def buckets(self, value: Iterable[Iterable[float]]) -> None:
        self._flat = [x for pair in value for x in pair]

    def add(self, when: float, weight: int, line: str, ip: str | None, limit: int, horizon: float) -> None:
        index = when // self.resolution
        flat = self._flat
        if not flat:
            self._flat = [index, weight]
        elif flat[-2] >= index:
            # The newest bucket's step, or a line out of order: counted in the newest bucket.
            flat[-1] += weight
        else:
            flat.append(index)
            flat.append(weight)
        self.total += weight
        self._note(when, line, ip, horizon)

    def expire(self, horizon: float) -> None:
        first = horizon // self.resolution  # buckets starting at or before the horizon's bucket go
        flat = self._flat
        while flat and flat[0] < first:
            self.total -= int(flat[1])
            del flat[:2]

    def busy(self, horizon: float) -> bool:
        """More than one point within the window (a bucket does not tell events apart)."""
        return self.total_since(horizon) > 1

    def total_since(self, horizon: float) -> int:
        first = horizon // self.resolution
        flat = self._flat
        return int(sum(flat[i + 1] for i in range(0, len(flat), 2) if flat[i] >= first))
