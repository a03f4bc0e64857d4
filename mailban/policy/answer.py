"""The answer to a policy request: a pure function of the request, what mailban currently acts
on (`Decisions`), the inline jails' windows and the time.

Order: a disabled account is refused (REJECT), a held account's (or sender's, or client's) mail
is held (HOLD), a deferred client or sender gets a 4xx; otherwise the inline jails count the
request (at RCPT only, see below) and answer for a key they act on, or for the request that
crosses their threshold; everything else is DUNNO (postfix goes on with its own restrictions).
The answers name no internals: the client reads them.

Inline jails count at RCPT (smtpd_recipient_restrictions), not at END-OF-MESSAGE: the answer
comes before the message is transferred, DEFER/REJECT at RCPT applies to that recipient (the
client retries it later), and HOLD at RCPT holds the whole message. A jail that counts
messages (`count = "events"`) counts a message once, at its first RCPT (postfix's `instance`
attribute names the message; the server tells when it changes); `count = "recipients"`
counts every RCPT. A RCPT that a later restriction refuses was counted all the same (as with
postfwd): put `check_policy_service` after `reject_unauth_destination`.

The inline jails are `core.jails.Jail` objects, so their windows, escalation, ignore lists and
key cap are those of log jails; their decisions are ordinary `Ban` records that the daemon
records and carries out. Requests are turned into `Event`s of kind `submission` (filter
`policy`, rule `rcpt`) with a line for `explain`.
Must never: read the clock or perform I/O (time comes in as `now`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Iterable

from ..core.jails import IgnoreList, Jail, JailSpec
from ..core.records import Ban, Event
from .protocol import Request, answer

DUNNO = answer("DUNNO")
DISABLED = answer("REJECT 5.7.1 Account disabled, contact your administrator")
HELD = answer("HOLD held for review")
DEFERRED = answer("DEFER_IF_PERMIT 4.7.1 Service temporarily limited, please try again later")
# An inline jail's answer, by its `inline_answer`.
INLINE_ANSWERS = {
    "defer": answer("DEFER 4.7.1 Sending rate limit reached, please try again later"),
    "hold": answer("HOLD sending rate limit reached"),
    "reject": answer("REJECT 5.7.1 Sending rate limit reached"),
}
INLINE_KEYS = ("ip", "user", "sender")


@dataclass(frozen=True, slots=True)
class Decisions:
    """What mailban currently acts on, as the policy service reads it: built by the daemon from
    its active bans (`from_bans`) and replaced whole when they change (the server reads one
    reference, so no lock is needed)."""

    disabled: frozenset[str] = frozenset()  # sasl_username
    held: frozenset[tuple[str, str]] = frozenset()  # (key type, key): user, sender or ip
    deferred: frozenset[tuple[str, str]] = frozenset()  # ip or sender
    # Deferred prefixes: (version, prefix length, network number >> host bits), so that a lookup
    # is one shift per prefix length in use.
    deferred_nets: frozenset[tuple[int, int, int]] = frozenset()
    net_lengths: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_bans(cls, bans: Iterable[Ban], action_types: dict[str, str], now: float) -> Decisions:
        """The decisions of the active `bans`, by the type of the actions that carry them out:
        `sasl-disable` disables an account, `queue-hold` holds, `defer` defers."""
        disabled: set[str] = set()
        held: set[tuple[str, str]] = set()
        deferred: set[tuple[str, str]] = set()
        nets: set[tuple[int, int, int]] = set()
        for ban in bans:
            if ban.until <= now or ban.observe:
                continue
            types = {action_types.get(a, "") for a in ban.actions}
            if "sasl-disable" in types and ban.key_type == "user":
                disabled.add(ban.key)
            if "queue-hold" in types and ban.key_type in ("user", "sender", "ip"):
                held.add((ban.key_type, ban.key))
            if "defer" in types:
                if ban.key_type in ("ip", "sender"):
                    deferred.add((ban.key_type, ban.key))
                elif ban.key_type == "net":
                    net = ipaddress.ip_network(ban.key)
                    nets.add((net.version, net.prefixlen, int(net.network_address) >> (net.max_prefixlen - net.prefixlen)))
        lengths = tuple(sorted({(v, n) for v, n, _ in nets}))
        return cls(frozenset(disabled), frozenset(held), frozenset(deferred), frozenset(nets), lengths)

    def net_deferred(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        number = int(addr)
        for version, length in self.net_lengths:
            if version == addr.version and (version, length, number >> (addr.max_prefixlen - length)) in self.deferred_nets:
                return True
        return False


def inline_jail(spec: JailSpec, ignore: IgnoreList) -> Jail:
    """A jail that counts policy requests: the spec's event selection is replaced by the one
    kind of event requests become (its filters and rules name log lines, which it never sees)."""
    counted = replace(spec, kinds=frozenset({"submission"}), filters=frozenset(), rules=frozenset(),
                      exclude=frozenset(), statuses=frozenset())
    return Jail(counted, ignore)


@dataclass
class Inline:
    """The inline jails, owned by the policy server's thread."""

    jails: list[Jail] = field(default_factory=list)

    def jail(self, name: str) -> Jail | None:
        return next((j for j in self.jails if j.spec.name == name), None)

    def replace(self, jails: list[Jail]) -> None:
        """A reload's inline jails: a jail that stays (same name, same key) keeps its counts
        and bans."""
        for jail in jails:
            before = self.jail(jail.spec.name)
            if before is not None and before.spec.key == jail.spec.key:
                jail.windows, jail.banned, jail.offenses = before.windows, before.banned, before.offenses
                jail.nets, jail.banned_nets, jail.touched = before.nets, before.banned_nets, before.touched
        self.jails = jails

    def forget(self, key_type: str, key: str, jail_name: str | None = None) -> None:
        for jail in self.jails:
            if jail_name is None or jail.spec.name == jail_name:
                jail.forget(key, key_type)

    def forget_all(self) -> None:
        for jail in self.jails:
            jail.forget_all()

    def names(self) -> list[str]:
        return [jail.spec.name for jail in self.jails]


