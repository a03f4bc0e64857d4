"""Policy service benchmark: requests per second and latency over the unix socket, with many
postfix-like clients (each connection stays open and sends one request at a time, waiting for
its answer, as postfix's smtpd does).

The server runs as the daemon runs it: a child process forked by a "daemon" process
(mailban/policy/child.py), with an inline jail counting per sasl_username and a few thousand
decisions loaded; the load generator in this process (one epoll loop driving every
connection). --thread runs it as a thread of the "daemon" process instead (how it ran before,
for comparison). Two runs:
- closed loop: every connection sends its next request as soon as its answer arrives (the
  most the server answers);
- open loop: requests arrive at --rate per second in total, spread over the connections
  (each waits for its previous answer): the latency postfix sees at that load.
Optionally (--log-load) the "daemon" process parses log lines in its main thread all along, as
the daemon does under a log flood, and the log lines it parsed per second are printed: first
with no policy traffic (the baseline), then during each run, to show what the service costs
the log-reading path (and, with --thread, what the GIL costs the answers).
The "daemon" process does with the child's windows what the daemon does (PolicyBridge._take):
puts them into a mirror of the inline jails and commits them to a real database, once a second.
The mirror there is the daemon's (daemon/mirror.py): it keeps the batches undecoded, and the run
ends with a read of it, whose cost is printed (what `status` would pay then).
Prints figures; also CPU seconds used by the client and the server, and the child's costs that
the machine's load does not change (costs.py: the cycle collector's CPU time and pauses, the CPU
time of the loop turns spent saving windows, objects tracked), and load averages: on a shared
machine the wall-clock figures are noise first. Latency is printed three ways: at the client
from the send, at the client from when the request was due (the open loop picks a connection at
random; a request due while its connection waits for an answer is sent when the answer comes, so
this includes that wait and the generator's own lateness: no coordinated omission), and in the
service (from the loop's wake-up that read the request to its answer written; and its loop
turns, whose CPU time too with --turn-cpu). --generators N runs the load generator in N
processes, so that one Python loop's lateness weighs less.
--client c runs the load generator in C instead (bench/policy_client.c, compiled here with
gcc -O2 into a temporary directory; without gcc it says so and the Python one runs): the same
connections, schedule, request bytes (request(), written to a file it reads) and figures (it
writes the raw samples, read here), with epoll_pwait2's nanosecond timeout, so that it can wake
when each request is due (--tick-us 0, the default: no bursts, as independent smtpd processes
send) or, like the Python one, once per tick (--tick-us 1000 is what epoll's whole-millisecond
timeout gives the Python one; fewer wake-ups, but requests leave in bursts, up to a tick late). Its own work is a few percent of a
core; the rest of its CPU is the kernel's (sending wakes the service), which any client pays.
The default stays python: on the idle machine the C one was not clearly better (p99 from the send
1.1-2.3 ms against 1.5-4.6 ms, and the service's own p99 moved with it in every run: the spread
is the service's scheduling on the 2 cores, not the generator); docs/policy.md has the runs.

    .venv/bin/python bench/policy.py [--conns 200] [--seconds 5] [--rate 20000] [--log-load] [--thread]
        [--maxretry 500] [--accounts 5000] [--open-only] [--generators 1] [--turn-cpu]
        [--client python|c] [--tick-us 0] [--nice N]

--nice N runs the service child N nice steps from the "daemon" process (the policy_nice
setting; default: its default). The C generator runs in a session of its own, as postfix's
smtpd does: with the kernel's autogroups nice orders only the processes of one session, so in
the bench's session a negative nice let the child run before the generator, a gain postfix
would not see (docs/policy.md).
"""

from __future__ import annotations

import argparse
from array import array
import multiprocessing as mp
import os
import random
import resource
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mailban.policy.costs import Histogram  # noqa: E402


