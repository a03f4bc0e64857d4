"""Direct outbound SMTP per local uid (issue 18): the source's arithmetic with a fake kernel and
clock, the /proc walk on a written tree, and end to end with real nftables in two namespaces.

End to end: the "host" namespace runs the daemon (direct_smtp = true) and a script as the
ordinary user nobody (uid 65534) that connects 30 times to port 25 of a "remote MX" in the other
namespace (a veth pair). mailban reports the uid with the destination and the process (the notify
mail, through a stand-in sendmail that keeps it; `list`; `explain --uid`); the direct-smtp-block
action refuses nobody's next connection while postfix's uid (an MTA user) still connects;
`unban --uid` restores it; connections made while the daemon is stopped are counted at its next
start (the counters live in the kernel). Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailban.core.records import Event
from mailban.directsmtp import procs
from mailban.directsmtp.source import DirectSmtpSource, Position, describe

# ---- the source, with a fake kernel and clock ------------------------------------------------


class FakeKernel:
    """The counting sets: `counts` per (uid, destination, port); the uid set is their sum per
    uid unless `uids` says otherwise (a full destination set). Reading the destination sets
    advances `timer` by `dest_cost` (what 10,000 elements cost, say)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, str, int], int] = {}
        self.uids: dict[int, int] | None = None
        self.ensured = 0
        self.fail = False
        self.timer = 0.0
        self.dest_cost = 0.0
        self.dest_reads = 0

    def ensure(self, *args: Any) -> None:
        self.ensured += 1

    def uid_counters(self) -> dict[int, int]:
        if self.fail:
            raise RuntimeError("No such file or directory")
        if self.uids is not None:
            return dict(self.uids)
        out: dict[int, int] = {}
        for (uid, _d, _p), n in self.counts.items():
            out[uid] = out.get(uid, 0) + n
        return out

    def counters(self) -> dict[tuple[int, str, int], int]:
        if self.fail:
            raise RuntimeError("No such file or directory")
        self.dest_reads += 1
        self.timer += self.dest_cost
        return dict(self.counts)

    def check(self) -> None:
        pass


class Settings:
    direct_smtp_ports = (25, 465, 587)
    direct_smtp_mta_users = ("root", "no-such-mta-user")
    direct_smtp_allow = ()
    block_direct_smtp = "per-uid"


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def make(saved: dict[str, Any] | None, kernel: FakeKernel, clock: Clock, proc: str = "/nonexistent") -> DirectSmtpSource:
    return DirectSmtpSource(Settings(), saved, kernel=kernel, clock=clock, monotonic=clock, proc=proc,
                            timer=lambda: kernel.timer)


def test_first_start_takes_the_counters_as_baseline_then_counts_growth() -> None:
    kernel, clock = FakeKernel(), Clock()
    kernel.counts = {(1001, "203.0.113.5", 25): 7}
    src = make(None, kernel, clock)
    assert src.missing_users == ["no-such-mta-user"] and src.excluded == [0]
    assert src.read_events() == []  # baseline, as a log is read from its end
    kernel.counts = {(1001, "203.0.113.5", 25): 10, (1002, "2001:db8::25", 587): 2}
    assert src.read_events() == []  # polled at most once a second
    clock.t += 1
    events = src.read_events()
    assert [(e.kind, e.uid, e.count, e.ip) for e in events] == [("direct-smtp", 1001, 3, None),
                                                               ("direct-smtp", 1002, 2, None)]
    assert "uid=1001" in events[0].line and "to=203.0.113.5:25" in events[0].line
    assert "to=[2001:db8::25]:587" in events[1].line
    summary = src.summary()["uids"]
    assert summary["1001"]["connections"] == 10 and summary["1002"]["destinations"] == {"[2001:db8::25]:587": 2}


