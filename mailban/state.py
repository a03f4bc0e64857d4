"""Persistent state in SQLite: active bans (with their cause), log file positions, the jails'
counting windows, and the history of every decision and action result (for `mailban explain`
and repeat offenders).

Inputs: Ban records, file positions and window rows from the daemon. Outputs: what is still valid
at start.

Crash consistency (a `kill -9` at any instant): one `commit()` writes, in one transaction, the
bans a batch of lines decided, the position just after that batch (with the number of lines read
from the file so far), and the windows of every jail key that batch touched (upserted, or deleted
when the key was banned, forgotten or evicted). The database therefore always holds the state the
daemon had at the end of some batch: after a crash the daemon restores the windows and resumes at
that batch's position, so every later line is read and counted exactly once, and a partially
filled window (two failures of three) survives. History rows (`record_many`) are written outside
that transaction: they explain, they do not decide, and a crash may duplicate or drop one.
WAL mode: `mailban list` can read while the daemon writes.
Must never: half-apply a batch (a failing commit raises and writes nothing; the daemon keeps the
batch and commits it with the next one).
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Iterable

from .core.records import Ban

BUSY_TIMEOUT = 1.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    jail TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key TEXT NOT NULL,
    time REAL NOT NULL,
    until REAL NOT NULL,
    count INTEGER NOT NULL,
    findtime REAL NOT NULL,
    actions TEXT NOT NULL,
    lines TEXT NOT NULL,
    manual INTEGER NOT NULL DEFAULT 0,
    ips TEXT NOT NULL DEFAULT '[]',
    cause TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (jail, key_type, key)
);
CREATE INDEX IF NOT EXISTS bans_until ON bans (until);
CREATE INDEX IF NOT EXISTS bans_key ON bans (key_type, key);
CREATE TABLE IF NOT EXISTS positions (
    path TEXT PRIMARY KEY,
    position TEXT NOT NULL
);
-- One row per thing that happened to a key: ban (with its cause), action (a result), unban
-- (who asked), expire. `detail` is a JSON object.
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    what TEXT NOT NULL,
    jail TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key TEXT NOT NULL,
    detail TEXT NOT NULL
);
-- A jail's counting window for one key: entries (packed doubles: checkpoint.py), example lines, and
-- for user-keyed jails the addresses seen ({ip: [last time, events]}, or null).
CREATE TABLE IF NOT EXISTS windows (
    jail TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key TEXT NOT NULL,
    last REAL NOT NULL,
    entries TEXT NOT NULL,
    lines TEXT NOT NULL,
    ips TEXT,
    PRIMARY KEY (jail, key_type, key)
);
-- The policy service's inline windows: the changes the daemon took since their rows were last
-- written (policy/windowsync.py: one batch each, as the service sent it, in order), replayed over
-- those rows at start; a second's thousands of changed inline windows are a few inserts instead
-- of thousands of rows. Every 10 s the service sends every window whole after a marker batch
-- (a snapshot), and the changes before the marker and the inline rows are deleted; the rows are
-- written from the daemon's mirror only after a reload or without a service (daemon/writer.py).
CREATE TABLE IF NOT EXISTS window_changes (
    seq INTEGER PRIMARY KEY,
    changes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS history_key ON history (key_type, key, time);
CREATE INDEX IF NOT EXISTS history_time ON history (time);
"""


_COLUMNS = "jail, key_type, key, time, until, count, findtime, actions, lines, manual, ips, cause, repeat, observe"
# Columns added after the first schema: (name, definition), added to older databases at open.
_ADDED = (("ips", "TEXT NOT NULL DEFAULT '[]'"), ("cause", "TEXT NOT NULL DEFAULT ''"),
          ("repeat", "INTEGER NOT NULL DEFAULT 0"), ("observe", "INTEGER NOT NULL DEFAULT 0"))


# (jail, key_type, key, last log time, entries (packed doubles, or JSON from before), lines JSON,
# ips JSON or None)
WindowRow = tuple[str, str, str, float, str | bytes, str, str | None]


# Decoded `actions` and `ips` columns by their text: a handful of distinct values among all the
# bans (["nft"], []), so start-up decodes each once instead of 100,000 times. Bounded because
# `ips` can vary (account jails list addresses).
_LIST_CACHE_MAX = 4096
_list_cache: dict[str, tuple[Any, ...]] = {}


def _json_tuple(text: str) -> tuple[Any, ...]:
    value = _list_cache.get(text)
    if value is None:
        value = tuple(json.loads(text))
        if len(_list_cache) >= _LIST_CACHE_MAX:
            _list_cache.clear()
        _list_cache[text] = value
    return value


