"""Failing actions and a failing database: detection goes on, the fault shows, nothing is lost.

Each test runs the daemon in a network namespace with real nftables and breaks something behind
its back: the nft table is deleted; postmap/postqueue/postsuper/doveadm are scripts in tmp that
fail or hang (the actions' `timeout` kills them); the state directory is a small tmpfs that is
remounted read-only or filled up. In every case the fault must show in `mailban status`, in the
daemon's log and in the systemd STATUS line (NOTIFY_SOCKET points at a datagram socket the test
reads), detection must go on (new attackers are still banned in the kernel), and once the fault
clears the action is applied / the database catches up without losing a ban.
Needs root; skipped otherwise. Mounts are made by the test and always unmounted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.netns import CLIENT4, OTHER4, Daemon, Link, append, failure_line, wait_for, write_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables, mounts)"),
]

THIRD4 = "198.51.100.4"
FOURTH4 = "198.51.100.5"


class Notify:
    """The systemd notification socket: every datagram the daemon sends, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def statuses(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                break
        return [m[len("STATUS="):] for m in self.messages if m.startswith("STATUS=")]

    def last(self) -> str:
        found = self.statuses()
        return found[-1] if found else ""

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def link() -> Iterator[Link]:
    link = Link()
    try:
        yield link.up()
    finally:
        link.close()


@pytest.fixture
def env(link: Link, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Link, Path, Notify, list[Daemon]]]:
    link.reset_nft()
    notify = Notify(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    daemons: list[Daemon] = []
    try:
        yield link, tmp_path, notify, daemons
    finally:
        for d in daemons:
            d.stop()
        notify.close()
        link.reset_nft()


def start(daemons: list[Daemon], link: Link, config: Path) -> Daemon:
    d = Daemon(link, config)
    daemons.append(d)
    return d.start()


def action(d: Daemon, name: str) -> dict:
    return next(a for a in d.status()["actions"] if a["name"] == name)


def test_nft_table_deleted_behind_the_daemons_back_is_restored(env: tuple[Link, Path, Notify, list[Daemon]]) -> None:
    link, tmp, notify, daemons = env
    log = tmp / "mail.log"
    log.touch()
    d = start(daemons, link, write_config(tmp / "etc", [str(log)]))
    append(log, failure_line(CLIENT4) * 3)
    wait_for(lambda: CLIENT4 in link.nft_elements(), what="the first ban")
    link.reset_nft()  # `nft delete table inet mailban` by someone else
    # Detection goes on: a new attacker is decided at once; the failing nft shows everywhere.
    append(log, failure_line(OTHER4) * 3)
    wait_for(lambda: OTHER4 in {b["key"] for b in d.status()["bans"]}, what="the second decision")
    took = wait_for(lambda: set(link.nft_elements()) == {CLIENT4, OTHER4}, timeout=15, every=0.1,
                    what="the table restored with both bans")
    text = d.log()
    assert "action nft: ban failed" in text and "action nft works again" in text, text
    assert any("FAILING actions: nft" in s for s in notify.statuses()), notify.statuses()
    assert "FAILING" not in notify.last()
    assert action(d, "nft")["error"] is None
    # Deleted while nothing happens: the periodic check notices within CHECK_EVERY seconds.
    link.reset_nft()
    quiet = wait_for(lambda: set(link.nft_elements()) == {CLIENT4, OTHER4}, timeout=15, every=0.1,
                     what="the table restored by the periodic check")
    assert "action nft: check failed" in d.log()
    print(f"\nnft table deleted: restored {took:.2f}s after a new ban, {quiet:.2f}s when quiet")
    assert d.stop() == 0


FAKE = r"""
import os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
mode = open(os.path.join(here, "mode")).read().strip()
with open(os.path.join(here, "calls"), "a") as fh:
    fh.write(f"{mode} {os.path.basename(sys.argv[0])} {' '.join(sys.argv[1:])}\n")
if mode == "fail":
    print("fake failure", file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    time.sleep(60)
sys.exit(0)
"""


def _account_setup(tmp: Path, mode: str, fakes: tuple[str, ...], failing: tuple[str, ...], actions: list[str],
                   timeout: float) -> tuple[Path, Path, Path, Path]:
    """Fake MTA programs in tmp/bin (`fakes` follow tmp/bin/mode, `failing` always exit 1), a
    jail keyed by user acting with `actions`, and a sasl-disable action run by those programs:
    (bin dir, etc dir, log, config)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "mode").write_text(mode)
    for name in fakes + failing:
        body = FAKE if name in fakes else FAKE.replace("mode = open", "mode = 'fail' or open")
        (bin_dir / name).write_text(f"#!{sys.executable}\n{body}")
        (bin_dir / name).chmod(0o755)
    (tmp / "dovecot").mkdir()
    (tmp / "postfix").mkdir()
    etc = tmp / "etc"
    log = tmp / "mail.log"
    log.touch()
    config = write_config(etc, [str(log)], extra=(
        "\n[jail.accounts]\nkinds = [\"auth-failure\"]\nkey = \"user\"\nmaxretry = 3\nfindtime = \"10m\"\n"
        f"bantime = \"1h\"\nactions = {json.dumps(actions)}\n"))
    (etc / "actions.d" / "sasl-disable.toml").write_text(
        '[action]\ntype = "sasl-disable"\n'
        f'dovecot_deny_file = "{tmp / "dovecot" / "deny"}"\npostfix_map = "{tmp / "postfix" / "sasl_access"}"\n'
        f'postmap = ["{bin_dir / "postmap"}"]\npostfix_reload = ["{bin_dir / "reload"}"]\n'
        f'kick = ["{bin_dir / "doveadm"}", "kick"]\ntimeout = {timeout}\n')
    return bin_dir, etc, log, config


def test_postmap_postsuper_doveadm_failing_then_hanging_then_working(
        env: tuple[Link, Path, Notify, list[Daemon]]) -> None:
    link, tmp, notify, daemons = env
    bin_dir, etc, log, config = _account_setup(
        tmp, "fail", ("postmap", "postqueue", "postsuper", "postcat", "doveadm", "reload"), (),
        ["sasl-disable", "queue-hold"], timeout=1)
    (etc / "actions.d" / "queue-hold.toml").write_text(
        '[action]\ntype = "queue-hold"\n'
        f'postqueue = ["{bin_dir / "postqueue"}"]\npostsuper = ["{bin_dir / "postsuper"}"]\n'
        f'postcat = ["{bin_dir / "postcat"}"]\ntimeout = 1\n')
    d = start(daemons, link, config)
    # start() fails (postmap exits 1) while no decision needs the action: idle, not failing
    wait_for(lambda: "exited with 1" in (action(d, "sasl-disable")["idle"] or ""), what="start() failing, idle")
    assert action(d, "sasl-disable")["error"] is None

    # bob's password is guessed from three addresses: the account is decided on while postmap fails.
    append(log, b"".join(failure_line(ip, user="bob") for ip in (CLIENT4, OTHER4, THIRD4)))
    wait_for(lambda: any(b["key"] == "bob" for b in d.status()["bans"]), what="the decision on bob")
    wait_for(lambda: "FAILING actions:" in notify.last() and "sasl-disable" in notify.last(),
             what="STATUS naming the failing action")
    assert "exited with 1" in action(d, "sasl-disable")["error"]
    assert action(d, "sasl-disable")["pending"] >= 1
    # Detection goes on: the addresses are banned in the kernel by the ip jail meanwhile.
    append(log, b"".join(failure_line(FOURTH4, user=f"carol{i}") for i in range(3)))
    wait_for(lambda: FOURTH4 in link.nft_elements(), what="an address banned while actions fail")
    assert "action sasl-disable" in d.log() and "failed" in d.log()

    # Now the programs hang: the actions' timeout (1 s) kills them; the daemon keeps answering.
    (bin_dir / "mode").write_text("hang")
    wait_for(lambda: "hang" in (bin_dir / "calls").read_text(), timeout=40, every=0.2, what="a hanging call")
    started = time.monotonic()
    wait_for(lambda: "no answer within 1s" in (action(d, "sasl-disable")["error"] or "")
             or "no answer within 1s" in (action(d, "queue-hold")["error"] or ""), timeout=40, every=0.2,
             what="the timeout reported")
    answered = time.monotonic() - started
    assert answered < 40

    # The programs work again: the retry (with backoff) applies what is owed.
    (bin_dir / "mode").write_text("ok")
    took = wait_for(lambda: action(d, "sasl-disable")["error"] is None and action(d, "sasl-disable")["pending"] == 0
                    and action(d, "queue-hold")["error"] is None and action(d, "queue-hold")["pending"] == 0,
                    timeout=70, every=0.2, what="the actions to recover")
    assert (tmp / "dovecot" / "deny").read_text().split() == ["bob"]
    assert "bob REJECT" in (tmp / "postfix" / "sasl_access").read_text()
    calls = (bin_dir / "calls").read_text()
    assert f"ok postmap hash:{tmp / 'postfix' / 'sasl_access'}" in calls, calls
    assert "ok postqueue -j" in calls, calls
    wait_for(lambda: "FAILING" not in notify.last(), what="STATUS without FAILING")
    print(f"\nactions recovered {took:.1f}s after the programs worked again (backoff)")
    assert d.stop() == 0


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs", str(path)], check=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_database_full_or_locked_detection_goes_on_and_nothing_is_lost(
        env: tuple[Link, Path, Notify, list[Daemon]]) -> None:
    """Disk full (the state directory is a 2 MB tmpfs, filled up), a kill -9 while it is full,
    then a database locked by another writer (what a read-only database does to a writer too: every
    commit fails). A read-only remount cannot be used here: the kernel refuses it (EBUSY) while the
    daemon holds the database open for writing."""
    link, tmp, notify, daemons = env
    log = tmp / "mail.log"
    log.touch()
    state = tmp / "etc" / "state"
    config = write_config(tmp / "etc", [str(log)])
    _mount_tmpfs(state, "2m")
    try:
        d = start(daemons, link, config)
        append(log, failure_line(CLIENT4) * 2)  # a window of 2, committed
        wait_for(lambda: d.lines_read() == 2, what="two lines")

        filler = _fill(state)
        append(log, failure_line(CLIENT4) + failure_line(OTHER4) * 3)
        wait_for(lambda: {CLIENT4, OTHER4} <= set(link.nft_elements()), what="bans while the disk is full")
        wait_for(lambda: d.status()["state"]["error"] is not None, what="the database error in status")
        st = d.status()["state"]
        assert st["unsaved_bans"] == 2 and "full" in st["error"], st
        wait_for(lambda: "DATABASE FAILING" in notify.last(), what="STATUS naming the database")
        assert "cannot write the database" in d.log()
        assert {b["key"] for b in d.status()["bans"]} == {CLIENT4, OTHER4}

        # A crash while the disk is full: the lines since the last commit are read again.
        assert d.proc is not None
        d.proc.kill()
        d.proc.wait(10)
        daemons.remove(d)
        filler.unlink()
        link.reset_nft()
        d = start(daemons, link, config)
        wait_for(lambda: {b["key"] for b in json.loads(d.cli("list", "--json").stdout)} == {CLIENT4, OTHER4},
                 what="both bans re-decided from the lines read again")
        assert set(link.nft_elements()) == {CLIENT4, OTHER4}
        assert all(b["count"] == 3 for b in json.loads(d.cli("list", "--json").stdout))

        # Full again, then space comes back while the daemon runs: committed within a second.
        filler = _fill(state)
        append(log, failure_line(THIRD4) * 3)
        wait_for(lambda: THIRD4 in link.nft_elements(), what="a ban while the disk is full")
        wait_for(lambda: d.status()["state"]["error"] is not None, timeout=5, what="disk full in status")
        filler.unlink()
        took = wait_for(lambda: d.status()["state"]["error"] is None, timeout=5, what="the database back")
        assert "DATABASE" not in notify.last()

        # Locked by another writer (an admin's sqlite3 shell in a transaction).
        holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(state / "mailban.sqlite3")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            append(log, failure_line(FOURTH4) * 3)
            wait_for(lambda: FOURTH4 in link.nft_elements(), what="a ban while the database is locked")
            wait_for(lambda: "locked" in (d.status()["state"]["error"] or ""), what="locked in status")
        finally:
            holder.communicate("", timeout=10)
        wait_for(lambda: d.status()["state"]["error"] is None, timeout=5, what="the lock released")
        assert d.stop() == 0
        daemons.remove(d)
        d = start(daemons, link, config)
        listed = {b["key"] for b in json.loads(d.cli("list", "--json").stdout)}
        assert listed == {CLIENT4, OTHER4, THIRD4, FOURTH4}, listed
        assert set(link.nft_elements()) == listed
        print(f"\ndatabase: committed {took:.2f}s after space came back")
        assert d.stop() == 0
        daemons.remove(d)
    finally:
        for d in daemons:
            d.stop()
        daemons.clear()
        _umount(state)


LOCKER = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


def test_a_reload_and_kick_that_fail_are_reported_not_called_ok(env: tuple[Link, Path, Notify, list[Daemon]]) -> None:
    """sasl-disable writes its files (the account is disabled) but postfix's reload and
    doveadm kick fail: the action's result, explain, list and status say so."""
    link, tmp, notify, daemons = env
    _bin, _etc, log, config = _account_setup(tmp, "ok", ("postmap",), ("reload", "doveadm"), ["sasl-disable"],
                                             timeout=5)
    d = start(daemons, link, config)
    append(log, b"".join(failure_line(ip, user="bob") for ip in (CLIENT4, OTHER4, THIRD4)))
    wait_for(lambda: any(b["key"] == "bob" for b in d.status()["bans"]), what="the decision on bob")
    wait_for(lambda: (tmp / "dovecot" / "deny").exists() and "bob" in (tmp / "dovecot" / "deny").read_text(),
             what="bob disabled")
    explained = d.cli("explain", "--user", "bob").stdout
    assert "action sasl-disable: done, but: postfix reload failed" in explained, explained
    assert "doveadm kick 'bob' failed" in explained, explained
    assert "action: ok" not in explained.replace("action nft: ok", "")
    listed = d.cli("list").stdout
    assert "action sasl-disable: done, but: postfix reload failed" in listed, listed
    assert "postfix reload failed" in (action(d, "sasl-disable")["warning"] or ""), action(d, "sasl-disable")
    assert "WARNING: postfix reload failed" in d.cli("status").stdout
