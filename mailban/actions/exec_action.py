"""The `exec` action: run an admin's own program on ban and unban, from an argv template.

Config (actions.d/NAME.toml): ban, unban (argv lists; "" or [] for none), key_types, timeout.
Placeholders inside argv elements: {key}, {key_type}, {jail}, {count}, {findtime}, {bantime},
{until} (epoch seconds), {cause}. Each element is formatted on its own and passed as one argument:
there is no shell, so a user name with spaces, quotes or `$(...)` stays one inert argument.
A key starting with "-" is refused (it would read as an option), so are NUL bytes.
do: run `ban`. undo: run `unban` (on unban and on expiry). Failures are retried by the daemon.
"""

from __future__ import annotations

import string
from typing import Any

from ..core.records import KEY_TYPES, Ban
from .base import ActionBase, ActionContext, check_options
from .executor import ActionError, run

_OPTIONS: dict[str, Any] = {"ban": list, "unban": list, "key_types": list, "timeout": (int, float)}
FIELDS = {"key", "key_type", "jail", "count", "findtime", "bantime", "until", "cause"}


class ExecAction(ActionBase):
    def __init__(self, name: str, options: dict[str, Any], context: ActionContext | None = None) -> None:
        self.validate(options)
        self.name = name
        self.ban_argv = list(options.get("ban", []))
        self.unban_argv = list(options.get("unban", []))
        self.key_types = set(options.get("key_types", ["ip"]))
        self.timeout = float(options.get("timeout", 30))

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        check_options(options, _OPTIONS)
        if not options.get("ban"):
            raise ValueError("`ban` must be an argv list, e.g. [\"/usr/local/sbin/hook\", \"ban\", \"{key}\"]")
        for key in ("ban", "unban"):
            argv = options.get(key, [])
            if argv and not argv[0].startswith("/"):
                raise ValueError(f"`{key}` must start with an absolute program path")
            for element in argv:
                for _text, field, _spec, _conv in string.Formatter().parse(element):
                    if field is not None and field not in FIELDS:
                        raise ValueError(f"`{key}`: unknown placeholder {{{field}}}; known: "
                                         + ", ".join(f"{{{f}}}" for f in sorted(FIELDS)))
        for kt in options.get("key_types", []):
            if kt not in KEY_TYPES:
                raise ValueError(f"`key_types`: unknown key type {kt!r}")

    def _argv(self, template: list[str], ban: Ban) -> list[str]:
        if ban.key.startswith("-") or "\0" in ban.key:
            raise ActionError(f"refusing to pass {ban.key!r} to a program")
        values = {"key": ban.key, "key_type": ban.key_type, "jail": ban.jail, "count": ban.count,
                  "findtime": int(ban.findtime), "bantime": int(ban.until - ban.time), "until": int(ban.until),
                  "cause": ban.cause}
        return [element.format(**values) for element in template]

    def start(self, active: list[Ban]) -> None:
        """The program keeps its own state; nothing to restore."""

    def ban(self, bans: list[Ban]) -> list[str]:
        for ban in bans:
            if ban.key_type in self.key_types:
                run(self._argv(self.ban_argv, ban), timeout=self.timeout)
        return []

    def unban(self, bans: list[Ban]) -> None:
        if not self.unban_argv:
            return
        for ban in bans:
            if ban.key_type in self.key_types:
                run(self._argv(self.unban_argv, ban), timeout=self.timeout)

    def stop(self) -> None:
        """Nothing to do."""
