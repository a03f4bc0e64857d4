"""The `direct-smtp` source: the kernel's per-uid SMTP counters turned into events for the jails.

Inputs: the counting sets (kernel.DirectSmtpKernel.counters(), polled at most once per `every`
seconds), the counters committed at the last batch (the position), the clock. Outputs: events
of kind `direct-smtp` (filter `direct-smtp`, rule `connect`), one per (uid, destination, port)
whose counter grew, with `uid` set and `count` the number of new connections; each event's
`line` says who, where and which processes held such sockets when mailban looked (procs.py),
which is what `list`, `explain` and the notify mail show.

Why events and not lines through a filter: a filter matches by program name, and any local user
can write a line with any program name to the mail log (`logger -p mail.info -t ...`); a forged
"uid 33 connected" line would let one user get another blocked. These events come only from the
kernel's counters. Why the destination is not the event's `ip`: that field is a client's
address, counted and banned by ip jails; a remote MX must never be banned for what a local
script did.

Restart: the counters live in the kernel and keep counting while mailban is stopped; the
position (the counters as last committed) makes the first poll after a start turn what grew
meanwhile into events (stamped with that poll's time: when they happened is not known). A
counter lower than its committed value was reset (the table was deleted and re-made): it counts
from zero. With no position at all (the first start) the current counters are the baseline,
as a log is read from its end.
Must never: raise out of read_events() (a kernel error is kept for status and retried), or
put anything but numbers and validated addresses into the kernel.
"""

from __future__ import annotations

import json
import logging
import pwd
import time
from typing import Any, Callable

from ..core.records import Event
from . import procs
from .kernel import PORTS, Counters, DirectSmtpKernel, uids_of

log = logging.getLogger("mailban.direct-smtp")
NAME = "direct-smtp"
KIND = "direct-smtp"
POLL_EVERY = 1.0
# A poll costs about 1 ms per 50 elements (bench/direct_smtp.py: 0.8 ms at 10, 15 ms at 1000,
# 230 ms at 10,000): the next poll waits at least this many times the last one took, so that
# polling never takes more than 1/POLL_SHARE of the loop (log reading must not slow down when a
# spam run to thousands of MX hosts fills the set; the kernel goes on counting meanwhile).
POLL_SHARE = 20
MAX_EVENTS = 5000  # per poll; the rest waits for the next one (the position says what was taken)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class Position:
    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def to_dict(self) -> dict[str, Any]:
        return {"counters": [[u, d, p, n] for (u, d, p), n in sorted(self.counters.items())]}

    @staticmethod
    def parse(saved: dict[str, Any] | None) -> Counters | None:
        if not isinstance(saved, dict) or not isinstance(saved.get("counters"), list):
            return None
        out: Counters = {}
        for row in saved["counters"]:
            if (isinstance(row, list) and len(row) == 4 and isinstance(row[0], int) and isinstance(row[1], str)
                    and isinstance(row[2], int) and isinstance(row[3], int)):
                out[(row[0], row[1], row[2])] = row[3]
        return out


