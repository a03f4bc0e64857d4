"""Jail windows to and from database rows, so that a crash loses no partially counted window.

Inputs: the running jails (the pipeline's, and the policy service's inline jails as the daemon
mirrors them) and the (jail name, "key" | "net", key) triples of the windows a batch changed,
which the jails note themselves (Jail.touched, see track/collect). Outputs: rows for
`State.commit` (upserts and deletions), and, at start, windows put back into the jails from the
rows `State.windows()` returns.
The inline jails count in the policy service's process: there `take_touched()` takes their
changed windows, whose changes policy/windowsync.py sends to the daemon's mirror of those jails,
which notes them as touched, so the same collect/rows commit them.

This module reads and rebuilds the jails' windows through their attributes (`Jail.windows`, and
`Jail.nets` for the prefix windows of ip jails: dicts ordered by recency whose values are
core.windows RingWindow/BucketWindow objects) so that the core stays free of persistence.
Row format: entries are little-endian doubles, b"R" + time, weight, time, weight... or b"B" +
resolution, index, weight, ...; rows written before are JSON, {"ring": [[time, weight], ...]} or
{"bucket": resolution, "buckets": [[index, weight], ...]}, and still read; lines JSON is a list;
ips JSON is {ip: [last, events]} or null.
Must never: restore a window into a jail that now counts by another key type or window kind, or
for a key that is banned (a banned key has no window), or beyond the jail's `max_keys`.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections import deque
from typing import Any, Iterable

from .core.jails import Jail
from .core.windows import MAX_LINES_KEPT, BucketWindow, RingWindow
from .state import WindowRow

Touched = set[tuple[str, str, str]]  # (jail name, "key" or "net", key)


def track(jails: Iterable[Jail]) -> None:
    """Have the jails note the windows they change (Jail.touched), for collect()."""
    for jail in jails:
        jail.track_windows = True


def take_touched(jails: Iterable[Jail]) -> list[tuple[Jail, str, str]]:
    """The windows the jails changed since the last call, (jail, "key" | "net", key), taken off
    their notes, to be packed later (policy/windowsync.pack), a few at a time if need be."""
    out: list[tuple[Jail, str, str]] = []
    for jail in jails:
        if jail.touched:
            out.extend((jail, which, key) for which, key in jail.touched)
            jail.touched.clear()
    return out


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


def _dump(window: Any) -> tuple[float, bytes, str, str | None]:
    # Entries as packed doubles, not JSON: the policy service's inline windows reach the
    # daemon's commit by the thousand each second, and JSON of their entries took the daemon's
    # thread 0.1-0.7 ms per window (bench/policy.py); this is a copy in C.
    if isinstance(window, BucketWindow):
        flat = window._flat
        last = (flat[-2] + 1) * window.resolution if flat else 0.0
        entries = b"B" + _doubles([window.resolution, *flat])
    else:
        ring = window._ring
        last = float(ring[-2]) if ring else 0.0
        entries = b"R" + _doubles(ring)
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
            evicted = next(iter(table))
            del table[evicted]
            # Noted even before track() starts the tracking: its row is deleted at the first
            # commit, instead of coming back at every start (max_keys lowered since it was saved).
            jail.touched.add(("net" if key_type == "net" else "key", evicted))
        table[key] = window
        restored += 1
    return restored


def _doubles(values: list[float]) -> bytes:
    packed = array("d", values)
    if sys.byteorder != "little":  # the database is the same on every machine
        packed.byteswap()
    return packed.tobytes()


def _undoubles(data: bytes) -> list[float]:
    packed = array("d", data)
    if sys.byteorder != "little":
        packed.byteswap()
    values = packed.tolist()
    values[1::2] = [int(w) for w in values[1::2]]
    return values


def _load(spec: Any, key_type: str, entries: str | bytes, lines: str, ips: str | None) -> Any:
    if isinstance(entries, bytes):  # packed doubles (_dump); JSON from before
        values = _undoubles(entries[1:])
        if entries[:1] == b"B":
            data: Any = {"bucket": values[0], "buckets": [[i, int(w)] for i, w in zip(values[1::2], values[2::2])]}
        else:
            data = {"ring": list(zip(values[::2], values[1::2]))}
    else:
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
