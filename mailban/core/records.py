"""Typed, immutable records passed between the pipeline's stages.

Inputs: none (pure data). Outputs: Event (filters -> jails), Ban and Unban (jails -> actions).
Event is a typed named tuple (see its docstring: it is built for every other log line); the
others are frozen, slotted dataclasses.
Security note: every string field here may carry attacker-written text (user names, hosts);
only `ip` is trusted, and only because it was validated with `ipaddress` before the record
was built. Never interpolate these fields into a shell command.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# auth-failure, reject, rate-limit, protocol: what a client does wrong at the door.
# login: a successful authentication. submission: a message accepted from a client, SASL user or
# local uid. queued: the queue manager took a message in (carries its recipient count).
# delivery: one recipient's delivery result (status). removed: a message left the queue (lets
# the queue-id correlation forget it). direct-smtp: a local uid opened connections to a remote
# SMTP port itself, bypassing the MTA (counted by the kernel, mailban/directsmtp; never from a log).
KINDS = frozenset(
    {"auth-failure", "reject", "rate-limit", "protocol", "login", "submission", "queued", "delivery",
     "removed", "direct-smtp"}
)
# The kinds that count as failures for the default jail.
FAILURE_KINDS = frozenset({"auth-failure", "reject", "rate-limit", "protocol"})
# `net`: a whole prefix (2001:db8:1:2::/64), decided by an ip jail's prefix counting.
KEY_TYPES = frozenset({"ip", "user", "uid", "sender", "net"})
# What a jail counts by: an event's field (`net` is a kind of ban, an ip jail's prefix).
JAIL_KEY_TYPES = frozenset({"ip", "user", "uid", "sender"})
STATUSES = frozenset({"sent", "bounced", "deferred", "expired"})


def _canonical_net(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError:
        return None


# An IPv4 address already in canonical form (decimal octets <= 255, no leading zeros): what
# ipaddress would return unchanged. Checked first because every ban read back from the state
# database at start-up is validated, and ipaddress costs ~4 us per address (0.4 s for 100k).
_CANONICAL_V4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                           r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])").fullmatch


def normalize_ip(text: str) -> str | None:
    """Return the canonical form of an IPv4/IPv6 address, or None if `text` is not one.

    IPv4-mapped IPv6 addresses (::ffff:192.0.2.1, as dovecot and some milters log them) are
    returned as plain IPv4 so that one client has one key.
    """
    if _CANONICAL_V4(text):
        return text
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


class _EventFields(NamedTuple):
    time: float
    kind: str
    filter: str
    rule: str
    ip: str | None = None
    user: str | None = None
    uid: int | None = None
    sender: str | None = None
    queue_id: str | None = None
    recipients: int | None = None
    status: str | None = None
    source: str = ""
    lineno: int = 0
    line: str = ""
    # How many times the line says the thing happened (a rule's <COUNT>, e.g. dovecot's
    # `(auth failed, 5 attempts ...)`); jails count an event `count` times.
    count: int = 1


class Event(_EventFields):
    """One matched log line, typed and immutable.

    `line` is the raw line (decoded with replacement) kept for explanations; `lineno` is the
    1-based line number within its source when known (test/replay), else 0.

    A typed named tuple rather than a frozen dataclass because half the lines of a busy mail
    log become an event: building a 15-field frozen dataclass costs about 1.3 us (one
    object.__setattr__ per field), a tuple about 0.1 us. Built through `Event(...)` it checks
    its kind like any record; the filters, whose rules had their kind checked when the filter
    was loaded, build it with `Event.make(...)`, which skips the check.
    """

    __slots__ = ()

    def __new__(cls, time: float, kind: str, filter: str, rule: str, ip: str | None = None,
                user: str | None = None, uid: int | None = None, sender: str | None = None,
                queue_id: str | None = None, recipients: int | None = None,
                status: str | None = None, source: str = "", lineno: int = 0,
                line: str = "", count: int = 1) -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        return tuple.__new__(cls, (time, kind, filter, rule, ip, user, uid, sender, queue_id,
                                   recipients, status, source, lineno, line, count))

    @classmethod
    def make(cls, fields: tuple[Any, ...]) -> Event:
        """Build from all 15 fields in order, unchecked (the caller validated the kind)."""
        return tuple.__new__(cls, fields)

    def key(self, key_type: str) -> str | None:
        """The value this event is counted under for a jail keyed by `key_type`."""
        if key_type == "ip":
            return self.ip
        if key_type == "user":
            return self.user
        if key_type == "uid":
            return None if self.uid is None else str(self.uid)
        if key_type == "sender":
            return self.sender
        raise ValueError(f"unknown key type {key_type!r}")


@dataclass(frozen=True, slots=True)
class Ban:
    """A decision to act on a key until `until` (epoch seconds).

    `lines` are the log lines that caused it (the last `maxretry` at most), for `list` and
    `explain`. `actions` names the actions that must carry it out.
    """

    jail: str
    key_type: str
    key: str
    time: float
    until: float
    count: int
    findtime: float
    actions: tuple[str, ...]
    lines: tuple[str, ...] = field(default=())
    manual: bool = False
    # The client addresses seen in the window (account jails), and why an address was banned
    # when another decision caused it ("user alice@example.test").
    ips: tuple[str, ...] = field(default=())
    cause: str = ""
    # How many earlier decisions on this key fall within the jail's repeat window (escalation),
    # and whether the jail only observes (decides and records, acts on nothing).
    repeat: int = 0
    observe: bool = False

    def __post_init__(self) -> None:
        if self.key_type not in KEY_TYPES:
            raise ValueError(f"unknown key type {self.key_type!r}")
        if self.key_type == "ip" and normalize_ip(self.key) != self.key:
            raise ValueError(f"not a canonical IP address: {self.key!r}")
        if self.key_type == "net" and _canonical_net(self.key) != self.key:
            raise ValueError(f"not a canonical network: {self.key!r}")
        if self.key_type == "uid" and not self.key.isdigit():
            raise ValueError(f"not a numeric uid: {self.key!r}")
        if not self.key:
            raise ValueError("a ban needs a key")


@dataclass(frozen=True, slots=True)
class Unban:
    """A decision to lift a ban (expiry, or an admin's unban)."""

    jail: str
    key_type: str
    key: str
    actions: tuple[str, ...]
    reason: str = "expired"
