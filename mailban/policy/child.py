"""The policy service in a process of its own, forked from the daemon.

Why a process and not the daemon's thread: in one interpreter the service waits for the GIL
while the daemon parses a batch of log lines; bench/policy.py measured 5-7k answers/s and a
p99 of 90-140 ms that way, against the issue's 20,000/s and 2 ms. A child has an interpreter and
(on 2 cores) a core of its own, and the daemon's log reading loses nothing to it.

Inputs: a `PolicyServer` built (socket bound, owner set) by the daemon before the fork, so that
a refused bind is said by the daemon; then, over a socketpair (the link): the decisions
(`Decisions`, replaced whole), unbans (the inline jails forget keys), a reload's inline jails.
Outputs: the inline jails' bans, sent back over the link; the daemon records and carries them
out. The inline jails' changed windows (what changed since the last send: windowsync.py), sent
once a second and with each inline ban, and all of them when the daemon stops ("flush"); the
daemon mirrors them and commits them to its database, and a child forked again (or at the next
start) gets them back, so a restart of mailban or of this process loses at most about a second
of inline counting. Messages are length-prefixed pickles between the daemon and the child it
forked (the same code on both ends; attacker text travels only as str fields of Bans and
Decisions, and as str in the window changes: windowsync.py).

Fail-open: a child that dies (or stops reading for LINK_TIMEOUT) is reaped and forked again by
the daemon; meanwhile the listening socket stays open in the daemon and postfix's connections
wait in its backlog, answered by the next child or by postfix's default action (DUNNO) at its
timeout. The child exits when the link closes (the daemon stopped or died): it never outlives
the daemon.
Must never: block the daemon (its sends time out, and a child that does not read is killed),
run the daemon's code in the child (signals, atexit: it leaves through os._exit).
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from .. import checkpoint
from ..core.jails import Jail
from ..core.records import Ban
from .answer import Decisions, Inline
from .costs import GcTimer
from .sched import IdleCollector, renice
from .server import PolicyServer
from .windowsync import SNAPSHOT, SNAPSHOT_END

log = logging.getLogger("mailban.policy")
LINK_TIMEOUT = 2.0  # seconds a send to the child may wait before the child is taken for hung
_HEAD = struct.Struct("!I")


def _frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEAD.pack(len(data)) + data


class _Frames:
    """Bytes from the link -> whole messages."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        self.buf += data
        out = []
        while len(self.buf) >= _HEAD.size:
            (size,) = _HEAD.unpack_from(self.buf)
            if len(self.buf) < _HEAD.size + size:
                break
            out.append(pickle.loads(bytes(self.buf[_HEAD.size:_HEAD.size + size])))
            del self.buf[:_HEAD.size + size]
        return out