def test_restart_counts_what_grew_while_stopped_and_a_reset_counts_from_zero() -> None:
    kernel, clock = FakeKernel(), Clock()
    saved = Position({(1001, "203.0.113.5", 25): 30, (1003, "198.51.100.9", 25): 50}, {1001: 30, 1003: 50}).to_dict()
    assert Position.parse(json.loads(json.dumps(saved))) == {(1001, "203.0.113.5", 25): 30,
                                                            (1003, "198.51.100.9", 25): 50}
    assert Position.parse_uids(json.loads(json.dumps(saved))) == {1001: 30, 1003: 50}
    # 5 more while mailban was stopped; uid 1003's counter was reset (table made again) to 4.
    kernel.counts = {(1001, "203.0.113.5", 25): 35, (1003, "198.51.100.9", 25): 4}
    src = make(saved, kernel, clock)
    events = src.read_events()
    assert sorted((e.uid, e.count) for e in events) == [(1001, 5), (1003, 4)]
    assert src.position.to_dict() == Position(dict(kernel.counts), kernel.uid_counters()).to_dict()
    # An element the kernel dropped (idle a day) is forgotten: it cannot grow any more (the
    # destinations' positions at their next read: nothing grew, so they are not read now).
    kernel.counts = {}
    clock.t += 1
    assert src.read_events() == [] and src.position.uids == {}


def test_a_position_saved_before_the_uid_set_takes_the_counts_as_baseline() -> None:
    kernel, clock = FakeKernel(), Clock()
    kernel.counts = {(1001, "203.0.113.5", 25): 35}
    src = make({"counters": [[1001, "203.0.113.5", 25, 30]]}, kernel, clock)
    assert src.read_events() == []  # the uid set is new: what it holds is the baseline
    kernel.counts = {(1001, "203.0.113.5", 25): 37}
    clock.t += 1
    assert [(e.uid, e.count) for e in src.read_events()] == [(1001, 2)]


def test_the_destination_sets_are_read_only_when_a_uid_grew_and_within_their_share() -> None:
    """Issue 18: the per-second cost must not grow with the destinations. The uid set is read
    every second; the destination sets (here costing 0.3 s a read, as 10,000 elements do) only
    when a uid's count grew, and then at most once per 20 times their cost (6 s). The events'
    counts never wait: they come from the uid set."""
    kernel, clock = FakeKernel(), Clock()
    kernel.dest_cost = 0.3
    kernel.counts = {(1001, f"203.0.113.{i}", 25): 1 for i in range(100)}
    src = make(None, kernel, clock)
    assert src.read_events() == [] and kernel.dest_reads == 1  # baseline
    for _ in range(10):  # nothing grows: the destination sets are never read
        clock.t += 1
        assert src.read_events() == []
    assert kernel.dest_reads == 1 and src.polls == 11
    # A spam run: 2 new destinations a second for 8 seconds.
    lines, total = [], 0
    for second in range(8):
        clock.t += 1
        for j in range(2):
            kernel.counts[(1001, f"198.51.100.{second * 2 + j}", 25)] = 1
        events = src.read_events()
        assert [(e.uid, e.count) for e in events] == [(1001, 2)]  # every second, exact
        total += events[0].count
        lines.append(events[0].line)
    assert total == 16 and kernel.dest_reads == 3  # second 0 (cost 0.3 s: next read 6 s later) and second 6
    assert "to=198.51.100.0:25(1),198.51.100.1:25(1) connections=2" in lines[0]
    assert "to=(not read at this poll) connections=2" in lines[1]
    # 5 shown of the 12 that grew since the last read (seconds 1 to 6)
    assert "to=198.51.100.10:25(1),198.51.100.11:25(1),198.51.100.12:25(1),198.51.100.13:25(1)," in lines[6]
    assert "+7 more connections=2" in lines[6]
    assert src.summary()["uids"]["1001"]["connections"] == 116
    assert src.summary()["destination_reads"] == 3