def serve(path: str, ready: mp.Event, phase: mp.Value, stop: mp.Event, log_load: bool, thread: bool,
          out: mp.Queue, maxretry: int = 1_000_000, turn_cpu: bool = False, nice: int = 0) -> None:
    from mailban import checkpoint
    from mailban.config import load
    from mailban.core.jails import IgnoreList, JailSpec
    from mailban.daemon.writer import StateWriter
    from mailban.localtime import local_to_epoch
    from mailban.state import State
    from mailban.core.records import Ban
    from mailban.policy.answer import Decisions, Inline, inline_jail
    from mailban.daemon.mirror import Mirror
    from mailban.daemon.policy import take_windows
    from mailban.policy.child import PolicyProcess
    from mailban.policy.server import PolicyServer

    spec = JailSpec(name="out", kinds=frozenset(), key="user", maxretry=maxretry, findtime=3600, bantime=600,
                    inline=True, actions=())
    inline = Inline([inline_jail(spec, IgnoreList(()))])
    # The daemon's side, as daemon/policy.py runs it: a mirror of the inline jails that the
    # child's windows go into (decoded only when read: daemon/mirror.py), committed to a real
    # database with the pipeline's state, folded with the child's snapshots.
    mirror = Mirror(Inline([inline_jail(spec, IgnoreList(()))]))
    checkpoint.track(mirror.jails)
    writer = StateWriter(State(os.path.join(os.path.dirname(path), "state")), lambda: None)
    writer.inline = mirror
    pipeline = load(None).pipeline(time.time(), local_to_epoch)
    srv = PolicyServer(f"unix:{path}", inline, max_connections=4096)
    # the service's side of the latency (costs.py; about 1 us an answer and a turn, which the
    # daemon does not pay), and with --turn-cpu the CPU time of each loop turn (7 us a turn)
    srv.held, srv.turns = Histogram(), Histogram()
    if turn_cpu:
        srv.turns_cpu = Histogram()
    now = time.time()
    bans = [Ban(jail="j", key_type="user", key=f"dis{i}@example.test", time=now, until=now + 3600, count=1,
                findtime=60, actions=("sasl-disable",)) for i in range(2000)]
    bans += [Ban(jail="j", key_type="ip", key=f"198.51.{i // 250}.{i % 250 + 1}", time=now, until=now + 3600, count=1,
                 findtime=60, actions=("defer",)) for i in range(2000)]
    decisions = Decisions.from_bans(bans, {"sasl-disable": "sasl-disable", "defer": "defer"}, now)
    child = None
    if thread:
        srv.decisions = decisions
        srv.start()
    else:
        child = PolicyProcess(srv, nice=nice)  # the daemon's policy_nice
        child.start(inline, decisions)
        writer.snapshot = lambda: child.send("snapshot")  # type: ignore[union-attr]
    ready.set()

    def drain() -> None:
        """What the daemon does with the link between batches (PolicyBridge._take): take the
        inline jails' bans and changed windows (the child sends its windows once a second), put
        the windows into the mirror and commit them."""
        if child is None:
            return
        began = time.process_time()
        child.take_bans()
        take_windows(child, mirror, writer)
        taken = time.process_time()
        spent[0] += taken - began
        if child.saved:
            child.saved = False
            writer.commit(pipeline)
            spent[1] += time.process_time() - taken

    # CPU seconds in drain(): the part of the daemon's CPU the service's windows cost (taking them
    # off the link, committing them)
    spent = [0.0, 0.0]
    writer.commit(pipeline)  # as the daemon's start does (Daemon._commit_start): the first fold

    # log lines per second: while the clients are stopped (the baseline: even phases) and while
    # they run (odd phases), the phases alternating as run() counts them in `phase`
    rates: list = []
    if log_load:
        lines = [f"Nov 20 08:00:{i % 60:02d} mx postfix/smtpd[{1000 + i}]: warning: unknown[198.51.100.{i % 250}]: "
                 f"SASL LOGIN authentication failed: UGFzc3dvcmQ6\n".encode() for i in range(5000)]
        segments = []
        while not stop.is_set():
            current = phase.value
            n, t0, c0, spent[:] = 0, time.perf_counter(), time.process_time(), [0.0, 0.0]
            while phase.value == current and not stop.is_set():
                for line in lines[:500]:
                    pipeline.feed(line, time.time(), "/var/log/mail.log")
                n += 500
                drain()
            segments.append((current, n, time.perf_counter() - t0, time.process_time() - c0, *spent))
        rates = [_log_rates([s for s in segments if s[0] % 2 == parity]) for parity in (0, 1)]
        rates.append([_log_rates([s]) for s in segments])
    else:
        while not stop.wait(0.05):  # the daemon's loop wakes when the link is readable
            drain()
    child_stats = child.stats() if child is not None else None
    # What a read of the mirror (status, explain) pays at the end: the batches it has not applied.
    behind, behind_bytes, applied = len(mirror.behind), mirror.behind_bytes, mirror.applied
    began = time.process_time()
    mirror.catch_up()
    lazy = (applied, behind, behind_bytes, time.process_time() - began, sum(len(j.windows) for j in mirror.jails))
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child is not None:
        child.stop()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
    else:
        srv.stop()
    stats = srv.stats if thread else {"late": "n/a (in the child)"}
    out.put((stats, cpu.ru_utime + cpu.ru_stime, children.ru_utime + children.ru_stime, rates, child_stats,
             writer.state.db.execute("SELECT count(*), sum(length(entries)) FROM windows").fetchone()
             + writer.state.db.execute("SELECT count(*), sum(length(changes)) FROM window_changes").fetchone()
             + lazy))


