"""The decision stage (mailban/core/decisions.py) that the daemon and replay share: the rate limit
(max_bans_per_minute) and prefix folds, fed bans from real jails and a fake clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mailban.core.decisions import Valve, decide
from mailban.core.jails import IgnoreList, Jail, JailSpec
from mailban.core.records import Event

HOUR = 3600.0


def make(name: str = "j", **kw: object) -> Jail:
    base: dict[str, object] = {"name": name, "kinds": frozenset({"auth-failure"}), "findtime": 600.0,
                               "maxretry": 3, "bantime": HOUR}
    base.update(kw)
    spec = JailSpec(**base)  # type: ignore[arg-type]
    return Jail(spec, IgnoreList(spec.ignoreip))


def fail(j: Jail, ip: str, t: float, n: int = 3) -> list:
    out = []
    for i in range(n):
        out += j.offer(Event(time=t + i, kind="auth-failure", filter="postfix", rule="r", ip=ip,
                             line=f"fail [{ip}]"), t + i)
    return out


def test_the_valve_holds_back_past_its_limit_per_jail_and_minute_and_forgets_the_key() -> None:
    j, k = make("j"), make("k")
    valve = Valve(limit=2)
    jails = {"j": j, "k": k}
    acted, held = [], []
    for n in range(4):
        kept, h, _ = decide(fail(j, f"198.51.100.{n}", 10.0 * n), valve, jails)
        acted += kept
        held += h
    assert [b.key for b in acted] == ["198.51.100.0", "198.51.100.1"]
    assert [s.ban.key for s in held] == ["198.51.100.2", "198.51.100.3"]
    assert held[0].reason == "more than 2 decisions per minute in jail j"
    # another jail has its own minute
    (other,), _, _ = decide(fail(k, "203.0.113.1", 35.0), valve, jails)
    assert other.jail == "k"
    # a held-back key was forgotten: counted afresh, and acted on once the minute has passed
    assert "198.51.100.3" not in j.banned and "198.51.100.3" not in j.windows
    assert decide(fail(j, "198.51.100.3", 50.0, n=2), valve, jails) == ([], [], [])
    (late,), h, _ = decide(fail(j, "198.51.100.3", 75.0, n=1), valve, jails)
    assert late.key == "198.51.100.3" and h == []


def test_a_prefix_ban_folds_the_single_bans_of_its_jail_inside_it() -> None:
    j = make("j", prefix4=24, prefix_min_ips=3, maxretry=3)
    other = make("other")
    jails = {"j": j, "other": other}
    acted, folds = [], []
    decide(fail(other, "198.51.100.9", 0.0), None, jails)  # another jail's ban in the same /24
    for n, ip in enumerate(["198.51.100.1", "198.51.100.2"]):
        kept, _, f = decide(fail(j, ip, 10.0 * n), None, jails)
        acted += kept
        folds += f
    assert [b.key for b in acted] == ["198.51.100.1", "198.51.100.2"] and folds == []
    kept, _, folds = decide(fail(j, "198.51.100.3", 30.0), None, jails)
    assert [(b.key_type, b.key) for b in kept][-1] == ("net", "198.51.100.0/24")
    (fold,) = folds
    assert fold.net.key == "198.51.100.0/24" and set(fold.ips) <= {"198.51.100.1", "198.51.100.2", "198.51.100.3"}
    assert {"198.51.100.1", "198.51.100.2"} <= set(fold.ips)
    assert "198.51.100.9" in other.banned  # not this jail's
    # the jail forgot the folded single bans: after the prefix ban ends, an address that comes
    # back is counted and banned again
    assert not any(ip in j.banned for ip in fold.ips)
    after = fold.net.until + 1
    again, _, _ = decide(fail(j, "198.51.100.1", after), None, jails)
    assert [(b.key_type, b.key) for b in again][:1] == [("ip", "198.51.100.1")]


def test_replay_prints_what_the_valve_holds_back(tmp_path: Path) -> None:
    """replay runs the daemon's decision stage: past max_bans_per_minute it says what the daemon
    would have held back, in text and JSON."""
    log = tmp_path / "mail.log"
    log.write_text("".join(
        f"Dec  3 09:00:{n:02d} mx postfix/smtpd[1]: warning: unknown[198.51.100.{n}]: SASL LOGIN "
        f"authentication failed: x\n" for n in range(10)))
    conf = tmp_path / "mailban.toml"
    conf.write_text('[mailban]\nshipped_jails = false\nmax_bans_per_minute = 4\n\n[jail.auth]\n'
                    'kinds = ["auth-failure"]\nmaxretry = 1\nfindtime = "10m"\nbantime = "1h"\nactions = ["nft"]\n')
    run = [sys.executable, "-m", "mailban", "replay", "--config", str(conf), str(log)]
    out = subprocess.run([*run, "--json"], capture_output=True, text=True, check=True).stdout
    decisions = [json.loads(line) for line in out.splitlines()]
    assert [d["decision"] for d in decisions].count("ban") == 4
    held = [d for d in decisions if d["decision"] == "suppressed"]
    assert [d["key"] for d in held] == [f"198.51.100.{n}" for n in range(4, 10)]
    assert held[0]["reason"] == "more than 4 decisions per minute in jail auth"
    text = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "4 decisions (6 more held back by max_bans_per_minute)" in text
    assert "held back: ban ip 198.51.100.9" in text


def test_forget_all_lifts_prefix_bans_too() -> None:
    """`mailban unban --all`: a prefix the jail had banned no longer stops its addresses from
    being counted (before, only single bans and windows were forgotten)."""
    j = make("j", prefix4=24, prefix_min_ips=3, maxretry=3)
    for n in range(1, 4):
        fail(j, f"198.51.100.{n}", 10.0 * n)
    assert "198.51.100.0/24" in j.banned_nets
    assert fail(j, "198.51.100.50", 40.0) == []  # inside the banned prefix: not counted
    j.forget_all()
    assert not (j.banned or j.banned_nets or j.windows or j.nets)
    (ban, *_rest) = fail(j, "198.51.100.50", 60.0)
    assert (ban.key_type, ban.key) == ("ip", "198.51.100.50")
