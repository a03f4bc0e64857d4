"""The inline jails' changed windows, from the policy service's process to the daemon's mirror of
them, as what changed since the last send rather than copies of whole windows.

Why: copying every changed window each second (lists of floats, lines, address dicts) cost the
service's loop the copies and, worse, the cycle collector's walks over the heap they grew
(bench/policy.py: p99 6-11 ms, p99.9 50-190 ms, against 0.7/2.2 ms with saving off). Here a
window's changes are read off its counters (`added`, `sent`: core/windows.py) and pickled at once
into one bytes object per batch (pack): the queue and the link carry bytes, which the collector
does not track, and the entries travel as packed doubles.

Inputs: (jail, "key" | "net", key) items the jails noted as touched (checkpoint.take_touched), in
the child; the bytes it sent, in the daemon, and the same bytes read back from the database at
start (the daemon saves them as they came: State's window_changes, replayed over the rows).
Outputs: bytes, zlib-compressed pickles (pack; `whole`: the daemon's own changes to its mirror, saved in line); the
mirror's windows brought level with the child's (apply), and the windows whose change could not
be applied (the mirror did not have what the change starts from), which the child is asked to
send whole (`resend`). Security: the bytes are loaded with an unpickler that loads no class or
function (`loads`); attacker text (lines, keys) is only ever str in them.

A change of a window is one of:
- None: the window is gone (banned, forgotten, evicted);
- ("R" | "B", added, total, entries, lines, ips): the whole window (first send of this object in
  this process: a new window, or one the process got from the mirror when it was forked; a
  bucket window, always: a few counters);
- ("r", sent, added, total, new entries, n entries, new lines, n lines, ips): a ring window's
  entries appended since the send that left it at `sent`, the last `n entries` of old + new
  being the window now (entries only leave from the front), and the same for lines;
`entries` are packed doubles (time, weight, ...); `ips` is None (not kept), ("1", one) (a single
address), or ("d", n, flat items): the last items of the address dict (an add moves its address
to the end; the dict's first items are evicted first), of which the last `n` are the dict now.
Must never: apply a change to a window it does not follow on from (asks for it whole instead;
`replay` trusts the database's order, whose rows do not keep the counters).
"""

from __future__ import annotations

import io
import pickle
import zlib
from array import array
from itertools import islice
from typing import Any, Iterable, Optional

from ..core.jails import Jail
from ..core.windows import BucketWindow, RingWindow

Change = tuple[str, str, str, Optional[tuple]]  # (jail name, "key" | "net", key, change)
Key = tuple[str, str, str]  # (jail name, "key" | "net", key)
# A batch that changes nothing and marks where a snapshot starts: from it on, the child sends every
# window it has whole before anything else about it (server.py: snapshot), and SNAPSHOT_END once
# every window it had at the marker went whole, so the changes from the last complete snapshot's
# marker on are the windows whole and what came before can be dropped (the daemon's fold without
# decoding a thing: daemon/writer.py). apply() skips both (no such jail).
SNAPSHOT = pickle.dumps([("", "snapshot", "", None)], protocol=pickle.HIGHEST_PROTOCOL)
SNAPSHOT_END = pickle.dumps([("", "snapshot end", "", None)], protocol=pickle.HIGHEST_PROTOCOL)


def pack(items: Iterable[tuple[Jail, str, str]], whole: bool = False) -> bytes:
    """The changes of these windows since their last send, pickled; marks them sent. `whole`:
    the windows as they are, sent or not (the daemon's own changes to its mirror, for the
    database's window_changes)."""
    out: list[Change] = []
    for jail, which, key in items:
        window = (jail.windows if which == "key" else jail.nets).get(key)
        out.append((jail.spec.name, which, key, None if window is None else _change(window, whole)))
    # compressed (zlib's fastest level, in the service's process, ~0.3 us a window): the lines
    # repeat (one account, one client, one sender), so a batch is 1/4-1/5 the bytes, which the
    # link, the daemon and its database handle undecoded (8 against 24 ms of the daemon's CPU a
    # second at 5,000 windows a second: bench/policy.py --log-load)
    return zlib.compress(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL), 1)


