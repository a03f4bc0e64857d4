"""Jail windows to and from database rows, so that a crash loses no partially counted window.

Inputs: the running jails (the pipeline's, and the policy service's inline jails as the daemon
mirrors them) and the (jail name, "key" | "net", key) triples of the windows a batch changed,
which the jails note themselves (Jail.touched, see track/collect). Outputs: rows for
`State.commit` (upserts and deletions), and, at start, windows put back into the jails from the
rows `State.windows()` returns.
The inline jails count in the policy service's process: there `changed()` takes their changed
windows (copies, sent to the daemon over the link) and in the daemon `apply()` puts them into
its mirror of those jails, which notes them as touched, so the same collect/rows commit them.

This module reads and rebuilds the jails' windows through their attributes (`Jail.windows`, and
`Jail.nets` for the prefix windows of ip jails: dicts ordered by recency whose values are
core.windows RingWindow/BucketWindow objects) so that the core stays free of persistence.
Row format: entries JSON is {"ring": [[time, weight], ...]} or {"bucket": resolution,
"buckets": [[index, weight], ...]}; lines JSON is a list; ips JSON is {ip: [last, events]} or null.
Must never: restore a window into a jail that now counts by another key type or window kind, or
for a key that is banned (a banned key has no window), or beyond the jail's `max_keys`.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Iterable, Optional, Union

from .core.jails import Jail
from .core.windows import MAX_LINES_KEPT, BucketWindow, RingWindow
from .state import WindowRow

Touched = set[tuple[str, str, str]]  # (jail name, "key" or "net", key)
Window = Union[RingWindow, BucketWindow]
# A changed window as the policy service's process sends it: (jail name, "key" | "net", key,
# a copy of the window's fields (pack), or None when it is gone: banned, forgotten, evicted).
Change = tuple[str, str, str, Optional[tuple]]


def track(jails: Iterable[Jail]) -> None:
    """Have the jails note the windows they change (Jail.touched), for collect()."""
    for jail in jails:
        jail.track_windows = True


def changed(jails: Iterable[Jail]) -> list[Change]:
    """The windows the jails changed since the last call, as they are now (the caller pickles
    them: a copy), and clears the jails' notes."""
    return packed(take_touched(jails))


def take_touched(jails: Iterable[Jail]) -> list[tuple[Jail, str, str]]:
    """The windows the jails changed since the last call, (jail, "key" | "net", key), taken off
    their notes, to be packed later (packed()), a few at a time if need be."""
    out: list[tuple[Jail, str, str]] = []
    for jail in jails:
        if jail.touched:
            out.extend((jail, which, key) for which, key in jail.touched)
            jail.touched.clear()
    return out


def packed(items: Iterable[tuple[Jail, str, str]]) -> list[Change]:
    """Those windows as they are now."""
    out: list[Change] = []
    for jail, which, key in items:
        window = (jail.windows if which == "key" else jail.nets).get(key)
        out.append((jail.spec.name, which, key, None if window is None else pack(window)))
    return out


def pack(window: Window) -> tuple:
    """A copy of the window's fields, taken in the thread that counts (it is pickled in another
    one): plain lists and tuples pickle at about twice the speed of the window objects."""
    lines = window._lines
    ips = window._ips
    common = (lines if lines is None or type(lines) is str else list(lines),
              None if ips is None else dict(ips), window._one)
    if isinstance(window, BucketWindow):
        return ("b", window.resolution, list(window._flat), window.total, *common)
    return ("r", list(window._ring), window.total, *common)


def unpack(state: tuple) -> Window:
    window: Window
    if state[0] == "b":
        _tag, resolution, flat, total, lines, ips, one = state
        window = BucketWindow(False, resolution)
        window._flat = flat
    else:
        _tag, ring, total, lines, ips, one = state
        window = RingWindow(False)
        window._ring = ring
    window.total, window._lines, window._ips, window._one = total, lines, ips, one
    return window


def apply(jails: Iterable[Jail], changes: list[Change], now: float) -> None:
    """Put changed windows into these jails (the daemon's mirror of the inline jails), noted as
    touched for the next commit. A window for a key the jail holds banned now is not put back
    (the ban was noted after the window was sent)."""
    by_name = {j.spec.name: j for j in jails}
    for name, which, key, window in changes:
        jail = by_name.get(name)
        if jail is None or which not in ("key", "net"):
            continue
        table = jail.windows if which == "key" else jail.nets
        banned = jail.banned if which == "key" else jail.banned_nets
        table.pop(key, None)
        if window is not None and not banned.get(key, 0.0) > now:
            table[key] = unpack(window)  # last: dict order is recency, for the jail's max_keys eviction
        jail.touched.add((which, key))