def test_a_kernel_failure_is_kept_for_status_and_set_up_again() -> None:
    kernel, clock = FakeKernel(), Clock()
    src = make({"counters": [], "uids": []}, kernel, clock)
    kernel.fail = True
    assert src.read_events() == []
    assert "cannot read the counters" in (src.error or "") or kernel.ensured == 2
    kernel.fail = False
    clock.t += 1
    kernel.counts = {(1001, "203.0.113.5", 25): 1}
    assert [e.count for e in src.read_events()] == [1]
    assert src.status() == {"exists": True}


def test_bad_saved_positions_are_ignored() -> None:
    assert Position.parse({"counters": [["x", 1, 2, 3], [1, "a", 25]]}) == {}
    assert Position.parse({"offset": 3}) is None
    assert Position.parse(None) is None


def test_the_line_quotes_the_processes_text() -> None:
    hostile = procs.Holder(42, 'php x.php\n2026-01-01 direct-smtp: uid=0 "', "/var/www/a b", ("203.0.113.5:25",))
    line = describe(33, {"203.0.113.5:25": 3}, 3, [hostile], 0.0)
    assert "\n" not in line and line.count("uid=") == 2  # the forged one is inside a JSON string
    assert 'cmd="php x.php\\n2026-01-01 direct-smtp: uid=0 \\""' in line
    Event(0.0, "direct-smtp", "direct-smtp", "connect", uid=33)  # the kind exists


# ---- the /proc walk, on a written tree -------------------------------------------------------


def test_holders_from_a_written_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (tmp_path / "net" / "tcp").write_text(
        head
        # 198.51.100.2:40000 -> 198.51.100.1:25, uid 1001, inode 777
        + "   0: 026433C6:9C40 016433C6:0019 01 00000000:00000000 00:00000000 00000000  1001        0 777 1\n"
        # the same uid to port 80: not SMTP
        + "   1: 026433C6:9C41 016433C6:0050 01 00000000:00000000 00:00000000 00000000  1001        0 778 1\n"
        # another uid to port 25
        + "   2: 026433C6:9C42 016433C6:0019 01 00000000:00000000 00:00000000 00000000  1002        0 779 1\n")
    (tmp_path / "net" / "tcp6").write_text(
        head + "   0: 00000000000000000000000002000000:9C43 00000000000000000000000001000000:024B 01 "
        "00000000:00000000 00:00000000 00000000  1001        0 780 1\n")
    assert procs.smtp_sockets(1001, (25, 465, 587), str(tmp_path)) == {777: "198.51.100.1:25", 780: "[::1]:587"}
    mine = os.getuid()  # the tree's /proc/PID directories are owned by whoever runs the test
    sockets = procs.smtp_sockets(1001, (25,), str(tmp_path))
    assert sockets
    pid = tmp_path / "4242"
    (pid / "fd").mkdir(parents=True)
    os.symlink("socket:[777]", pid / "fd" / "5")
    os.symlink("/dev/null", pid / "fd" / "0")
    os.symlink("/var/www/site", pid / "cwd")
    (pid / "cmdline").write_bytes(b"php\0-f\0mailer.php\0")
    # holders() only opens processes of the uid asked for: ask for the tree owner's uid.
    (tmp_path / "net" / "tcp").write_text(
        head + f"   0: 026433C6:9C40 016433C6:0019 01 00000000:00000000 00:00000000 00000000  {mine}        0 777 1\n")
    found = procs.holders(mine, (25,), str(tmp_path))
    assert found == [procs.Holder(4242, "php -f mailer.php", "/var/www/site", ("198.51.100.1:25",))]
    assert procs.holders(mine, (465,), str(tmp_path)) == []
    # The connection closed before mailban looked: with the fallback, the uid's running
    # processes are named as candidates (no destinations), and the line says what they are.
    candidates = procs.holders(mine, (465,), str(tmp_path), fallback=True)
    assert candidates == [procs.Holder(4242, "php -f mailer.php", "/var/www/site", ())]
    line = describe(mine, {"203.0.113.5:465": 1}, 1, candidates, 0.0)
    assert line.endswith('no process held such a socket when mailban looked; the uid\'s processes then: '
                         'pid=4242 cwd="/var/www/site" cmd="php -f mailer.php"')


