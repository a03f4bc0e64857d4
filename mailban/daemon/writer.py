"""The daemon's state writer: bans, log positions and changed windows committed together.

Inputs: the bans of a batch, the positions reached in the logs, and the running pipeline (whose
jails note which windows they changed: checkpoint.collect), and the daemon's mirror of the
policy service's inline jails (`inline`: what changed in their windows arrives from the service's
process about once a second and is committed with the next commit, as those changes, undecoded;
every FOLD_EVERY seconds the service sends its windows whole (a snapshot) and the changes before it
are deleted: see __init__). Outputs: one SQLite transaction per
batch (State.commit), the history rows `explain` reads, hourly pruning and the expiry of bans.
When the database cannot be written (read-only, disk full, locked), nothing is lost and nothing
stops: the uncommitted bans, positions and windows stay here in memory and go with the next
commit that works (retried once a second by the loop: `force`); positions in the database stay at
the last commit, so a crash meanwhile re-reads those lines, and re-decided bans are idempotent in
every action.
Must never: raise into the loop because the database fails (said once, shown in status).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Optional, Protocol

from .. import checkpoint
from ..core.decisions import Folded
from ..core.jails import Jail
from ..core.pipeline import Pipeline
from ..core.records import Ban
from ..policy.windowsync import SNAPSHOT
from ..state import State

log = logging.getLogger("mailban")
HISTORY_DAYS = 180  # `explain` and repeat-offender history older than this is dropped
WINDOW_KEEP = 7 * 86400  # saved windows idle for longer than this (plus the findtime) are pruned
PRUNE_EVERY = 3600.0
FOLD_EVERY = 10.0  # seconds between snapshots of the inline windows (their changes meanwhile): see __init__
FOLD_BYTES = 16 << 20  # or sooner, once their changes since weigh this much

HistoryRow = tuple[float, str, str, str, str, dict[str, Any]]


class _Jails(Protocol):
    @property
    def jails(self) -> list[Jail]: ...

    def names(self) -> list[str]: ...


class StateWriter:
    def __init__(self, state: State, changed: Callable[[], None]) -> None:
        self.state = state
        self._changed = changed  # the health shown in status changed (systemd STATUS line)
        # What the database has not taken yet (it was read-only or full): committed next time.
        self.unsaved_bans: list[Ban] = []
        self.unsaved_positions: dict[str, dict[str, Any]] = {}
        self.unsaved_windows: checkpoint.Touched = set()
        self.error: str | None = None
        self.next_prune = 0.0
        # The inline jails as the daemon mirrors them (daemon/mirror.py); None without inline
        # jails. Their windows are saved as the changes the service sent (`inline_changes`, in
        # order, undecoded: State's window_changes): rows for thousands of inline windows changed
        # each second cost the daemon 30 us apiece, and decoding the changes 6-10 us
        # (bench/policy.py --log-load). Every FOLD_EVERY seconds, or past FOLD_BYTES of changes,
        # `snapshot()` has the service send every window whole after a marker
        # (windowsync.SNAPSHOT); once it has (`snapshot_done`), the commit deletes the changes
        # before the marker and the inline jails' rows. The mirror's windows are written as rows
        # (which decodes what it has not applied) at the first commit, when `fold_inline` is set
        # (a reload, a change the mirror could not follow, changes dropped while the database
        # failed), and when no service can be asked (`snapshot` returns False).
        self.inline: _Jails | None = None
        self.inline_changes: list[bytes] = []
        self.fold_inline = True
        self.snapshot: Optional[Callable[[], bool]] = None
        self.snapshot_done = False
        self._changes_bytes = 0  # committed since the last fold or snapshot asked for
        self._unfolded = 0  # committed since the last fold or snapshot done (bounds the table)
        self._next_fold = 0.0

    @property
    def path(self) -> str:
        return self.state.path

    def commit(self, pipeline: Pipeline, bans: Iterable[Ban] = (),
               positions: dict[str, dict[str, Any]] | None = None, force: bool = False) -> bool:
        """Commit bans, positions and touched windows in one transaction, with whatever an
        earlier failed commit left; on failure keep it all for the next try.
        While the database fails, only the once-a-second retry (`force`) tries: a locked
        database makes every try wait BUSY_TIMEOUT, which must not slow reading down."""
        jails = list(pipeline.jails)
        if self.inline_changes and sum(len(c) for c in self.inline_changes) > FOLD_BYTES:
            # the database has failed for a while: the mirror holds it all, its rows will do
            self.inline_changes, self.fold_inline = [], True
        fold = self._fold_due()
        if fold is not None:  # every inline window as a row; their changes are then deleted
            for jail in self.inline.jails:  # type: ignore[union-attr]
                jail.touched.update(("key", key) for key in jail.windows)
                jail.touched.update(("net", net) for net in jail.nets)
                jails.append(jail)
        checkpoint.collect(jails, self.unsaved_windows)  # the windows the jails changed
        self.unsaved_bans.extend(bans)
        if positions:
            self.unsaved_positions.update(positions)
        if not (self.unsaved_bans or self.unsaved_positions or self.unsaved_windows or self.inline_changes
                or fold is not None):
            return True
        if self.error is not None and not force:
            return False
        upserts, dropped = checkpoint.rows(jails, self.unsaved_windows)
        changes = self.inline_changes if fold is None else []  # a fold's rows hold them
        snapshot = None
        if self.snapshot_done and fold is None and self.inline is not None:
            snapshot = (SNAPSHOT, self.inline.names())  # (not .jails: that decodes what the mirror has not)
        try:
            self.state.commit(self.unsaved_bans, self.unsaved_positions, upserts, dropped, changes, fold,
                              snapshot)
        except Exception as exc:  # sqlite3.Error, OSError: read-only, disk full, I/O error
            if self.error is None:
                log.error("cannot write the database %s: %s; detection and actions go on, %d bans "
                          "and the positions wait in memory and are committed when it works again",
                          self.state.path, exc, len(self.unsaved_bans))
            self.error = f"cannot write {self.state.path}: {exc}"
            self._changed()
            return False
        self.unsaved_bans, self.unsaved_positions = [], {}
        self.unsaved_windows = set()
        self.inline_changes = []
        if fold is not None or snapshot is not None:
            self.snapshot_done, self._unfolded = False, 0
        if fold is not None:
            self.fold_inline, self._changes_bytes = False, 0
            self._next_fold = time.monotonic() + FOLD_EVERY
        else:
            size = sum(len(c) for c in changes)
            self._changes_bytes += size
            self._unfolded += size
        if self.error is not None:
            log.info("the database %s can be written again: everything kept in memory is committed",
                     self.state.path)
            self.error = None
            self._changed()
        return True

    def _fold_due(self) -> list[str] | None:
        """The inline jails' names when their windows are to be written whole now as rows (the
        mirror's); None when not, or when the service was asked for a snapshot instead."""
        if self.inline is None:
            return None
        if not (self.fold_inline or (self._changes_bytes and (time.monotonic() >= self._next_fold
                                                               or self._changes_bytes >= FOLD_BYTES))):
            return None
        if not self.fold_inline and self._unfolded < 4 * FOLD_BYTES and self.snapshot is not None \
                and self.snapshot():  # (past 4 * FOLD_BYTES the snapshots asked for never ended: rows)
            # the changes keep coming as they are; the snapshot's end deletes what came before
            self._changes_bytes, self._next_fold = 0, time.monotonic() + FOLD_EVERY
            return None
        return [jail.spec.name for jail in self.inline.jails]

    def record(self, rows: list[HistoryRow]) -> None:
        """History rows for `explain`; a full disk must not stop detection (logged, not raised)."""
        if not rows:
            return
        try:
            self.state.record_many(rows)
        except Exception as exc:
            log.error("cannot record history: %s", exc)

    def active(self, now: float) -> list[Ban]:
        """The bans in force: the database's and those it has not taken yet."""
        return self.state.active(now) + [b for b in self.unsaved_bans if b.until > now]

    def in_force(self, now: float) -> list[Ban]:
        """active(), or while the database fails only what it has not taken yet (never raises)."""
        try:
            return self.active(now)
        except Exception:  # the database fails: what it has not taken yet is in unsaved_bans
            return [b for b in self.unsaved_bans if b.until > now]

    def drop_unsaved(self, keys: set[tuple[str, str]] | None = None) -> None:
        """Forget uncommitted bans on these keys (all: None), lifted before they were committed."""
        if keys is None:
            self.unsaved_bans, self.unsaved_windows = [], set()
            self.inline_changes, self.fold_inline, self.snapshot_done = [], True, False
        else:
            self.unsaved_bans = [b for b in self.unsaved_bans if (b.key_type, b.key) not in keys]

    def take_folded(self, folds: list[Folded], now: float) -> list[Ban]:
        """The single-address bans that prefix bans replaced (Folded): removed from the
        database (or from what it has not taken yet) with a history row each; the caller
        undoes them in the actions."""
        if not folds:
            return []
        into = {(f.net.jail, ip): f.net.key for f in folds for ip in f.ips}
        covered = [b for b in self.in_force(now) if b.key_type == "ip" and (b.jail, b.key) in into]
        self.unsaved_bans = [b for b in self.unsaved_bans if not (b.key_type == "ip" and (b.jail, b.key) in into)]
        for ban in covered:
            self.state.remove("ip", ban.key)
        self.record([(now, "folded", b.jail, "ip", b.key, {"into": into[(b.jail, b.key)]}) for b in covered])
        return covered

    def expire(self, now: float, longest_findtime: float) -> list[Ban]:
        """Prune old history and windows (hourly) and delete the bans whose time is up."""
        try:
            if now >= self.next_prune:
                self.state.prune_history(now - HISTORY_DAYS * 86400)
                self.state.prune_windows(now - longest_findtime - WINDOW_KEEP)
                self.next_prune = now + PRUNE_EVERY
            return self.state.expire(now)
        except Exception as exc:  # full or locked: expiry waits (nft elements expire by themselves)
            if self.error is None:
                log.error("cannot write the database %s: %s", self.state.path, exc)
                self.error = f"cannot write {self.state.path}: {exc}"
                self._changed()
            return []

    def status(self) -> dict[str, Any]:
        return {"path": self.state.path, "error": self.error, "unsaved_bans": len(self.unsaved_bans),
                "unsaved_windows": len(self.unsaved_windows)}
