"""The inline windows' changes (policy/windowsync.py): a mirror fed only what changed since each
send ends up with the windows the counting side has, through bans, expiry, eviction, wrapped
lines, address dicts past their cap, bucket windows and sends at random moments."""

from __future__ import annotations

import random
import zlib

import pytest

from mailban import checkpoint
from mailban.core import windows as windows_module
from mailban.core.jails import IgnoreList, Jail, JailSpec
from mailban.core.records import Event
from mailban.policy import windowsync
from mailban.policy.answer import inline_jail
from mailban.policy.child import _resend
from mailban.policy.answer import Inline


def jails() -> list[Jail]:
    specs = [
        # bans often, expires often, evicts (max_keys)
        JailSpec(name="small", kinds=frozenset(), key="user", maxretry=6, findtime=30, bantime=20, inline=True,
                 max_keys=5, bantime_factor=1),
        # grows: lines wrap past 20, the address dict past its cap
        JailSpec(name="long", kinds=frozenset(), key="user", maxretry=10_000, findtime=200, inline=True),
        JailSpec(name="buckets", kinds=frozenset(), key="sender", maxretry=40, findtime=100, resolution=10,
                 inline=True, bantime=30),
        # per address and per /64 (the prefix windows: Jail.nets)
        JailSpec(name="ips", kinds=frozenset(), key="ip", maxretry=12, findtime=60, inline=True, prefix6=64,
                 prefix_min_ips=2, bantime=15),
    ]
    out = [inline_jail(spec, IgnoreList(())) for spec in specs]
    checkpoint.track(out)
    return out


def state(jail: Jail, only: Jail | None = None, counters: bool = True) -> dict:
    """The windows of `jail` (those of the keys `only` has: a window the counting side evicted to
    make room is not noted as changed, in log jails either, so the mirror keeps it)."""
    def one(window) -> tuple:
        numbers = window._flat if hasattr(window, "_flat") else window._ring
        return (list(numbers), window.total, list(window.lines), window.ips, window.added if counters else None)

    keys, nets = (jail.windows, jail.nets) if only is None else (only.windows, only.nets)
    return {"key": {k: one(w) for k, w in jail.windows.items() if k in keys},
            "net": {k: one(w) for k, w in jail.nets.items() if k in nets}}


@pytest.mark.parametrize("seed", range(12))
def test_the_mirror_follows_the_counting_side(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows_module, "MAX_IPS_KEPT", 4)
    rng = random.Random(seed)
    child, mirror = jails(), jails()
    users = [f"u{i}@x" for i in range(8)]
    ips = [f"2001:db8:{i % 3}::{i}" for i in range(7)] + [f"192.0.2.{i}" for i in range(3)]
    now = 1000.0
    sends = 0
    for step in range(1500):
        now += rng.choice((0.0, 0.0, 0.5, 1.0, 3.0, 7.0))
        ip = rng.choice(ips + [None])  # type: ignore[list-item]
        event = Event(now, "submission", "policy", "rcpt", ip=ip, user=rng.choice(users),
                      sender=f"s{rng.randrange(5)}@y", recipients=1, line=f"line {step} \x00 ünï")
        for jail in child:
            jail.offer(event, now)
        if rng.random() < 0.08:  # a send: some windows now, the rest of the noted ones later
            items = checkpoint.take_touched(child)
            rng.shuffle(items)
            cut = rng.randrange(len(items) + 1)
            blobs = [windowsync.pack(items[:cut]), windowsync.pack(items[cut:])]
            for jail in mirror:  # the mirror knows the bans (the daemon notes them before they are sent)
                jail.banned = dict(next(j for j in child if j.spec.name == jail.spec.name).banned)
                jail.banned_nets = dict(next(j for j in child if j.spec.name == jail.spec.name).banned_nets)
            assert windowsync.apply(mirror, blobs, now) == []
            for mine, theirs in zip(child, mirror):
                assert state(theirs, mine) == state(mine), (seed, step, mine.spec.name)
            sends += 1
    assert sends > 50


def test_only_the_new_entries_travel() -> None:
    child, mirror = jails(), jails()
    for n in range(300):
        event = Event(1000.0 + n * 0.1, "submission", "policy", "rcpt", user="big@x", sender="s@y", recipients=1,
                      line=f"line {n}")
        child[1].offer(event, 1000.0)
    whole = windowsync.pack(checkpoint.take_touched(child[1:2]))
    windowsync.apply(mirror[1:2], [whole], 1100.0)
    child[1].offer(Event(1031.0, "submission", "policy", "rcpt", user="big@x", recipients=1, line="one more"), 1100.0)
    delta = windowsync.pack(checkpoint.take_touched(child[1:2]))
    # (compared uncompressed: what travels, not how well it compresses)
    assert len(zlib.decompress(delta)) < 200 < 300 * 16 < len(zlib.decompress(whole))
    (_name, _which, _key, change), = windowsync.loads(delta)
    assert change[0] == "r" and change[7] == 20 and change[6] == ("one more",)  # one line, of 20 kept
    assert windowsync.apply(mirror[1:2], [delta], 1100.0) == []
    assert state(mirror[1]) == state(child[1])