# ---- end to end, real nftables in two namespaces ---------------------------------------------

ROOT = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables)")]
SYSTEM_PYTHON = "/usr/bin/python3"  # the test's interpreter may live where nobody cannot read

# Connects `n` times to dst:25 and reads the greeting; keeps the last connection open `hold`
# seconds (a spam run's session: the socket mailban finds in /proc). Prints OK k / FAIL reason.
CONNECT = r"""
import socket, sys, time
dst, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
port = int(sys.argv[4]) if len(sys.argv) > 4 else 25
ok = 0
for i in range(n):
    try:
        s = socket.create_connection((dst, port), timeout=3)
        s.recv(100)
        if i == n - 1 and hold:
            time.sleep(hold)
        s.close()
        ok += 1
    except OSError as exc:
        print("FAIL", type(exc).__name__, exc)
print("OK", ok)
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from tests.netns import SERVER4, SERVER6, SERVER_CODE, Link, run

    if not os.path.exists(SYSTEM_PYTHON) or not shutil.which("setpriv"):
        pytest.skip("needs /usr/bin/python3 and setpriv to run a script as nobody")
    link = Link()
    mx = None
    www = tempfile.mkdtemp(prefix="directsmtp-www-")
    os.chmod(www, 0o755)
    daemons: list[Any] = []
    try:
        link.up()
        mx = subprocess.Popen(link.exec_argv(link.srv, [sys.executable, "-c", SERVER_CODE, SERVER4, SERVER6, "25"]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert mx.stdout is not None and mx.stdout.readline().strip() == "ready"
        yield {"link": link, "tmp": tmp_path, "www": www, "daemons": daemons, "run": run, "mx4": SERVER4,
               "mx6": SERVER6}
    finally:
        for d in daemons:
            d.stop()
        if mx is not None:
            mx.kill()
            mx.wait(5)
        link.close()
        shutil.rmtree(www, ignore_errors=True)


def import_pwd() -> Any:
    import pwd

    return pwd


def connect_as(world: dict[str, Any], user: str, n: int, hold: float = 0.0, dst: str | None = None,
               port: int = 25) -> tuple[int, str]:
    import pwd

    link = world["link"]
    pw = pwd.getpwnam(user)
    argv = link.exec_argv(link.cli, ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                                     SYSTEM_PYTHON, "-c", CONNECT, dst or world["mx4"], str(n), str(hold), str(port)])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=world["www"])
    out = res.stdout + res.stderr
    assert res.stdout.strip(), out
    last = res.stdout.strip().splitlines()[-1]
    return int(last.split()[1]), out


def write_config(world: dict[str, Any], settings: str = "direct_smtp = true\n", maxretry: int = 30,
                 tmp: Path | None = None) -> Path:
    """mailban.toml with the direct-smtp jail (notify into mail.out, then block); `settings`
    are the [mailban] lines that change between tests (and between reloads: call it again)."""
    tmp = tmp or world["tmp"]
    (tmp / "actions.d").mkdir(exist_ok=True)
    mail = tmp / "mail.out"
    keep = f"import sys; open({str(mail)!r}, 'ab').write(sys.stdin.buffer.read())"
    (tmp / "actions.d" / "notify.toml").write_text(
        '[action]\ntype = "notify"\nto = "root"\ninterval = "1s"\n'
        f"sendmail = {json.dumps([sys.executable, '-c', keep])}\nmax_lines = 5\n")
    (tmp / "mail.log").write_text("")
    path = tmp / "mailban.toml"
    path.write_text(
        "[mailban]\n"
        "shipped_jails = false\n"
        f'logs = ["{tmp / "mail.log"}"]\n'
        f'state_dir = "{tmp / "state"}"\n'
        f'socket = "{tmp / "mailban.sock"}"\n'
        'journal = false\nmetrics = ""\n'
        + settings +
        'direct_smtp_mta_users = ["postfix", "Debian-exim", "root"]\n'
        "\n[jail.direct-smtp]\n"
        f'kinds = ["direct-smtp"]\nkey = "uid"\nfindtime = "10m"\nmaxretry = {maxretry}\nbantime = "1h"\n'
        'actions = ["notify", "direct-smtp-block"]\n')
    return path


@pytest.mark.parametrize("_", [None], ids=["netns"])
def test_direct_smtp_end_to_end(world: dict[str, Any], _: None) -> None:
    for mark in ROOT:
        if mark.name == "skipif" and mark.args[0]:
            pytest.skip(mark.kwargs["reason"])
    from tests.netns import Daemon, wait_for

    link = world["link"]
    config = write_config(world)
    host = types.SimpleNamespace(srv=link.cli, exec_argv=link.exec_argv)  # the daemon runs on the "host"
    daemon = Daemon(host, config)  # type: ignore[arg-type]
    world["daemons"].append(daemon)
    daemon.start()

    ok, out = connect_as(world, "nobody", 30, hold=3.0)
    assert ok == 30, out

    def banned() -> bool:
        return any(b["key_type"] == "uid" and b["key"] == "65534" for b in daemon.status()["bans"])

    took = wait_for(banned, timeout=10, what="the uid's ban")
    print(f"\nban of uid 65534 {took:.2f}s after its 30th connection closed")
    status = daemon.status()
    ds = status["direct_smtp"]
    assert ds["uids"]["65534"]["connections"] == 30
    assert ds["uids"]["65534"]["destinations"] == {f"{world['mx4']}:25": 30}
    assert "65534" in ds["blocked"]
    assert import_pwd().getpwnam("postfix").pw_uid in ds["excluded_uids"]
    ban = next(b for b in status["bans"] if b["key"] == "65534")
    text = "\n".join(ban["lines"])
    # reported with the user, the destination and the process holding the socket (its cwd).
    assert "user=nobody" in text and f"to={world['mx4']}:25" in text
    assert f'cwd="{world["www"]}"' in text and 'cmd="/usr/bin/python3 -c' in text, text
    wait_for(lambda: (world["tmp"] / "mail.out").exists(), timeout=5, what="the notify mail")
    mail = (world["tmp"] / "mail.out").read_text()
    assert "uid 65534" in mail and "user=nobody" in mail and world["www"] in mail
    assert "mailban unban --uid 65534" in mail
    rendered = daemon.cli("status").stdout
    assert "uid 65534 (nobody): 30 connections  BLOCKED" in rendered, rendered

    # Blocked: nobody's next connection is refused at once; postfix's uid still connects.
    ok, out = connect_as(world, "nobody", 1)
    assert ok == 0 and "ConnectionRefusedError" in out, out
    ok, out = connect_as(world, "postfix", 3)
    assert ok == 3, out
    # `mailban direct-smtp` reads the kernel of its own namespace: run it on the "host".
    direct = world["run"](link.exec_argv(link.cli, [sys.executable, "-m", "mailban", "direct-smtp", "--json",
                                                    "--config", str(config)]))
    snap = json.loads(direct.stdout)
    assert snap["uids"]["65534"]["connections"] == 31  # the refused try is counted (and reported)
    assert "102" not in snap["uids"]  # postfix is never counted

    wait_for(lambda: daemon.status()["direct_smtp"]["uids"]["65534"]["connections"] == 31, timeout=5,
             what="the daemon's next poll")
    explained = daemon.cli("explain", "--uid", "65534").stdout
    assert "direct SMTP counted by the kernel: 31 connections" in explained, explained

    # unban --uid restores it.
    daemon.cli("unban", "--uid", "65534")
    assert "65534" not in daemon.status()["direct_smtp"]["blocked"]
    ok, out = connect_as(world, "nobody", 1)
    assert ok == 1, out
    wait_for(lambda: daemon.status()["direct_smtp"]["uids"]["65534"]["connections"] == 32, timeout=5,
             what="the counter after the unban")

    # Restart: what nobody does while the daemon is stopped is counted at the next start.
    wait_for(lambda: any(c["jail"] == "direct-smtp" and c["count"] == 1
                         for c in daemon.call({"cmd": "explain", "key_type": "uid", "key": "65534"})["counting"]),
             timeout=5, what="the jail counting the connection after the unban")
    assert daemon.stop() == 0
    ok, out = connect_as(world, "nobody", 5)
    assert ok == 5, out
    daemon.start()

    def counted() -> int:
        ex = daemon.call({"cmd": "explain", "key_type": "uid", "key": "65534"})
        return sum(c["count"] for c in ex["counting"] if c["jail"] == "direct-smtp")

    wait_for(lambda: counted() == 6, timeout=5, what="the 5 connections made while stopped")
    assert daemon.status()["direct_smtp"]["uids"]["65534"]["connections"] == 37


def test_all_but_mta_refuses_every_other_uid_and_still_counts(world: dict[str, Any]) -> None:
    """block_direct_smtp = "all-but-mta": the blanket rule of the hosting guides, kernel only."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    link = world["link"]
    setup = ("import pwd; from mailban.directsmtp.kernel import DirectSmtpKernel, uids_of; "
             "DirectSmtpKernel().ensure(mta_uids=uids_of(['postfix', 'root'])[0], block_all=True)")
    world["run"](link.exec_argv(link.cli, [sys.executable, "-c", setup]))
    ok, out = connect_as(world, "nobody", 2)
    assert ok == 0 and out.count("ConnectionRefusedError") == 2, out
    ok, out = connect_as(world, "postfix", 2)
    assert ok == 2, out
    read = "import json; from mailban.directsmtp.kernel import DirectSmtpKernel; print(json.dumps([[*k, n] for k, n in DirectSmtpKernel().counters().items()]))"
    counted = json.loads(world["run"](link.exec_argv(link.cli, [sys.executable, "-c", read])).stdout)
    assert counted == [[65534, world["mx4"], 25, 2]]  # who tried is still counted; postfix never


