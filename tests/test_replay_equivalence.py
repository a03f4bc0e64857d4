"""`mailban replay` and the running daemon decide identically on the same lines.

The same log lines go (a) through `mailban replay --json` and (b) appended to a file that the
daemon follows, in a network namespace with real nftables. Both must produce the same decisions:
the same (jail, key, count) and the same causing lines. The lines are stamped in the recent past
and spread so that the find-time window matters (some keys reach maxretry only within it, some
only outside it), with a second jail keyed by account, loopback (never banned), IPv6, and noise.
Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.netns import Daemon, Link, append, failure_line, wait_for, write_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables)"),
]

USER_JAIL = """
[jail.accounts]
kinds = ["auth-failure"]
key = "user"
findtime = "5m"
maxretry = 4
bantime = "1h"
actions = ["nft"]
"""


def scenario(base: float) -> list[bytes]:
    """(seconds after base, ip, user) failures plus noise, in time order."""
    events: list[tuple[float, str, str]] = []
    for i in range(10):  # 3 within a minute: banned
        events += [(i * 5 + k * 10, f"198.51.100.{10 + i}", f"u{i}@example.test") for k in range(3)]
    for i in range(5):  # 3 spread over 5 minutes (findtime 2m): never banned
        events += [(k * 150 + i, f"198.51.100.{40 + i}", "spread@example.test") for k in range(3)]
    # 2, a pause longer than findtime, then 3: banned with count 3 only after the pause
    events += [(t, "198.51.100.60", "late@example.test") for t in (0, 10, 400, 410, 420)]
    # 6 in a row: banned once at the third, the others are ignored while banned
    events += [(100 + k, "198.51.100.61", "many@example.test") for k in range(6)]
    events += [(200 + k * 7, "fd42:6d62::a", "v6@example.test") for k in range(3)]  # IPv6
    events += [(210 + k, "fd42:6d62::b", "v6b@example.test") for k in range(2)]  # 2: no ban
    events += [(300 + k, "127.0.0.1", "local@example.test") for k in range(5)]  # loopback: never
    # one account guessed from 4 addresses, once each: only the account jail fires
    events += [(500 + k * 20, f"198.51.100.{70 + k}", "target@example.test") for k in range(4)]
    events.sort(key=lambda e: e[0])
    lines = [failure_line(ip, base + t, user) for t, ip, user in events]
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(base + 250))
    noise = [
        f"{stamp} mail postfix/smtpd[4242]: connect from unknown[198.51.100.99]\n".encode(),
        f"{stamp} mail postfix/smtpd[4242]: warning: bad \xff\xfe utf8 \x00 NUL\n".encode("latin-1"),
        b"no syslog header at all\n",
    ]
    return lines[: len(lines) // 2] + noise + lines[len(lines) // 2:]


def decisions(bans: list[dict]) -> Counter[tuple[str, str, int, tuple[str, ...]]]:
    return Counter((b["jail"], b["key"], b["count"], tuple(b["lines"])) for b in bans)


def test_replay_and_daemon_decide_identically(tmp_path: Path) -> None:
    # stamped from now on, as a followed log is (the daemon skips lines older than the find time)
    lines = scenario(time.time() - 30)
    etc = tmp_path / "etc"
    log = tmp_path / "mail.log"
    config = write_config(etc, [str(log)], findtime="2m", extra=USER_JAIL)
    (tmp_path / "input.log").write_bytes(b"".join(lines))

    res = subprocess.run(
        [sys.executable, "-m", "mailban", "replay", "--json", "--config", str(config),
         str(tmp_path / "input.log")],
        capture_output=True, text=True, timeout=60, check=True,
    )
    replayed = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]

    link = Link()
    daemon: Daemon | None = None
    try:
        link.up()
        log.touch()
        daemon = Daemon(link, config).start()
        for i in range(0, len(lines), 7):  # appended in bursts, as a log grows
            append(log, b"".join(lines[i: i + 7]))
        wait_for(lambda: daemon.lines_read() == len(lines), timeout=10, what="every line read")
        live = json.loads(daemon.cli("list", "--json").stdout)
        kernel = link.nft_elements()
        assert daemon.stop() == 0
    finally:
        if daemon is not None:
            daemon.stop()
        link.close()

    expected_ip = {f"198.51.100.{10 + i}" for i in range(10)} | {"198.51.100.60", "198.51.100.61",
                                                                 "fd42:6d62::a"}
    assert {b["key"] for b in replayed if b["jail"] == "auth"} == expected_ip
    assert {b["key"] for b in replayed if b["jail"] == "accounts"} == {
        "target@example.test", "many@example.test", "spread@example.test", "local@example.test"}
    assert decisions(live) == decisions(replayed), (
        f"replay only: {decisions(replayed) - decisions(live)}\ndaemon only: {decisions(live) - decisions(replayed)}"
    )
    assert set(kernel) == {b["key"] for b in live if b["key_type"] == "ip"}


def test_the_daemon_repeats_each_files_own_previous_line(tmp_path: Path) -> None:
    """`last message repeated N times` stands for the previous line of its own file: with two
    logs read by one daemon, a repeat in the first counts the first log's failure N times, not
    the line the second log wrote in between (the parser's `previous` is kept per file)."""
    from tests.netns import failure_line

    first, second = tmp_path / "mail.log", tmp_path / "other.log"
    config = write_config(tmp_path / "conf", [str(first), str(second)], maxretry=5)
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime())
    link = Link()
    daemon = None
    try:
        link.up()
        first.touch()
        second.touch()
        daemon = Daemon(link, config).start()
        append(first, failure_line("198.51.100.70"))
        wait_for(lambda: daemon.lines_read() == 1, timeout=10, what="the first log's failure read")
        append(second, failure_line("198.51.100.71"))
        wait_for(lambda: daemon.lines_read() == 2, timeout=10, what="the second log's failure read")
        append(first, f"{stamp} mail last message repeated 4 times\n".encode())
        wait_for(lambda: "198.51.100.70" in link.nft_elements(), timeout=10, what="the repeated failure's ban")
        assert "198.51.100.71" not in link.nft_elements()
        assert daemon.stop() == 0
    finally:
        if daemon is not None:
            daemon.stop()
        link.close()


