"""Jails: count selected events per key within a find-time window and decide.

Inputs: events and the current time `now` (wall time in the daemon, the event's own log time in
replay, so that both decide identically on the same lines). Output: `Ban` records.

A jail counts per key (`ip`, `user`, `uid` or `sender`) either events or the recipients they
carry (`count = "recipients"`, the qmgr `nrcpt`), and may also require a number of distinct
client addresses among them (`min_ips`: a stolen password is used from many addresses at once).
A user-keyed jail with `ban_ips` turns its decision on an account into bans of every address
that failed against it within the window, and of every address that fails against it for the
rest of the ban, except addresses the account's owner logged in from within the window (the owner
who mistyped a password must not be locked out with the attackers). An address with a single
failure gets `owner_grace` to prove it is the owner's by logging in; an attacker's second guess
bans it at once, and a single-guess address is banned when the grace runs out.

Smarter than a fixed threshold (each per jail, see docs/configuration.md):
- escalation: a key acted on again within `repeat_window` gets `bantime * bantime_factor**n`,
  up to `bantime_max` (the history survives restarts: the daemon feeds it from its database);
- weighted scores: `count = "score"` sums `weights` by kind, rule or filter.rule instead of
  counting events (a pregreet is worth more than a mistyped password);
- prefixes: in an ip jail, events also count per IPv6 /`prefix6` (and IPv4 /`prefix4`); when
  `prefix_min_ips` distinct addresses of one prefix reach the threshold together, the prefix is
  banned as a whole (key type `net`), unless an ignored address lies inside it;
- long windows: `resolution` > 0 keeps one counter per resolution step instead of one entry per
  event (windows.BucketWindow), so a day-long jail catches slow attackers in bounded memory;
- observe mode: `mode = "observe"` decides and records but names no action.

Memory: a window keeps at most `maxretry` entries per key (every counted entry weighs at least
one) or one counter per `resolution`, at most MAX_IPS_KEPT addresses, and the number of keys is
capped (`max_keys`), evicting the least recently active key among those with one event in the
window first (an attacker who failed twice outlives a spray of single failures, see
_evict_quietest), so a spray of a million addresses cannot exhaust memory.
Must never: read the clock, perform I/O, or ban an ignored address (loopback is always ignored).
Size: one jail's state machine (windows, thresholds, escalation, prefixes, account guessing
with its owner's grace) reads and writes the same tables; split, its invariants would span files.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable

from .durations import format_duration
from .records import KINDS, Ban, Event
from .windows import MAX_IPS_KEPT, BucketWindow, RingWindow

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Loopback is never banned, whatever the configuration says: banning it breaks the host itself.
ALWAYS_IGNORED: tuple[IpNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
MAX_LOGIN_IPS = 64
MAX_OFFENSES_KEPT = 16
COUNT_MODES = ("events", "recipients", "score")
MODES = ("act", "observe")
INLINE_ANSWERS = ("defer", "hold", "reject")
# Events that prove an account's owner uses an address: a successful login or submission.
PROOF_KINDS = frozenset({"login", "submission"})


@dataclass(frozen=True, slots=True)
class JailSpec:
    name: str
    kinds: frozenset[str]
    filters: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    key: str = "ip"
    count: str = "events"
    findtime: float = 600.0
    maxretry: int = 5
    min_ips: int = 0
    bantime: float = 3600.0
    actions: tuple[str, ...] = ("nft",)
    ban_ips: bool = False
    ip_actions: tuple[str, ...] = ("nft",)
    owner_grace: float = 120.0
    weights: tuple[tuple[str, int], ...] = ()
    resolution: float = 0.0
    bantime_factor: float = 2.0
    bantime_max: float = 7 * 86400.0
    repeat_window: float = 7 * 86400.0
    prefix6: int = 64
    prefix4: int = 0
    prefix_min_ips: int = 3
    mode: str = "act"
    # Counted across a fleet: every counted event is also handed out (Jail.shared_out) for the
    # daemon to add to the cluster-wide window (mailban.cluster); see docs/cluster.md.
    shared: bool = False
    ignoreip: tuple[IpNetwork, ...] = ()
    ignorekeys: frozenset[str] = frozenset()
    enabled: bool = True
    max_keys: int = 100_000
    # Counted at postfix's policy check instead of from the logs (mailban/policy): the request
    # that crosses the threshold, and every later one of the key, gets `inline_answer`.
    inline: bool = False
    inline_answer: str = "defer"

    def selects(self, event: Event) -> bool:
        if self.kinds and event.kind not in self.kinds:
            return False
        if self.filters and event.filter not in self.filters:
            return False
        if self.rules and event.rule not in self.rules and f"{event.filter}.{event.rule}" not in self.rules:
            return False
        if self.exclude and (event.filter in self.exclude or f"{event.filter}.{event.rule}" in self.exclude):
            return False
        if self.statuses and event.status not in self.statuses:
            return False
        return True

    def describe(self) -> str:
        """One line an admin reads in `check`, `status` and `explain`."""
        what = {"recipients": "recipients", "score": "points"}.get(self.count, "events")
        d = format_duration
        text = f"{self.maxretry} {what} per {self.key} in {d(self.findtime)}"
        if self.min_ips:
            text += f" from at least {self.min_ips} addresses"
        text += f" -> {', '.join(self.actions) or 'record only'} for {d(self.bantime)}"
        if self.ban_ips:
            text += f", and ban the attacking addresses via {', '.join(self.ip_actions)}"
        if self.bantime_factor > 1:
            text += f"; x{self.bantime_factor:g} per repeat within {d(self.repeat_window)}, up to {d(self.bantime_max)}"
        if self.key == "ip" and (self.prefix6 or self.prefix4):
            nets = " and ".join(f"/{n}" for n in (self.prefix6, self.prefix4) if n)
            text += f"; whole {nets} prefixes from {self.prefix_min_ips} addresses"
        if self.inline:
            text += f"; inline at postfix's policy check, answering {self.inline_answer.upper()}"
        if self.mode == "observe":
            text += " [OBSERVE MODE: nothing is acted on]"
        return text

    def weight(self, event: Event, table: dict[str, int]) -> int:
        """What an event adds to its key's window: its recipients (count = "recipients"), its
        points times the attempts its line reports ("score"), or those attempts ("events")."""
        if self.count == "recipients":
            return event.recipients or 0
        if self.count == "score":
            return self.weight_of(event, table) * event.count
        return event.count

    def weight_of(self, event: Event, table: dict[str, int]) -> int:
        """An event's points: by filter.rule, else rule, else filter, else kind; 1 otherwise."""
        for name in (f"{event.filter}.{event.rule}", event.rule, event.filter, event.kind):
            if name in table:
                return table[name]
        return 1


