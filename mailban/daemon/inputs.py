"""The daemon's inputs: the sources it follows, and what it knows of each.

Inputs: the settings (sources.wanted: the journal, or the log files) and the positions committed
in the database. Outputs: the sources that may have lines now (inotify for files, a descriptor
registered in the loop's selector for the others), and per source the counters `status` shows
and the position the state writer commits with the decisions its lines caused.
Must never: stop following a log because it is missing (a source retries by itself).
"""

from __future__ import annotations

import logging
import selectors
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import config as config_mod, sources as sources_mod
from ..sources import Source
from ..sources.tail import Watcher

if TYPE_CHECKING:
    from ..directsmtp.source import DirectSmtpSource

log = logging.getLogger("mailban")
# A burst of too-old lines is logged once; a new burst after this long a quiet spell logs again.
STALE_QUIET = 60.0
Positions = dict[str, dict[str, Any]]


class Inputs:
    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        self.watcher = Watcher()
        selector.register(self.watcher.fileno(), selectors.EVENT_READ, None)
        # What the settings ask to read, by name; the descriptors of those that have one, as
        # registered in the selector.
        self.sources: dict[str, Source] = {}
        self._fds: dict[str, int] = {}
        # Per source: lines read since this start, since it was first followed (persisted with
        # its position), and when it last had lines.
        self.lines_read: dict[str, int] = {}
        self.lines_total: dict[str, int] = {}
        self.last_read: dict[str, float] = {}
        # Per log file, its last line with a program tag: what a `last message repeated N times`
        # line of that file stands for (SyslogParser.previous, which the files share).
        self.previous_line: dict[str, bytes | None] = {}
        # Per jail, events not counted because their line was older than the find time when
        # read (Pipeline.stale, summed over reloads); when the last burst of them was logged.
        self.stale: dict[str, int] = {}
        self.stale_logged = 0.0
        # The kernel's direct-SMTP counters (mailban/directsmtp), when `direct_smtp = true`: a
        # source of events, not lines (nothing a local user writes into a log can forge them).
        self.direct_smtp: DirectSmtpSource | None = None

    def follow(self, cfg: config_mod.Config, positions: Positions,
               commit_start: Callable[[Positions], None]) -> None:
        """Follow what the settings ask for, each from its committed position; stop following
        what they no longer name. Where reading starts for a new source (the end, by default) is
        committed at once (commit_start): a crash before the first batch must not move it to
        the end of lines written meanwhile."""
        for path, saved in positions.items():
            if isinstance(saved, dict) and isinstance(saved.get("lines"), int):
                self.lines_total.setdefault(path, saved["lines"])
        from_end = cfg.settings.read_from == "end"
        wanted = sources_mod.wanted(cfg.settings)
        names = {n for _kind, n in wanted}
        for name in [n for n in self.sources if n not in names]:
            self._close(name)
        for kind, name in wanted:
            if name in self.sources:
                continue
            saved = positions.get(name)
            source = sources_mod.create(kind, name, cfg.settings, saved if isinstance(saved, dict) else None,
                                        from_end)
            self.sources[name] = source
            if source.watch_dir is not None:
                self.watcher.add(source)
            self.lines_read.setdefault(name, 0)
            if saved is None:
                commit_start({name: {**source.position.to_dict(), "lines": 0}})
        self.watch_fds()

    def follow_direct_smtp(self, cfg: config_mod.Config, positions: Positions) -> None:
        """Count direct SMTP per uid when the settings ask for it (a reload may turn it on or
        off, or change its ports, users and allow list: the counters stay in the kernel)."""
        if not cfg.settings.direct_smtp:
            if self.direct_smtp is not None:
                self.direct_smtp.remove()
                self.direct_smtp = None
            return
        if self.direct_smtp is not None:
            self.direct_smtp.reconfigure(cfg.settings)
            return
        from ..directsmtp.source import NAME, DirectSmtpSource

        saved = positions.get(NAME)
        self.direct_smtp = DirectSmtpSource(cfg.settings, saved if isinstance(saved, dict) else None)
        if self.direct_smtp.missing_users:
            log.info("direct-smtp: no such MTA users here (skipped): %s", ", ".join(self.direct_smtp.missing_users))

    def direct_smtp_status(self) -> dict[str, Any]:
        """What `status` shows of direct SMTP: counts per uid, the source's health, the blocks."""
        source = self.direct_smtp
        if source is None:
            return {}
        try:
            blocked = {str(u): left for u, left in source.kernel.blocked().items()}
        except Exception:  # the kernel side failed: status() says why
            blocked = {}
        return {**source.summary(), **source.status(), "blocked": blocked}

    def ready(self) -> Iterator[Source]:
        """The sources that may have lines: files inotify named, and every source without a
        watched directory (its descriptor woke the loop, or it is read at every turn)."""
        yield from self.watcher.wait(0)
        yield from [s for s in self.sources.values() if s.watch_dir is None]

    def read(self, name: str, count: int, now: float) -> int:
        """Note `count` lines read from a source; returns its total, for its position."""
        self.lines_read[name] = self.lines_read.get(name, 0) + count
        total = self.lines_total[name] = self.lines_total.get(name, 0) + count
        self.last_read[name] = now
        return total

    def note_stale(self, stale: dict[str, int], path: str, now: float) -> None:
        """Count the events the jails skipped as too old, and say so once per burst: a restored
        backup or a late log must not ban hundreds of addresses for what happened days ago, and
        the admin must not wonder why nothing is counted."""
        for name, count in stale.items():
            self.stale[name] = self.stale.get(name, 0) + count
        if now - self.stale_logged > STALE_QUIET:
            log.warning("not counting lines of %s that were already older than the find time when read "
                        "(a restored backup, a late log or a clock jump?); `mailban status` shows how many, "
                        "`mailban replay` counts them in log time", path)
        self.stale_logged = now
        stale.clear()

    def position(self, name: str) -> dict[str, Any]:
        return {**self.sources[name].position.to_dict(), "lines": self.lines_total.get(name, 0)}

    def watch_fds(self) -> None:
        """Keep the selector on each source's current descriptor (the journal's changes when
        journalctl restarts)."""
        fds = {name: source.fileno() for name, source in self.sources.items()}
        for name, old in list(self._fds.items()):
            if fds.get(name, -1) == old:
                continue
            try:
                self.selector.unregister(old)
            except (KeyError, ValueError):
                pass
            del self._fds[name]
        for name, fd in fds.items():
            if fd >= 0 and name not in self._fds:
                self.selector.register(fd, selectors.EVENT_READ, None)
                self._fds[name] = fd

    def backlog(self) -> dict[str, int]:
        """Per source, how far behind the writer it is (bytes or entries), where it can tell."""
        lag: dict[str, int] = {}
        for name, source in self.sources.items():
            behind = source.backlog()
            if behind is not None:
                lag[name] = behind
        return lag

    def status(self, name: str) -> dict[str, Any]:
        info = self.sources[name].status()  # exists, and what the kind adds (journal: forged, error)
        return {"path": name, "exists": info.pop("exists"), "lines": self.lines_read.get(name, 0),
                "total": self.lines_total.get(name, 0), **info}

    def close(self) -> Positions:
        """Stop following; the positions reached, for the last commit."""
        positions = {name: self.position(name) for name in self.sources}
        for source in self.sources.values():
            if source.watch_dir is None:
                source.close()  # the Watcher closes the others
        self.watcher.close()
        return positions

    def _close(self, name: str) -> None:
        source = self.sources.pop(name)
        if source.watch_dir is not None:
            self.watcher.remove(source)  # closes it
        else:
            source.close()