def test_a_change_the_mirror_cannot_follow_is_asked_for_whole() -> None:
    child, mirror = jails(), jails()
    event = Event(1000.0, "submission", "policy", "rcpt", user="u@x", recipients=1, line="l")
    child[1].offer(event, 1000.0)
    windowsync.apply(mirror[1:2], [windowsync.pack(checkpoint.take_touched(child[1:2]))], 1000.0)
    mirror[1].windows["u@x"].added += 5  # out of step (never happens: the link keeps the order)
    child[1].offer(event, 1000.0)
    assert windowsync.apply(mirror[1:2], [windowsync.pack(checkpoint.take_touched(child[1:2]))], 1000.0) == \
        [("long", "key", "u@x")]
    assert mirror[1].windows["u@x"].total == 1  # kept as it was meanwhile
    _resend(Inline(child[1:2]), [("long", "key", "u@x")])  # the child's side of "resend"
    assert windowsync.apply(mirror[1:2], [windowsync.pack(checkpoint.take_touched(child[1:2]))], 1000.0) == []
    assert state(mirror[1]) == state(child[1])


def test_the_loop_packs_a_few_windows_per_turn_and_marks_the_end_of_a_second(tmp_path) -> None:
    """PolicyServer: the windows noted at a sweep go WINDOWS_PER_TURN per loop turn, then SAVED
    (the daemon commits once); a sweep that finds some still unpacked (too few turns: an
    overload) packs them all, so that the daemon still commits every second."""
    from mailban.policy.server import SAVED, WINDOWS_PER_TURN, PolicyServer

    server = PolicyServer(f"unix:{tmp_path}/p.sock", Inline(jails()[1:2]))
    server.save_windows = True
    jail = server.inline.jails[0]

    def count(n: int, at: float) -> None:
        for i in range(n):
            jail.offer(Event(at, "submission", "policy", "rcpt", user=f"u{i}@x", recipients=1, line=f"l{i}"), at)

    try:
        count(2 * WINDOWS_PER_TURN + 5, 1000.0)
        server._note_unsaved()
        sizes = []
        while server._unsaved:
            server._save_some()
            sizes += [len(windowsync.loads(b)) if b else b for b in server.take_windows()]
        assert sizes == [WINDOWS_PER_TURN, WINDOWS_PER_TURN, 5, SAVED]
        count(2 * WINDOWS_PER_TURN + 5, 1001.0)
        server._note_unsaved()
        server._save_some()  # one turn only before the next sweep
        server._save_some(everything=True)
        blobs = server.take_windows()
        assert [len(windowsync.loads(b)) if b else b for b in blobs] == [WINDOWS_PER_TURN, WINDOWS_PER_TURN + 5, SAVED]
    finally:
        server.stop()


