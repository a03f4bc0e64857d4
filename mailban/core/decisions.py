"""What happens to the jails' bans before anything acts on them: the rate limit and prefix folds.

Both used to live in the daemon, so `mailban replay` (which has no daemon) decided differently
from it on the same lines: past `max_bans_per_minute` the daemon held decisions back and counted
their keys afresh, and a prefix ban lifted the single-address bans inside it. Here they are one
pure stage of the pipeline (Pipeline.decide_into), which the daemon and replay both run; the daemon
then carries out what it returns (and records, logs and shows it), replay prints it.

Inputs: the bans of one line, in order, each with its own time (`Ban.time`: wall time in the
daemon, log time in replay). Outputs: the bans to act on, the ones held back (`Suppressed`) and
the prefix folds (`Folded`), gathered with the messages to hold (`Hold`) in an `Outcome`, the
command list Pipeline.run returns. The stage runs after every line that decided something, in the
daemon as in replay: a decision held back or folded changes what the jail counts next (it forgets
the key), so deciding once per batch would count the rest of the batch differently. Must never: perform I/O or read the clock (see mailban.core).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Union

from .jails import Jail
from .records import Ban

VALVE_WINDOW = 60.0  # seconds: max_bans_per_minute counts decisions per jail in this window


@dataclass(frozen=True)
class Suppressed:
    """A decision held back by the rate limit: recorded, not acted on. Its key is counted afresh
    (the jail forgets it), so it is acted on once the storm has passed."""

    ban: Ban
    limit: int

    @property
    def reason(self) -> str:
        return f"more than {self.limit} decisions per minute in jail {self.ban.jail}"


@dataclass(frozen=True)
class Folded:
    """A prefix ban and the single-address bans of its jail inside it, which it replaces."""

    net: Ban
    ips: tuple[str, ...]


@dataclass(frozen=True)
class Hold:
    """A message submitted by a key whose mail is being held (a queue-hold action acted on it
    and its ban is in force): hold this one too, the script that was caught goes on."""

    action: str
    jail: str  # of the ban that holds the key
    key_type: str
    key: str
    queue_id: str


Command = Union[Ban, Suppressed, Folded, Hold]


@dataclass
class Outcome:
    """What a batch of lines (Pipeline.run) asks the daemon to do: the commands in the order the
    lines caused them (a Ban to act on, a decision the rate limit held back, a prefix Fold, a
    message to Hold), and when to look again for decisions that fall due with time alone
    (wake_at, the WakeAt command; None: nothing pending). The daemon carries them out by kind
    (one call per action for all the bans of a batch); replay prints them in order."""

    commands: list[Command] = field(default_factory=list)
    wake_at: float | None = None

    @property
    def bans(self) -> list[Ban]:
        return [c for c in self.commands if type(c) is Ban]

    @property
    def suppressed(self) -> list[Suppressed]:
        return [c for c in self.commands if type(c) is Suppressed]

    @property
    def folds(self) -> list[Folded]:
        return [c for c in self.commands if type(c) is Folded]

    @property
    def holds(self) -> list[Hold]:
        return [c for c in self.commands if type(c) is Hold]

    def __bool__(self) -> bool:
        return bool(self.commands)

    def clear(self) -> None:
        self.commands.clear()  # in place: replay holds on to the list


@dataclass
class Valve:
    """At most `limit` new decisions per jail per minute (max_bans_per_minute): a broken filter
    or a threshold of 1 on normal traffic must not ban the internet."""

    limit: int
    recent: dict[str, deque[float]] = field(default_factory=dict)

    def admit(self, ban: Ban) -> bool:
        recent = self.recent.setdefault(ban.jail, deque())
        while recent and recent[0] <= ban.time - VALVE_WINDOW:
            recent.popleft()
        if len(recent) < self.limit:
            recent.append(ban.time)
            return True
        return False


def decide(bans: list[Ban], valve: Valve | None, jails: dict[str, Jail]
           ) -> tuple[list[Ban], list[Suppressed], list[Folded]]:
    """The bans to act on, the suppressed ones and the prefix folds, in the bans' order."""
    out = Outcome()
    decide_into(out, bans, valve, jails)
    return out.bans, out.suppressed, out.folds


def decide_into(out: Outcome, bans: list[Ban], valve: Valve | None, jails: dict[str, Jail]) -> None:
    """decide(), appending its commands to an Outcome."""
    commands = out.commands
    for ban in bans:
        jail = jails.get(ban.jail)
        if valve is not None and not valve.admit(ban):
            commands.append(Suppressed(ban, valve.limit))
            if jail is not None:
                jail.forget(ban.key, ban.key_type)
            continue
        commands.append(ban)
        if ban.key_type == "net" and jail is not None:
            ips = fold_into(jail, ban)
            if ips:
                commands.append(Folded(ban, ips))


def fold_into(jail: Jail, net_ban: Ban) -> tuple[str, ...]:
    """The addresses the jail has banned one by one inside a prefix it now bans (until later than
    the prefix ban's start): the jail forgets those single bans, so that an address that comes
    back after the prefix ban ends is counted and banned again."""
    if jail.spec.key != "ip":
        return ()
    network = ipaddress.ip_network(net_ban.key)
    inside = tuple(ip for ip, until in jail.banned.items()
                   if until > net_ban.time and ipaddress.ip_address(ip) in network)
    for ip in inside:
        del jail.banned[ip]
        jail.ban_started.pop(ip, None)
    return inside