# ---- the paths the first end-to-end test does not take (issue 18, item 2) ----------------------


def host_daemon(world: dict[str, Any], config: Path) -> Any:
    """`mailban run` in the "host" namespace (the one whose users connect out)."""
    from tests.netns import Daemon

    link = world["link"]
    daemon = Daemon(types.SimpleNamespace(srv=link.cli, exec_argv=link.exec_argv), config)  # type: ignore[arg-type]
    world["daemons"].append(daemon)
    return daemon.start()


def host_kernel(world: dict[str, Any]) -> dict[str, Any]:
    """What the host's kernel holds: per uid, per (uid, destination, port), the chains."""
    link = world["link"]
    code = ("import json; from mailban.directsmtp.kernel import DirectSmtpKernel as K; k = K(); "
            "print(json.dumps({'uids': k.uid_counters(), 'dests': [[*key, n] for key, n in k.counters().items()]}))")
    res = world["run"](link.exec_argv(link.cli, [sys.executable, "-c", code]), check=False)
    chains = world["run"](link.exec_argv(link.cli, ["nft", "list", "chains", "inet"])).stdout
    out = json.loads(res.stdout) if res.returncode == 0 else {"uids": {}, "dests": []}
    return {"uids": {int(u): n for u, n in out["uids"].items()}, "dests": out["dests"],
            "chain": "chain direct_smtp " in chains}