def _key(request: Request, key_type: str) -> str | None:
    if key_type == "user":
        return request.user
    if key_type == "sender":
        return request.sender
    return request.client


def _event(request: Request, now: float) -> Event:
    line = (f"policy: RCPT from {request.client or 'unknown'}: sasl_username={request.user or ''}, "
            f"sender=<{request.sender or ''}>")
    return Event(now, "submission", "policy", "rcpt", ip=request.client, user=request.user,
                 sender=request.sender, recipients=1, line=line)


def decide(request: Request, decisions: Decisions, inline: Inline, now: float,
           new_message: bool) -> tuple[bytes, list[Ban]]:
    """The answer to `request` and the inline jails' new bans. `new_message`: this RCPT is the
    first of its message on its connection (the server follows `instance`)."""
    user = request.user
    if user is not None:
        if user in decisions.disabled:
            return DISABLED, []
        if ("user", user) in decisions.held:
            return HELD, []
    held, deferred = decisions.held, decisions.deferred
    if held:
        if request.client is not None and ("ip", request.client) in held:
            return HELD, []
        if request.sender is not None and ("sender", request.sender) in held:
            return HELD, []
    if deferred:
        if request.client is not None and ("ip", request.client) in deferred:
            return DEFERRED, []
        if request.sender is not None and ("sender", request.sender) in deferred:
            return DEFERRED, []
    if decisions.deferred_nets and request.client is not None and decisions.net_deferred(request.client):
        return DEFERRED, []
    if not inline.jails:
        return DUNNO, []
    counting = request.state == "RCPT"
    reply = DUNNO
    bans: list[Ban] = []
    event: Event | None = None
    for jail in inline.jails:
        spec = jail.spec
        key = _key(request, spec.key)
        if key is None:
            continue
        observe = spec.mode == "observe"  # decides and records; never answers
        if jail.banned.get(key, 0.0) > now or (jail.banned_nets and _net_banned(jail, key, now)):
            if reply is DUNNO and not observe:
                reply = INLINE_ANSWERS[spec.inline_answer]
            continue
        if not counting or (spec.count != "recipients" and not new_message):
            continue
        if event is None:
            event = _event(request, now)
        # The request that reaches `maxretry` passes and the decision starts with it; every
        # later one is answered: with maxretry = 20, 20 messages go out and the 21st is deferred,
        # as many as a log jail lets through (and as postfwd's rate(.../20/...) does).
        bans.extend(jail.offer(event, now))
    return reply, bans


def _net_banned(jail: Jail, ip: str, now: float) -> bool:
    if jail.spec.key != "ip":
        return False
    net = jail._prefix(ip)
    return net is not None and jail.banned_nets.get(net, 0.0) > now
