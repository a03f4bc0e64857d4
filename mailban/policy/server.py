"""The policy service's sockets: one thread, one epoll loop, every connection non-blocking.

Inputs: postfix's connections on `unix:PATH` or `inet:HOST:PORT` (the `policy_listen`
setting); the daemon's `Decisions` (a reference it replaces whole) and commands run in this
thread (`call`: unban, reload). Outputs: answers; the inline jails' bans, which the daemon takes
(`take_bans`) when `fileno()` becomes readable, then records and carries out like any other.

Why one selector loop: an answer is a few dictionary lookups (about 10 us of Python), so a
thread per connection or asyncio would cost more than the work. The daemon runs this loop in a
process of its own (child.py: `_run` is the child's main loop); `start()` runs it as a thread
instead (the tests, and bench/policy.py --thread, which shows what the GIL cost it there: it
waited behind the daemon's log parsing).

Fail-open, because mailban must never stop mail (postfix's `default_action = DUNNO` covers a
mailban that is stopped, restarting or silent):
- an answer that could not be computed within `deadline` of the loop waking up (the loop fell
  behind) is DUNNO, without counting; an answer that raises is DUNNO too;
- at most `max_connections` connections; beyond that a new one is closed at once (postfix
  falls back to its default action);
- a connection that does not speak the protocol, sends more than MAX_REQUEST bytes in one
  request, leaves a request unfinished for `request_timeout`, or does not read its answers, is
  closed: nothing a client sends makes the loop wait or keep unbounded memory.
Must never: block (every socket is non-blocking), raise out of the loop, or answer anything but
DUNNO when in doubt.
Size: one epoll loop and everything it owns (connections and their buffers, the deadline and
connection limits of fail-open, the hand-over of bans and saved windows to the daemon's side);
the protocol is protocol.py, the answers answer.py, the process around it child.py.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import stat
import threading
import time
from itertools import islice
from typing import Callable, Iterator, TypeVar

from ..core.jails import Jail
from ..core.records import Ban
from .answer import DUNNO, Decisions, Inline, decide
from . import windowsync
from .costs import Histogram, Spans
from .protocol import ProtocolError, RequestBuffer
from .sched import IdleCollector

T = TypeVar("T")

log = logging.getLogger("mailban.policy")
MAX_UNSENT = 65536  # answers a client has not read; beyond this it is not a postfix
SWEEP_EVERY = 1.0
SAVED = b""  # in the windows' queue: the windows of a second are all there
WINDOWS_PER_TURN = 32  # changed inline windows packed per loop turn (_save_some): about 0.2 ms of CPU
# windows packed whole per turn for a snapshot (more when the loop turns few times a second): a
# whole window costs 25-45 us (its 20 lines), ten times a change
SNAPSHOT_PER_TURN = 4
# Packing waits for a turn with nothing to read (a request that came during a turn packing
# windows waited for it: bench/policy.py's p99), but no later than its schedule: a second's
# changed windows all packed within SAVE_WITHIN of the sweep that noted them, a snapshot's
# within SNAPSHOT_WITHIN of its marker, evenly (a turn packs anyway once the packing is a turn's
# share behind). So a loop that is never idle saves as before, spread over the half second.
SAVE_WITHIN = 0.5
SNAPSHOT_WITHIN = 2.0


def _drained(q: queue.Queue[T]) -> list[T]:
    """Everything the queue holds now, without waiting."""
    out: list[T] = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def parse_listen(listen: str) -> tuple[int, str | tuple[str, int]]:
    """`unix:/path` or `inet:HOST:PORT` (IPv6 host in brackets) -> (family, address)."""
    kind, _, rest = listen.partition(":")
    if kind == "unix" and rest.startswith("/"):
        return socket.AF_UNIX, rest
    if kind == "inet":
        host, sep, port = rest.rpartition(":")
        if sep and port.isdigit() and 0 < int(port) < 65536 and host:
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, int(port))
    raise ValueError(f"{listen!r}: expected unix:/absolute/path or inet:HOST:PORT")


class _Conn:
    __slots__ = ("sock", "buf", "since", "instance", "out", "last")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.buf = RequestBuffer()
        self.since = 0.0  # when the unfinished request began (0: none)
        self.instance = b""  # the message of the last RCPT on this connection
        self.out = b""
        self.last = now


class PolicyServer:
    def __init__(self, listen: str, inline: Inline | None = None, *, socket_mode: int = 0o666,
                 socket_owner: str = "", max_connections: int = 512, deadline: float = 0.05,
                 request_timeout: float = 10.0, idle_timeout: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.family, self.address = parse_listen(listen)
        self.listen = listen
        self.inline = inline or Inline()
        self.decisions = Decisions()
        self.socket_mode, self.socket_owner = socket_mode, socket_owner
        self.max_connections, self.deadline = max_connections, deadline
        self.request_timeout, self.idle_timeout = request_timeout, idle_timeout
        self.clock = clock
        self.stats = {"requests": 0, "late": 0, "errors": 0, "refused": 0, "closed": 0}
        # The inline jails' bans, for the daemon (another thread, or the child's link thread):
        # a queue, since a list swapped by the taker lost a ban that the loop appended to the
        # list it had just read (a race seen end to end, about one run in seven).
        self._bans: queue.SimpleQueue[Ban] = queue.SimpleQueue()
        # What `shared` inline jails counted (jail name, Jail.shared_out items), for the fleet.
        self._shared: queue.SimpleQueue[tuple[str, list]] = queue.SimpleQueue()
        self._commands: queue.SimpleQueue[Callable[[Inline], None]] = queue.SimpleQueue()
        # The inline jails' changed windows (what changed since their last send, pickled:
        # windowsync.pack), for the daemon to commit, taken once a second and with each inline
        # ban; None marks the end of a `flush_windows(True)`, SAVED the end of a second's (the
        # daemon commits then, once, rather than for each piece). Only when the daemon saves
        # them (the child process): `save_windows`.
        self.save_windows = False
        self._windows: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        # Windows noted as changed at the last sweep and not packed yet (_save_some).
        # Each jail's set of touched windows is taken whole at the sweep (no copy: packing
        # thousands of (jail, which, key) tuples at once showed in the sweep's turn).
        self._unsaved: list[tuple[Jail, Iterator[tuple[str, str]]]] = []
        # The loop turns spent saving windows (noting them at the sweep, packing some), for
        # bench/policy.py: they hold answers back (costs.py).
        self.saving = Spans()
        # How long each answer was held here (from the loop's wake-up that read its request to the
        # answer written) and how long each loop turn worked: a request that arrives during a turn
        # waits for the rest of it. The service's side of the latency, apart from the client's.
        # Off unless set (bench/policy.py sets them): a clock read and a count, about 1 us an
        # answer and a turn, 25 ms of CPU a second at 20,000 requests a second.
        self.held: Histogram | None = None
        self.turns: Histogram | None = None
        # The CPU time of each turn (this thread's): what the machine's load does not stretch. Off
        # unless set (bench/policy.py --turn-cpu): two more system calls a turn (3.5 us each).
        self.turns_cpu: Histogram | None = None
        self._per_turn = WINDOWS_PER_TURN  # windows packed per turn this second (see _run)
        # The daemon asked for every window whole (snapshot()): begun at the next sweep. Then the
        # windows that were there, to be sent whole a few per turn whatever else is packed
        # (`_forced`: per jail and table, the keys left; None: no snapshot under way).
        self.snapshot_due = False
        self._forced: list[tuple[Jail, str, Iterator[str]]] | None = None
        self._forced_left = 0
        self._forced_per_turn = SNAPSHOT_PER_TURN
        # The packing's schedule (SAVE_WITHIN): since when, how many windows, how many packed;
        # and the snapshot's (SNAPSHOT_WITHIN): since when, how many.
        self._save_start, self._save_total, self._save_done = 0.0, 0, 0
        self._forced_start, self._forced_total = 0.0, 0
        # Turns that packed windows because their schedule said so, though requests were waiting
        # (bench/policy.py); the others waited for a turn with nothing to read.
        self.saves_due = 0
        # The child's collector, run in the loop's idle gaps (sched.py); None: CPython's own
        # (a thread of the daemon, the tests).
        self.idle: IdleCollector | None = None
        self._cmd_r, self._cmd_w = socket.socketpair()
        self._out_r, self._out_w = socket.socketpair()
        for s in (self._cmd_r, self._cmd_w, self._out_r, self._out_w):
            s.setblocking(False)
        self._conns: dict[int, _Conn] = {}
        self._stop = False
        self._thread: threading.Thread | None = None
        self.listener = self._bind()

    # ---- the daemon's side --------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mailban-policy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._poke(self._cmd_w)
        if self._thread is not None:
            self._thread.join(5)
        self.listener.close()
        if self.family == socket.AF_UNIX:
            try:
                os.unlink(str(self.address))
            except OSError:
                pass
        for s in (self._cmd_r, self._cmd_w, self._out_r, self._out_w):
            s.close()

    def fileno(self) -> int:
        """Readable when the inline jails decided something (take_bans)."""
        return self._out_r.fileno()

    def take_bans(self) -> list[Ban]:
        try:
            while self._out_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        return _drained(self._bans)

    def take_shared(self) -> list[tuple[str, list]]:
        """What shared inline jails counted since the last call (after take_bans)."""
        return _drained(self._shared)

    def take_windows(self) -> list[bytes | None]:
        """The inline jails' changed windows since the last call (None: a flush ended; SAVED: a
        second's windows ended)."""
        return _drained(self._windows)

    def flush_windows(self, marker: bool = False) -> None:
        """In the server's thread: queue the inline jails' changed windows for the taker (and
        with `marker`, a None after them, so that the daemon knows it has them all). The
        periodic save packs them a few at a time instead (_save_some)."""
        if not self.save_windows:
            return
        self._note_unsaved()
        items = [(jail, which, key) for jail, left in self._unsaved for which, key in left]
        self._unsaved = []
        if items:
            self._windows.put(windowsync.pack(items))
        if marker:
            self._windows.put(None)
        if items or marker:
            self._poke(self._out_w)

    def _save_some(self, everything: bool = False) -> None:
        """Pack and queue a few of the windows noted at the last sweep (WINDOWS_PER_TURN, more when
        the loop turns few times a second; packing thousands at once held answers back for tens
        of ms: bench/policy.py's p99), or all of them; after the last, SAVED, so that the daemon
        commits a second's windows once."""
        most = self._per_turn if not everything else 1 << 62
        some: list[tuple[Jail, str, str]] = []
        ends = bool(self._unsaved)  # this call packs the last of the second's: SAVED after
        while self._unsaved and len(some) < most:
            jail, left = self._unsaved[0]
            some += ((jail, which, key) for which, key in islice(left, most - len(some)))
            if len(some) < most:
                del self._unsaved[0]  # that jail's are all packed
        self._save_done += len(some)
        if self._forced is not None and not everything:
            some += self._forced_some(self._forced_per_turn)
        if some:
            self._windows.put(windowsync.pack(some))
        if self._forced == []:  # every window there at the marker went whole since
            self._windows.put(windowsync.SNAPSHOT_END)
            self._forced = None
            if not ends:
                self._poke(self._out_w)
        if ends and not self._unsaved:
            self._windows.put(SAVED)
            # once a second, not for each piece: the daemon commits them at SAVED anyway, and
            # each poke was a switch to the link thread here and a wake-up of the daemon there
            self._poke(self._out_w)

    def _new_second(self, turns: int, now: float = 0.0) -> None:
        """At the sweep: what is left of the last second's windows packed, a snapshot begun if
        the daemon asked for one, and the windows changed since noted, to be packed a few per
        turn over about half the turns the last second had (`turns`; fewer under load)."""
        if self._unsaved:  # turns too few to pack the last second's (an overload): all now
            self._save_some(everything=True)
        snapshot, self.snapshot_due = self.snapshot_due and self._forced is None, False
        if snapshot:
            self._begin_snapshot()
            self._forced_start, self._forced_total = now, self._forced_left
        noted = self._note_unsaved()
        self._save_start, self._save_total, self._save_done = now, noted, 0
        self._per_turn = max(WINDOWS_PER_TURN, -(-noted // max(1, turns // 2)))
        # a snapshot's whole windows over about two seconds' turns
        self._forced_per_turn = max(SNAPSHOT_PER_TURN, -(-self._forced_left // max(1, turns)))

    def _save_due(self, now: float) -> bool:
        """Whether the packing is a turn's share behind its schedule (SAVE_WITHIN,
        SNAPSHOT_WITHIN): then a turn packs even with requests waiting."""
        if self._unsaved:
            share = min(1.0, (now - self._save_start) / SAVE_WITHIN)
            if self._save_done + self._per_turn <= self._save_total * share:
                return True
        if self._forced is not None:
            share = min(1.0, (now - self._forced_start) / SNAPSHOT_WITHIN)
            if self._forced_total - self._forced_left + self._forced_per_turn <= self._forced_total * share:
                return True
        return False

    def snapshot(self) -> None:
        """In the server's thread: send every window whole, from the next sweep on, over about
        two seconds (the daemon folds its saved changes with that instead of decoding them:
        daemon/writer.py); asked again while one is under way, it is not begun again."""
        self.snapshot_due = True

    def _begin_snapshot(self) -> None:
        """The marker, then every window as never sent (so that its next pack, forced or for a
        change, is whole: windowsync.SNAPSHOT); the windows there now are packed whole a few per
        turn (_forced_some), and SNAPSHOT_END follows the last. About 0.1 us a window here."""
        self._windows.put(windowsync.SNAPSHOT)
        self._forced, self._forced_left = [], 0
        for jail in self.inline.jails:
            for which, table in (("key", jail.windows), ("net", jail.nets)):
                for window in table.values():
                    window.sent = -1
                self._forced.append((jail, which, iter(list(table))))
                self._forced_left += len(table)

    def _forced_some(self, most: int) -> list[tuple[Jail, str, str]]:
        """Up to `most` of the snapshot's windows not sent whole since its marker (a window that
        changed meanwhile went whole with its change; one gone sent its end)."""
        some: list[tuple[Jail, str, str]] = []
        forced = self._forced
        while forced and len(some) < most:
            jail, which, keys = forced[0]
            table = jail.windows if which == "key" else jail.nets
            for key in keys:
                self._forced_left -= 1
                window = table.get(key)
                if window is not None and window.sent < 0:
                    some.append((jail, which, key))
                    if len(some) >= most:
                        break
            else:
                del forced[0]
        return some

    def _note_unsaved(self) -> int:
        """Take the windows the inline jails changed since the last call, to be packed; how many."""
        noted = 0
        for jail in self.inline.jails:
            if jail.touched:
                noted += len(jail.touched)
                self._unsaved.append((jail, iter(jail.touched)))
                jail.touched = set()
        return noted

    def hand_over(self, bans: list[Ban]) -> None:
        """Queue bans decided in this thread outside a request (a fleet crossing) for the taker."""
        for ban in bans:
            self._bans.put(ban)
        self._poke(self._out_w)

    def call(self, command: Callable[[Inline], None]) -> None:
        """Run `command(inline)` in the server's thread, between two requests."""
        self._commands.put(command)
        self._poke(self._cmd_w)

    @property
    def connections(self) -> int:
        return len(self._conns)

    # ---- the loop -----------------------------------------------------------------------------
    def _bind(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        if self.family == socket.AF_UNIX:
            path = str(self.address)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)  # left by a mailban that did not stop cleanly
            except FileNotFoundError:
                pass
            sock.bind(path)
            os.chmod(path, self.socket_mode)
            if self.socket_owner:
                import pwd

                pw = pwd.getpwnam(self.socket_owner)
                os.chown(path, pw.pw_uid, pw.pw_gid)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self.address)
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        # epoll itself rather than `selectors`: its key objects cost about a fifth of a request.
        ep = self._ep = select.epoll()
        ep.register(self.listener.fileno(), select.EPOLLIN)
        ep.register(self._cmd_r.fileno(), select.EPOLLIN)
        listener, commands, conns = self.listener.fileno(), self._cmd_r.fileno(), self._conns
        next_sweep = time.monotonic() + SWEEP_EVERY
        turns = 0
        # what a zero-timeout poll found at the end of the last turn: this turn's, without
        # another system call
        readable: list[tuple[int, int]] = []
        idle = self.idle
        while not self._stop:
            turns += 1
            try:
                if readable:
                    ready, readable = readable, []
                else:
                    ready = ep.poll(SWEEP_EVERY)
                woke = time.monotonic()
                if self.turns_cpu is not None:
                    cpu = time.thread_time()
                for fd, mask in ready:
                    conn = conns.get(fd)
                    if conn is not None:
                        if mask & select.EPOLLOUT:
                            self._flush(conn)
                        if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and fd in conns:
                            self._read(conn, woke)
                    elif fd == listener:
                        self._accept(woke)
                    elif fd == commands:
                        self._run_commands()
                if woke >= next_sweep:
                    next_sweep = woke + SWEEP_EVERY
                    self._sweep(woke)
                    # at most about a second of inline counting is lost if mailban is killed:
                    # the windows changed in the last second, packed a few per turn from here
                    if self.save_windows:
                        began = self.saving.began()
                        self._new_second(turns, woke)
                        turns = 0
                        self.saving.add(*began)
                # Work that may wait for a gap between requests (packing windows, the collector):
                # done when nothing is readable, or the packing when its schedule says so.
                saving = self._unsaved or self._forced is not None
                if saving or (idle is not None and idle.due()):
                    readable = ep.poll(0)
                    due = bool(readable) and saving and self._save_due(time.monotonic())
                    if saving and (not readable or due):
                        self.saves_due += due
                        began = self.saving.began()
                        self._save_some()
                        self.saving.add(*began)
                    elif idle is not None and (not readable or idle.overdue()):
                        idle.idle()
                if self.turns is not None:
                    self.turns.add(time.monotonic() - woke)
                if self.turns_cpu is not None:
                    self.turns_cpu.add(time.thread_time() - cpu)
            except Exception:  # a bug must not stop the service: logged, the loop goes on
                log.exception("policy service: unexpected error")
        for conn in list(self._conns.values()):
            self._close(conn)
        ep.close()

    def _accept(self, now: float) -> None:
        while True:
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: postfix falls back to its default action
                log.warning("policy service: cannot accept: %s", exc)
                return
            if len(self._conns) >= self.max_connections:
                self.stats["refused"] += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, now)
            self._conns[sock.fileno()] = conn
            self._ep.register(sock.fileno(), select.EPOLLIN)

    def _read(self, conn: _Conn, woke: float) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.last = woke
        try:
            requests = conn.buf.feed(data)
        except ProtocolError:
            self.stats["errors"] += 1
            self._close(conn)
            return
        if conn.buf.pending:
            if not conn.since:
                conn.since = woke
        else:
            conn.since = 0.0
        if not requests:
            return
        replies = []
        decisions, inline, deadline = self.decisions, self.inline, self.deadline
        self.stats["requests"] += len(requests)
        banned = False
        for request in requests:
            if time.monotonic() - woke > deadline:
                self.stats["late"] += 1
                replies.append(DUNNO)
                continue
            new_message = not request.instance or request.instance != conn.instance
            if request.state == "RCPT":
                conn.instance = request.instance
            try:
                reply, bans = decide(request, decisions, inline, self.clock(), new_message)
            except Exception:
                log.exception("policy service: cannot answer %r; answered DUNNO", request)
                reply, bans = DUNNO, []
            if bans:
                for ban in bans:  # queued before the poke: the taker may run as soon as it is sent
                    self._bans.put(ban)
                self._poke(self._out_w)
                banned = True
            replies.append(reply)
        if banned:  # the window a ban ends goes with it, so a restart cannot count it again
            self.flush_windows()
        shared = [j for j in inline.jails if j.shared_out]
        if shared:  # only `shared = true` jails fill it
            for jail in shared:
                self._shared.put((jail.spec.name, jail.shared_out))
                jail.shared_out = []
            self._poke(self._out_w)
        self._send(conn, replies[0] if len(replies) == 1 else b"".join(replies))
        if self.held is not None:
            self.held.add(time.monotonic() - woke)

    def _send(self, conn: _Conn, payload: bytes) -> None:
        if conn.out:
            conn.out += payload
        else:
            try:
                sent = conn.sock.send(payload)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn)
                return
            if sent == len(payload):
                return
            conn.out = payload[sent:]
            self._ep.modify(conn.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
        if len(conn.out) > MAX_UNSENT:
            self._close(conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._ep.modify(conn.sock.fileno(), select.EPOLLIN)

    def _sweep(self, now: float) -> None:
        """Close the connections that left a request unfinished too long, or idle too long."""
        for conn in list(self._conns.values()):
            if (conn.since and now - conn.since > self.request_timeout) or now - conn.last > self.idle_timeout:
                self._close(conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if self._conns.pop(fd, None) is None:
            return
        self.stats["closed"] += 1
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    def _run_commands(self) -> None:
        try:
            while self._cmd_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command(self.inline)
            except Exception:
                log.exception("policy service: a command from the daemon failed")

    @staticmethod
    def _poke(sock: socket.socket) -> None:
        try:
            sock.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already poked (the buffer is full) or closing