def request(i: int, accounts: int = 5000) -> bytes:
    user = f"user{i % accounts}@example.test" if i % 3 else ""
    return (f"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=203.0.113.{i % 250}\n"
            f"client_name=unknown\nreverse_client_name=unknown\nhelo_name=client{i}.example.net\n"
            f"sender=sender{i % 777}@example.net\nrecipient=rcpt{i}@example.org\nrecipient_count=0\nqueue_id=\n"
            f"instance={i:x}.6746f0c1.8a2b.0\nsize=0\netrn_domain=\nstress=\nsasl_method={'plain' if user else ''}\n"
            f"sasl_username={user}\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\n"
            f"ccert_pubkey_fingerprint=\nencryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\n"
            f"encryption_keysize=256\nclient_port={1024 + i % 60000}\npolicy_context=\nserver_address=192.0.2.2\n"
            f"server_port=25\ncompatibility_level=3.6\nmail_version=3.7.11\n\n").encode()


def drive(path: str, conns: int, seconds: float, rate: float | None, accounts: int = 5000,
          seed: int = 1) -> tuple[int, array, array, array, float]:
    """Run the clients; (answers, latencies from the send, latencies from when the request was
    due, how late each request was sent after it was due, client CPU seconds). The open loop
    draws each request's connection at random; one that is still waiting for its previous
    answer sends it when that answer comes (as a postfix smtpd would: one request at a time), so
    "from due" counts that wait and the generator's own lateness (no coordinated omission) and
    "from send" does not. Raw epoll and bound methods: the generator shares the 2 cores with
    what it measures, so every call it saves is CPU the service gets."""
    import select
    from collections import deque

    reqs = [request(i, accounts) for i in range(10007)]
    socks = []
    for _ in range(conns):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.setblocking(False)
        socks.append(s)
    ep = select.epoll()
    by_fd = {}
    for idx, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = idx
    sends = [s.send for s in socks]
    recvs = [s.recv for s in socks]
    sent_at = [0.0] * conns
    due_at = [0.0] * conns
    busy = [False] * conns
    waiting: list[deque[float]] = [deque() for _ in range(conns)]  # open loop: due times queued per connection
    lat, lat_due, lag = array("d"), array("d"), array("d")
    n = sent = 0
    clock = time.perf_counter
    cpu0 = time.process_time()
    start = clock()
    end = start + seconds
    next_due = start
    gap = 1.0 / rate if rate else 0.0
    rng = random.Random(seed)
    pick = rng.randrange
    if not rate:
        for idx in range(conns):
            sends[idx](reqs[idx % len(reqs)])
            sent_at[idx] = due_at[idx] = clock()
            busy[idx] = True
    while True:
        now = clock()
        if now >= end:
            break
        if rate:
            while next_due <= now:
                idx = pick(conns)
                if busy[idx]:
                    waiting[idx].append(next_due)  # sent when its connection's answer comes
                else:
                    sent += 1
                    sends[idx](reqs[sent % 10007])
                    sent_at[idx], due_at[idx] = now, next_due
                    lag.append(now - next_due)
                    busy[idx] = True
                next_due += gap
            # (epoll's timeout is whole milliseconds, rounded up: at 20,000/s, with the next
            # request due in 50 us, this sends a millisecond's requests in a burst. Short sleeps
            # instead, with a timer slack of 1 us, cost the generator more CPU and left the
            # service less on the shared 2 cores: 15,400-18,500 answered of 20,000/s against
            # 19,300-20,000, alternating, load 2.8-3.2. Kept as it was.)
            timeout = max(0.0, next_due - clock())
        else:
            timeout = 0.1
        for fd, _mask in ep.poll(timeout):
            idx = by_fd[fd]
            recvs[idx](4096)
            t = clock()
            lat.append(t - sent_at[idx])
            lat_due.append(t - due_at[idx])
            n += 1
            busy[idx] = False
            if not rate:
                sends[idx](reqs[n % 10007])
                sent_at[idx] = due_at[idx] = t
                busy[idx] = True
            elif waiting[idx]:
                due = waiting[idx].popleft()
                sent += 1
                sends[idx](reqs[sent % 10007])
                sent_at[idx], due_at[idx] = t, due
                lag.append(t - due)
                busy[idx] = True
    cpu = time.process_time() - cpu0
    ep.close()
    for s in socks:
        s.close()
    return n, lat, lat_due, lag, cpu