class PolicyProcess:
    """The daemon's handle on the child: send it decisions and commands, take its bans."""

    def __init__(self, server: PolicyServer, nice: int = 0) -> None:
        self.server = server  # bound, not started: the child runs its loop
        # nice steps from the daemon's for the child (the `policy_nice` setting: sched.py)
        self.nice = nice
        self.listen = server.listen
        self.pid = 0
        self.link: socket.socket | None = None
        self._frames = _Frames()
        self.started_at = 0.0
        # Called when the child is found gone, before the link is closed (the daemon's
        # selector lets go of its descriptor).
        self.on_lost: Callable[[], None] | None = None
        # What shared inline jails counted, taken with the bans: (jail name, shared_out items).
        self.shared: list[tuple[str, list]] = []
        # The inline jails' changed windows the child sent, pickled (windowsync.apply takes them,
        # in order).
        self.windows: list[bytes] = []
        self.saved = False  # a second's windows all came: the daemon commits them (then resets it)
        # A snapshot's marker (windowsync.SNAPSHOT) came among the windows and not its end yet
        # ("begun"), or its end too (SNAPSHOT_END: "done"; the daemon takes it and resets it).
        self.snapshot = ""
        self._flushed = False
        self._stats: dict[str, Any] | None = None
        self._bans_meanwhile: list[Ban] = []  # bans that came while stats() waited: take_bans'

    def start(self, inline: Inline, decisions: Decisions) -> None:
        """Fork the child with these inline jails and decisions."""
        parent, child = socket.socketpair()
        self.server.inline, self.server.decisions = inline, decisions
        pid = os.fork()
        if pid == 0:  # the child
            parent.close()
            _child_main(self.server, child, self.nice)  # never returns
        child.close()
        parent.settimeout(LINK_TIMEOUT)
        self.pid, self.link, self._frames, self.started_at = pid, parent, _Frames(), time.monotonic()
        self.snapshot = ""  # a dead child's unfinished snapshot is no snapshot
        log.info("policy service: process %d answers on %s", pid, self.listen)

    @property
    def alive(self) -> bool:
        return self.link is not None

    def fileno(self) -> int:
        """Readable when the child sent bans, or died."""
        assert self.link is not None
        return self.link.fileno()

    def take_bans(self) -> list[Ban] | None:
        """The inline jails' bans the child sent; None when the child is gone (reaped)."""
        if self.link is None:
            return None
        bans, self._bans_meanwhile = self._bans_meanwhile, []
        try:
            self.link.setblocking(False)
            while True:
                data = self.link.recv(1 << 16)
                if not data:
                    self._lost("exited")
                    return None
                self._handle(self._frames.feed(data), bans)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._lost(str(exc))
            return None
        finally:
            if self.link is not None:
                self.link.settimeout(LINK_TIMEOUT)
        return bans

    def _handle(self, messages: list[tuple[Any, ...]], bans: list[Ban]) -> None:
        for message in messages:
            if message[0] == "bans":
                bans.extend(message[1])
            elif message[0] == "shared":
                self.shared.extend(message[1])
            elif message[0] == "windows":
                self.windows.append(message[1])
                if message[1] == SNAPSHOT:
                    self.snapshot = "begun"
                elif message[1] == SNAPSHOT_END and self.snapshot == "begun":
                    self.snapshot = "done"
            elif message[0] == "saved":
                self.saved = True
            elif message[0] == "flushed":
                self._flushed = True
            elif message[0] == "stats":
                self._stats = message[1]

    def flush(self, timeout: float = 1.0) -> list[Ban]:
        """Have the child send every changed window (before a stop) and wait for them, at most
        `timeout`; returns the bans that came meanwhile. A child that does not answer in time
        loses what it counted since its last send (about a second)."""
        self._flushed = False
        return self._ask("flush", lambda: self._flushed, timeout)

    def stats(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The child's counters and costs (answers, collector pauses, turns spent saving,
        objects the collector tracks): costs.py; None if it does not answer in time. For
        bench/policy.py: waits on the link, so not for the daemon's loop."""
        self._stats = None
        self._bans_meanwhile += self._ask("stats", lambda: self._stats is not None, timeout)
        return self._stats

    def _ask(self, what: str, done: Callable[[], bool], timeout: float) -> list[Ban]:
        bans: list[Ban] = []
        if self.link is None or not self.send(what):
            return bans
        end = time.monotonic() + timeout
        try:
            while not done() and (left := end - time.monotonic()) > 0:
                self.link.settimeout(left)
                data = self.link.recv(1 << 16)
                if not data:
                    break
                self._handle(self._frames.feed(data), bans)
        except OSError:  # timed out, or the child is gone: stop() reaps it
            pass
        finally:
            if self.link is not None:
                self.link.settimeout(LINK_TIMEOUT)
        return bans

    def send(self, *message: Any) -> bool:
        """Send a message to the child; False (and the child killed) when it does not take it."""
        if self.link is None:
            return False
        try:
            self.link.sendall(_frame(message))
            return True
        except OSError as exc:  # socket.timeout included: a child that stopped reading
            self._lost(f"does not read ({exc or 'timed out'})")
            return False

    def _lost(self, why: str) -> None:
        if self.on_lost is not None:
            self.on_lost()
        log.error("policy service: process %d %s; postfix's default action answers until it is restarted",
                  self.pid, why)
        self._reap(kill=True)

    def _reap(self, kill: bool, wait: float = 0.0) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if not self.pid:
            return
        end = time.monotonic() + wait
        while True:
            try:
                done, _status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() >= end:
                if kill:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    break
                kill = True
                end = time.monotonic() + 2.0
            time.sleep(0.01)
        self.pid = 0

    def stop(self) -> None:
        """Stop the child (closing the link is its signal) and stop listening."""
        self._reap(kill=False, wait=5.0)
        self.server.stop()


# ---- the child ----------------------------------------------------------------------------------
gc_timer = GcTimer()  # the child's collector pauses (the daemon asks for them: "stats")


def _child_main(server: PolicyServer, link: socket.socket, nice: int = 0) -> None:
    code = 0
    try:
        # Before any thread starts (nice is per thread on Linux; they inherit it): answers
        # before the daemon's log reading (sched.py).
        refused = renice(nice)
        if refused:
            log.warning("policy service: %s; it competes with the daemon's log reading as an equal", refused)
        # The daemon's signal handling is not the child's: its wakeup fd would wake the
        # daemon, and SIGTERM/SIGINT/SIGHUP are the daemon's to act on.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # The jails came from the daemon's mirror with its restored windows; from here on this
        # process notes what it changes and sends it back (flush_windows).
        for jail in server.inline.jails:
            jail.touched.clear()
        checkpoint.track(server.inline.jails)
        server.save_windows = True
        gc_timer.install()
        # What the fork copied from the daemon (its configuration, pipeline, decisions, the
        # mirror) out of the collector's sight: its full collections walked all of it, and
        # touching those objects' headers un-shares the forked pages.
        gc.freeze()
        # and the collections in the loop's idle gaps from here on, not in the middle of requests
        server.idle = IdleCollector()
        server.idle.install()
        threading.Thread(target=_link_loop, args=(server, link), name="mailban-policy-link", daemon=True).start()
        server._run()
    except BaseException:  # noqa: BLE001 - the child must leave through os._exit whatever happens
        log.exception("policy service: the process failed")
        code = 1
    finally:
        os._exit(code)


