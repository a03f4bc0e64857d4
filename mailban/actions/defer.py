"""The `defer` action: a soft brake. Postfix answers a client address or a sender with a 4xx
for the duration of the ban, and the sender's MTA retries later by itself.

Config (actions.d/defer.toml): client_map, sender_map, map_type, reply, postmap.
Handles `ip` bans (client map, used with `check_client_access`) and `sender` bans (sender map,
`check_sender_access`); other key types are ignored. Postfix daemons notice a changed map by
themselves, so no reload is needed.
do/undo: rewrite the map with the keys currently deferred, then `postmap`. start: rewrite from
the database's active bans.
Security note: keys are written only when executor.safe_token accepts them.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.records import Ban
from .base import ActionBase, ActionContext, check_options
from .executor import ActionError, run, safe_token, write_atomically

log = logging.getLogger("mailban.action.defer")
_OPTIONS: dict[str, Any] = {"client_map": str, "sender_map": str, "map_type": str, "reply": str, "postmap": list}


class DeferAction(ActionBase):
    def __init__(self, name: str, options: dict[str, Any], context: ActionContext | None = None) -> None:
        self.validate(options)
        self.name = name
        self.maps = {
            "ip": options.get("client_map", "/etc/postfix/mailban_defer_clients"),
            "sender": options.get("sender_map", "/etc/postfix/mailban_defer_senders"),
        }
        self.map_type = options.get("map_type", "hash")
        self.reply = options.get("reply", "450 4.7.1 Service temporarily limited, please try again later")
        self.postmap = list(options.get("postmap", ["postmap"]))
        self.keys: dict[str, set[str]] = {"ip": set(), "sender": set()}

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        check_options(options, _OPTIONS)
        reply = options.get("reply", "450 x")
        if not (reply[:1] == "4" and reply[1:3].isdigit() and reply[3:4] == " ") or any(c in reply for c in "\r\n"):
            raise ValueError("`reply` must be one line starting with a 4xx code, e.g. \"450 4.7.1 Try again later\"")
        for key in ("client_map", "sender_map"):
            if not options.get(key, "/x").startswith("/"):
                raise ValueError(f"`{key}` must be an absolute path")

    def start(self, active: list[Ban]) -> None:
        for kind in self.keys:
            self.keys[kind] = {b.key for b in active if b.key_type == kind and self._safe(b.key)}
            self._write(kind)

    def ban(self, bans: list[Ban]) -> list[str]:
        self._change(bans, add=True)
        return []

    def unban(self, bans: list[Ban]) -> None:
        self._change(bans, add=False)

    def unban_all(self) -> bool:
        for kind in self.keys:
            self.keys[kind].clear()
            self._write(kind)
        return True

    def stop(self) -> None:
        """Deferrals stay while mailban is down; restarting rewrites the maps from the database."""

    def _change(self, bans: list[Ban], add: bool) -> None:
        touched = set()
        for ban in bans:
            keys = self.keys.get(ban.key_type)
            if keys is None or (add and not self._safe(ban.key)):
                continue
            before = len(keys)
            keys.add(ban.key) if add else keys.discard(ban.key)
            if len(keys) != before:
                touched.add(ban.key_type)
        for kind in touched:
            self._write(kind)

    @staticmethod
    def _safe(key: str) -> bool:
        try:
            safe_token(key, "key")
            return True
        except ActionError as exc:
            log.error("%s", exc)
            return False

    def _write(self, kind: str) -> None:
        path = self.maps[kind]
        text = "# maintained by mailban (defer): do not edit, use `mailban unban`\n"
        text += "".join(f"{k} {self.reply}\n" for k in sorted(self.keys[kind]))
        write_atomically(path, text, mode=0o644)
        run([*self.postmap, f"{self.map_type}:{path}"])
