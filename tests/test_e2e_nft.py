"""End to end with real nftables: the daemon in a network namespace bans a client in the kernel.

Server namespace: the daemon and a tiny TCP service on port 2525. Client namespace: 198.51.100.2,
198.51.100.3 and fd42:6d62::2. Log lines are appended to a file the daemon follows; the tests
watch the kernel sets (`nft -j list set`) and real TCP connections. Times are measured with
time.monotonic and printed (run with -s to see them). Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.netns import (
    CLIENT4, CLIENT6, OTHER4, SERVER4, Daemon, Link, append, failure_line, wait_for, write_config,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables)"),
]


@pytest.fixture(scope="module")
def link() -> Iterator[Link]:
    link = Link()
    try:
        link.up()
        link.start_server()
        yield link
    finally:
        link.close()


@pytest.fixture
def env(link: Link, tmp_path: Path) -> Iterator[tuple[Link, Path]]:
    link.reset_nft()
    daemons: list[Daemon] = []
    link.daemons = daemons  # type: ignore[attr-defined]
    try:
        yield link, tmp_path
    finally:
        for d in daemons:
            d.stop()
        link.reset_nft()


def start(link: Link, config: Path) -> Daemon:
    d = Daemon(link, config)
    link.daemons.append(d)  # type: ignore[attr-defined]
    return d.start()


def fail(log: Path, ip: str, times: int = 3) -> None:
    append(log, b"".join(failure_line(ip) for _ in range(times)))


def test_ban_latency_drop_ipv6_and_unban(env: tuple[Link, Path]) -> None:
    link, tmp = env
    log = tmp / "mail.log"
    log.write_bytes(failure_line(CLIENT4) * 5)  # before the start: read_from = "end" skips it
    d = start(link, write_config(tmp / "etc", [str(log)]))
    assert link.nft_elements() == {}
    ok, out, _ = link.connect(CLIENT4)
    assert ok, out

    append(log, failure_line(CLIENT4) * 2)
    wait_for(lambda: d.lines_read() == 2, what="two lines read")
    assert CLIENT4 not in link.nft_elements(), "two failures must not ban (maxretry 3)"
    started = time.monotonic()
    append(log, failure_line(CLIENT4))
    latency = wait_for(lambda: CLIENT4 in link.nft_elements(), timeout=5, every=0.01, what="the ban")
    latency = time.monotonic() - started
    print(f"\nban latency IPv4: {latency * 1000:.0f} ms")
    assert latency < 1.0

    # A shorter manual ban on the same address must not cut the hour-long ban short.
    d.cli("ban", CLIENT4, "--for", "3s")
    left = link.nft_elements()[CLIENT4]
    assert left is not None and left > 3000, left

    ok, out, took = link.connect(CLIENT4, timeout=1.0)
    assert not ok and "timed out" in out, out
    assert took >= 0.9
    ok, out, _ = link.connect(OTHER4)
    assert ok and OTHER4 in out, out

    ok, out, _ = link.connect(CLIENT6)
    assert ok, out
    started = time.monotonic()
    fail(log, CLIENT6)
    wait_for(lambda: CLIENT6 in link.nft_elements(), timeout=5, every=0.01, what="the IPv6 ban")
    latency6 = time.monotonic() - started
    print(f"ban latency IPv6: {latency6 * 1000:.0f} ms")
    assert latency6 < 1.0
    ok, out, _ = link.connect(CLIENT6, timeout=1.0)
    assert not ok, out

    listed = json.loads(d.cli("list", "--json").stdout)
    assert {(b["jail"], b["key"], b["count"]) for b in listed} == {
        ("auth", CLIENT4, 3), ("auth", CLIENT6, 3), ("manual", CLIENT4, 0)}
    assert all(len(b["lines"]) == 3 for b in listed if not b["manual"])

    res = d.cli("unban", CLIENT4)
    assert "unbanned" in res.stdout
    assert CLIENT4 not in link.nft_elements()
    ok, out, _ = link.connect(CLIENT4)
    assert ok, out
    d.cli("unban", CLIENT6)
    assert link.nft_elements() == {}
    ok, out, _ = link.connect(CLIENT6)
    assert ok, out
    assert json.loads(d.cli("list", "--json").stdout) == []
    # After an unban, counting starts afresh: two new failures are not enough.
    append(log, failure_line(CLIENT4) * 2)
    wait_for(lambda: d.lines_read() == 2 + 1 + 3 + 2, what="the lines to be read")
    assert CLIENT4 not in link.nft_elements()
    assert d.stop() == 0


def test_restart_keeps_bans_that_still_expire_on_time(env: tuple[Link, Path]) -> None:
    link, tmp = env
    log = tmp / "mail.log"
    log.touch()
    config = write_config(tmp / "etc", [str(log)], bantime="4s")
    d = start(link, config)
    banned_at = time.monotonic()
    fail(log, CLIENT4)
    wait_for(lambda: CLIENT4 in link.nft_elements(), what="the ban")
    d.cli("ban", OTHER4, "--for", "3s")
    manual_at = time.monotonic()
    left = link.nft_elements()[OTHER4]
    assert left is not None and 1 <= left <= 3
    assert d.stop() == 0
    assert CLIENT4 in link.nft_elements(), "a stopped daemon leaves the bans in the kernel"
    append(log, failure_line(CLIENT6) * 2)  # written while the daemon is down

    d = start(link, config)
    # The restart resumes at the saved position: the two lines from the downtime are read, the
    # three before it are not read again.
    wait_for(lambda: d.lines_read() == 2, what="the lines written while down")
    assert CLIENT6 not in link.nft_elements()
    append(log, failure_line(CLIENT6))
    wait_for(lambda: CLIENT6 in link.nft_elements(), what="the ban counting lines from the downtime")
    d.cli("unban", CLIENT6)
    elements = link.nft_elements()
    assert CLIENT4 in elements and OTHER4 in elements
    assert elements[CLIENT4] is not None and 0 < elements[CLIENT4] <= 4
    listed = {b["key"]: b for b in json.loads(d.cli("list", "--json").stdout)}
    assert set(listed) == {CLIENT4, OTHER4}
    assert listed[OTHER4]["manual"] and listed[OTHER4]["jail"] == "manual"
    assert 0 < listed[CLIENT4]["left"] <= 4

    wait_for(lambda: OTHER4 not in link.nft_elements(), timeout=5, what="the manual ban to expire")
    manual_took = time.monotonic() - manual_at
    wait_for(lambda: CLIENT4 not in link.nft_elements(), timeout=5, what="the ban to expire")
    took = time.monotonic() - banned_at
    print(f"\nbantime 4s expired after {took:.2f}s; --for 3s after {manual_took:.2f}s (restart included)")
    assert 3.0 <= took <= 5.5 and 2.0 <= manual_took <= 4.5
    wait_for(lambda: json.loads(d.cli("list", "--json").stdout) == [], timeout=3, every=0.2,
             what="`mailban list` to forget expired bans")
    ok, out, _ = link.connect(CLIENT4)
    assert ok, out
    # Expired means counting starts afresh and bans again.
    fail(log, CLIENT4)
    wait_for(lambda: CLIENT4 in link.nft_elements(), what="a new ban after expiry")
    assert d.stop() == 0


def test_sighup_with_a_broken_config_keeps_the_old_one(env: tuple[Link, Path]) -> None:
    link, tmp = env
    log = tmp / "mail.log"
    log.touch()
    config = write_config(tmp / "etc", [str(log)])
    good = config.read_text()
    d = start(link, config)
    config.write_text(good.replace("maxretry = 3", 'maxretry = "three"'))
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in d.log(), what="the refusal in the daemon's log")
    assert d.proc is not None and d.proc.poll() is None, d.log()
    assert d.status()["jails"][0]["maxretry"] == 3
    res = d.cli("reload", check=False)
    assert res.returncode == 2  # as the man page's EXIT STATUS says: the configuration was refused
    assert "refused" in res.stderr and "mailban.toml:" in res.stderr and "maxretry" in res.stderr, res.stderr
    # The old configuration still runs: three failures ban.
    fail(log, CLIENT4)
    wait_for(lambda: CLIENT4 in link.nft_elements(), what="a ban under the old config")
    # A good config is taken, and keeps the bans.
    config.write_text(good.replace("maxretry = 3", "maxretry = 2"))
    assert "reloaded" in d.cli("reload").stdout
    assert CLIENT4 in link.nft_elements()
    append(log, failure_line(CLIENT6) * 2)
    wait_for(lambda: CLIENT6 in link.nft_elements(), what="a ban under the new config")
    d.signal(signal.SIGHUP)  # a good config through SIGHUP too
    wait_for(lambda: d.log().count("configuration reloaded") == 2, what="the second reload")
    assert d.status()["jails"][0]["maxretry"] == 2
    assert set(link.nft_elements()) == {CLIENT4, CLIENT6}
    assert d.stop() == 0


def test_log_that_does_not_exist_at_start_is_picked_up(env: tuple[Link, Path]) -> None:
    link, tmp = env
    log = tmp / "later" / "mail.log"
    d = start(link, write_config(tmp / "etc", [str(log)]))
    assert d.status()["sources"][0]["exists"] is False
    assert "does not exist" in d.log()
    log.parent.mkdir()
    fail(log, CLIENT4)  # creates the file
    wait_for(lambda: CLIENT4 in link.nft_elements(), timeout=3, what="the ban from the new file")
    assert d.lines_read() == 3
    assert d.stop() == 0
    assert not os.path.exists(d.socket)


def test_rotation_under_load_bans_every_address_once(env: tuple[Link, Path]) -> None:
    """A writer appends failures from 400 addresses (3 each, interleaved) while the log goes
    through a rename rotation and a copytruncate: each address is banned exactly once, and the
    daemon reads exactly the lines written."""
    link, tmp = env
    log = tmp / "mail.log"
    log.touch()
    d = start(link, write_config(tmp / "etc", [str(log)]))
    addrs = [f"198.51.100.{i}" for i in range(20, 220)] + [f"fd42:6d62::1:{i:x}" for i in range(200)]
    lines = [failure_line(ip) for _ in range(3) for ip in addrs]
    lock = threading.Lock()
    state = {"fd": os.open(log, os.O_WRONLY | os.O_APPEND), "n": 0}

    def writer() -> None:
        for i, line in enumerate(lines):
            with lock:
                os.write(state["fd"], line)
                state["n"] = i + 1
            if i % 20 == 19:
                time.sleep(0.002)  # pace the writer so the rotations land mid-stream

    def reopen() -> None:
        with lock:
            os.close(state["fd"])
            state["fd"] = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    thread = threading.Thread(target=writer)
    started = time.monotonic()
    thread.start()
    try:
        wait_for(lambda: state["n"] >= 400, timeout=10, every=0.001, what="400 lines")
        os.rename(log, f"{log}.1")  # rename rotation; the writer goes on into the old file ...
        wait_for(lambda: state["n"] >= 450, timeout=10, every=0.001, what="450 lines")
        reopen()  # ... until it is told to reopen
        wait_for(lambda: state["n"] >= 800, timeout=10, every=0.001, what="800 lines")
        os.rename(f"{log}.1", f"{log}.2")
        with lock:  # copytruncate; nothing is written between the copy and the truncate
            shutil.copyfile(log, f"{log}.1")
            os.truncate(log, 0)
    finally:
        thread.join()
        os.close(state["fd"])
    wait_for(lambda: d.lines_read() >= len(lines), timeout=10, every=0.05, what="every line read")
    took = time.monotonic() - started
    assert d.lines_read() == len(lines)
    bans = json.loads(d.cli("list", "--json").stdout)
    keys = [b["key"] for b in bans]
    assert sorted(keys) == sorted(addrs), (set(addrs) - set(keys), len(keys))
    assert all(b["count"] == 3 and b["jail"] == "auth" for b in bans)
    assert set(link.nft_elements()) == set(addrs)
    text = d.log()  # the rename is seen as "rotated", or as "removed" when seen before the reopen
    assert ("was rotated" in text or "was removed" in text) and "was truncated" in text, text
    print(f"\n{len(lines)} lines, {len(addrs)} addresses banned through a rename rotation and a "
          f"copytruncate in {took:.2f}s")
    assert d.stop() == 0


def test_a_manual_ban_refuses_what_mailban_never_bans(env: tuple[Link, Path]) -> None:
    """A typo must not cut the host off from its own submission port: loopback, the host's own
    addresses, a network holding them and ignored addresses are refused with the reason;
    `--force` insists; an unknown `--jail` is refused."""
    link, tmp = env
    log = tmp / "mail.log"
    log.write_bytes(b"")
    d = start(link, write_config(tmp / "etc", [str(log)], ignoreip=(OTHER4,)))
    for target, why in (("127.0.0.1", "is loopback"), (SERVER4, "is one of this host's own addresses"),
                        ("198.51.100.0/31", f"holds {SERVER4}/32 (one of this host's own addresses)"),
                        (OTHER4, "is in `ignoreip`")):
        res = d.cli("ban", target, check=False)
        assert res.returncode != 0 and f"refused: {target} {why}" in res.stderr and "--force" in res.stderr, res.stderr
    assert link.nft_elements() == {}
    res = d.cli("ban", CLIENT4, "--jail", "nosuch", check=False)
    assert res.returncode != 0 and "there is no jail 'nosuch'" in res.stderr, res.stderr
    d.cli("ban", OTHER4, "--force", "--for", "1m")
    assert OTHER4 in link.nft_elements()


def test_an_old_log_appended_bans_nothing_and_says_so_once(env: tuple[Link, Path]) -> None:
    """Days-old lines appended to a followed log (a restored backup) count nowhere: status shows
    how many were skipped, the log says it once, and fresh failures still ban."""
    link, tmp = env
    log = tmp / "mail.log"
    log.write_bytes(b"")
    d = start(link, write_config(tmp / "etc", [str(log)]))
    two_days_ago = time.time() - 2 * 86400
    append(log, b"".join(failure_line(f"198.51.100.{n}", two_days_ago + n) for n in range(100, 140) for _ in range(3)))
    wait_for(lambda: d.lines_read() == 120, what="the old lines read")
    assert link.nft_elements() == {}
    (jail,) = d.status()["jails"]
    assert jail["stale"] == 120
    assert d.log().count("older than the find time") == 1
    fail(log, CLIENT4)
    wait_for(lambda: CLIENT4 in link.nft_elements(), what="a fresh ban")


SLOW_AND_USER_JAILS = """
[jail.slow]
kinds = ["auth-failure"]
findtime = "1h"
maxretry = 6
actions = ["nft"]

