"""Sources hand the daemon log lines: the `Source` interface, and the kind -> factory registry.

A source kind is one module with a factory `open_source(name, settings, saved, from_end)` that
returns an object with the `Source` interface below; KINDS maps the kind's name to it
(imported only when used). The daemon only calls that interface: it follows what `wanted()`
asks for, drains a source when it may have lines, and commits its position with the decisions
its lines caused. Shipped kinds: `file` (tail.py: a log file followed through rotation) and
`journal` (journal.py: `journalctl -f -o json`).
Adding a kind: its module, its line in KINDS, a way for the settings to ask for it (wanted()),
its docs and its tests.
Must never: decode text here (lines are bytes), or raise out of read_lines() because a log is
missing or its reader died (the source retries by itself and says so in status()).
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Callable, Protocol, runtime_checkable

log = logging.getLogger("mailban")


class SourcePosition(Protocol):
    """Where reading stands, as the daemon commits it (JSON-able), e.g. tail.Position."""

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Source(Protocol):
    """What the daemon calls on a source."""

    # The name the source's lines, counts, positions and metrics are kept under: the file's
    # path, "journal" for the journal.
    path: str
    # How the daemon learns that lines may be waiting. A directory: the daemon's one inotify
    # Watcher (tail.Watcher) watches it, and polls every source once a second besides. None: the
    # source is read at every turn of the loop (every 0.5 s at most), and fileno() wakes the loop.
    watch_dir: str | None

    def fileno(self) -> int:
        """A descriptor that becomes readable when lines may be waiting, or -1 (none now)."""
        ...

    def read_lines(self, limit: int = 5000) -> list[bytes]:
        """Up to `limit` complete lines (bytes, without the newline), oldest first; [] if none."""
        ...

    @property
    def position(self) -> SourcePosition:
        """Where reading stands after the last line handed out (committed with its decisions)."""
        ...

    def status(self) -> dict[str, Any]:
        """What `mailban status` shows of it besides its line counts: `exists` (false while the
        file is missing or the reader fails) and what the kind adds (`error`, `forged`)."""
        ...

    def backlog(self) -> int | None:
        """Bytes written and not read yet (the lag gauge), or None when the kind cannot know."""
        ...

    def close(self) -> None: ...


# factory(name, settings, saved position as committed or None, from_end) -> Source
Factory = Callable[[str, Any, "dict[str, Any] | None", bool], Source]

# kind -> "module:factory"
KINDS: dict[str, str] = {
    "file": "mailban.sources.tail:open_source",
    "journal": "mailban.sources.journal:open_source",
}


def factory(kind: str) -> Factory:
    """The factory of a source kind (imported now); KeyError for an unknown kind."""
    module_name, _, name = KINDS[kind].partition(":")
    found: Factory = getattr(importlib.import_module(module_name), name)
    return found


def create(kind: str, name: str, settings: Any, saved: dict[str, Any] | None, from_end: bool) -> Source:
    return factory(kind)(name, settings, saved, from_end)


def wanted(settings: Any) -> list[tuple[str, str]]:
    """The (kind, name) of every source the settings ask for: the journal when `journal` is
    true, or "auto" and none of `logs` exists and there is a journal to read; else each file
    of `logs`."""
    from . import journal

    use_journal = settings.journal is True or (
        settings.journal == "auto" and not any(os.path.exists(p) for p in settings.logs)
        and bool(settings.journal_files or settings.journal_directory or journal.available()))
    if use_journal:
        return [("journal", journal.NAME)]
    if settings.journal == "auto":
        log.info("reading log files (%s)", ", ".join(settings.logs))
    return [("file", path) for path in settings.logs]
