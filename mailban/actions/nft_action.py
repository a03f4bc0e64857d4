"""The `nft` action: client addresses into kernel sets with timeouts (see actions/nft.py).

Config (actions.d/nft.toml): table, set4, set6, chain, priority, verdict, ports; and
cut_connections, cut_ports, cut_exempt (closing live connections, below).
do: add the ban's address with the ban's remaining time as the element timeout (the longest, when
several bans on one address are given), so the kernel expires it even while the daemon is down;
then close the address's live TCP connections to the cut ports (sockdestroy.py): the set only
stops new packets, and a session opened before the ban would otherwise stay usable if the rule
lets it through, or hang on the server for many minutes (drop: its packets vanish, the server's
socket waits out its retransmissions). The cut comes after the element, so a cut client cannot
reconnect in between. A cut that fails (no CAP_NET_ADMIN, a kernel without
CONFIG_INET_DIAG_DESTROY) is logged once, said in health() and in the ban's result, and never
fails the ban. undo: delete the element. start: create the table, sets and rule idempotently and
restore every still-valid ban in one batch (restored bans cut nothing: their connections were
cut when they were made, or the daemon was down). check: the table, sets and chain still exist.
Only `ip` and `net` bans are handled; other key types (user, uid) are ignored by this action.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import time
from typing import Any

from .. import sockdestroy
from ..core.records import Ban
from .base import ActionBase

log = logging.getLogger("mailban.action.nft")

_BACKEND_OPTIONS = {"table", "set4", "set6", "set4net", "set6net", "chain", "priority", "verdict", "ports"}
_CUT_OPTIONS = {"cut_connections", "cut_ports", "cut_exempt"}
_OPTIONS = _BACKEND_OPTIONS | _CUT_OPTIONS
# Connections named in the log line of a cut; the count is always complete.
_NAMED = 5


class NftAction(ActionBase):
    # The kernel removes an element when its timeout runs out: expiry needs no call from us.
    self_expiring = True
    # One kernel element, hence one timeout, per address: the daemon hands ban() every active ban
    # on the addresses concerned, and the longest one wins (see _elements).
    one_timeout_per_key = True

    def __init__(self, name: str, options: dict[str, Any], context: Any = None) -> None:
        from .nft import NftBackend

        self.validate(options)
        self.name = name
        self.backend = NftBackend(**{k: v for k, v in options.items() if k in _BACKEND_OPTIONS})
        self.cut = bool(options.get("cut_connections", True))
        # By default what the ban blocks: the rule's ports (none: every port).
        self.cut_ports = frozenset(options.get("cut_ports", options.get("ports", [])))
        self.cut_exempt = tuple(ipaddress.ip_network(str(n), strict=False) for n in options.get("cut_exempt", []))
        self.cut_problem: str | None = None  # why cutting fails, said once in the log
        self.notes: dict[str, str] = {}

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        for key in options:
            if key not in _OPTIONS:
                raise ValueError(f"`{key}` is not an nft action option; known: {', '.join(sorted(_OPTIONS))}")
        for key in ("table", "set4", "set6", "set4net", "set6net", "chain"):
            value = options.get(key, "x")
            if not isinstance(value, str) or not value.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"`{key}` must be a plain name (letters, digits, - and _)")
        prio = options.get("priority", 0)
        if not isinstance(prio, int) or isinstance(prio, bool):
            raise ValueError("`priority` must be a whole number")
        if options.get("verdict", "drop") not in ("drop", "reject"):
            raise ValueError("`verdict` must be \"drop\" or \"reject\"")
        ports = options.get("ports", [])
        if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
        ):
            raise ValueError("`ports` must be a list of port numbers (empty: all traffic)")
        if not isinstance(options.get("cut_connections", True), bool):
            raise ValueError("`cut_connections` must be true or false")
        cut_ports = options.get("cut_ports", [])
        if not isinstance(cut_ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in cut_ports
        ):
            raise ValueError("`cut_ports` must be a list of port numbers (empty: every port)")
        exempt = options.get("cut_exempt", [])
        if not isinstance(exempt, list):
            raise ValueError("`cut_exempt` must be a list of addresses or CIDR networks")
        for item in exempt:
            try:
                ipaddress.ip_network(str(item), strict=False)
            except ValueError:
                raise ValueError(f"`cut_exempt`: {item!r} is not an IP address or CIDR network") from None

    @staticmethod
    def _elements(bans: list[Ban], now: float) -> list[tuple[str, float]]:
        best: dict[str, float] = {}
        for ban in bans:
            if ban.key_type in ("ip", "net") and ban.until > now:
                best[ban.key] = max(best.get(ban.key, 0.0), ban.until)
        return [(ip, max(1, math.ceil(until - now))) for ip, until in best.items()]

    def start(self, active: list[Ban]) -> None:
        self.backend.restore(self._elements(active, time.time()))
        if self.cut:
            self._cut_failed(sockdestroy.unavailable())

    def ban(self, bans: list[Ban]) -> list[str]:
        elements = self._elements(bans, time.time())
        self.notes = {}
        if not elements:
            return []
        self.backend.add(elements)
        return self._cut_connections([key for key, _ in elements]) if self.cut else []

    def _cut_connections(self, keys: list[str]) -> list[str]:
        """Close the live connections of the banned keys; what went wrong, for ban()'s answer."""
        targets = [ipaddress.ip_network(k, strict=False) for k in keys]
        try:
            cut = sockdestroy.cut_connections(targets, self.cut_ports, self.cut_exempt)
        except OSError as exc:
            self._cut_failed(_reason(exc))
            return [f"live connections not cut: {self.cut_problem}"]
        if cut:  # a cut that found nothing proves nothing (the capability is checked on destroy)
            self._cut_failed(None)
        for key, target in zip(keys, targets):
            mine = [c for c in cut if sockdestroy.peer_matches(c.peer, [target])]
            if mine:
                self.notes[key] = f"cut {len(mine)} live connection{'s' if len(mine) > 1 else ''}"
                named = ", ".join(str(c) for c in mine[:_NAMED]) + (", ..." if len(mine) > _NAMED else "")
                log.warning("%s %s: %s (%s)", self.name, key, self.notes[key], named)
        return []

    def _cut_failed(self, problem: str | None) -> None:
        """Log a new reason once (not per ban), and its end."""
        if problem and problem != self.cut_problem:
            log.error("%s: cannot cut banned addresses' live connections: %s; bans still block new "
                      "ones", self.name, problem)
        elif not problem and self.cut_problem:
            log.warning("%s: cutting live connections works again", self.name)
        self.cut_problem = problem

    def ban_notes(self) -> dict[str, str]:
        """What the last ban() did per key beyond the element: `cut N live connections`."""
        return dict(self.notes)

    def health(self) -> str | None:
        return f"live connections are not cut: {self.cut_problem}" if self.cut and self.cut_problem else None

    def unban(self, bans: list[Ban]) -> None:
        ips = sorted({b.key for b in bans if b.key_type in ("ip", "net")})
        if ips:
            self.backend.remove(ips)

    def unban_all(self) -> bool:
        present = list(self.backend.list())
        if present:
            self.backend.remove(present)
        return True

    def stop(self) -> None:
        """Leave table and sets in place: bans stay enforced and expire in the kernel."""

    def check(self) -> None:
        """Called by the daemon every few seconds: a table deleted behind our back (`nft flush
        ruleset`) raises, the daemon marks the action failing and its retry restores everything."""
        self.backend.check()


def _reason(exc: OSError) -> str:
    """An admin's words for the kernel's refusals."""
    if exc.errno == errno.EPERM:
        return "no CAP_NET_ADMIN (give the daemon this capability, or set cut_connections = false)"
    if exc.errno == errno.EOPNOTSUPP:
        return "the kernel cannot destroy sockets (built without CONFIG_INET_DIAG_DESTROY)"
    return f"sock_diag: {exc.strerror or exc}"
