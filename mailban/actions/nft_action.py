"""The `nft` action: client addresses into kernel sets with timeouts (see actions/nft.py).

Config (actions.d/nft.toml): table, set4, set6, chain, priority, verdict, ports.
do: add the ban's address with the ban's remaining time as the element timeout (the longest, when
several bans on one address are given), so the kernel expires it even while the daemon is down. undo: delete the element. start: create the table,
sets and rule idempotently and restore every still-valid ban in one batch. check: the table, sets
and chain still exist.
Only `ip` bans are handled; other key types (user, uid) are ignored by this action.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..core.records import Ban
from .base import ActionBase

_OPTIONS = {"table", "set4", "set6", "set4net", "set6net", "chain", "priority", "verdict", "ports"}


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
        self.backend = NftBackend(**options)

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

    @staticmethod
    def _elements(bans: list[Ban], now: float) -> list[tuple[str, float]]:
        best: dict[str, float] = {}
        for ban in bans:
            if ban.key_type in ("ip", "net") and ban.until > now:
                best[ban.key] = max(best.get(ban.key, 0.0), ban.until)
        return [(ip, max(1, math.ceil(until - now))) for ip, until in best.items()]

    def start(self, active: list[Ban]) -> None:
        self.backend.restore(self._elements(active, time.time()))

    def ban(self, bans: list[Ban]) -> list[str]:
        elements = self._elements(bans, time.time())
        if elements:
            self.backend.add(elements)
        return []

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