def _evict_quietest(table: dict[str, RingWindow | BucketWindow], horizon: float, cap: int) -> list[str]:
    """Make room in a full table: forget, among its least recently active keys (1/32 of the
    cap), those with at most one event within the window (a spray's addresses); when most of
    them have more, the least recently active go, whatever they count. Returns the keys
    forgotten (a daemon that saves windows deletes their rows).

    So an attacker who failed twice stays while a spray of single failures flows past, however
    large. A batch at a time because finding a dict's first key costs a scan past the slots
    its earlier deletions left (CPython compacts only on resize): one key per event made a
    million-address spray quadratic."""
    batch = max(1, cap // 32)
    quiet = [key for key, window in islice(table.items(), batch) if not window.busy(horizon)]
    for key in quiet:
        del table[key]
    short = min(batch, len(table)) // 2 - len(quiet)
    if short > 0 or not quiet:
        oldest = list(islice(table, max(short, 1)))
        for key in oldest:
            del table[key]
        quiet += oldest
    return quiet


_IGNORE_CACHE_MAX = 65536


class IgnoreList:
    """Addresses and networks that are never counted nor banned.

    Answers are cached per address (bounded, cleared when full like the filters' address
    cache): parsing the address again for every counted event cost ~0.25 s per million lines
    of replay."""

    __slots__ = ("_v4", "_v6", "_known")

    def __init__(self, networks: Iterable[IpNetwork]) -> None:
        nets = list(ALWAYS_IGNORED) + list(networks)
        self._v4 = [n for n in nets if n.version == 4]
        self._v6 = [n for n in nets if n.version == 6]
        self._known: dict[str, bool] = {}

    @property
    def networks(self) -> tuple[IpNetwork, ...]:
        return tuple(self._v4) + tuple(self._v6)

    def __contains__(self, ip: str) -> bool:
        known = self._known.get(ip)
        if known is not None:
            return known
        addr = ipaddress.ip_address(ip)
        nets = self._v4 if addr.version == 4 else self._v6
        known = any(addr in n for n in nets)
        if len(self._known) >= _IGNORE_CACHE_MAX:
            self._known.clear()
        self._known[ip] = known
        return known


@dataclass
class Jail:
    spec: JailSpec
    ignore: IgnoreList
    windows: dict[str, RingWindow | BucketWindow] = field(default_factory=dict)
    banned: dict[str, float] = field(default_factory=dict)  # key -> until
    # ban_ips jails: addresses banned because of an account (ip -> until), and where each
    # account's owner logged in from (user -> {ip: last time}).
    banned_ips: dict[str, float] = field(default_factory=dict)
    ban_started: dict[str, float] = field(default_factory=dict)
    logins: dict[str, dict[str, float]] = field(default_factory=dict)
    # Addresses with one failure against an account under attack, waiting for their grace to
    # run out: ip -> (deadline in log time, user, line); and failures per address during the ban.
    probation: dict[str, tuple[float, str, str]] = field(default_factory=dict)
    follower_fails: dict[str, int] = field(default_factory=dict)
    # The event kinds offer() does anything with (counted kinds, plus logins for ban_ips jails):
    # the pipeline skips the call for other kinds while nothing is on probation.
    wants: frozenset[str] = field(init=False)
    key_field: int = field(init=False)
    # No probation deadline is earlier than this (a lower bound, made exact by each tick() scan),
    # so that tick(), called before every offered event, is free until something falls due.
    next_due: float = field(default=float("inf"), init=False)
    # Repeat offenders: key -> times it was acted on (escalation), and the prefix windows and
    # prefix bans of an ip jail.
    offenses: dict[str, deque[float]] = field(default_factory=dict)
    nets: dict[str, RingWindow] = field(default_factory=dict)
    banned_nets: dict[str, float] = field(default_factory=dict)
    weights: dict[str, int] = field(init=False)
    # shared jails: (key, log time, weight, line, ip) of each event counted since the daemon last
    # took them; the daemon empties it after every batch.
    shared_out: list[tuple[str, float, int, str, str | None]] = field(default_factory=list)
    # With track_windows (the daemon, which saves changed windows with each batch): the windows
    # changed since the daemon last took them, ("key" | "net", key); it empties the set.
    track_windows: bool = field(default=False, init=False)
    touched: set[tuple[str, str]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        spec = self.spec
        kinds = spec.kinds or KINDS
        self.wants = kinds | PROOF_KINDS if spec.ban_ips else frozenset(kinds)
        self.weights = dict(spec.weights)
        # Where the jail's key sits in an Event: an event without it is never counted (see
        # _count), which most events offered to user and uid jails are (inbound submissions).
        self.key_field = Event._fields.index(spec.key)

    def offer(self, event: Event, now: float) -> list[Ban]:
        """Count `event` if this jail selects it; return the bans the threshold causes."""
        spec = self.spec
        due: list[Ban] = self.tick(event.time, now) if self.probation else []
        if spec.ban_ips and event.kind in PROOF_KINDS:
            self._note_login(event)
        # most events offered to user and uid jails lack the key (inbound): no call for those
        key = None if event[self.key_field] is None else self.counted_key(event)
        if key is None:
            return due
        counted = self._count(event, key, now)
        return due + counted if due else counted

    def counted_key(self, event: Event) -> str | None:
        """The key this jail counts `event` under, or None when it counts nothing for it: the
        event lacks the jail's key, the jail does not select it, or the key is ignored
        (`ignorekeys`, and the ignore list for addresses). The one selection of the jail's
        counting (offer) and of `replay --report`'s peaks."""
        spec = self.spec
        if event[self.key_field] is None or not spec.selects(event):
            return None
        key = event.key(spec.key)
        if key is None or key in spec.ignorekeys or (spec.key == "ip" and key in self.ignore):
            return None
        return key

    def _count(self, event: Event, key: str, now: float) -> list[Ban]:
        spec = self.spec
        net = None
        if spec.key == "ip":
            net = self._prefix(key)
            if net is not None and self.banned_nets.get(net, 0.0) > now:
                return []  # the whole prefix is banned already
        until = self.banned.get(key)
        if until is not None:
            if until > now:
                # Already acted on. An account under attack: ban each new attacking address too.
                return self._ban_followers(key, event, now, until) if spec.ban_ips else []
            del self.banned[key]
            self.ban_started.pop(key, None)
        weight = spec.weight(event, self.weights)
        if weight <= 0:
            return []
        horizon = event.time - spec.findtime
        bans: list[Ban] = []
        window = self.windows.pop(key, None)  # re-inserted last: dict order = recency for eviction
        if self.track_windows:
            self.touched.add(("key", key))
        if window is None:
            window = self._new_window(keep_ips=spec.key != "ip")
            if len(self.windows) >= spec.max_keys:
                self._evict("key", self.windows, horizon)
        window.add(event.time, weight, event.line, event.ip, spec.maxretry, horizon)
        window.expire(horizon)
        if spec.shared:
            self.shared_out.append((key, event.time, weight, event.line, event.ip))
        ips = window.live_ips(horizon) if window.ips is not None else {}
        if window.total < spec.maxretry or (spec.min_ips and len(ips) < spec.min_ips):
            self.windows[key] = window
        else:
            ban = self._decide(spec.key, key, now, event.time, window.total, tuple(window.lines), tuple(ips))
            bans.append(ban)
            if spec.ban_ips:
                self.ban_started[key] = event.time
                for ip, failures in ips.items():
                    self.follower_fails[ip] = failures
                    follower = self._ip_ban(key, ip, now, ban.until, event.time, ban.lines)
                    if follower is not None:
                        bans.append(follower)
        if net is not None:
            bans.extend(self._count_prefix(net, key, weight, event, now, horizon))
        return bans

    def _evict(self, which: str, table: dict[str, RingWindow | BucketWindow], horizon: float) -> None:
        evicted = _evict_quietest(table, horizon, self.spec.max_keys)
        if self.track_windows:
            # Noted like any other change, so that their saved rows go too: left behind, they
            # came back at the next start, and the policy service's mirror kept them for ever.
            self.touched.update((which, key) for key in evicted)

    def _new_window(self, keep_ips: bool) -> RingWindow | BucketWindow:
        if self.spec.resolution > 0:
            return BucketWindow(keep_ips, self.spec.resolution)
        return RingWindow(keep_ips)

    def decide_shared(self, key: str, now: float, when: float, count: int, lines: tuple[str, ...]) -> Ban | None:
        """A decision the fleet's shared window reached (the local window may be far below it):
        None when the key is ignored or already acted on."""
        spec = self.spec
        if self.banned.get(key, 0.0) > now or key in spec.ignorekeys:
            return None
        if spec.key == "ip" and key in self.ignore:
            return None
        self._drop_window("key", key)
        return self._decide(spec.key, key, now, when, count, lines, ())

    def _decide(self, key_type: str, key: str, now: float, when: float, count: int,
                lines: tuple[str, ...], ips: tuple[str, ...], cause: str = "") -> Ban:
        """A decision on a key, with its escalated ban time; recorded as an offense."""
        spec = self.spec
        repeat = self._repeats(key, when)
        bantime = spec.bantime
        if repeat and spec.bantime_factor > 1:
            bantime = min(spec.bantime * spec.bantime_factor ** repeat, max(spec.bantime_max, spec.bantime))
        self.note_offense(key, when)
        observe = spec.mode == "observe"
        ban = Ban(jail=spec.name, key_type=key_type, key=key, time=now, until=now + bantime, count=count,
                  findtime=spec.findtime, actions=() if observe else spec.actions, lines=lines, ips=ips,
                  cause=cause, repeat=repeat, observe=observe)
        if key_type == "net":
            self.banned_nets[key] = ban.until
        else:
            self.banned[key] = ban.until
        return ban

    # ---- repeat offenders --------------------------------------------------------------------
    def _repeats(self, key: str, when: float) -> int:
        times = self.offenses.get(key)
        if not times:
            return 0
        horizon = when - self.spec.repeat_window
        return sum(1 for t in times if t > horizon)

    def note_offense(self, key: str, when: float) -> None:
        """Remember that `key` was acted on at `when` (the daemon feeds its history at start)."""
        times = self.offenses.pop(key, None)
        if times is None:
            times = deque(maxlen=MAX_OFFENSES_KEPT)
            if len(self.offenses) >= self.spec.max_keys:
                del self.offenses[next(iter(self.offenses))]
        times.append(when)
        self.offenses[key] = times

    # ---- prefixes ----------------------------------------------------------------------------
    def _prefix(self, ip: str) -> str | None:
        spec = self.spec
        bits = spec.prefix6 if ":" in ip else spec.prefix4
        if not bits:
            return None
        return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))

    def _count_prefix(self, net: str, ip: str, weight: int, event: Event, now: float,
                      horizon: float) -> list[Ban]:
        spec = self.spec
        window = self.nets.pop(net, None)
        if self.track_windows:
            self.touched.add(("net", net))
        if window is None:
            window = RingWindow(keep_ips=True)
            if len(self.nets) >= spec.max_keys:
                self._evict("net", self.nets, horizon)
        window.add(event.time, weight, event.line, ip, spec.maxretry * max(spec.prefix_min_ips, 1), horizon)
        window.expire(horizon)
        ips = window.live_ips(horizon)
        if window.total < spec.maxretry or len(ips) < spec.prefix_min_ips:
            self.nets[net] = window
            return []
        network = ipaddress.ip_network(net)
        if any(network.overlaps(ignored) for ignored in self.ignore.networks):
            self.nets[net] = window
            return []  # an ignored address lies inside: ignore lists win, addresses are banned one by one
        return [self._decide("net", net, now, event.time, window.total, tuple(window.lines), tuple(ips))]

    # ---- accounts under attack ---------------------------------------------------------------
    def _note_login(self, event: Event) -> None:
        if event.user is None or event.ip is None:
            return
        seen = self.logins.pop(event.user, None)
        if seen is None:
            seen = {}
            if len(self.logins) >= self.spec.max_keys:
                del self.logins[next(iter(self.logins))]
        seen.pop(event.ip, None)
        seen[event.ip] = event.time
        held = self.probation.get(event.ip)
        if held is not None and held[1] == event.user:
            del self.probation[event.ip]  # the owner, who had mistyped: never banned
        if len(seen) > MAX_LOGIN_IPS:
            del seen[next(iter(seen))]
        self.logins[event.user] = seen

    def _is_owner(self, user: str, ip: str, since: float) -> bool:
        last = self.logins.get(user, {}).get(ip)
        return last is not None and last > since

    def _ip_ban(self, user: str, ip: str, now: float, until: float, when: float,
                lines: tuple[str, ...], final: bool = False) -> Ban | None:
        if ip in self.ignore:
            return None
        started = self.ban_started.get(user, when)
        if self._is_owner(user, ip, started - self.spec.findtime):
            return None
        if self.banned_ips.get(ip, 0.0) > now:
            return None
        if self.follower_fails.get(ip, 0) < 2 and self.spec.owner_grace > 0 and not final:
            # One failure only: the owner who mistyped, or an attacker's single guess. Wait.
            if ip not in self.probation:
                deadline = when + self.spec.owner_grace
                self.probation[ip] = (deadline, user, lines[-1] if lines else "")
                self.next_due = min(self.next_due, deadline)
            return None
        self.probation.pop(ip, None)
        self.banned_ips[ip] = until
        if len(self.banned_ips) > self.spec.max_keys:
            del self.banned_ips[next(iter(self.banned_ips))]
        mine = tuple(line for line in lines if f"[{ip}]" in line or f"={ip}" in line or f",{ip}" in line)
        observe = self.spec.mode == "observe"
        return Ban(
            jail=self.spec.name,
            key_type="ip",
            key=ip,
            time=now,
            until=until,
            count=len(mine),
            findtime=self.spec.findtime,
            actions=() if observe else self.spec.ip_actions,
            lines=mine or lines[-3:],
            cause=f"user {user}",
            observe=observe,
        )

    def _ban_followers(self, user: str, event: Event, now: float, until: float) -> list[Ban]:
        if event.ip is None:
            return []
        self.follower_fails[event.ip] = self.follower_fails.get(event.ip, 0) + 1
        if len(self.follower_fails) > MAX_IPS_KEPT:
            del self.follower_fails[next(iter(self.follower_fails))]
        ban = self._ip_ban(user, event.ip, now, until, event.time, (event.line,))
        return [ban] if ban is not None else []

    def tick(self, log_now: float, now: float | None = None) -> list[Ban]:
        """Ban the single-failure addresses whose grace ran out without an owner's login.

        `log_now` is the log time reached (replay: the last line's time; daemon: wall time)."""
        if not self.probation or log_now < self.next_due:
            return []
        bans = []
        next_due = float("inf")
        for ip, (deadline, user, line) in list(self.probation.items()):
            if deadline > log_now:
                next_due = min(next_due, deadline)
                continue
            del self.probation[ip]
            until = self.banned.get(user, 0.0)
            when = now if now is not None else log_now
            if until <= when:
                continue  # the account's ban ended meanwhile
            ban = self._ip_ban(user, ip, when, until, deadline, (line,), final=True)
            if ban is not None:
                bans.append(ban)
        self.next_due = next_due
        return bans

    # ---- bookkeeping -------------------------------------------------------------------------
    def note_ban(self, key: str, until: float, key_type: str | None = None) -> None:
        """Record a ban made elsewhere (restored from the database, or an admin's `ban`)."""
        if key_type == "net":
            self.banned_nets[key] = max(until, self.banned_nets.get(key, 0.0))
            self._drop_window("net", key)
            return
        if key_type == "ip" and self.spec.key != "ip":
            self.banned_ips[key] = max(until, self.banned_ips.get(key, 0.0))
            return
        self.banned[key] = max(until, self.banned.get(key, 0.0))
        self._drop_window("key", key)

    def _drop_window(self, which: str, key: str) -> None:
        if (self.nets if which == "net" else self.windows).pop(key, None) is not None and self.track_windows:
            self.touched.add((which, key))

    def forget(self, key: str, key_type: str | None = None) -> bool:
        """Lift the jail's memory of `key` (an admin's unban): counting starts afresh."""
        if key_type == "net":
            self._drop_window("net", key)
            return self.banned_nets.pop(key, None) is not None
        if key_type == "ip" and self.spec.key != "ip":
            return self.banned_ips.pop(key, None) is not None
        found = self.banned.pop(key, None) is not None
        self.ban_started.pop(key, None)
        for ip in [ip for ip, held in self.probation.items() if held[1] == key]:
            del self.probation[ip]
        self._drop_window("key", key)
        return found

    def forget_all(self) -> None:
        """Lift every memory of bans and counts (`mailban unban --all`): keys, prefixes, the
        addresses banned for an account, the owner's grace list and every window."""
        if self.track_windows:
            self.touched.update(("key", key) for key in self.windows)
            self.touched.update(("net", net) for net in self.nets)
        for table in (self.banned, self.banned_nets, self.banned_ips, self.ban_started, self.probation,
                      self.follower_fails, self.windows, self.nets):
            table.clear()

    def counts(self, now: float) -> dict[str, int]:
        horizon = now - self.spec.findtime
        return {k: win.total_since(horizon) for k, win in self.windows.items()}

    def count_of(self, key: str, now: float) -> int | None:
        """What `key` has counted within the window now; None when the jail is not counting it."""
        window = self.windows.get(key)
        return None if window is None else window.total_since(now - self.spec.findtime)

    @property
    def tracked(self) -> int:
        """Keys counted at the moment (status)."""
        return len(self.windows)

    def take_counts(self, old: Jail) -> None:
        """A reload: go on counting where the running jail of the same name and key was."""
        if old.spec.key == self.spec.key:
            self.windows, self.logins = old.windows, old.logins
