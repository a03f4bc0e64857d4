"""Window rows (checkpoint.py): entries stored as packed doubles come back as they were, for
ring and bucket windows and prefix windows, and rows an earlier version wrote as JSON still load."""

from __future__ import annotations

import json
from pathlib import Path

from mailban import checkpoint
from mailban.core.jails import IgnoreList, Jail, JailSpec
from mailban.core.records import Event
from mailban.state import State


def jail(**kw) -> Jail:
    spec = JailSpec(name=kw.pop("name", "j"), kinds=frozenset({"auth-failure"}), maxretry=50, findtime=3600, **kw)
    out = Jail(spec, IgnoreList(()))
    checkpoint.track([out])
    return out


def windows_of(j: Jail) -> dict:
    def one(w) -> tuple:
        return (list(w._flat if hasattr(w, "_flat") else w._ring), w.total, list(w.lines), w.ips)
    return {"key": {k: one(w) for k, w in j.windows.items()}, "net": {k: one(w) for k, w in j.nets.items()}}


def test_packed_rows_restore_the_same_windows(tmp_path: Path) -> None:
    ring, buckets = jail(prefix6=64), jail(name="b", key="user", resolution=600)
    for n in range(30):
        event = Event(1000.0 + n * 7.5, "auth-failure", "f", "r", ip=f"2001:db8::{n % 4}", user=f"u{n % 3}@x",
                      line=f"line {n} ü")
        ring.offer(event, 2000.0)
        buckets.offer(event, 2000.0)
    state = State(str(tmp_path))
    touched: checkpoint.Touched = set()
    checkpoint.collect([ring, buckets], touched)
    upserts, dropped = checkpoint.rows([ring, buckets], touched)
    assert all(isinstance(row[4], bytes) for row in upserts)
    state.commit([], {}, upserts, dropped)
    fresh_ring, fresh_buckets = jail(prefix6=64), jail(name="b", key="user", resolution=600)
    assert checkpoint.restore([fresh_ring, fresh_buckets], state.windows(), 2000.0) == len(upserts)
    assert windows_of(fresh_ring) == windows_of(ring) and windows_of(fresh_buckets) == windows_of(buckets)
    assert fresh_ring.windows["2001:db8::1"].total == 8 and isinstance(fresh_ring.windows["2001:db8::1"].total, int)
    state.close()


def test_json_rows_from_before_still_load(tmp_path: Path) -> None:
    state = State(str(tmp_path))
    state.commit([], {}, [
        ("j", "ip", "192.0.2.1", 1010.0, json.dumps({"ring": [[1000.0, 1], [1010.0, 2]]}), json.dumps(["a", "b"]), None),
        ("b", "user", "u@x", 1200.0, json.dumps({"bucket": 600.0, "buckets": [[1.0, 3]]}), json.dumps(["c"]), "{}"),
    ], [])
    ring, buckets = jail(), jail(name="b", key="user", resolution=600)
    assert checkpoint.restore([ring, buckets], state.windows(), 1100.0) == 2
    assert ring.windows["192.0.2.1"].entries == [(1000.0, 1), (1010.0, 2)] and ring.windows["192.0.2.1"].total == 3
    assert buckets.windows["u@x"].buckets == [[1.0, 3]] and buckets.windows["u@x"].lines == ["c"]
    state.close()


def saved_keys(state: State) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, key_type, key, *_rest in state.windows():
        out.setdefault(key_type, set()).add(key)
    return out


def test_windows_evicted_under_max_keys_lose_their_rows(tmp_path: Path) -> None:
    """A spray past max_keys evicts windows (core.jails._evict_quietest); their rows must go with
    them, or they come back at every start and the policy service's mirror keeps them for ever."""
    j = jail(prefix6=124, max_keys=16)  # 500 addresses, 32 prefixes: both tables evict
    state = State(str(tmp_path))
    for n in range(500):
        j.offer(Event(1000.0 + n, "auth-failure", "f", "r", ip=f"2001:db8::{n:x}", line=f"line {n}"), 1000.0 + n)
        if n % 50 == 49:  # one commit per daemon batch
            touched: checkpoint.Touched = set()
            checkpoint.collect([j], touched)
            state.commit([], {}, *checkpoint.rows([j], touched))
    assert 0 < len(j.windows) <= 16 and 0 < len(j.nets) <= 16
    assert saved_keys(state) == {"ip": set(j.windows), "net": set(j.nets)}
    state.close()


def test_rows_beyond_a_lowered_max_keys_are_deleted_after_restore(tmp_path: Path) -> None:
    state = State(str(tmp_path))
    big = jail(max_keys=100)
    for n in range(40):
        big.offer(Event(1000.0 + n, "auth-failure", "f", "r", ip=f"192.0.2.{n}", line=f"line {n}"), 1000.0 + n)
    touched: checkpoint.Touched = set()
    checkpoint.collect([big], touched)
    state.commit([], {}, *checkpoint.rows([big], touched))
    small = Jail(JailSpec(name="j", kinds=frozenset({"auth-failure"}), maxretry=50, findtime=3600, max_keys=10),
                 IgnoreList(()))
    checkpoint.restore([small], state.windows(), 1040.0)  # as the daemon does: restore, then track
    checkpoint.track([small])
    assert len(small.windows) == 10
    touched = set()
    checkpoint.collect([small], touched)
    state.commit([], {}, *checkpoint.rows([small], touched))
    assert saved_keys(state)["ip"] == set(small.windows)  # the 10 most recently active
    state.close()
