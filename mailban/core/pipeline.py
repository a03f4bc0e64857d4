"""The pipeline: lines in, commands out. One code path for the daemon, test and replay.

Inputs: raw lines (bytes) with their source name and line number, and optionally the current
time. Outputs: the events each line produced (what `mailban test` shows), and, through `run` (the
daemon, a batch of lines) and `step` (replay, a line matched in C), an `Outcome`: the bans to act
on, the decisions the rate limit held back, prefix folds, messages to hold, and when decisions
fall due with time alone. The daemon executes it, replay prints it: the same calls in the same
order, so replay decides what the daemon decides (tests/test_decide_equivalence.py).
Stages: syslog header -> filters (typed events) -> queue-id correlation (the submitting account
attached to later lines of the same message) -> jails -> decisions (the rate limit and prefix
folds, see decisions.py: `decide`, which the daemon and replay both call on the jails' bans).
`now=None` means "use the event's own log time" (replay); the daemon passes wall time, which is
used for ban expiry and to skip lines already older than a jail's find time when read (a restored
backup must not ban for days-old lines; `stale` counts them), never for counting: windows always
count log timestamps, so the daemon and replay reach the same decisions on lines read as they
are written.
Must never: perform I/O or read the clock (see mailban.core).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .correlate import Correlator, Message
from .decisions import Hold, Outcome, Valve, decide_into
from .filters import FilterSet
from .jails import PROOF_KINDS, Jail
from .records import Ban, Event
from .syslog import Header, SyslogParser

# Where an Event holds the account and the address (feed_events reads them by index).
USER = Event._fields.index("user")
IP = Event._fields.index("ip")


@dataclass
class Pipeline:
    parser: SyslogParser
    filters: FilterSet
    jails: list[Jail]
    correlator: Correlator = field(default_factory=Correlator)
    # The C module (mailban.speedups), whose correlate() stands in for correlated's loop.
    fast: Any = None
    # The rate limit on decisions (max_bans_per_minute); None: none.
    valve: Valve | None = None
    # A local login name -> its uid, or None (mailban.localusers: the password database, read
    # outside the core). Exim logs a local submission's login name (`U=www-data`), the uid
    # jails count uids: events of FilterSet.login_rules carry the name in `user` until
    # correlated() moves it here. Without it, or for a name it does not know, the event keeps
    # neither (no uid to count, and a login name must never count as a SASL account).
    uid_of: Callable[[str], int | None] | None = None
    # Per event kind, the jails an event of that kind goes to, in order, each with whether it
    # wants the kind (else it is offered the event only while it holds addresses on
    # probation, which only ban_ips jails do: see Jail._ip_ban), its find time, where its key
    # sits in an Event, and whether offer() notes the kind as a login (ban_ips jails, logins
    # and submissions). Built on first use per kind.
    _routes: dict[str, tuple[tuple[Jail, bool, float, int, bool], ...]] = field(default_factory=dict, init=False,
                                                                             repr=False)
    # Per jail, the events it did not count because their line was already older than its find
    # time when read (a restored backup, a log shipped late, a clock jump): the daemon's only
    # (replay, with now=None, keeps log time and counts them all).
    stale: dict[str, int] = field(default_factory=dict, init=False)
    # The actions that hold a key's mail (queue-hold): a ban naming one holds what the key
    # submits for as long as it is in force. Keys held now: (key type, key) -> (action, until, jail).
    hold_actions: frozenset[str] = frozenset()
    holding: dict[tuple[str, str], tuple[str, float, str]] = field(default_factory=dict, init=False)
    # What the C batch matcher reads (FilterSet.scan_context), built on the first run().
    _scan: tuple[Any, ...] | None = field(default=None, init=False, repr=False)

    def events(self, line: bytes, source: str = "", lineno: int = 0) -> list[Event]:
        """Filters and correlation only (what `mailban test` shows)."""
        header = self.parser.parse(line)
        if header is None:
            return []
        return self.correlated(self.filters.match_logged(self.parser, line, header, source, lineno), header)

    def correlated(self, events: list[Event], header: Header) -> list[Event]:
        """A line's events after queue-id correlation (qmgr retries dropped, the submitting
        account filled in)."""
        correlator = self.correlator
        logins = self.filters.login_rules
        if logins:
            # Login rules' events (in place) with their login name resolved to the uid. Only
            # submissions come from login rules: the kind is checked first (the pipeline's events
            # are fresh lists of tuples, one or two per line). Looked for here, not in a call per
            # line, and counted by hand: enumerate() costs replay ~1% more (callgrind).
            i = 0
            for event in events:
                if event[1] == "submission" and (event[2], event[3]) in logins:
                    events[i] = self._with_uid(event)  # replaced, not resized: the loop goes on
                i += 1
        if self.fast is not None:
            out: list[Event] = self.fast.correlate(correlator, events, header, Message, Event)
        else:
            out = []
            process = correlator.process
            for event in events:
                joined = process(event, header)
                if joined is not None:
                    out.append(joined)
        if correlator.released:  # failures held for their session's address (see correlate.py)
            out.extend(correlator.released)
            correlator.released.clear()
        return out

    def _with_uid(self, event: Event) -> Event:
        """A login rule's event with its login name resolved to the uid (uid_of): the name leaves
        `user`, where it would count as a SASL account."""
        name = event.user
        uid = self.uid_of(name) if self.uid_of is not None and name is not None else None
        return event._replace(user=None, uid=uid)

    def feed(
        self, line: bytes, now: float | None = None, source: str = "", lineno: int = 0
    ) -> tuple[list[Event], list[Ban]]:
        header = self.parser.parse(line)
        if header is None:
            return [], []
        return self.feed_parsed(line, header, now, source, lineno)

    def feed_parsed(
        self, line: bytes, header: Header, now: float | None = None, source: str = "", lineno: int = 0
    ) -> tuple[list[Event], list[Ban]]:
        """As feed(), for a line whose header the caller already parsed (replay merges files
        by time and so parses first)."""
        events = self.filters.match_logged(self.parser, line, header, source, lineno)
        if not events:
            return events, []
        return self.feed_events(events, header, now)

    def feed_events(self, events: list[Event], header: Header, now: float | None = None
                    ) -> tuple[list[Event], list[Ban]]:
        """As feed_parsed(), for a line whose events the caller already matched (replay matches
        whole batches of lines in C, see offline.matched_lines)."""
        events = self.correlated(events, header)
        bans: list[Ban] = []
        routes = self._routes
        for event in events:
            when = event.time if now is None else now
            kind = event.kind
            route = routes.get(kind)
            if route is None:
                route = routes[kind] = tuple((j, kind in j.wants, j.spec.findtime, j.key_field,
                                              j.spec.ban_ips and kind in PROOF_KINDS)
                                             for j in self.jails if kind in j.wants or j.spec.ban_ips)
            for jail, wanted, findtime, key_at, proof in route:
                # Most events (deliveries, queue lines) concern one jail or none: skip the call
                # where offer() would do nothing (see Jail.wants). For a kind the jail does not
                # want, offer() only lets time pass on its probation: tick() itself.
                if wanted:
                    if event[key_at] is None and not jail.probation and (
                            not proof or event[USER] is None or event[IP] is None):
                        # nothing to count (an inbound arrival offered to the account and uid
                        # jails), no login to note (_note_login needs both the account and the
                        # address), no probation to tick: offer() returns []
                        continue
                    if now is not None and event.time < now - findtime:
                        if getattr(event, jail.spec.key) is not None:  # an event the jail counts
                            name = jail.spec.name
                            self.stale[name] = self.stale.get(name, 0) + 1
                        continue
                    new = jail.offer(event, when)
                elif jail.probation:
                    new = jail.tick(event.time, when)
                else:
                    continue
                if new:
                    bans.extend(new)
        return events, bans

    def run(self, lines: list[bytes], now: float | None = None, source: str = "",
            tally: dict[tuple[str, str], int] | None = None) -> Outcome:
        """A batch of lines through every stage: the commands they cause (the daemon's path).
        `tally`, when given, counts the events per (kind, filter) (metrics)."""
        out = Outcome()
        step = self.step
        for when, header, events in self._matched(lines, source, tally):
            if events is None:
                self.quiet(when, now, out)
                continue
            events = step(events, header, now, out)
            if tally is not None:
                count_events(events, tally)
        out.wake_at = self.wake_at()
        return out

    def _matched(self, lines: list[bytes], source: str, quiet: dict[tuple[str, str], int] | None
                 ) -> Iterator[tuple[float, Header | None, list[Event] | None]]:
        """The lines of a batch that have events, with their time and headers; the lines are
        numbered from 1. A line whose events were all quiet rules' (needs.py) comes as (time,
        None, None), its events counted in `quiet` (metrics) when given. In C where the module
        is built (header cut, rule selection, events: the batch matcher replay's reading uses
        too, offline.file_events)."""
        if self.fast is not None:
            if self._scan is None:
                self._scan = (*self.filters.scan_context(self.parser), Header)
            matched: list[tuple[float, int, bytes, Header, list[Event]]] = []
            self.fast.match_lines(lines, 0, self._scan, source, False, matched, quiet)
            for when, _lineno, _line, header, events in matched:
                yield when, header, events
            return
        parser, match, without_quiet = self.parser, self.filters.match_logged, self.filters.without_quiet
        for lineno, line in enumerate(lines, 1):
            header = parser.parse(line)
            if header is None:
                continue
            events = match(parser, line, header, source, lineno)
            if events:
                kept = without_quiet(events, quiet)
                yield (header.time, header, kept) if kept is not None else (header.time, None, None)

    def quiet(self, when: float, now: float | None, out: Outcome) -> None:
        """A line whose events were all quiet rules' (needs.py): what feed_events() did with
        them, letting time pass for the jails holding addresses on probation (no jail wants
        their kind, so each ban_ips jail only ticks)."""
        bans: list[Ban] = []
        for jail in self.jails:
            if jail.probation and jail.spec.ban_ips:
                new = jail.tick(when, when if now is None else now)
                if new:
                    bans.extend(new)
        if bans:
            self.decide_into(out, bans)

    def step(self, events: list[Event], header: Header, now: float | None, out: Outcome) -> list[Event]:
        """One line's matched events through correlation, the jails and the decision stage,
        appending what they ask for to `out` (replay's path, and run()'s body). Returns the
        events as correlated."""
        events, bans = self.feed_events(events, header, now)
        if bans:
            self.decide_into(out, bans)
        if self.holding:
            self._holds(events, out, now)
        return events

    def decide_into(self, out: Outcome, bans: list[Ban]) -> None:
        """The decision stage on one line's bans (or on bans that fell due with time)."""
        first = len(out.commands)
        decide_into(out, bans, self.valve, {jail.spec.name: jail for jail in self.jails})
        if self.hold_actions:
            for command in out.commands[first:]:
                if type(command) is Ban:
                    self._note_hold(command)

    def _note_hold(self, ban: Ban) -> None:
        if ban.key_type in ("ip", "net") or not self.hold_actions:
            return
        for action in ban.actions:
            if action in self.hold_actions:
                key = (ban.key_type, ban.key)
                held = self.holding.get(key)
                if held is None or held[1] < ban.until:
                    self.holding[key] = (action, ban.until, ban.jail)

    def _holds(self, events: list[Event], out: Outcome, now: float | None) -> None:
        holding = self.holding
        for event in events:
            if event.kind != "queued" or not event.queue_id:
                continue
            for key_type, value in (("user", event.user), ("uid", event.uid), ("sender", event.sender)):
                if value is None:
                    continue
                held = holding.get((key_type, str(value)))
                if held is None:
                    continue
                if held[1] <= (event.time if now is None else now):
                    del holding[(key_type, str(value))]  # its ban ended
                    continue
                out.commands.append(Hold(held[0], held[2], key_type, str(value), event.queue_id))

    def wake_at(self) -> float | None:
        """The earliest time a decision may fall due with time alone (an account attacker's
        grace running out), or None: tick() before it does nothing."""
        due = min((jail.next_due for jail in self.jails if jail.probation), default=float("inf"))
        return None if due == float("inf") else due

    def tick(self, log_now: float, now: float | None = None) -> list[Ban]:
        """Decisions that fall due with time alone (an account's single-guess attackers whose
        grace ran out). The daemon calls it every second; replay at the end of the logs."""
        bans: list[Ban] = []
        for jail in self.jails:
            if jail.probation:
                bans.extend(jail.tick(log_now, now))
        return bans

    def jail(self, name: str) -> Jail | None:
        for jail in self.jails:
            if jail.spec.name == name:
                return jail
        return None

    def note_ban(self, ban: Ban) -> None:
        """A ban made elsewhere (restored, manual, another node's): the jails and holding
        know it as they know their own."""
        self._note_hold(ban)
        jail = self.jail(ban.jail)
        if jail is not None and (jail.spec.key == ban.key_type or ban.key_type in ("ip", "net")):
            jail.note_ban(ban.key, ban.until, ban.key_type)

    def forget(self, key_type: str, key: str, jail_name: str | None = None) -> None:
        self.holding.pop((key_type, key), None)
        for jail in self.jails:
            if jail_name is not None and jail.spec.name != jail_name:
                continue
            if jail.spec.key == key_type or key_type in ("ip", "net"):
                jail.forget(key, key_type)

    def take_over(self, old: Pipeline) -> None:
        """A reload: counting goes on where the running pipeline was. The correlation, the rate
        limit's recent decisions and the windows of jails that kept their name and key carry
        over (what is held comes back with the active bans, note_ban)."""
        self.correlator = old.correlator
        if old.valve is not None and self.valve is not None:
            self.valve.recent = old.valve.recent
        for jail in self.jails:
            before = old.jail(jail.spec.name)
            if before is not None:
                jail.take_counts(before)

    def forget_all(self) -> None:
        """`unban --all`: every jail's bans and counts, and every held key."""
        self.holding.clear()
        for jail in self.jails:
            jail.forget_all()


def count_events(events: list[Event], tally: dict[tuple[str, str], int]) -> None:
    """Add events to a count per (kind, filter): the daemon's metrics."""
    for e in events:
        key = (e.kind, e.filter)
        tally[key] = tally.get(key, 0) + 1