CLIENT_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policy_client.c")


def compile_client(directory: str) -> str | None:
    """Compile bench/policy_client.c with gcc -O2 into `directory`; its path, or None (with the
    reason on stderr) when gcc is missing or the build fails, so that the caller falls back to
    the Python generator."""
    import subprocess

    gcc = shutil.which("gcc")
    if gcc is None:
        print("gcc not found: the C load generator cannot be built; using the Python one", file=sys.stderr)
        return None
    binary = os.path.join(directory, "policy_client")
    built = subprocess.run([gcc, "-O2", "-Wall", "-o", binary, CLIENT_C], capture_output=True, text=True)
    if built.returncode != 0:
        print(f"gcc failed, using the Python load generator:\n{built.stderr}", file=sys.stderr)
        return None
    return binary


def write_requests(path: str, accounts: int, count: int = 10007) -> None:
    """The requests the C generator sends, in order: request(0..count-1), the bytes the Python
    generator sends (each ends with its empty line, which is how the C side splits them)."""
    with open(path, "wb") as f:
        for i in range(count):
            f.write(request(i, accounts))


def drive_c(binary: str, path: str, conns: int, seconds: float, rate: float | None, accounts: int,
            generators: int = 1, tick_us: float = 0.0) -> tuple[int, array, array, array, float]:
    """drive(), by the C generator (bench/policy_client.c) in `generators` processes, each with
    its share of the connections and the rate; the same tuple, from the raw samples it writes.
    Connections the service closed are reported on stderr (drive() would raise on them)."""
    import struct
    import subprocess

    scratch = tempfile.mkdtemp(prefix="policy-client-")
    try:
        requests = os.path.join(scratch, "requests")
        write_requests(requests, accounts)
        outs = [os.path.join(scratch, f"out{k}") for k in range(generators)]
        procs = [subprocess.Popen([binary, path, str(max(1, conns // generators)), repr(seconds),
                                   repr(rate / generators if rate else 0.0), str(k + 1), requests, outs[k], str(tick_us)],
                                  # a session of its own, as postfix's smtpd processes are: with the
                                  # kernel's autogroups, CPU is shared between sessions first, and
                                  # the service's nice (policy_nice) orders it only within the
                                  # daemon's session, against the daemon's log reading
                                  start_new_session=True)
                 for k in range(generators)]
        n, lat, lat_due, lag, cpu = 0, array("d"), array("d"), array("d"), 0.0
        for k, (proc, out) in enumerate(zip(procs, outs)):
            if proc.wait(timeout=seconds + 60) != 0:
                raise RuntimeError(f"the C load generator failed (exit {proc.returncode})")
            with open(out, "rb") as f:
                answers, nlat, nlag, closed, polls, sleeps = struct.unpack("<6q", f.read(48))
                user, system = struct.unpack("<2d", f.read(16))
                for values, count in ((lat, nlat), (lat_due, nlat), (lag, nlag)):
                    values.fromfile(f, count)
            if closed:
                print(f"the service closed {closed} of the C generator's connections", file=sys.stderr)
            n += answers
            cpu += user + system
            print(f"  (C generator {k}: CPU s user {user:.2f}, system {system:.2f}: the system part is the "
                  f"sockets' sends, receives and epoll, which any client pays; {polls / seconds:,.0f} epoll "
                  f"waits and {sleeps / seconds:,.0f} sleeps a second)")
        return n, lat, lat_due, lag, cpu
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _generator(path: str, conns: int, seconds: float, rate: float | None, accounts: int, seed: int,
               go: mp.Event, out: mp.Queue) -> None:
    go.wait()
    n, lat, lat_due, lag, cpu = drive(path, conns, seconds, rate, accounts, seed)
    out.put((n, lat.tobytes(), lat_due.tobytes(), lag.tobytes(), cpu))


def drive_all(path: str, conns: int, seconds: float, rate: float | None, accounts: int,
              generators: int, client: str | None = None, tick_us: float = 0.0) -> tuple[int, array, array, array, float]:
    """drive() in `generators` processes (each with its share of the connections and the rate),
    or in this one; with `client` (the compiled C generator's path), that one instead."""
    if client is not None:
        return drive_c(client, path, conns, seconds, rate, accounts, generators, tick_us)
    if generators <= 1:
        return drive(path, conns, seconds, rate, accounts)
    go, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=_generator, args=(path, conns // generators, seconds,
                                                rate / generators if rate else None, accounts, seed + 1, go, out))
             for seed in range(generators)]
    for proc in procs:
        proc.start()
    time.sleep(0.3)  # started and connected (each connects after `go`, within its time)
    go.set()
    n, lat, lat_due, lag, cpu = 0, array("d"), array("d"), array("d"), 0.0
    for _ in procs:
        got = out.get(timeout=seconds + 60)
        n += got[0]
        lat.frombytes(got[1])
        lat_due.frombytes(got[2])
        lag.frombytes(got[3])
        cpu += got[4]
    for proc in procs:
        proc.join(10)
    return n, lat, lat_due, lag, cpu