[jail.guessing]
kinds = ["auth-failure"]
key = "user"
maxretry = 50
actions = ["notify"]

[jail.outbound]
kinds = ["submission"]
key = "user"
maxretry = 50
actions = ["notify"]
"""


def test_unban_semantics(env: tuple[Link, Path]) -> None:
    """Several keys at once; a network frees the addresses banned inside it; only the lifting
    jail forgets its count; the message names the actions undone; a second unban fails."""
    link, tmp = env
    log = tmp / "mail.log"
    log.write_bytes(b"")
    etc = tmp / "etc"
    config = write_config(etc, [str(log)], extra=SLOW_AND_USER_JAILS)
    (etc / "actions.d" / "notify.toml").write_text(
        '[action]\ntype = "notify"\nto = "root"\nsender = "mailban"\nsendmail = ["/bin/true"]\n')
    d = start(link, config)
    fail(log, CLIENT4)  # jail auth bans at 3; jail slow has counted 3 of 6
    wait_for(lambda: CLIENT4 in link.nft_elements(), what="the ban")
    res = d.cli("unban", "198.51.100.0/24")
    assert res.stdout == "lifted 1 address ban inside 198.51.100.0/24 (jail auth); undone: nft\n", res.stdout
    assert CLIENT4 not in link.nft_elements()
    explained = json.loads(d.cli("explain", CLIENT4, "--json").stdout)
    assert [(c["jail"], c["count"]) for c in explained["counting"]] == [("slow", 3)]

    d.cli("ban", OTHER4, "--for", "1m")
    fail(log, CLIENT4)
    wait_for(lambda: CLIENT4 in link.nft_elements(), what="the second ban")  # auth: 3 again; slow: 6
    res = d.cli("unban", CLIENT4, OTHER4)
    assert res.stdout.splitlines() == [f"unbanned {CLIENT4} (jails auth, slow); undone: nft",
                                       f"unbanned {OTHER4} (jail manual); undone: nft"], res.stdout
    assert link.nft_elements() == {}
    res = d.cli("unban", CLIENT4, check=False)
    assert res.returncode != 0 and f"nothing to lift: {CLIENT4} has no ban" in res.stderr, res.stderr

    # ban --user without --jail takes the outbound jail's actions and says so
    res = d.cli("ban", "--user", "alice@example.test", "--for", "2h")
    assert res.stdout.strip() == ("banned user alice@example.test for 2h via notify "
                                  "(jail manual, the actions of jail outbound)"), res.stdout


def test_status_of_one_jail_durations_plurals_and_explain_of_an_ignored_address(env: tuple[Link, Path]) -> None:
    link, tmp = env
    log = tmp / "mail.log"
    log.write_bytes(b"")
    d = start(link, write_config(tmp / "etc", [str(log)]))
    fail(log, CLIENT4)
    wait_for(lambda: CLIENT4 in link.nft_elements(), what="the ban")
    out = d.cli("status", "auth").stdout.splitlines()
    assert out[0] == "jail auth: 3 events per ip in 10m -> ban for 1h via nft; 0 keys counting, 1 banned", out
    assert out[1].startswith(f"ip {CLIENT4}  jail auth  until ") and out[1].endswith("3 events  via nft"), out
    res = d.cli("status", "nosuch", check=False)
    assert res.returncode == 1 and "there is no jail 'nosuch'; the jails are: auth" in res.stderr
    assert json.loads(d.cli("status", "auth", "--json").stdout)["bans"][0]["key"] == CLIENT4
    explained = d.cli("explain", "127.0.0.1").stdout
    assert "never banned: it is loopback (mailban counts nothing for it)" in explained, explained


def test_an_action_whose_mta_is_absent_is_idle_until_a_decision_needs_it(env: tuple[Link, Path]) -> None:
    link, tmp = env
    log = tmp / "mail.log"
    log.write_bytes(b"")
    etc = tmp / "etc"
    config = write_config(etc, [str(log)], extra='\n[jail.slowdown]\nkinds = ["reject"]\nactions = ["defer"]\n')
    (etc / "actions.d" / "defer.toml").write_text(
        f'[action]\ntype = "defer"\nclient_map = "{tmp / "clients"}"\nsender_map = "{tmp / "senders"}"\n'
        'postmap = ["/bin/false"]\n')  # as on a host without postfix
    d = start(link, config)
    (action,) = [a for a in d.status()["actions"] if a["name"] == "defer"]
    assert action["error"] is None and action["idle"], action
    assert "defer (defer): idle (started when a decision needs it)" in d.cli("status").stdout
    d.cli("ban", CLIENT4, "--jail", "slowdown", "--for", "1m")  # decided, recorded; the action fails
    (action,) = [a for a in d.status()["actions"] if a["name"] == "defer"]
    assert action["error"] and "/bin/false" in action["error"], action
    assert "defer (defer): FAILING" in d.cli("status").stdout
