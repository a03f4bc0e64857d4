"""The pipeline: line in, events and decisions out. One code path for daemon, test and replay.

Inputs: raw lines (bytes) with their source name and line number, and optionally the current
time. Outputs: the events each line produced and the bans the jails decided.
`now=None` means "use the event's own log time" (replay); the daemon passes wall time, which is
only used for ban expiry, never for counting: windows always count log timestamps, so the daemon
and replay reach the same decisions on the same lines.
Must never: perform I/O or read the clock (see mailban.core).
"""

from __future__ import annotations

from dataclasses import dataclass

from .filters import FilterSet
from .jails import Jail
from .records import Ban, Event
from .syslog import Header, SyslogParser


@dataclass
class Pipeline:
    parser: SyslogParser
    filters: FilterSet
    jails: list[Jail]

    def events(self, line: bytes, source: str = "", lineno: int = 0) -> list[Event]:
        header = self.parser.parse(line)
        if header is None:
            return []
        return self.filters.match(line, header, source, lineno)

    def feed(
        self, line: bytes, now: float | None = None, source: str = "", lineno: int = 0
    ) -> tuple[list[Event], list[Ban]]:
        header = self.parser.parse(line)
        if header is None:
            return [], []
        return self.feed_parsed(line, header, now, source, lineno)

    def feed_parsed(
        self, line: bytes, header: Header, now: float | None = None, source: str = "", lineno: int = 0
    ) -> tuple[list[Event], list[Ban]]:
        """As feed(), for a line whose header the caller already parsed (replay merges files
        by time and so parses first)."""
        events = self.filters.match(line, header, source, lineno)
        if not events:
            return events, []
        bans: list[Ban] = []
        for event in events:
            when = event.time if now is None else now
            for jail in self.jails:
                ban = jail.offer(event, when)
                if ban is not None:
                    bans.append(ban)
        return events, bans

    def jail(self, name: str) -> Jail | None:
        for jail in self.jails:
            if jail.spec.name == name:
                return jail
        return None

    def note_ban(self, ban: Ban) -> None:
        jail = self.jail(ban.jail)
        if jail is not None and jail.spec.key == ban.key_type:
            jail.note_ban(ban.key, ban.until)

    def forget(self, key_type: str, key: str, jail_name: str | None = None) -> None:
        for jail in self.jails:
            if jail.spec.key == key_type and (jail_name is None or jail.spec.name == jail_name):
                jail.forget(key)