def _burn(share: float, seconds: float) -> None:
    """Busy `share` of each millisecond (the rest asleep) for `seconds`: CPU that is not mailban's."""
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        while time.perf_counter() < now + share * 1e-3:
            pass
        if share < 1:
            time.sleep((1 - share) * 1e-3)


class Server:
    """serve() in a process of its own, ready, on a socket in a scratch directory (the socket and
    the database; finish() stops it, returns serve()'s results and removes the directory)."""

    def __init__(self, args: argparse.Namespace, log_load: bool, thread: bool = False, turn_cpu: bool = False) -> None:
        self.scratch = tempfile.mkdtemp(prefix="policy-bench-")
        self.path = os.path.join(self.scratch, "policy.sock")
        ready, self.phase, self.stop, self.out = mp.Event(), mp.Value("i", 0), mp.Event(), mp.Queue()
        self.proc = mp.Process(target=serve, args=(self.path, ready, self.phase, self.stop, log_load, thread, self.out,
                                                   args.maxretry, turn_cpu, args.nice))
        self.proc.start()
        ready.wait(30)

    def finish(self) -> tuple:
        self.stop.set()
        results = self.out.get(timeout=30)
        self.proc.join(10)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return results


def run_control(args: argparse.Namespace) -> None:
    """--control CORES: the log load as in --log-load, but the second phase runs processes that
    burn CORES cores of CPU (no requests: the service idles) instead of the clients. What the
    log path loses then is what any neighbour using that much of the 2 cores costs it; set
    CORES to what the service and its clients used in a --log-load run (their CPU s / seconds)."""
    server = Server(args, log_load=True)
    time.sleep(args.seconds)  # the log rate alone, meanwhile
    server.phase.value = 1
    shares = [1.0] * int(args.control) + ([args.control % 1] if args.control % 1 else [])
    burners = [mp.Process(target=_burn, args=(share, args.seconds)) for share in shares]
    for burner in burners:
        burner.start()
    for burner in burners:
        burner.join()
    rates = server.finish()[3]
    (alone, cpu_alone, *_), (during, cpu_during, *_), _ = rates
    print(f"{'control':>26}: burners using {args.control:.2f} cores, no requests")
    print(f"{'':>26}  log lines in the daemon process: {alone:,.0f}/s alone, {during:,.0f}/s beside the burners "
          f"({(during / alone - 1) * 100:+.1f}%); CPU per line {cpu_alone:.2f} us alone, {cpu_during:.2f} us "
          f"beside them ({(cpu_during / cpu_alone - 1) * 100:+.1f}%)")


