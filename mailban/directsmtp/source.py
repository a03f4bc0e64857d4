"""The `direct-smtp` source: the kernel's per-uid SMTP counters turned into events for the jails.

Inputs: the kernel's counters (kernel.DirectSmtpKernel): per uid, polled at most once per
`every` seconds, and per (uid, destination, port), read only when a uid's count grew and no more
often than their cost allows (DEST_SHARE); the counters committed at the last batch (the
position); the clock. Outputs: events of kind `direct-smtp` (filter `direct-smtp`, rule
`connect`), one per uid whose counter grew, with `uid` set and `count` the number of new
connections; each event's `line` says who, where to (the destinations that grew) and which
processes held such sockets when mailban looked (procs.py), which is what `list`, `explain` and
the notify mail show.

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
# Reading the destination sets costs about 1 ms per 30 elements (bench/direct_smtp.py: 0.5 ms
# at 10, 12 ms at 1,000, 320 ms at 10,000). They are read only when a uid's count grew, and the
# next read waits at least this many times the last one took, so that they never take more than
# 1/DEST_SHARE of the loop (log reading must not slow down when a spam run to thousands of MX
# hosts fills them). The events do not wait for them: their counts come from the uid set, read
# every second at a cost that does not depend on the destinations.
DEST_SHARE = 20
MAX_EVENTS = 5000  # uids per poll; the rest waits for the next one (the position says what was taken)
SHOWN_DESTINATIONS = 5  # per event line; the rest is "+N more"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def where(dst: str, port: int) -> str:
    return f"[{dst}]:{port}" if ":" in dst else f"{dst}:{port}"


class Position:
    """The counters as last committed: per uid (what events are counted from) and per (uid,
    destination, port) (what their lines name)."""

    def __init__(self, counters: Counters, uids: dict[int, int] | None = None) -> None:
        self.counters = counters
        self.uids = uids if uids is not None else {}

    def to_dict(self) -> dict[str, Any]:
        return {"uids": [[u, n] for u, n in sorted(self.uids.items())],
                "counters": [[u, d, p, n] for (u, d, p), n in sorted(self.counters.items())]}

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

    @staticmethod
    def parse_uids(saved: dict[str, Any] | None) -> dict[int, int] | None:
        """None when there is none (a first start, or a position saved before the uid set
        existed: the current counts are then the baseline)."""
        if not isinstance(saved, dict) or not isinstance(saved.get("uids"), list):
            return None
        return {row[0]: row[1] for row in saved["uids"]
                if isinstance(row, list) and len(row) == 2 and all(type(x) is int for x in row)}


class DirectSmtpSource:
    path = NAME
    watch_dir = None

    def __init__(self, settings: Any, saved: dict[str, Any] | None, kernel: Any = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 proc: str = "/proc", every: float = POLL_EVERY,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.kernel = kernel if kernel is not None else DirectSmtpKernel()
        self.clock, self.monotonic = clock, monotonic
        self.timer = timer  # measures what a read of the kernel cost (injected by tests)
        self.proc = proc
        self.every = every
        self.ports: tuple[int, ...] = tuple(getattr(settings, "direct_smtp_ports", PORTS))
        self.settings = settings
        self.seen: Counters | None = Position.parse(saved)
        self.seen_uids: dict[int, int] | None = Position.parse_uids(saved)
        self.error: str | None = None
        self.ready = False
        self.next_poll = 0.0
        self.next_dest = 0.0  # monotonic time before which the destination sets are not read
        self.dest_due = False  # a uid grew while a read was not allowed: read them when it is
        self.missing_users: list[str] = []
        self.excluded: list[int] = []
        # What status and metrics show: per uid, the kernel's count, its destinations (as last
        # read) and the last processes found.
        self.uid_totals: dict[int, int] = {}
        self.totals: dict[int, dict[str, int]] = {}
        self.holders: dict[int, list[procs.Holder]] = {}
        self.last_seen: dict[int, float] = {}
        self.polls = 0
        self.poll_seconds = 0.0
        self.dest_reads = 0
        self.dest_seconds = 0.0
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
        return Position(dict(self.seen or {}), dict(self.seen_uids or {}))

    def backlog(self) -> int | None:
        return None

    def close(self) -> None:
        """The chains and counters stay in the kernel: counting goes on while mailban is
        stopped, and the next start takes up what grew."""

    def read_events(self) -> list[Event]:
        """The events of what the uid counters gained since the last poll ([] between polls):
        one per uid, its count the new connections, its line the destinations that grew."""
        mono = self.monotonic()
        if mono < self.next_poll:
            return []
        self.next_poll = mono + self.every
        if not self.ready:
            self._setup()
            if not self.ready:
                return []
        started = self.timer()
        try:
            current = self.kernel.uid_counters()
            self.kernel.check()
        except Exception as exc:
            # The table was deleted behind our back (`nft flush ruleset`): make it again; the
            # counters start from zero, which the comparison below takes as a reset.
            self.error = f"cannot read the counters: {exc}"
            log.error("direct-smtp: %s; setting the chain up again", self.error)
            self._setup()
            return []
        self.poll_seconds += self.timer() - started
        self.polls += 1
        now = self.clock()
        if self.seen_uids is None:  # first start: the current counters are the baseline
            self.seen_uids = current
            self.uid_totals = current
            self._read_destinations(baseline=True)
            return []
        grown: list[tuple[int, int]] = []
        for uid, n in current.items():
            before = self.seen_uids.get(uid, 0)
            new = n - before if n >= before else n  # lower: the counter was reset
            if new > 0:
                grown.append((uid, new))
        grown = grown[:MAX_EVENTS]
        kept = {u: v for u, v in self.seen_uids.items() if u in current}  # expired in the kernel: forgotten
        for uid, _new in grown:
            kept[uid] = current[uid]
        self.seen_uids = kept
        self.uid_totals = current
        if grown:
            self.dest_due = True
        dests = self._read_destinations() if self.dest_due else None
        return self._events(grown, dests, now)

    def _read_destinations(self, baseline: bool = False) -> dict[int, dict[str, int]] | None:
        """Per uid, the (destination, port)s whose counters grew since the last read, or None
        when reading them now would cost more than their share (they are read later)."""
        mono = self.monotonic()
        if not baseline and mono < self.next_dest:
            return None
        started = self.timer()
        try:
            current = self.kernel.counters()
        except Exception as exc:  # the uid counts stand; the lines say the destinations are unknown
            log.debug("direct-smtp: cannot read the destination sets: %s", exc)
            return None
        took = self.timer() - started
        self.dest_reads += 1
        self.dest_seconds += took
        self.next_dest = self.monotonic() + max(self.every, took * DEST_SHARE)
        self.dest_due = False
        seen = self.seen if self.seen is not None else current
        grew: dict[int, dict[str, int]] = {}
        for (uid, dst, port), n in current.items():
            before = seen.get((uid, dst, port), 0)
            new = n - before if n >= before else n
            if new > 0:
                grew.setdefault(uid, {})[where(dst, port)] = new
        self.seen = current
        totals: dict[int, dict[str, int]] = {}
        for (uid, dst, port), n in current.items():
            totals.setdefault(uid, {})[where(dst, port)] = n
        self.totals = totals
        return grew

    def _events(self, grown: list[tuple[int, int]], dests: dict[int, dict[str, int]] | None,
                now: float) -> list[Event]:
        events: list[Event] = []
        for uid, new in grown:
            try:
                found = procs.holders(uid, self.ports, self.proc, fallback=True)
            except Exception as exc:  # /proc unreadable: the count still stands
                log.debug("direct-smtp: cannot look for uid %d's processes: %s", uid, exc)
                found = []
            if found:
                self.holders[uid] = found
            self.last_seen[uid] = now
            to = None if dests is None else dests.get(uid, {})
            events.append(Event(now, KIND, NAME, "connect", uid=uid, count=new, source=NAME,
                                line=describe(uid, to, new, found, now)))
        return events

    def status(self) -> dict[str, Any]:
        return {"exists": self.ready, **({"error": self.error} if self.error else {})}

    def summary(self) -> dict[str, Any]:
        """Per uid: its name, connections counted by the kernel (by destination), the last
        processes seen holding such sockets, and when its counter last grew."""
        return {
            "excluded_uids": self.excluded, "missing_users": self.missing_users, "ports": list(self.ports),
            "policy": getattr(self.settings, "block_direct_smtp", "per-uid"),
            "polls": self.polls, "poll_seconds": round(self.poll_seconds, 6),
            "destination_reads": self.dest_reads, "destination_seconds": round(self.dest_seconds, 6),
            "uids": {str(uid): uid_summary(uid, self.totals.get(uid, {}), self.holders.get(uid, []),
                                           self.last_seen.get(uid), total)
                     for uid, total in sorted(self.uid_totals.items())},
        }


def uid_summary(uid: int, dests: dict[str, int], holders: list[procs.Holder],
                last: float | None = None, total: int | None = None) -> dict[str, Any]:
    """`total` is the uid set's count; without it, the sum of the destinations'."""
    return {
        "user": user_name(uid), "connections": sum(dests.values()) if total is None else total,
        "destinations": dict(sorted(dests.items(), key=lambda kv: -kv[1])[:20]),
        "processes": [{"pid": h.pid, "cmdline": h.cmdline, "cwd": h.cwd, "to": list(h.destinations)}
                      for h in holders],
        **({"last": last} if last is not None else {}),
    }


def describe(uid: int, dests: dict[str, int] | None, new: int, holders: list[procs.Holder], now: float) -> str:
    """The event's line: an RFC 3339 stamp and mailban's own words and numbers, the processes'
    text JSON-quoted (it is the attacker's: a script names itself). `dests`: the destinations
    that grew, with their new connections (None: not read at this poll, see DEST_SHARE)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
    if dests is None:
        to = "(not read at this poll)"
    elif not dests:
        to = "(none new in the destination sets)"  # full (SET_SIZE), or read before the uid set grew
    elif len(dests) == 1 and next(iter(dests.values())) == new:
        to = next(iter(dests))
    else:
        ranked = sorted(dests.items(), key=lambda kv: (-kv[1], kv[0]))
        to = ",".join(f"{w}({n})" for w, n in ranked[:SHOWN_DESTINATIONS])
        if len(ranked) > SHOWN_DESTINATIONS:
            to += f"+{len(ranked) - SHOWN_DESTINATIONS} more"
    text = f"{stamp} direct-smtp: uid={uid} user={user_name(uid)} to={to} connections={new}"
    shown = ", ".join(f"pid={h.pid} cwd={json.dumps(h.cwd)} cmd={json.dumps(h.cmdline[:120])}" for h in holders[:3])
    if holders and holders[0].destinations:
        text += "; held by " + shown
    elif holders:  # procs.holders' fallback: candidates, not proof
        text += "; no process held such a socket when mailban looked; the uid's processes then: " + shown
    else:
        text += "; no process held such a socket when mailban looked"
    return text