def _link_loop(server: PolicyServer, link: socket.socket) -> None:
    """The child's side of the link: the daemon's messages in, the inline bans out."""
    sel = selectors.DefaultSelector()
    sel.register(link, selectors.EVENT_READ, "link")
    sel.register(server.fileno(), selectors.EVENT_READ, "bans")
    frames = _Frames()
    try:
        while True:
            for key, _mask in sel.select():
                if key.data == "bans":
                    bans, shared, windows = server.take_bans(), server.take_shared(), server.take_windows()
                    if bans:
                        link.sendall(_frame(("bans", bans)))
                    if shared:
                        link.sendall(_frame(("shared", shared)))
                    # already pickled by the loop (windowsync.pack), a few dozen windows each; one
                    # send for all (the daemon wakes up once for them)
                    if windows:
                        link.sendall(b"".join(_frame(("windows", blob) if blob else ("flushed",) if blob is None
                                                     else ("saved",)) for blob in windows))
                    continue
                data = link.recv(1 << 20)
                if not data:
                    return  # the daemon stopped or died
                for message in frames.feed(data):
                    if message[0] == "stats":  # read from this thread: numbers the loop only adds to
                        link.sendall(_frame(("stats", _stats(server))))
                    else:
                        _apply(server, message)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon closed the link while a send was under way: it stopped
    except Exception:
        log.exception("policy service: the link to the daemon failed")
    finally:
        server._stop = True
        server._poke(server._cmd_w)


def _stats(server: PolicyServer) -> dict[str, Any]:
    out: dict[str, Any] = dict(server.stats)
    out.update(gc_timer.report())
    out.update(server.saving.report("saving"))
    for name, histogram in (("held", server.held), ("turn", server.turns), ("turn_cpu", server.turns_cpu)):
        if histogram is not None:
            out.update(histogram.report(name))
    out["gc_idle"] = list(server.idle.collections) if server.idle is not None else [0, 0, 0]
    out["saves_due"] = server.saves_due
    out["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    out["gc_tracked"] = len(gc.get_objects())
    out["gc_frozen"] = gc.get_freeze_count()
    return out


def _apply(server: PolicyServer, message: tuple[Any, ...]) -> None:
    op = message[0]
    if op == "decisions":
        server.decisions = message[1]
    elif op == "forget":
        keys = message[1]
        server.call(lambda inline: [inline.forget(kt, k) for kt, k in keys])
    elif op == "forget_all":
        server.call(lambda inline: inline.forget_all())
    elif op == "jails":
        jails: list[Jail] = message[1]
        checkpoint.track(jails)
        server.call(lambda inline: inline.replace(jails))
    elif op == "resend":  # the mirror could not follow these windows' changes: send them whole
        keys = message[1]
        server.call(lambda inline: _resend(inline, keys))
    elif op == "snapshot":  # every window whole in the next second's windows (the daemon's fold)
        server.call(lambda _inline: server.snapshot())
    elif op == "flush":  # the daemon stops: every changed window, then "flushed"
        server.call(lambda _inline: server.flush_windows(marker=True))
    elif op == "note":  # bans of inline jails decided elsewhere (another node, an admin)
        notes = message[1]
        server.call(lambda inline: _note(inline, notes))
    elif op == "crossing":  # the fleet's shared window of an inline jail reached its threshold
        args = message[1:]
        server.call(lambda inline: _crossing(server, inline, *args))


def _resend(inline: Inline, keys: list[tuple[str, str, str]]) -> None:
    for name, which, key in keys:
        jail = inline.jail(name)
        window = None if jail is None else (jail.windows if which == "key" else jail.nets).get(key)
        if jail is not None and window is not None:
            window.sent = -1
            jail.touched.add((which, key))


def _note(inline: Inline, notes: list[tuple[str, str, float, str]]) -> None:
    for name, key, until, key_type in notes:
        jail = inline.jail(name)
        if jail is not None:
            jail.note_ban(key, until, key_type)


def _crossing(server: PolicyServer, inline: Inline, name: str, key: str, now: float, when: float, total: int,
              lines: tuple[str, ...], cause: str) -> None:
    jail = inline.jail(name)
    ban = jail.decide_shared(key, now, when, total, lines) if jail is not None and jail.spec.shared else None
    if ban is not None:
        server.hand_over([replace(ban, cause=cause)])