def uid_counted(daemon: Any, uid: int) -> int:
    ex = daemon.call({"cmd": "explain", "key_type": "uid", "key": str(uid)})
    return sum(c["count"] for c in ex["counting"] if c["jail"] == "direct-smtp")


def test_allow_list_and_ipv6_through_the_daemon(world: dict[str, Any]) -> None:
    """direct_smtp_allow: connections to an allowed network (a smarthost) are not counted; IPv6
    is counted, with its destination, by the daemon; an IPv6 network in the allow list, applied
    by `mailban reload`, stops that too."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    from tests.netns import wait_for

    config = write_config(world, 'direct_smtp = true\ndirect_smtp_allow = ["198.51.100.0/28"]\n')
    daemon = host_daemon(world, config)
    assert connect_as(world, "nobody", 3)[0] == 3  # to the smarthost 198.51.100.1: allowed
    ok, out = connect_as(world, "nobody", 4, dst=world["mx6"])
    assert ok == 4, out
    wait_for(lambda: uid_counted(daemon, 65534) == 4, timeout=5, what="the 4 IPv6 connections")
    # the destination sets are read at a later poll than the uid set when a read is not due yet
    # (DEST_SHARE): status shows them from that poll on
    wait_for(lambda: daemon.status()["direct_smtp"]["uids"]["65534"]["destinations"], timeout=5,
             what="the destinations read")
    kernel = host_kernel(world)
    assert kernel["uids"] == {65534: 4} and kernel["dests"] == [[65534, world["mx6"], 25, 4]]
    ban_lines = daemon.call({"cmd": "explain", "key_type": "uid", "key": "65534"})
    uid = daemon.status()["direct_smtp"]["uids"]["65534"]
    assert uid["connections"] == 4 and uid["destinations"] == {f"[{world['mx6']}]:25": 4}, ban_lines

    write_config(world, 'direct_smtp = true\ndirect_smtp_allow = ["198.51.100.0/28", "fd42:6d62::/64"]\n')
    daemon.cli("reload")
    assert connect_as(world, "nobody", 2, dst=world["mx6"])[0] == 2
    assert connect_as(world, "nobody", 2)[0] == 2
    assert host_kernel(world)["uids"] == {65534: 4}  # neither counted; the counters kept across the reload
    assert uid_counted(daemon, 65534) == 4


def test_reload_turns_counting_off_and_on_and_changes_the_ports(world: dict[str, Any]) -> None:
    """direct_smtp on -> off (SIGHUP: the chains go, nothing is counted, the counters stay) ->
    on with direct_smtp_ports = [2525] (`mailban reload`: port 25 no longer counted, 2525 is),
    on a running daemon."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    import signal

    from tests.netns import wait_for

    world["link"].start_server()  # the "MX" answers on 2525 as well
    config = write_config(world)
    daemon = host_daemon(world, config)
    assert connect_as(world, "nobody", 2)[0] == 2
    wait_for(lambda: uid_counted(daemon, 65534) == 2, timeout=5, what="2 connections counted")

    write_config(world, "direct_smtp = false\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: not host_kernel(world)["chain"], timeout=5, what="the chains removed by the reload")
    assert "direct_smtp" not in daemon.status()
    assert connect_as(world, "nobody", 3)[0] == 3
    assert host_kernel(world)["uids"] == {65534: 2}  # not counted while off; the counters stay

    write_config(world, "direct_smtp = true\ndirect_smtp_ports = [2525]\n")
    daemon.cli("reload")
    assert host_kernel(world)["chain"] and daemon.status()["direct_smtp"]["ports"] == [2525]
    assert connect_as(world, "nobody", 2)[0] == 2  # port 25: not counted now
    assert connect_as(world, "nobody", 3, port=2525)[0] == 3
    wait_for(lambda: uid_counted(daemon, 65534) == 5, timeout=5, what="the 3 connections to 2525")
    kernel = host_kernel(world)
    assert kernel["uids"] == {65534: 5}
    assert sorted(map(tuple, kernel["dests"])) == [(65534, world["mx4"], 25, 2), (65534, world["mx4"], 2525, 3)]


def test_all_but_mta_through_the_daemon(world: dict[str, Any]) -> None:
    """block_direct_smtp = "all-but-mta" set by the daemon: every non-MTA uid is refused, its
    tries still counted and reported; postfix connects; a reload back to "per-uid" lifts it."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    from tests.netns import wait_for

    config = write_config(world, 'direct_smtp = true\nblock_direct_smtp = "all-but-mta"\n')
    daemon = host_daemon(world, config)
    ok, out = connect_as(world, "nobody", 3)
    assert ok == 0 and out.count("ConnectionRefusedError") == 3, out
    ok, out = connect_as(world, "postfix", 2)
    assert ok == 2, out
    wait_for(lambda: uid_counted(daemon, 65534) == 3, timeout=5, what="nobody's refused tries counted")
    ds = daemon.status()["direct_smtp"]
    assert ds["policy"] == "all-but-mta" and ds["blocked"] == {}
    assert set(ds["uids"]) == {"65534"}  # postfix (an MTA user) never counted
    assert "direct SMTP" in daemon.cli("status").stdout

    write_config(world, 'direct_smtp = true\nblock_direct_smtp = "per-uid"\n')
    daemon.cli("reload")
    ok, out = connect_as(world, "nobody", 1)
    assert ok == 1, out
    wait_for(lambda: uid_counted(daemon, 65534) == 4, timeout=5, what="the connection after the reload")


def test_unprivileged_daemon_with_cap_net_admin_counts_and_blocks(world: dict[str, Any]) -> None:
    """The daemon as nobody with CAP_NET_ADMIN only (contrib/systemd/unprivileged.conf): it sets
    up the chain, counts uid 1 (daemon), blocks it, and `unban --uid` lifts the block. Without
    CAP_SYS_PTRACE it cannot read another uid's /proc/PID/fd: the line says no process was
    found (docs/direct-smtp.md)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    from mailban.control import request
    from tests.netns import wait_for
    from tests.test_least_privilege import NOBODY, as_user, pythonpath

    work = Path(tempfile.mkdtemp(prefix="directsmtp-lp-", dir="/var/tmp"))
    try:
        work.chmod(0o755)
        (work / "cfg").mkdir()
        config = write_config(world, 'direct_smtp = true\nsocket_mode = "0666"\n', maxretry=3, tmp=work / "cfg")
        for path in [work / "cfg", *(work / "cfg").rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        env = {**os.environ, "PYTHONPATH": pythonpath(work)}
        link = world["link"]
        argv = as_user(NOBODY, NOBODY, [SYSTEM_PYTHON, "-m", "mailban", "run", "--config", str(config)], caps=True)
        with open(work / "daemon.out", "wb") as out:
            proc = subprocess.Popen(link.exec_argv(link.cli, argv), stdout=out, stderr=subprocess.STDOUT, env=env)
        sock = str(work / "cfg" / "mailban.sock")

        def call(payload: dict[str, Any]) -> dict[str, Any]:
            return request(sock, payload)

        try:
            wait_for(lambda: os.path.exists(sock) and call({"cmd": "status"}).get("ok"), timeout=20,
                     what=f"the unprivileged daemon:\n{(work / 'daemon.out').read_text(errors='replace')}")
            caps = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
            assert caps["Uid"].split()[0] == str(NOBODY) and int(caps["CapEff"], 16) == 1 << 12
            assert call({"cmd": "status"})["direct_smtp"]["exists"], (work / "daemon.out").read_text()
            ok, out = connect_as(world, "daemon", 3, hold=2.0)
            assert ok == 3, out
            wait_for(lambda: any(b["key"] == "1" for b in call({"cmd": "status"})["bans"]), timeout=10,
                     what="the ban of uid 1")
            status = call({"cmd": "status"})
            assert "1" in status["direct_smtp"]["blocked"]
            text = "\n".join(next(b for b in status["bans"] if b["key"] == "1")["lines"])
            assert "user=daemon" in text and f"to={world['mx4']}:25" in text
            # /proc/PID/fd and cwd of uid 1: not ours to read; the running processes are named.
            assert "no process held such a socket" in text, text
            assert "the uid's processes then: pid=" in text and 'cwd="?" cmd="/usr/bin/python3 -c' in text, text
            ok, out = connect_as(world, "daemon", 1)
            assert ok == 0 and "ConnectionRefusedError" in out, out
            assert call({"cmd": "unban", "key_type": "uid", "key": "1"})["ok"]
            assert connect_as(world, "daemon", 1)[0] == 1
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