class _Data(pickle.Unpickler):
    """Changes are tuples of str, bytes, numbers and None: nothing that names a class or a
    function is loaded (they are read back from the database too)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"not a window change: {module}.{name}")


def loads(blob: bytes) -> list[Change]:
    """A batch (pack's, or SNAPSHOT, or one saved before batches were compressed: a bare pickle,
    which starts with 0x80, where zlib's level 1 starts with 78 01)."""
    if blob[:2] == b"\x78\x01":
        blob = zlib.decompress(blob)
    return _Data(io.BytesIO(blob)).load()


def _change(window: RingWindow | BucketWindow, whole: bool = False) -> tuple:
    added, sent = window.added, (-1 if whole else window.sent)
    if not whole:
        window.sent = added
    lines = window.lines
    if isinstance(window, BucketWindow):
        return ("B", added, window.total, array("d", window._flat).tobytes(), tuple(lines), _ips(window, None),
                window.resolution)
    ring = window._ring
    new = added - sent
    if sent < 0 or 2 * new > len(ring):
        return ("R", added, window.total, array("d", ring).tobytes(), tuple(lines), _ips(window, None))
    return ("r", sent, added, window.total, array("d", ring[len(ring) - 2 * new:]).tobytes(), len(ring) // 2,
            tuple(lines[len(lines) - new:]) if new < len(lines) else tuple(lines), len(lines), _ips(window, new))



def _ips(window: RingWindow | BucketWindow, new: int | None) -> tuple | None:
    ips = window._ips
    if ips is None:
        return None
    if not ips:
        return ("1", window._one)
    items = ips.items()
    if new is not None and new < len(ips):
        items = list(islice(reversed(items), new))[::-1]  # type: ignore[assignment]
    return ("d", len(ips), tuple(x for ip, (when, n) in items for x in (ip, when, n)))


def apply(jails: Iterable[Jail], blobs: Iterable[bytes], now: float, note: bool = True,
          replay: bool = False) -> list[Key]:
    """Bring the mirror's windows level with the changes the child sent (in order), noted as
    touched (unless not `note`); return the windows to be sent whole (see the header). A window
    for a key the mirror holds banned now is not put back (the ban was noted after it was sent).
    `replay`: changes read back from the database over the windows restored from their rows,
    which do not keep the `added` counters the changes are checked against."""
    by_name = {j.spec.name: j for j in jails}
    resend: list[Key] = []
    for blob in blobs:
        for name, which, key, change in loads(blob):
            jail = by_name.get(name)
            if jail is None or which not in ("key", "net"):
                continue
            table = jail.windows if which == "key" else jail.nets
            banned = jail.banned if which == "key" else jail.banned_nets
            old = table.pop(key, None)
            if note:
                jail.touched.add((which, key))
            if change is None or banned.get(key, 0.0) > now:
                continue
            if replay and change[0] == "r" and isinstance(old, RingWindow):
                old.added = change[1]
            window = _whole(change) if change[0] != "r" else _follow(old, change)
            if window is None:
                resend.append((name, which, key))
                if old is not None:
                    table[key] = old  # kept until the whole window comes
                continue
            table[key] = window  # last: dict order is recency, for the jail's max_keys eviction
    return resend


def _whole(change: tuple) -> RingWindow | BucketWindow:
    kind, added, total, entries, lines, ips = change[:6]
    window: RingWindow | BucketWindow
    if kind == "B":
        window = BucketWindow(ips is not None, change[6])
        window._flat = _numbers(entries)
    else:
        window = RingWindow(ips is not None)
        window._ring = _numbers(entries)
    window.total, window.added = total, added
    window.lines = lines
    _set_ips(window, ips)
    return window


def _follow(old: Any, change: tuple) -> RingWindow | None:
    _kind, sent, added, total, entries, n_entries, lines, n_lines, ips = change
    if not isinstance(old, RingWindow) or old.added != sent:
        return None
    ring = old._ring  # in place: the daemon's thread pays per new entry, not per window's length
    ring += _numbers(entries)
    del ring[:len(ring) - 2 * n_entries]
    if lines:
        kept = old.lines + list(lines)
        old.lines = kept[len(kept) - n_lines:]
    old.total, old.added = total, added
    _set_ips(old, ips, follow=True)
    return old


def _numbers(packed: bytes) -> list[float]:
    """Packed (time, weight) doubles -> the flat list a window keeps, weights as ints again."""
    values = array("d", packed).tolist()
    values[1::2] = [int(w) for w in values[1::2]]
    return values


def _set_ips(window: RingWindow | BucketWindow, ips: tuple | None, follow: bool = False) -> None:
    if ips is None:
        window._ips, window._one = None, None
        return
    if ips[0] == "1":
        window._ips, window._one = {}, ips[1]
        return
    n, flat = ips[1], ips[2]
    table = window._ips if follow and window._ips is not None else {}
    one = window._one if follow else None
    if one is not None and not table:  # the child moved its single address into the dict too
        table[one[0]] = (one[1], one[2])
    for at in range(0, len(flat), 3):
        table.pop(flat[at], None)
        table[flat[at]] = (flat[at + 1], flat[at + 2])
    while len(table) > n:
        del table[next(iter(table))]
    window._ips, window._one = table, None
