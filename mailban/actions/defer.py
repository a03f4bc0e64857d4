"""The `defer` action: a soft brake. Postfix answers a client address or a sender with a 4xx
for the duration of the ban, and the sender's MTA retries later by itself.

Config (actions.d/defer.toml): mta ("postfix", "exim", or "auto", the default: the MTA
mailban/mta_detect.py finds, postfix when it finds none or sendmail); postfix: client_map,
sender_map, map_type, reply, postmap; exim: lists_dir (deferred-hosts, deferred-senders), exim
(the argv that reads its configuration for `mailban check`).
Handles `ip` bans (client map, used with `check_client_access`) and `sender` bans (sender map,
`check_sender_access`); other key types are ignored. Postfix daemons notice a changed map by
themselves, so no reload is needed. Exim reads its list files at each use, with a `defer` ACL
statement on `hosts = net-iplsearch;FILE` and `senders = lsearch;FILE` (docs/exim.md): the
addresses are written in double quotes (an IPv6 address's colons would end an unquoted key).
do/undo: rewrite the map with the keys currently deferred, then `postmap`. start: rewrite from
the database's active bans.
Security note: keys are written only when executor.safe_token accepts them.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from ..core.records import Ban
from ..mta_detect import choose
from .base import ActionBase, ActionContext, check_options
from .executor import ActionError, run, safe_token, write_atomically

log = logging.getLogger("mailban.action.defer")
_OPTIONS: dict[str, Any] = {"client_map": str, "sender_map": str, "map_type": str, "reply": str, "postmap": list,
                            "mta": str, "lists_dir": str, "exim": list}


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
        self.mta, self.mta_detected = choose(options.get("mta", "auto"), ("postfix", "exim"))
        if self.mta == "exim":
            from .exim import LISTS_DIR

            lists_dir = options.get("lists_dir", LISTS_DIR)
            self.maps = {"ip": f"{lists_dir}/deferred-hosts", "sender": f"{lists_dir}/deferred-senders"}
        self.exim = list(options.get("exim", ["exim"]))
        self.config_warning: str | None = None

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        check_options(options, _OPTIONS)
        reply = options.get("reply", "450 x")
        if not (reply[:1] == "4" and reply[1:3].isdigit() and reply[3:4] == " ") or any(c in reply for c in "\r\n"):
            raise ValueError("`reply` must be one line starting with a 4xx code, e.g. \"450 4.7.1 Try again later\"")
        if options.get("mta", "auto") not in ("postfix", "exim", "auto"):
            raise ValueError("`mta` must be postfix, exim or auto")
        for key in ("client_map", "sender_map", "lists_dir"):
            if not options.get(key, "/x").startswith("/"):
                raise ValueError(f"`{key}` must be an absolute path")

    def start(self, active: list[Ban]) -> None:
        for kind in self.keys:
            self.keys[kind] = {b.key for b in active if b.key_type == kind and self._safe(b.key, kind)}
            self._write(kind)
        self.check_config()

    def check_config(self) -> list[str]:
        """exim: whether its configuration reads the deferred-hosts and deferred-senders lists."""
        if self.mta != "exim":
            return []
        from .exim import config_warning

        self.config_warning = config_warning(self.exim, {"deferred-hosts": self.maps["ip"],
                                                         "deferred-senders": self.maps["sender"]}, 10)
        return [self.config_warning] if self.config_warning else []

    def health(self) -> str | None:
        return self.config_warning

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
            if keys is None or (add and not self._safe(ban.key, ban.key_type)):
                continue
            before = len(keys)
            keys.add(ban.key) if add else keys.discard(ban.key)
            if len(keys) != before:
                touched.add(ban.key_type)
        for kind in touched:
            self._write(kind)

    @staticmethod
    def _safe(key: str, kind: str = "sender") -> bool:
        if kind == "ip":
            # an address (IPv6 too: safe_token refuses its colons, which both map formats take)
            try:
                return str(ipaddress.ip_network(key, strict=False)) in (key, f"{key}/32", f"{key}/128")
            except ValueError:
                log.error("cannot defer %r: not an address", key)
                return False
        try:
            safe_token(key, "key")
            return True
        except ActionError as exc:
            log.error("%s", exc)
            return False

    def _write(self, kind: str) -> None:
        path = self.maps[kind]
        if self.mta == "exim":
            from .exim import write_list

            write_list(path, list(self.keys[kind]), "defer", quote=kind == "ip")
            return
        text = "# maintained by mailban (defer): do not edit, use `mailban unban`\n"
        text += "".join(f"{k} {self.reply}\n" for k in sorted(self.keys[kind]))
        write_atomically(path, text, mode=0o644)
        run([*self.postmap, f"{self.map_type}:{path}"])
