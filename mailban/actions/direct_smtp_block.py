"""The `direct-smtp-block` action: refuse a uid's direct outbound SMTP in the kernel.

Config (actions.d/direct-smtp-block.toml): table (default "mailban").
do: the uid goes into the `dsmtp_block` set (type uid, with the ban's time as timeout) that the
direct-smtp chain checks after counting (mailban/directsmtp/kernel.py): its next connect() to a
remote port 25/465/587 is answered with a TCP reset, while the MTA's users are never checked
(they return before the rule). undo: the element is deleted (`mailban unban --uid N`); expiry
needs no call (the kernel's timeout). start: the set is made equal to the active bans, as the
nft action does with its sets. check: the set still exists.
Only `uid` bans are handled; other key types are ignored by this action.
Security note: a Ban's uid key is checked to be digits (records.Ban); only integers reach nft.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..core.records import Ban
from .base import ActionBase, ActionContext, check_options


class DirectSmtpBlockAction(ActionBase):
    self_expiring = True
    one_timeout_per_key = True

    def __init__(self, name: str, options: dict[str, Any], context: ActionContext | None = None,
                 kernel: Any = None) -> None:
        self.validate(options)
        self.name = name
        if kernel is None:
            from ..directsmtp.kernel import DirectSmtpKernel

            kernel = DirectSmtpKernel(table=options.get("table", "mailban"))
        self.kernel = kernel

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        check_options(options, {"table": str})
        table = options.get("table", "mailban")
        if not table.replace("_", "").replace("-", "").isalnum():
            raise ValueError("`table` must be a plain name (letters, digits, - and _)")

    @staticmethod
    def _elements(bans: list[Ban], now: float) -> list[tuple[int, int]]:
        best: dict[int, float] = {}
        for ban in bans:
            if ban.key_type == "uid" and ban.until > now:
                uid = int(ban.key)
                best[uid] = max(best.get(uid, 0.0), ban.until)
        return [(uid, max(1, math.ceil(until - now))) for uid, until in sorted(best.items())]

    def start(self, active: list[Ban]) -> None:
        self.kernel.block(self._elements(active, time.time()), replace_all=True)

    def ban(self, bans: list[Ban]) -> list[str]:
        elements = self._elements(bans, time.time())
        if elements:
            self.kernel.block(elements)
        return []

    def unban(self, bans: list[Ban]) -> None:
        uids = sorted({int(b.key) for b in bans if b.key_type == "uid"})
        if uids:
            self.kernel.unblock(uids)

    def unban_all(self) -> bool:
        self.kernel.block([], replace_all=True)
        return True

    def check(self) -> None:
        self.kernel.check_block_set()