def _log_rates(segments: list[tuple[int, int, float, float, float, float]]) -> tuple[float, ...]:
    """(lines/s, CPU us a line, of which the service's windows us a line, and their ms a second:
    all, taking, committing) over log-load segments (phase, lines, wall s, CPU s, taking s,
    committing s). Wall: what the CPU left the log path; CPU: its own cost per line."""
    n = sum(s[1] for s in segments) or 1
    wall = sum(s[2] for s in segments) or 1e-9
    cpu, taking, committing = (sum(s[k] for s in segments) for k in (3, 4, 5))
    return (n / wall, cpu / n * 1e6, (taking + committing) / n * 1e6, (taking + committing) / wall * 1e3,
            taking / wall * 1e3, committing / wall * 1e3)


def pct(values: array | list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else float("nan")


def run(args: argparse.Namespace, rate: float | None) -> None:
    server = Server(args, args.log_load, args.thread, args.turn_cpu)
    time.sleep(0.5 if not args.log_load else args.seconds)  # the log rate alone, meanwhile
    used = resource.getrusage(resource.RUSAGE_SELF)
    n, lat, lat_due, lag, client_cpu = 0, array("d"), array("d"), array("d"), 0.0
    for pair in range(args.pairs):
        if pair:  # the clients stopped: the log rate alone again, so that the machine's drift cancels
            server.phase.value += 1
            time.sleep(args.seconds)
        server.phase.value += 1
        got = drive_all(server.path, args.conns, args.seconds, rate, args.accounts, args.generators, args.client_binary,
                        args.tick_us)
        n, client_cpu = n + got[0], client_cpu + got[4]
        for into, values in zip((lat, lat_due, lag), got[1:4]):
            into.extend(values)
    seconds = args.seconds * args.pairs  # of clients' traffic
    if args.client_binary is None and args.generators <= 1:  # the C generator prints its own
        after = resource.getrusage(resource.RUSAGE_SELF)
        print(f"  (Python generator: CPU s user {after.ru_utime - used.ru_utime:.2f}, system "
              f"{after.ru_stime - used.ru_stime:.2f}; {(after.ru_nvcsw - used.ru_nvcsw) / seconds:,.0f} "
              f"sleeps a second)")
    stats, server_cpu, child_cpu, rates, costs, saved = server.finish()
    mode = f"open loop at {rate:,.0f}/s" if rate else "closed loop"
    def ms(values: array) -> str:
        return "/".join(f"{pct(values, p):.3f}" for p in (.5, .99, .999, 1))

    print(f"{mode:>26}: {n / seconds:>9,.0f} answers/s over {args.conns} connections from {args.generators} "
          f"{'C' if args.client_binary else 'Python'} generator process(es){' (log load in the server process)' if args.log_load else ''}; "
          f"late (DUNNO by deadline) {stats['late']}; CPU s: client {client_cpu:.2f}, daemon {server_cpu:.2f}, "
          f"service child {child_cpu:.2f} over {seconds:.0f} s" +
          (f" ({args.pairs} runs of {args.seconds:.0f} s, with {args.seconds:.0f} s without clients before each)"
           if args.pairs > 1 else ""))
    print(f"{'':>26}  client latency ms p50/p99/p99.9/max, from the send: {ms(lat)}" +
          (f"; from when it was due (the wait behind its connection's previous answer and the generator's "
           f"lateness included: no coordinated omission): {ms(lat_due)}; the generator sent it after due: "
           f"{ms(lag)}" if rate else ""))
    if costs and "held_p50" in costs:
        print(f"{'':>26}  service side ms p50/p99/p99.9/max (the child: from the loop's wake-up that read a request "
              f"to its answer written): {'/'.join(f'{costs[k] * 1000:.3f}' for k in ('held_p50', 'held_p99', 'held_p999', 'held_max'))}"
              f"; its loop turns (a request arriving meanwhile waits for the rest of one): "
              f"{'/'.join(f'{costs[k] * 1000:.3f}' for k in ('turn_p50', 'turn_p99', 'turn_p999', 'turn_max'))}"
              f" (to the {Histogram.STEP * 1e6:.0f} us bucket)" +
              (f"; their CPU time (the service's own work, which the machine's load does not stretch): "
               f"{'/'.join(f'{costs[k] * 1000:.3f}' for k in ('turn_cpu_p50', 'turn_cpu_p99', 'turn_cpu_p999', 'turn_cpu_max'))}"
               if "turn_cpu_p50" in costs else ""))
    if costs:
        gc_s, gc_cpu, gc_n = costs["gc_seconds"], costs["gc_cpu"], costs["gc_count"]
        ms = 1000 / seconds  # seconds over the run -> ms per second
        print(f"{'':>26}  service child: cycle collector {sum(gc_s) * ms:.1f} ms/s wall, {sum(gc_cpu) * ms:.1f} ms/s CPU "
              f"(gen0/1/2: {gc_n[0]}/{gc_n[1]}/{gc_n[2]} collections, CPU {gc_cpu[0] * 1000:.0f}/{gc_cpu[1] * 1000:.0f}/"
              f"{gc_cpu[2] * 1000:.0f} ms), longest pause {costs['gc_longest'] * 1000:.2f} ms wall, "
              f"{costs['gc_longest_cpu'] * 1000:.2f} ms CPU; {costs['gc_tracked']:,} objects tracked at the end")
        if "gc_idle" in costs:
            print(f"{'':>26}  service child: nice {costs['nice']} (the bench's process: {os.getpriority(os.PRIO_PROCESS, 0)}); "
                  f"collections in idle gaps gen0/1/2: {'/'.join(str(c) for c in costs['gc_idle'])}; turns that "
                  f"packed windows with requests waiting (their schedule due): {costs['saves_due']:,}")
        print(f"{'':>26}  service child: turns saving windows: {costs['saving_n']:,}, {costs['saving_seconds'] * ms:.1f} "
              f"ms/s wall, {costs['saving_cpu'] * ms:.1f} ms/s CPU; per turn p50/p99/max wall "
              f"{costs['saving_p50'] * 1000:.3f}/{costs['saving_p99'] * 1000:.3f}/{costs['saving_max'] * 1000:.3f} ms, "
              f"CPU {costs['saving_cpu_p50'] * 1000:.3f}/{costs['saving_cpu_p99'] * 1000:.3f}/"
              f"{costs['saving_cpu_max'] * 1000:.3f} ms; in the database at the end: {saved[0] or 0:,} window rows "
              f"({(saved[1] or 0) / 1e6:.1f} MB of entries) and {saved[2] or 0:,} batches of changes since "
              f"({(saved[3] or 0) / 1e6:.1f} MB)")
        applied, behind, behind_bytes, catch_up, windows = saved[4:]
        print(f"{'':>26}  daemon's mirror: {applied:,} batches applied during the run (reads), {behind:,} waiting at "
              f"the end ({behind_bytes / 1e6:.1f} MB, since the last snapshot); a read then applied them in "
              f"{catch_up * 1000:.0f} ms of CPU ({windows:,} windows)")
    if rates:
        (alone, cpu_alone, *_), (during, cpu_during, windows_per_line, windows_ms, taking_ms, committing_ms), segs = rates
        print(f"{'':>26}  log lines in the daemon process: {alone:,.0f}/s alone, {during:,.0f}/s while answering "
              f"({(during / alone - 1) * 100:+.1f}%); CPU per line {cpu_alone:.2f} us alone, {cpu_during:.2f} us "
              f"while answering ({(cpu_during / cpu_alone - 1) * 100:+.1f}%), of which {windows_per_line:.2f} us "
              f"taking and committing the service's windows ({windows_ms:.0f} ms per second: taking them off the "
              f"link {taking_ms:.0f}, committing {committing_ms:.0f}); without "
              f"them {((cpu_during - windows_per_line) / cpu_alone - 1) * 100:+.1f}%")
        if args.pairs > 1:
            pairs = [(segs[k][0], segs[k + 1][0]) for k in range(0, len(segs) - 1, 2)]
            print(f"{'':>26}  each pair, log lines/s without clients -> with them: " +
                  ", ".join(f"{a:,.0f} -> {b:,.0f} ({(b / a - 1) * 100:+.1f}%)" for a, b in pairs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=20000.0)
    ap.add_argument("--log-load", action="store_true")
    ap.add_argument("--thread", action="store_true", help="the service as a thread of the daemon process (before)")
    ap.add_argument("--open-only", action="store_true", help="only the open loop run")
    ap.add_argument("--turn-cpu", action="store_true",
                    help="also time each loop turn of the service in CPU time (two clock reads of 3.5 us each a "
                         "turn on this VM: it costs the service what it measures)")
    ap.add_argument("--generators", type=int, default=1,
                    help="load generator processes, each with its share of the connections and the rate")
    ap.add_argument("--accounts", type=int, default=5000,
                    help="distinct sasl_usernames (2 requests in 3 have one): each is a window the service changes "
                         "and saves every second, so this sets the saving's cost")
    ap.add_argument("--maxretry", type=int, default=1_000_000,
                    help="the inline jail's limit per account and hour: the default never bans, so every window "
                         "grows all run long (the worst case for saving windows); a real limit (e.g. 500) keeps "
                         "each window at most that long")
    ap.add_argument("--client", choices=("python", "c"), default="python",
                    help="the load generator: python (drive(), in this process) or c (bench/policy_client.c, "
                         "compiled with gcc -O2 at run time; the Python one if gcc is missing)")
    ap.add_argument("--tick-us", type=float, default=0.0,
                    help="--client c: wake at most once per this many microseconds (and when answers come), "
                         "sending what fell due meanwhile; 0 (the default): wake when each request is due, as "
                         "independent smtpd processes send (the generator sent p99 0.3-1.0 ms late on the idle "
                         "machine, against 0.9-2.3 ms at 1,000, what epoll's whole-millisecond timeout gives the "
                         "Python generator; it costs ~53%% of a core against ~40%%, mostly the kernel's)")
    ap.add_argument("--nice", type=int, default=None,
                    help="nice steps from the daemon process's for the service child (the policy_nice setting; "
                         "default: the setting's default)")
    ap.add_argument("--pairs", type=int, default=1,
                    help="run the clients this many times, --seconds each, with --seconds without them before "
                         "each: with --log-load the log rate alone and while answering alternate, so that the "
                         "machine's own drift (a VM's neighbours) weighs on both alike")
    ap.add_argument("--control", type=float, default=None, metavar="CORES",
                    help="with --log-load: instead of the clients, processes burning CORES cores beside the log "
                         "load (what any neighbour using that much CPU costs the log path; see run_control)")
    args = ap.parse_args()
    if args.nice is None:
        from mailban.config import Settings
        import dataclasses

        args.nice = next(f.default for f in dataclasses.fields(Settings) if f.name == "policy_nice")
    build = tempfile.mkdtemp(prefix="policy-client-build-") if args.client == "c" else None
    args.client_binary = compile_client(build) if build else None
    try:
        _main(args)
    finally:
        if build:
            shutil.rmtree(build, ignore_errors=True)


def _main(args: argparse.Namespace) -> None:
    print(f"policy service on a unix socket ({'a thread of' if args.thread else 'a child process of'} the daemon "
          f"process), {os.cpu_count()} cores, Python {sys.version.split()[0]}, maxretry {args.maxretry}, "
          f"{args.accounts} accounts, {'C' if args.client_binary else 'Python'} load generator; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.control is not None:
        run_control(args)
        return
    if not args.open_only:
        run(args, None)
    run(args, args.rate)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