class DirectSmtpSource:
    path = NAME
    watch_dir = None

    def __init__(self, settings: Any, saved: dict[str, Any] | None, kernel: Any = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 proc: str = "/proc", every: float = POLL_EVERY) -> None:
        self.kernel = kernel if kernel is not None else DirectSmtpKernel()
        self.clock, self.monotonic = clock, monotonic
        self.proc = proc
        self.every = every
        self.ports: tuple[int, ...] = tuple(getattr(settings, "direct_smtp_ports", PORTS))
        self.settings = settings
        self.seen: Counters | None = Position.parse(saved)
        self.error: str | None = None
        self.ready = False
        self.next_poll = 0.0
        self.missing_users: list[str] = []
        self.excluded: list[int] = []
        # What status and metrics show: per uid, the kernel's totals and the last processes found.
        self.totals: dict[int, dict[str, int]] = {}
        self.holders: dict[int, list[procs.Holder]] = {}
        self.last_seen: dict[int, float] = {}
        self.polls = 0
        self.poll_seconds = 0.0
        self._setup()

    # ---- kernel -------------------------------------------------------------------------------
    def _setup(self) -> None:
        s = self.settings
        self.excluded, self.missing_users = uids_of(getattr(s, "direct_smtp_mta_users", ()))
        try:
            self.kernel.ensure(self.ports, self.excluded, getattr(s, "direct_smtp_allow", ()),
                               getattr(s, "block_direct_smtp", "per-uid") == "all-but-mta")
            self.ready = True
            if self.error is not None:
                log.info("direct-smtp: counting works again")
            self.error = None
        except Exception as exc:
            if self.error is None:
                log.error("direct-smtp: cannot set up the counting chain: %s (will retry)", exc)
            self.ready = False
            self.error = f"cannot set up the counting chain: {exc}"

    def reconfigure(self, settings: Any) -> None:
        """A reload: new ports, users, allow list or policy (the counters stay)."""
        self.settings = settings
        self.ports = tuple(getattr(settings, "direct_smtp_ports", PORTS))
        self._setup()

    def remove(self) -> None:
        try:
            self.kernel.remove()
        except Exception as exc:
            log.error("direct-smtp: cannot remove the counting chain: %s", exc)

    # ---- the Source-like interface the daemon calls -----------------------------------------
    def fileno(self) -> int:
        return -1

    @property
    def position(self) -> Position:
        return Position(dict(self.seen or {}))

    def backlog(self) -> int | None:
        return None

    def close(self) -> None:
        """The chains and counters stay in the kernel: counting goes on while mailban is
        stopped, and the next start takes up what grew."""

    def read_events(self) -> list[Event]:
        """The events of what the counters gained since the last poll ([] between polls)."""
        mono = self.monotonic()
        if mono < self.next_poll:
            return []
        self.next_poll = mono + self.every
        if not self.ready:
            self._setup()
            if not self.ready:
                return []
        started = time.perf_counter()
        try:
            current = self.kernel.counters()
            self.kernel.check()
        except Exception as exc:
            # The table was deleted behind our back (`nft flush ruleset`): make it again; the
            # counters start from zero, which the comparison below takes as a reset.
            self.error = f"cannot read the counters: {exc}"
            log.error("direct-smtp: %s; setting the chain up again", self.error)
            self._setup()
            return []
        took = time.perf_counter() - started
        self.poll_seconds += took
        self.next_poll = self.monotonic() + max(self.every, took * POLL_SHARE)
        self.polls += 1
        now = self.clock()
        if self.seen is None:  # first start: the current counters are the baseline
            self.seen = current
            self._totals(current)
            return []
        events = self._diff(current, now)
        self._totals(current)
        return events

    def _diff(self, current: Counters, now: float) -> list[Event]:
        grown: list[tuple[tuple[int, str, int], int]] = []
        seen = self.seen or {}
        for key, n in current.items():
            before = seen.get(key, 0)
            new = n - before if n >= before else n  # lower: the counter was reset
            if new > 0:
                grown.append((key, new))
        grown = grown[:MAX_EVENTS]
        kept = {k: v for k, v in seen.items() if k in current}  # expired in the kernel: forgotten
        for key, _new in grown:
            kept[key] = current[key]
        self.seen = kept
        found: dict[int, list[procs.Holder]] = {}
        events: list[Event] = []
        for (uid, dst, port), new in grown:
            if uid not in found:
                try:
                    found[uid] = procs.holders(uid, self.ports, self.proc)
                except Exception as exc:  # /proc unreadable: the count still stands
                    log.debug("direct-smtp: cannot look for uid %d's processes: %s", uid, exc)
                    found[uid] = []
                if found[uid]:
                    self.holders[uid] = found[uid]
                self.last_seen[uid] = now
            events.append(Event(now, KIND, NAME, "connect", uid=uid, count=new, source=NAME,
                                line=describe(uid, dst, port, new, found[uid], now)))
        return events

    def _totals(self, current: Counters) -> None:
        totals: dict[int, dict[str, int]] = {}
        for (uid, dst, port), n in current.items():
            where = f"[{dst}]:{port}" if ":" in dst else f"{dst}:{port}"
            totals.setdefault(uid, {})[where] = n
        self.totals = totals

    def status(self) -> dict[str, Any]:
        return {"exists": self.ready, **({"error": self.error} if self.error else {})}

    def summary(self) -> dict[str, Any]:
        """Per uid: its name, connections counted by the kernel (by destination), the last
        processes seen holding such sockets, and when its counter last grew."""
        return {
            "excluded_uids": self.excluded, "missing_users": self.missing_users, "ports": list(self.ports),
            "policy": getattr(self.settings, "block_direct_smtp", "per-uid"),
            "polls": self.polls, "poll_seconds": round(self.poll_seconds, 6),
            "uids": {str(uid): uid_summary(uid, dests, self.holders.get(uid, []), self.last_seen.get(uid))
                     for uid, dests in sorted(self.totals.items())},
        }


def uid_summary(uid: int, dests: dict[str, int], holders: list[procs.Holder],
                last: float | None = None) -> dict[str, Any]:
    return {
        "user": user_name(uid), "connections": sum(dests.values()),
        "destinations": dict(sorted(dests.items(), key=lambda kv: -kv[1])[:20]),
        "processes": [{"pid": h.pid, "cmdline": h.cmdline, "cwd": h.cwd, "to": list(h.destinations)}
                      for h in holders],
        **({"last": last} if last is not None else {}),
    }


def describe(uid: int, dst: str, port: int, new: int, holders: list[procs.Holder], now: float) -> str:
    """The event's line: an RFC 3339 stamp and mailban's own words and numbers, the processes'
    text JSON-quoted (it is the attacker's: a script names itself)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
    where = f"[{dst}]:{port}" if ":" in dst else f"{dst}:{port}"
    text = f"{stamp} direct-smtp: uid={uid} user={user_name(uid)} to={where} connections={new}"
    if holders:
        text += "; held by " + ", ".join(
            f"pid={h.pid} cwd={json.dumps(h.cwd)} cmd={json.dumps(h.cmdline[:120])}" for h in holders[:3])
    else:
        text += "; no process held such a socket when mailban looked"
    return text
