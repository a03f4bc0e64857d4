"""Jails: count selected events per key within a find-time window and decide.

Inputs: events and the current time `now` (wall time in the daemon, the event's own log time in
replay, so that both decide identically on the same lines). Output: `Ban` records.

Windows keep at most `maxretry` timestamps per key (a ring), so memory per key is bounded; the
number of keys is capped too (`max_keys`), evicting the least recently active key first, so a
spray of a million addresses cannot exhaust memory.
Must never: read the clock, perform I/O, or ban an ignored address (loopback is always ignored).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

from .records import Ban, Event

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Loopback is never banned, whatever the configuration says: banning it breaks the host itself.
ALWAYS_IGNORED: tuple[IpNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
MAX_LINES_KEPT = 20


@dataclass(frozen=True, slots=True)
class JailSpec:
    name: str
    kinds: frozenset[str]
    filters: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    key: str = "ip"
    findtime: float = 600.0
    maxretry: int = 5
    bantime: float = 3600.0
    actions: tuple[str, ...] = ("nft",)
    ignoreip: tuple[IpNetwork, ...] = ()
    enabled: bool = True
    max_keys: int = 200_000

    def selects(self, event: Event) -> bool:
        if self.kinds and event.kind not in self.kinds:
            return False
        if self.filters and event.filter not in self.filters:
            return False
        if self.rules and event.rule not in self.rules and f"{event.filter}.{event.rule}" not in self.rules:
            return False
        if self.exclude and (event.filter in self.exclude or f"{event.filter}.{event.rule}" in self.exclude):
            return False
        return True


class IgnoreList:
    """Addresses and networks that are never counted nor banned."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, networks: Iterable[IpNetwork]) -> None:
        nets = list(ALWAYS_IGNORED) + list(networks)
        self._v4 = [n for n in nets if n.version == 4]
        self._v6 = [n for n in nets if n.version == 6]

    def __contains__(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        nets = self._v4 if addr.version == 4 else self._v6
        return any(addr in n for n in nets)


@dataclass(slots=True)
class _Window:
    times: deque[float]
    lines: deque[str]


@dataclass
class Jail:
    spec: JailSpec
    ignore: IgnoreList
    windows: dict[str, _Window] = field(default_factory=dict)
    banned: dict[str, float] = field(default_factory=dict)  # key -> until

    def offer(self, event: Event, now: float) -> Ban | None:
        """Count `event` if this jail selects it; return a Ban when the threshold is reached."""
        spec = self.spec
        if not spec.selects(event):
            return None
        key = event.key(spec.key)
        if key is None:
            return None
        if spec.key == "ip" and key in self.ignore:
            return None
        until = self.banned.get(key)
        if until is not None:
            if until > now:
                return None  # already banned; its traffic is being dropped
            del self.banned[key]
        window = self.windows.pop(key, None)  # re-inserted last: dict order = recency for eviction
        if window is None:
            window = _Window(deque(maxlen=spec.maxretry), deque(maxlen=min(spec.maxretry, MAX_LINES_KEPT)))
            if len(self.windows) >= spec.max_keys:
                del self.windows[next(iter(self.windows))]
        times = window.times
        times.append(event.time)
        window.lines.append(event.line)
        horizon = event.time - spec.findtime
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) < spec.maxretry:
            self.windows[key] = window
            return None
        ban = Ban(
            jail=spec.name,
            key_type=spec.key,
            key=key,
            time=now,
            until=now + spec.bantime,
            count=len(times),
            findtime=spec.findtime,
            actions=spec.actions,
            lines=tuple(window.lines),
        )
        self.banned[key] = ban.until
        return ban

    def note_ban(self, key: str, until: float) -> None:
        """Record a ban made elsewhere (restored from the database, or an admin's `ban`)."""
        self.banned[key] = max(until, self.banned.get(key, 0.0))
        self.windows.pop(key, None)

    def forget(self, key: str) -> bool:
        """Lift the jail's memory of `key` (an admin's unban): counting starts afresh."""
        found = self.banned.pop(key, None) is not None
        self.windows.pop(key, None)
        return found

    def counts(self, now: float) -> dict[str, int]:
        horizon = now - self.spec.findtime
        return {k: sum(1 for t in w.times if t > horizon) for k, w in self.windows.items()}