def test_the_database_keeps_the_changes_and_folds_them_into_rows(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """StateWriter: the mirror's changes are saved as they came (window_changes) between folds,
    which write every inline window as a row and delete the changes; a restart restores the rows
    and replays the changes over them (daemon/policy.py's restore) to the windows it had."""
    from mailban.config import load
    from mailban.daemon import writer as writer_module
    from mailban.daemon.writer import StateWriter
    from mailban.localtime import local_to_epoch
    from mailban.state import State

    child, mirror = jails(), jails()
    w = StateWriter(State(str(tmp_path)), lambda: None)
    w.inline = Inline(mirror)
    pipeline = load(None).pipeline(1000.0, local_to_epoch)
    rng = random.Random(5)
    now = 1000.0

    def second(n: int) -> None:
        nonlocal now
        for step in range(n):
            now += rng.choice((0.0, 0.5, 1.0))
            event = Event(now, "submission", "policy", "rcpt", ip=rng.choice(["2001:db8::1", "2001:db8::2", None]),
                          user=f"u{rng.randrange(6)}@x", sender=f"s{rng.randrange(3)}@y", recipients=1, line=f"l{step}")
            for jail in child:
                jail.offer(event, now)
        blob = windowsync.pack(checkpoint.take_touched(child))
        for jail, theirs in zip(mirror, child):
            jail.banned, jail.banned_nets = dict(theirs.banned), dict(theirs.banned_nets)
        assert windowsync.apply(mirror, [blob], now, note=False) == []
        w.inline_changes.append(blob)
        assert w.commit(pipeline)

    def restarted() -> list[Jail]:
        fresh = jails()
        for jail, theirs in zip(fresh, child):
            jail.banned, jail.banned_nets = dict(theirs.banned), dict(theirs.banned_nets)
        checkpoint.restore(fresh, w.state.windows(), now)
        windowsync.apply(fresh, w.state.window_changes(), now, note=False, replay=True)
        return fresh

    second(40)  # the first commit folds
    assert w.state.window_changes() == [] and w.state.windows()
    for _ in range(5):
        second(40)
    assert len(w.state.window_changes()) == 5
    for fresh, mine in zip(restarted(), mirror):
        assert state(fresh, mine, False) == state(mine, None, False), fresh.spec.name
    monkeypatch.setattr(writer_module.time, "monotonic", lambda: 1e12)  # FOLD_EVERY later
    second(40)
    assert w.state.window_changes() == []
    for fresh, mine in zip(restarted(), mirror):  # (rows do not keep the counters: a new child sends whole)
        assert state(fresh, mine, False) == state(mine, None, False), fresh.spec.name
    w.state.close()


def test_changes_kept_while_the_database_fails_stay_bounded(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past FOLD_BYTES of uncommitted changes (the database failing), the writer keeps none and
    writes the mirror's rows whole when it can again."""
    from mailban.config import load
    from mailban.daemon import writer as writer_module
    from mailban.daemon.writer import StateWriter
    from mailban.localtime import local_to_epoch
    from mailban.state import State

    monkeypatch.setattr(writer_module, "FOLD_BYTES", 1000)
    w = StateWriter(State(str(tmp_path)), lambda: None)
    w.inline = Inline(jails())
    pipeline = load(None).pipeline(1000.0, local_to_epoch)
    assert w.commit(pipeline)  # the first fold
    w.inline_changes = [b"x" * 600, b"y" * 600]
    w.error = "cannot write"  # failing: only a forced commit tries
    assert not w.commit(pipeline)
    assert w.inline_changes == [] and w.fold_inline
    w.state.close()


def restored(db_state, child: list[Jail], now: float) -> list[Jail]:
    """What a start of mailban loads (daemon/policy.py's restore): the rows, then the changes."""
    fresh = jails()
    for jail, theirs in zip(fresh, child):
        jail.banned, jail.banned_nets = dict(theirs.banned), dict(theirs.banned_nets)
    checkpoint.restore(fresh, db_state.windows(), now)
    windowsync.apply(fresh, db_state.window_changes(), now, note=False, replay=True)
    return fresh


@pytest.mark.parametrize("seed", range(3))
def test_snapshots_fold_the_undecoded_changes(seed: int, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's loop (PolicyServer: its second's sweep, a few windows packed per turn while
    it counts on, a snapshot when asked), the daemon's handle on the link (PolicyProcess._handle),
    take_windows, the lazy mirror and the state writer with a real database: the batches are
    committed as they came and the mirror applies none until read; a snapshot deletes every change
    before its marker and the inline rows; what was committed at each second's end loads (rows,
    then the changes) to the service's windows (a kill -9 there loses nothing), and so does a
    read of the mirror."""
    from mailban.config import load
    from mailban.daemon import writer as writer_module
    from mailban.daemon.mirror import Mirror
    from mailban.daemon.policy import take_windows
    from mailban.daemon.writer import StateWriter
    from mailban.localtime import local_to_epoch
    from mailban.policy.child import PolicyProcess
    from mailban.policy.server import PolicyServer
    from mailban.state import State

    monkeypatch.setattr(windows_module, "MAX_IPS_KEPT", 4)
    rng = random.Random(seed)
    server = PolicyServer(f"unix:{tmp_path}/p.sock", Inline(jails()))
    server.save_windows = True
    child = server.inline.jails
    proc = PolicyProcess(server)  # not started: its _handle is fed what the link thread would send
    mirror = Mirror(Inline(jails()))
    w = StateWriter(State(str(tmp_path)), lambda: None)
    w.inline = mirror
    asked: list[int] = []
    w.snapshot = lambda: (asked.append(1), server.snapshot(), True)[-1]
    clock = [1000.0]
    monkeypatch.setattr(writer_module.time, "monotonic", lambda: clock[0])
    pipeline = load(None).pipeline(1000.0, local_to_epoch)
    assert w.commit(pipeline)  # the start's fold (nothing yet)
    now = 1000.0

    def offer(n: int) -> None:
        nonlocal now
        for step in range(n):
            now += rng.choice((0.0, 0.1, 0.3))
            event = Event(now, "submission", "policy", "rcpt", ip=rng.choice(["2001:db8::1", "2001:db8::2", None]),
                          user=f"u{rng.randrange(12)}@x", sender=f"s{rng.randrange(4)}@y", recipients=1,
                          line=f"l{step}")
            for jail in child:
                jail.offer(event, now)

    eager = jails()  # what the daemon's mirror was before: every batch applied as it came
    commits = 0
    pruned: list[int] = []

    def link() -> None:
        """What the link thread sends and the daemon's _take does with it."""
        nonlocal commits
        messages = [("windows", b) if b else ("saved",) for b in server.take_windows() if b is not None]
        proc._handle(messages, [])
        for jail, theirs in [*zip(mirror._inline.jails, child), *zip(eager, child)]:  # the daemon notes bans
            jail.banned, jail.banned_nets = dict(theirs.banned), dict(theirs.banned_nets)
        assert windowsync.apply(eager, proc.windows, now, note=False) == []
        take_windows(proc, mirror, w)
        if proc.saved:
            proc.saved = False
            had = w.snapshot_done
            assert w.commit(pipeline)
            commits += 1
            if had:
                assert w.state.window_changes()[0] == windowsync.SNAPSHOT
                pruned.append(commits)
            # a kill -9 now: what was committed loads (rows, then the changes) to what the mirror
            # had taken (on the windows the service has: a restore leaves out those past findtime)
            for fresh, mine, theirs in zip(restored(w.state, child, now), eager, child):
                assert state(fresh, theirs, False) == state(mine, theirs, False), fresh.spec.name

    snapshots = 0
    for second in range(40):
        clock[0] += rng.choice((1.0, 1.0, 9.0))  # FOLD_EVERY passes now and then: the writer asks
        offer(rng.randrange(5, 40))
        before = len(asked)
        server._new_second(turns=4)
        server._per_turn = 3  # a few windows a turn, and counting goes on between the turns
        link()
        for _turn in range(rng.randrange(4, 12)):  # a snapshot's whole windows may take longer
            if not (server._unsaved or server._forced is not None):
                break
            server._save_some()
            link()
            offer(rng.randrange(0, 3))
        link()
        assert mirror.applied == 0, "nothing read the mirror: nothing decoded"
        if len(asked) > before:
            snapshots += 1
    assert snapshots >= 3 and commits >= 20 and pruned
    server.snapshot_due = False
    for _second in range(50):  # seconds with nothing counted meanwhile: all sent, the snapshot's end too
        server._new_second(turns=1)
        while server._unsaved or server._forced is not None:
            server._save_some()
        link()
    for fresh, theirs in zip(restored(w.state, child, now), child):
        assert state(fresh, theirs, False) == state(theirs, None, False), fresh.spec.name
    # the last snapshot's end deleted what came before it: its marker is the first change left
    assert w.state.window_changes()[0] == windowsync.SNAPSHOT
    assert windowsync.SNAPSHOT_END in w.state.window_changes()
    assert not [row for row in w.state.windows() if row[0] in mirror.names()]
    # a read (status, explain) applies what waits, to the service's windows
    for mine, theirs in zip(mirror.jails, child):
        assert state(mine, theirs, False) == state(theirs, None, False), mine.spec.name
    assert mirror.applied > 0 and not mirror.behind
    w.state.close()
    server.stop()


def test_the_mirror_waits_for_a_reader_and_drops_what_a_snapshot_covers() -> None:
    from mailban.daemon.mirror import Mirror

    child = jails()
    mirror = Mirror(Inline(jails()))
    now = 1000.0
    for n in range(30):
        now += 0.5
        for jail in child:
            jail.offer(Event(now, "submission", "policy", "rcpt", ip="192.0.2.7", user=f"u{n % 3}@x",
                             sender="s@y", recipients=1, line=f"l{n}"), now)
        mirror.take([windowsync.pack(checkpoint.take_touched(child))])
    assert mirror.applied == 0 and len(mirror.behind) == 30
    # a snapshot: the marker, then every window whole (sent again from scratch), and its end
    for jail in child:
        for table in (jail.windows, jail.nets):
            for window in table.values():
                window.sent = -1
    items = [(jail, which, key) for jail in child for which, table in (("key", jail.windows), ("net", jail.nets))
             for key in table]
    mirror.take([windowsync.SNAPSHOT, windowsync.pack(items)])
    mirror.snapshot_done()
    assert len(mirror.behind) == 2 and mirror.applied == 0
    for mine, theirs in zip(mirror.jails, child):  # the read
        assert state(mine, theirs, False) == state(theirs, None, False), mine.spec.name
    assert mirror.applied == 2
