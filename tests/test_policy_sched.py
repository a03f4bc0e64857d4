"""The policy service's own scheduling (mailban/policy/sched.py, server.py): its CPU priority, the
collector in idle gaps, and packing windows between requests but never later than its schedule."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from mailban import checkpoint
from mailban.core.jails import IgnoreList, JailSpec
from mailban.core.records import Event
from mailban.policy import windowsync
from mailban.policy.answer import Inline, inline_jail
from mailban.policy.sched import HARD_GEN0, SOFT_GEN0, IdleCollector, renice
from mailban.policy.server import SAVE_WITHIN, SAVED, SNAPSHOT_WITHIN, WINDOWS_PER_TURN, PolicyServer


def _in_a_thread(steps: int) -> tuple[str, int, int]:
    """renice(steps) in a new thread (nice is per thread: the test process keeps its own)."""
    out: list[tuple[str, int, int]] = []

    def run() -> None:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        out.append((renice(steps), before, os.getpriority(os.PRIO_PROCESS, 0)))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a priority needs root")
def test_renice_moves_this_threads_priority_by_steps() -> None:
    refused, before, after = _in_a_thread(-3)
    assert refused == "" and after == max(-20, before - 3)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the test's own thread is untouched
    assert _in_a_thread(0)[0] == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_an_unprivileged_renice_says_why_and_raises_nothing() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: as nobody, raising the priority is refused
        try:
            os.setuid(65534)
            os.write(w, renice(-5).encode()[:200])
        finally:
            os._exit(0)
    os.close(w)
    said = os.read(r, 400).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert "cannot change its nice value by -5" in said


def test_the_idle_collector_collects_what_cpython_would_only_when_asked() -> None:
    old = gc.get_threshold()
    collector = IdleCollector()
    try:
        collector.install()
        assert gc.get_threshold()[0] == HARD_GEN0
        gc.collect()
        junk = []
        for _ in range(SOFT_GEN0 // 2):  # cycles: the collector's to free
            a: list = []
            a.append(a)
            junk.append(a)
        del junk, a
        assert not collector.due()
        collector.idle()
        assert collector.collections == [0, 0, 0]
        for _ in range(SOFT_GEN0):
            b: list = []
            b.append(b)
        del b
        assert collector.due()
        collector.idle()
        assert collector.collections == [1, 0, 0] and gc.get_count()[0] < SOFT_GEN0
        assert gc.get_count()[1] == 1  # as CPython's own: gen1 every SOFT_GEN1 of these
    finally:
        gc.set_threshold(*old)


def _server(tmp_path: Path) -> PolicyServer:
    spec = JailSpec(name="out", kinds=frozenset(), key="user", maxretry=10**6, findtime=3600, bantime=600,
                    inline=True, actions=())
    server = PolicyServer(f"unix:{tmp_path}/p.sock", Inline([inline_jail(spec, IgnoreList(()))]))
    checkpoint.track(server.inline.jails)
    server.save_windows = True
    return server


def _count(server: PolicyServer, n: int, at: float) -> None:
    jail = server.inline.jails[0]
    for i in range(n):
        jail.offer(Event(at, "submission", "policy", "rcpt", user=f"u{i}@x", recipients=1, line=f"l{i}"), at)


def test_packing_may_wait_only_while_it_is_ahead_of_its_schedule(tmp_path: Path) -> None:
    """Noted at a sweep (at 100.0), a second's windows are due evenly over SAVE_WITHIN: a turn with
    requests waiting packs only once the packing is a turn's share behind; a snapshot's whole
    windows likewise over SNAPSHOT_WITHIN."""
    server = _server(tmp_path)
    try:
        total = 10 * WINDOWS_PER_TURN
        _count(server, total, 99.0)
        server._new_second(turns=1000, now=100.0)
        assert server._per_turn == WINDOWS_PER_TURN
        share = SAVE_WITHIN / 10  # the time one turn's share of the windows has
        assert not server._save_due(100.0) and not server._save_due(100.0 + share * 0.99)
        assert server._save_due(100.0 + share * 1.01)
        server._save_some()  # one turn's share packed: not due until the next share's time
        assert not server._save_due(100.0 + share * 1.99) and server._save_due(100.0 + share * 2.01)
        while server._unsaved:
            server._save_some()
        assert not server._save_due(100.0 + SAVE_WITHIN * 2)  # all packed: nothing due
        assert server.take_windows()[-1] == SAVED
        # a snapshot: every window whole over SNAPSHOT_WITHIN from its marker
        server.snapshot_due = True
        server._new_second(turns=1000, now=200.0)
        assert server._forced is not None and server._forced_total == total
        assert not server._save_due(200.0 + SNAPSHOT_WITHIN * server._forced_per_turn / total * 0.99)
        assert server._save_due(200.0 + SNAPSHOT_WITHIN * server._forced_per_turn / total * 1.01)
    finally:
        server.stop()


def test_a_loop_that_is_never_idle_still_saves_every_second(tmp_path: Path) -> None:
    """The loop's schedule in action: with something always readable (here a descriptor the loop
    never reads, so every zero-timeout poll finds it) the windows noted at a sweep are packed by
    their schedule, and the second ends with SAVED as when it is idle."""
    server = _server(tmp_path)
    busy_r, busy_w = socket.socketpair()
    busy_w.send(b"x")  # readable for good
    server.start()
    try:
        server.call(lambda _inline: server._ep.register(busy_r.fileno(), 1))  # EPOLLIN, in the loop's thread
        server.call(lambda _inline: _count(server, 20 * WINDOWS_PER_TURN, time.time()))
        blobs: list = []
        end = time.monotonic() + 5.0
        while SAVED not in blobs and time.monotonic() < end:
            time.sleep(0.05)
            blobs += server.take_windows()
        assert SAVED in blobs
        packed = sum(len(windowsync.loads(b)) for b in blobs[:blobs.index(SAVED)] if b)
        assert packed == 20 * WINDOWS_PER_TURN
        assert server.saves_due >= 20  # every piece by its schedule: the loop was never idle
    finally:
        server.stop()
        busy_r.close()
        busy_w.close()


def test_a_loop_never_idle_collects_anyway_past_late_gen0() -> None:
    from mailban.policy.sched import LATE_GEN0

    old = gc.get_threshold()
    collector = IdleCollector()
    try:
        collector.install()
        gc.collect()
        keep = [[] for _ in range(SOFT_GEN0 + 10)]  # tracked, alive: counted, not freed
        assert collector.due() and not collector.overdue()
        keep += [[] for _ in range(LATE_GEN0)]
        assert collector.overdue()
        del keep
    finally:
        gc.set_threshold(*old)
