"""The `notify` action: tell the admin by mail what mailban decided and how to undo it.

Config (actions.d/notify.toml): to, sender, sendmail, interval, max_lines, hostname.
do: queue the decision; a digest is sent at most once per `interval` (the first decision of an
incident goes out at once, the rest of the incident in the next digest), so an attack of
thousands of addresses sends a handful of mails, not thousands. Handed to the local MTA with
`sendmail -i -f SENDER RECIPIENT` (an argv list; recipients never come from the message text).
undo: nothing to undo (a mail was sent); unbans are not mailed.
Security note: keys and log lines are attacker text. They appear only in the body, with control
characters escaped; the subject and headers hold only mailban's own words and numbers.
"""

from __future__ import annotations

import logging
import shlex
import socket
import time
from datetime import datetime
from typing import Any

from ..core.durations import format_duration, parse_duration
from ..core.records import Ban
from .base import ActionBase, ActionContext, check_options
from .executor import run

log = logging.getLogger("mailban.action.notify")
_OPTIONS: dict[str, Any] = {"to": str, "sender": str, "sendmail": (list, str), "interval": (str, int, float),
                            "max_lines": int, "hostname": str}
MAX_DECISIONS_PER_MAIL = 200


def printable(text: str, limit: int = 500) -> str:
    """Attacker text made safe to show: control characters escaped, length capped."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


class NotifyAction(ActionBase):
    self_expiring = True  # nothing to undo
    undoable = False

    def __init__(self, name: str, options: dict[str, Any], context: ActionContext | None = None,
                 clock: Any = time.time) -> None:
        self.validate(options)
        self.name = name
        self.to = options.get("to", "root")
        self.sender = options.get("sender", "mailban")
        program = options.get("sendmail", ["/usr/sbin/sendmail"])
        self.sendmail = [program] if isinstance(program, str) else list(program)
        self.interval = parse_duration(options.get("interval", "10m"))
        self.max_lines = options.get("max_lines", 5)
        self.hostname = options.get("hostname") or socket.getfqdn()
        self.clock = clock
        self.pending: list[Ban] = []
        self.suppressed = 0
        self.last_sent = 0.0
        self.sent = 0

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        check_options(options, _OPTIONS)
        for key in ("to", "sender"):
            value = options.get(key, "x")
            if not value or value.startswith("-") or any(c.isspace() or c in "<>,;\"'\\" for c in value):
                raise ValueError(f"`{key}` must be one plain mail address or local user name")
        parse_duration(options.get("interval", "10m"))

    def start(self, active: list[Ban]) -> None:
        """Decisions restored from the database were notified when they were made."""

    def ban(self, bans: list[Ban]) -> list[str]:
        room = MAX_DECISIONS_PER_MAIL - len(self.pending)
        self.pending.extend(bans[:max(room, 0)])
        self.suppressed += max(len(bans) - max(room, 0), 0)
        self.tick(self.clock())
        return []

    def unban(self, bans: list[Ban]) -> None:
        """A mail cannot be unsent."""

    def unban_all(self) -> bool:
        """A mail cannot be unsent."""
        return True

    def tick(self, now: float) -> None:
        if self.pending and now - self.last_sent >= self.interval:
            self._send(now)

    def stop(self) -> None:
        if self.pending:
            try:
                self._send(self.clock())
            except Exception as exc:  # stopping: log, do not block the shutdown
                log.warning("could not send the last notification: %s", exc)

    def _send(self, now: float) -> None:
        bans, extra = self.pending, self.suppressed
        message = self.render(bans, extra, now)
        run([*self.sendmail, "-i", "-f", self.sender, self.to], stdin=message.encode())
        self.pending, self.suppressed = [], 0
        self.last_sent = now
        self.sent += 1

    def render(self, bans: list[Ban], extra: int, now: float) -> str:
        kinds = sorted({b.key_type for b in bans})
        subject = f"mailban on {self.hostname}: {len(bans) + extra} decisions ({', '.join(kinds)})"
        head = [
            f"From: mailban <{self.sender}>" if "@" in self.sender else f"From: {self.sender}",
            f"To: {self.to}",
            f"Subject: {printable(subject, 200)}",
            f"Date: {datetime.fromtimestamp(now).astimezone().strftime('%a, %d %b %Y %H:%M:%S %z')}",
            "Auto-Submitted: auto-generated",
            "Content-Type: text/plain; charset=utf-8",
            "MIME-Version: 1.0",
            "",
        ]
        body = [f"mailban on {self.hostname} made these decisions:", ""]
        for ban in bans:
            when = datetime.fromtimestamp(ban.time).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
            body.append(f"* {ban.key_type} {printable(ban.key, 200)} -- jail {ban.jail}, {when}")
            if ban.manual:
                body.append("  banned by hand")
            else:
                body.append(f"  {ban.count} events within {format_duration(ban.findtime)}"
                            + (f", because of {printable(ban.cause, 200)}" if ban.cause else ""))
            body.append(f"  for {format_duration(ban.until - ban.time)}, via {', '.join(ban.actions)}")
            if ban.ips:
                body.append(f"  addresses: {printable(', '.join(ban.ips[:30]), 1000)}"
                            + (f" and {len(ban.ips) - 30} more" if len(ban.ips) > 30 else ""))
            for line in ban.lines[-self.max_lines:]:
                body.append(f"    {printable(line)}")
            flag = {"ip": "", "user": "--user ", "uid": "--uid ", "sender": "--sender "}[ban.key_type]
            body.append(f"  undo: mailban unban {flag}{printable(shlex.quote(ban.key), 300)}")
            body.append("")
        if extra:
            body.append(f"... and {extra} more decisions: see `mailban list`.")
        return "\n".join(head + body) + "\n"