def _ban(r: tuple[Any, ...]) -> Ban:
    return Ban(jail=r[0], key_type=r[1], key=r[2], time=r[3], until=r[4], count=r[5], findtime=r[6],
               actions=_json_tuple(r[7]), lines=tuple(json.loads(r[8])), manual=bool(r[9]),
               ips=_json_tuple(r[10]), cause=r[11], repeat=r[12], observe=bool(r[13]))


def _row(b: Ban) -> tuple[Any, ...]:
    return (b.jail, b.key_type, b.key, b.time, b.until, b.count, b.findtime, json.dumps(list(b.actions)),
            json.dumps(list(b.lines)), int(b.manual), json.dumps(list(b.ips)), b.cause, b.repeat, int(b.observe))


def ban_detail(b: Ban) -> dict[str, Any]:
    return {"count": b.count, "findtime": b.findtime, "until": b.until, "actions": list(b.actions),
            "lines": list(b.lines), "manual": b.manual, "ips": list(b.ips), "cause": b.cause,
            "repeat": b.repeat, "observe": b.observe}


class State:
    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        self.path = os.path.join(state_dir, "mailban.sqlite3")
        # A writer that holds the database (an admin's sqlite3 shell in a transaction) makes a
        # commit wait at most BUSY_TIMEOUT, then fail and be retried: the loop must not stall.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        present = {row[1] for row in self.db.execute("PRAGMA table_info(bans)")}
        for name, definition in _ADDED:
            if name not in present:
                self.db.execute(f"ALTER TABLE bans ADD COLUMN {name} {definition}")

    def close(self) -> None:
        self.db.close()

    def commit(self, bans: Iterable[Ban] = (), positions: dict[str, dict[str, Any]] | None = None,
               windows: Iterable[WindowRow] = (), dropped: Iterable[tuple[str, str, str]] = (),
               changes: Iterable[bytes] = (), fold: Iterable[str] | None = None,
               snapshot: tuple[bytes, Iterable[str]] | None = None) -> None:
        """Record new bans, file positions and changed windows atomically (all or nothing).
        `changes`: inline window changes, appended to window_changes. `fold`: the inline jails
        whose every window is in `windows`: their other rows and all changes go first.
        `snapshot`: (marker, inline jails): the changes from the last marker on hold those jails'
        every window (the service sent them whole after it), so their rows and the changes before
        the marker go."""
        with self.db:  # one transaction
            self.db.execute("BEGIN")
            if fold is not None:
                self.db.executemany("DELETE FROM windows WHERE jail = ?", [(name,) for name in fold])
                self.db.execute("DELETE FROM window_changes")
            self.db.executemany("INSERT INTO window_changes (changes) VALUES (?)", [(c,) for c in changes])
            if snapshot is not None:
                marker, jails = snapshot
                # length() first: SQLite reads a blob's length without its (overflow) pages
                (mark,) = self.db.execute("SELECT max(seq) FROM window_changes WHERE length(changes) = ? "
                                          "AND changes = ?", (len(marker), marker)).fetchone()
                if mark is not None:
                    self.db.executemany("DELETE FROM windows WHERE jail = ?", [(name,) for name in jails])
                    self.db.execute("DELETE FROM window_changes WHERE seq < ?", (mark,))
            self.db.executemany("DELETE FROM windows WHERE jail = ? AND key_type = ? AND key = ?", list(dropped))
            self.db.executemany("INSERT OR REPLACE INTO windows VALUES (?,?,?,?,?,?,?)", list(windows))
            self.db.executemany(
                f"INSERT OR REPLACE INTO bans ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [_row(b) for b in bans],
            )
            self.db.executemany(
                "INSERT INTO history (time, what, jail, key_type, key, detail) VALUES (?,?,?,?,?,?)",
                [(b.time, "ban", b.jail, b.key_type, b.key, json.dumps(ban_detail(b))) for b in bans],
            )
            if positions:
                self.db.executemany(
                    "INSERT OR REPLACE INTO positions VALUES (?,?)",
                    [(path, json.dumps(pos)) for path, pos in positions.items()],
                )

    def active(self, now: float) -> list[Ban]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM bans WHERE until > ? ORDER BY time", (now,))
        return [_ban(r) for r in rows]

    def active_per_jail(self, now: float) -> dict[str, int]:
        return dict(self.db.execute("SELECT jail, count(*) FROM bans WHERE until > ? GROUP BY jail", (now,)).fetchall())

    def active_on(self, keys: Iterable[tuple[str, str]], now: float) -> list[Ban]:
        """Still-valid bans on any of these (key_type, key) pairs, in any jail."""
        found: list[Ban] = []
        for key_type, key in keys:
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM bans WHERE key_type = ? AND key = ? AND until > ?",
                (key_type, key, now),
            )
            found.extend(_ban(r) for r in rows)
        return found

    def remove(self, key_type: str | None = None, key: str | None = None) -> list[Ban]:
        """Delete bans on a key (all bans when key is None); return what was removed."""
        if key is None:
            removed = self.active(0)
        else:
            removed = [_ban(r) for r in self.db.execute(
                f"SELECT {_COLUMNS} FROM bans WHERE key_type = ? AND key = ?", (key_type, key))]
        with self.db:
            self.db.execute("BEGIN")
            if key is None:
                self.db.execute("DELETE FROM bans")
            else:
                self.db.execute("DELETE FROM bans WHERE key_type = ? AND key = ?", (key_type, key))
        return removed

    def expire(self, now: float) -> list[Ban]:
        """Delete the bans whose time is up; return them (their actions may need undoing)."""
        with self.db:
            self.db.execute("BEGIN")
            gone = [_ban(r) for r in self.db.execute(f"SELECT {_COLUMNS} FROM bans WHERE until <= ?", (now,))]
            self.db.execute("DELETE FROM bans WHERE until <= ?", (now,))
        return gone

    def record(self, when: float, what: str, jail: str, key_type: str, key: str, **detail: Any) -> None:
        """Add one history row (an action's result, an unban and who asked, an expiry)."""
        with self.db:
            self.db.execute(
                "INSERT INTO history (time, what, jail, key_type, key, detail) VALUES (?,?,?,?,?,?)",
                (when, what, jail, key_type, key, json.dumps(detail)),
            )

    def record_many(self, rows: list[tuple[float, str, str, str, str, dict[str, Any]]]) -> None:
        """Several history rows (when, what, jail, key_type, key, detail) in one transaction."""
        if rows:
            with self.db:
                self.db.executemany(
                    "INSERT INTO history (time, what, jail, key_type, key, detail) VALUES (?,?,?,?,?,?)",
                    [(*r[:5], json.dumps(r[5])) for r in rows],
                )

    def offenses(self, since: float) -> list[tuple[str, str, str, float]]:
        """(jail, key_type, key, time) of every decision since `since` (repeat offenders)."""
        return self.db.execute(
            "SELECT jail, key_type, key, time FROM history WHERE what = 'ban' AND time > ? ORDER BY time",
            (since,)).fetchall()

    def history(self, key_type: str, key: str, limit: int = 200) -> list[dict[str, Any]]:
        """Everything recorded about a key, oldest first (the last `limit` rows)."""
        rows = self.db.execute(
            "SELECT time, what, jail, detail FROM history WHERE key_type = ? AND key = ? "
            "ORDER BY time DESC, id DESC LIMIT ?", (key_type, key, limit)).fetchall()
        return [{"time": t, "what": w, "jail": j, **json.loads(d)} for t, w, j, d in reversed(rows)]

    def prune_history(self, before: float) -> int:
        with self.db:
            return self.db.execute("DELETE FROM history WHERE time < ?", (before,)).rowcount

    def positions(self) -> dict[str, dict[str, Any]]:
        return {path: json.loads(pos) for path, pos in self.db.execute("SELECT path, position FROM positions")}

    # ---- windows (see the module header) ----------------------------------------------------
    def windows(self) -> list[WindowRow]:
        """Every saved window, least recently active first (the order jails keep them in)."""
        return list(self.db.execute(
            "SELECT jail, key_type, key, last, entries, lines, ips FROM windows ORDER BY last"))

    def keep_windows(self, jails: Iterable[tuple[str, str]]) -> None:
        """Delete the windows of jails not in `jails` ((name, key type) pairs): after a reload
        that dropped a jail or changed what it counts by."""
        keep = set(jails)
        gone = [(j, k) for j, k in self.db.execute("SELECT DISTINCT jail, key_type FROM windows") if (j, k) not in keep]
        if gone:
            with self.db:
                self.db.executemany("DELETE FROM windows WHERE jail = ? AND key_type = ?", gone)

    def window_changes(self) -> list[bytes]:
        """The inline windows' changes since their rows were written, in order."""
        return [bytes(c) for (c,) in self.db.execute("SELECT changes FROM window_changes ORDER BY seq")]

    def drop_windows(self) -> None:
        with self.db:
            self.db.execute("DELETE FROM windows")
            self.db.execute("DELETE FROM window_changes")

    def prune_windows(self, before: float) -> int:
        """Delete windows whose last entry is older than `before` (they count nothing any more)."""
        with self.db:
            return self.db.execute("DELETE FROM windows WHERE last < ?", (before,)).rowcount