def collect(jails: Iterable[Jail], into: Touched) -> None:
    """Move the windows the jails changed since the last call into `into`: the jails know which
    windows their counting, bans and unbans changed, so no second copy of their selection is
    needed here."""
    for jail in jails:
        if jail.touched:
            name = jail.spec.name
            into.update((name, which, key) for which, key in jail.touched)
            jail.touched.clear()


def rows(jails: Iterable[Jail], keys: Touched) -> tuple[list[WindowRow], list[tuple[str, str, str]]]:
    """Upserts for the touched windows that still exist, deletions for the others."""
    upserts: list[WindowRow] = []
    dropped: list[tuple[str, str, str]] = []
    by_name = {j.spec.name: j for j in jails}
    for name, which, key in keys:
        jail = by_name.get(name)
        if jail is None:
            continue
        key_type = jail.spec.key if which == "key" else "net"
        table = jail.windows if which == "key" else getattr(jail, "nets", {})
        window = table.get(key)
        if window is None:
            dropped.append((name, key_type, key))
            continue
        upserts.append((name, key_type, key, *_dump(window)))
    return upserts, dropped


def _dump(window: Any) -> tuple[float, str, str, str | None]:
    if isinstance(window, BucketWindow):
        buckets = [[float(i), int(w)] for i, w in window.buckets]
        last = (buckets[-1][0] + 1) * window.resolution if buckets else 0.0
        entries = json.dumps({"bucket": window.resolution, "buckets": buckets})
    else:
        ring = [list(e) for e in window.entries]
        last = ring[-1][0] if ring else 0.0
        entries = json.dumps({"ring": ring})
    ips = None if window.ips is None else json.dumps({ip: list(v) for ip, v in window.ips.items()})
    return last, entries, json.dumps(list(window.lines)), ips


def restore(jails: Iterable[Jail], saved: list[WindowRow], now: float) -> int:
    """Put saved windows back (least recently active first); return how many were restored.
    Rows of jails not in `jails` are left alone (the inline jails restore their own)."""
    by_name = {j.spec.name: j for j in jails}
    restored = 0
    for name, key_type, key, _last, entries, lines, ips in saved:
        jail = by_name.get(name)
        if jail is None:
            continue
        spec = jail.spec
        if key_type == "net":
            table = getattr(jail, "nets", None)
            if table is None or spec.key != "ip" or getattr(jail, "banned_nets", {}).get(key, 0.0) > now:
                continue
        else:
            table = jail.windows
            if spec.key != key_type or jail.banned.get(key, 0.0) > now:
                continue
        try:
            window = _load(spec, key_type, entries, lines, ips)
        except (ValueError, TypeError, KeyError, AttributeError):
            window = None  # a row this version cannot read
        if window is None:
            continue  # counting starts afresh for that key
        table.pop(key, None)
        if len(table) >= spec.max_keys:
            del table[next(iter(table))]
        table[key] = window
        restored += 1
    return restored


def _load(spec: Any, key_type: str, entries: str, lines: str, ips: str | None) -> Any:
    data = json.loads(entries)
    resolution = getattr(spec, "resolution", 0.0)
    window: Any
    if "bucket" in data:
        if key_type == "net" or float(data["bucket"]) != resolution:
            return None
        window = BucketWindow(ips is not None, resolution)
        window.buckets = deque([float(i), int(w)] for i, w in data["buckets"])
        window.total = int(sum(w for _i, w in window.buckets))
    else:
        if resolution > 0 and key_type != "net":
            return None
        window = RingWindow(ips is not None)
        window.entries = deque((float(t), int(w)) for t, w in data["ring"])
        window.total = sum(w for _t, w in window.entries)
    window.lines = deque((str(x) for x in json.loads(lines)), maxlen=MAX_LINES_KEPT)
    if ips is not None:
        window.ips = {str(ip): (float(v[0]), int(v[1])) for ip, v in json.loads(ips).items()}
    return window
