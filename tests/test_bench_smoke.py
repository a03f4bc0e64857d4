"""The benchmark's generator and the two offline commands on a short mixed log (no timing), and a
short run of bench/policy.py.

bench/genlog.py writes ~20,000 lines of mixed mail traffic with attacks of every category;
`mailban test` must find every shipped filter and every failure kind in them, and `mailban
replay` (default configuration) must process every line and ban attackers.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailban import config
from mailban.offline import run_replay, run_test

from .bench_modules import genlog, load

LINES = 20_000


def _write_log(tmp_path: Path, fmt: str) -> Path:
    path = tmp_path / f"mixed-{fmt}.log"
    path.write_text("".join(line + "\n" for line in genlog().generate(LINES, seed=7, fmt=fmt)))
    return path


def test_generator_is_deterministic_and_exact() -> None:
    gen = genlog()
    a = list(gen.generate(3000, seed=3))
    assert a == list(gen.generate(3000, seed=3))
    assert len(a) == 3000 and a != list(gen.generate(3000, seed=4))
    stamps = [line[:15] for line in a]
    assert all(re.match(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d$", s) for s in stamps)


def test_mailban_test_finds_every_category(tmp_path: Path) -> None:
    for fmt in ("bsd", "rfc3339"):
        log = _write_log(tmp_path, fmt)
        filters = config.load_filters(tmp_path / "no-such-conf", None)
        out = io.StringIO()
        assert run_test([str(log)], filters, False, out) == 0
        text = out.getvalue()
        assert f"Lines: {LINES} read, {LINES} with a syslog header" in text
        per_rule = re.findall(r"^\s+\d+\s+([\w-]+)\.([\w.-]+)\s+([\w-]+)$", text, re.M)
        # every filter finds something, but cleanup's milter rejects (the generator runs no milter)
        # and Exim's (the postfix host's log holds no Exim lines: --mta exim, below)
        assert {f.name for f in filters} - {f for f, _, _ in per_rule} == {"postfix-cleanup", "exim", "exim-queue"}
        kinds = {k for _, _, k in per_rule}
        assert {"auth-failure", "reject", "rate-limit", "protocol", "login", "submission", "queued",
                "delivery", "removed"} <= kinds
        rules = {f"{f}.{r}" for f, r, _ in per_rule}
        for rule in ("postfix.sasl-auth-failed", "postfix.relay-denied", "postfix.user-unknown",
                     "postscreen.pregreet", "dovecot.auth-failed", "sendmail.auth-failed",
                     "postfix.rate-limit", "postfix-queue.delivery", "sendmail-queue.sent"):
            assert rule in rules, (fmt, rule)


def test_mailban_replay_processes_every_line_and_bans(tmp_path: Path) -> None:
    log = _write_log(tmp_path, "bsd")
    cfg = config.load(str(config.SHIPPED_DEFAULT))
    out = io.StringIO()
    assert run_replay([str(log)], cfg, False, out) == 0
    text = out.getvalue()
    m = re.search(r"(\d+) decisions from (\d+) log lines", text)
    assert m is not None and int(m.group(2)) == LINES
    assert int(m.group(1)) > 0
    assert "mail-abuse  ban ip " in text


def test_the_exim_log_reaches_every_exim_category(tmp_path: Path) -> None:
    """`--mta exim`: Exim's own mainlog lines (its stamp, +pid) with dovecot's, every Exim
    category the attacks write found, the queue read, and replay banning from them."""
    path = tmp_path / "exim.log"
    lines = list(genlog().generate(LINES, seed=7, mta="exim"))
    assert lines == list(genlog().generate(LINES, seed=7, mta="exim")) and len(lines) == LINES
    path.write_text("".join(line + "\n" for line in lines))
    filters = config.load_filters(tmp_path / "no-such-conf", None)
    out = io.StringIO()
    assert run_test([str(path)], filters, False, out) == 0
    text = out.getvalue()
    assert f"Lines: {LINES} read, {LINES} with a syslog header" in text
    rules = {f"{f}.{r}" for f, r, _ in re.findall(r"^\s+\d+\s+([\w-]+)\.([\w.-]+)\s+([\w-]+)$", text, re.M)}
    for rule in ("exim.auth-failed", "exim.relay-denied", "exim.user-unknown", "exim.helo-rejected",
                 "exim.data-rejected", "exim.acl-rejected", "exim.ratelimit", "exim.sync-greeting",
                 "exim.sync-pipelining", "exim.too-many-nonmail", "exim.too-many-errors",
                 "exim.too-many-connections", "exim-queue.arrival-auth", "exim-queue.arrival",
                 "exim-queue.local", "exim-queue.delivered", "exim-queue.delivered-more",
                 "exim-queue.deferred", "exim-queue.bounced", "exim-queue.completed", "dovecot.auth-failed"):
        assert rule in rules, rule
    assert not {r for r in rules if r.startswith(("postfix", "sendmail", "postscreen"))}
    out = io.StringIO()
    assert run_replay([str(path)], config.load(str(config.SHIPPED_DEFAULT)), False, out) == 0
    text = out.getvalue()
    m = re.search(r"(\d+) decisions from (\d+) log lines", text)
    assert m is not None and int(m.group(2)) == LINES and int(m.group(1)) > 0
    assert "mail-abuse  ban ip " in text


def test_sessions_give_either_mta_the_same_traffic() -> None:
    """`--sessions N`: N ordinary sessions (and the attacks among them) whatever the lines, so
    that a postfix and an Exim log hold the same host traffic; the same bytes for the same seed,
    and --lines still gives exactly that many lines."""
    gen = genlog()
    counts = {}
    for mta in ("postfix", "exim"):
        stats: dict[str, int] = {}
        lines = list(gen.generate(0, seed=7, mta=mta, sessions=2000, stats=stats))
        assert lines == list(gen.generate(0, seed=7, mta=mta, sessions=2000))
        counts[mta] = len(lines), stats["imap"]
    # the IMAP sessions are written the same by both hosts: about as many lines of them in each
    assert abs(counts["exim"][1] - counts["postfix"][1]) < 0.2 * counts["postfix"][1]
    # Exim writes a message in fewer lines than postfix does
    assert counts["exim"][0] < 0.75 * counts["postfix"][0]
    assert len(list(gen.generate(3000, seed=7, mta="exim"))) == 3000


def test_the_policy_bench_runs_and_prints_the_services_costs() -> None:
    """bench/policy.py for a second at a low rate: it answers, the child reports its costs, and
    the "daemon" saves the windows (its rows and changes in a real database)."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parent.parent / "bench" / "policy.py"
    out = subprocess.run([sys.executable, str(bench), "--seconds", "1", "--rate", "2000", "--open-only",
                          "--accounts", "50", "--maxretry", "500", "--conns", "20"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.search(r"open loop at 2,000/s: +[\d,]+ answers/s", out), out
    assert "cycle collector" in out and "turns saving windows" in out, out
    assert re.search(r"in the database at the end: \d+ window rows", out), out
    # the client's latency both ways, the generator's lateness, the service's own side
    assert "from the send" in out and "from when it was due" in out and "the generator sent it after due" in out, out
    assert re.search(r"service side ms p50/p99/p99.9/max .*: [\d.]+/[\d.]+/", out), out
    # the daemon's mirror decoded nothing while nothing read it
    assert "daemon's mirror: 0 batches applied during the run" in out, out


def _answering_server(path: str, received: list[bytes], split: bool) -> socket.socket:
    """A unix socket that answers every request (up to its empty line) with DUNNO, each
    connection in a thread, recording the requests; with `split`, every other answer is written
    in two pieces, so the C generator must put an answer together from two reads."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)

    def serve(conn: socket.socket) -> None:
        buf = b""
        with conn, contextlib.suppress(OSError):  # the client leaves at its run's end, mid-answer maybe
            while chunk := conn.recv(65536):
                buf += chunk
                while b"\n\n" in buf:
                    req, buf = buf.split(b"\n\n", 1)
                    received.append(req + b"\n\n")
                    if split and len(received) % 2:
                        conn.sendall(b"action=DUNNO\n")
                        time.sleep(0.001)
                        conn.sendall(b"\n")
                    else:
                        conn.sendall(b"action=DUNNO\n\n")

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed: the C load generator cannot be built")
def test_the_c_policy_client_sends_the_python_generators_bytes_and_waits_for_each_answer(tmp_path: Path) -> None:
    """bench/policy_client.c, built as bench/policy.py builds it: on one connection, open loop,
    the service receives exactly request(0), request(1), ... (the bytes the Python generator
    sends), one at a time; every answer is counted, also one that arrives in two reads; then a
    closed loop over 3 connections."""
    policy = load("policy")
    binary = policy.compile_client(str(tmp_path))
    assert binary is not None
    received: list[bytes] = []
    path = str(tmp_path / "policy.sock")
    listener = _answering_server(path, received, split=True)
    try:
        n, lat, lat_due, lag, cpu = policy.drive_c(binary, path, 1, 0.5, 400.0, 50)
        assert 150 <= len(received) <= 201, len(received)
        assert received == [policy.request(i, 50) for i in range(len(received))]
        # each answered, but perhaps the last (the run's end came first); the latencies both ways
        assert len(received) - 1 <= n <= len(received) and len(lat) == len(lat_due) == n
        assert len(lag) == len(received) and all(d >= s >= 0 for s, d in zip(lat, lat_due))
        assert cpu >= 0
        received.clear()
        n, lat, lat_due, lag, _ = policy.drive_c(binary, path, 3, 0.3, None, 50)
        assert n > 30 and len(lat) == n and not lag  # closed loop: sent when answered, never late
        reqs = {policy.request(i, 50) for i in range(10007)}
        assert all(r in reqs for r in received)
    finally:
        listener.close()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed: the C load generator cannot be built")
def test_the_policy_bench_runs_with_the_c_client() -> None:
    """bench/policy.py --client c for a second at a low rate: the C generator drives the real
    service (its child process) and the same figures are printed."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "policy.py"
    out = subprocess.run([sys.executable, str(bench), "--seconds", "1", "--rate", "2000", "--open-only",
                          "--accounts", "50", "--maxretry", "500", "--conns", "20", "--client", "c"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "C load generator" in out and "from 1 C generator process(es)" in out, out
    m = re.search(r"open loop at 2,000/s: +([\d,]+) answers/s", out)
    assert m is not None and int(m.group(1).replace(",", "")) >= 1500, out
    assert "from the send" in out and "from when it was due" in out and "the generator sent it after due" in out, out
    assert re.search(r"service side ms p50/p99/p99.9/max .*: [\d.]+/[\d.]+/", out), out