def test_replay_and_daemon_agree_on_the_valve_and_prefix_folds(tmp_path: Path) -> None:
    """The decision stage (core/decisions.py) is the daemon's and replay's: with a rate limit of 4
    decisions a minute and IPv4 /24 prefixes, replay prints the bans, the folds and the held-back
    decisions that leave the daemon with the same active bans and the same count held back."""
    base = time.time() - 20
    lines = []
    for n in range(1, 4):  # three addresses of one /24, three failures each: two singles, then the /24
        lines += [failure_line(f"203.0.113.{n}", base + n * 3 + k) for k in range(3)]
    for n in range(6):  # six more addresses elsewhere: past the limit of 4 a minute
        lines += [failure_line(f"198.51.{n}.9", base + 12 + n) for _k in range(3)]
    config = write_config(tmp_path / "etc", [str(tmp_path / "mail.log")], findtime="2m")
    text = config.read_text().replace("[mailban]\n", "[mailban]\nmax_bans_per_minute = 4\n", 1)
    config.write_text(text.replace("[jail.auth]\n", "[jail.auth]\nprefix4 = 24\nprefix_min_ips = 3\n", 1))
    (tmp_path / "input.log").write_bytes(b"".join(lines))
    res = subprocess.run([sys.executable, "-m", "mailban", "replay", "--json", "--config", str(config),
                          str(tmp_path / "input.log")], capture_output=True, text=True, timeout=60, check=True)
    replayed = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    banned = [d["key"] for d in replayed if d["decision"] == "ban"]
    folded = {ip for d in replayed if d["decision"] == "folded" for ip in d["ips"]}
    held = [d["key"] for d in replayed if d["decision"] == "suppressed"]
    # 203.0.113.1 and .2 alone, then the /24 at .3's first failure (the third address), folding
    # the two singles; one more address reaches the limit of 4 a minute, the other five are held
    assert banned == ["203.0.113.1", "203.0.113.2", "203.0.113.0/24", "198.51.0.9"]
    assert folded == {"203.0.113.1", "203.0.113.2"}
    assert held == [f"198.51.{n}.9" for n in range(1, 6)]

    log = tmp_path / "mail.log"
    link = Link()
    daemon: Daemon | None = None
    try:
        link.up()
        log.touch()
        daemon = Daemon(link, config).start()
        append(log, b"".join(lines))
        wait_for(lambda: daemon.lines_read() == len(lines), timeout=10, what="every line read")
        wait_for(lambda: sum(j["suppressed"] for j in daemon.status()["jails"]) == len(held), timeout=10,
                 what="the held-back decisions")
        live = {b["key"] for b in json.loads(daemon.cli("list", "--json").stdout)}
        kernel = set(link.nft_elements())
        assert daemon.stop() == 0
    finally:
        if daemon is not None:
            daemon.stop()
        link.close()
    assert live == set(banned) - folded
    assert kernel == live
