"""`mailban replay` with the shipped default configuration on an hour of synthetic but exactly
formatted postfix traffic: the stolen account and the hacked web app are acted on, and no one
else -- not 300 ordinary users, not a newsletter at 150 messages an hour, not a shop's uid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mailban import config
from tests.logsynth import T0, Log, outbound_incident


def replay(log_text: str, tmp_path: Path, *extra: str) -> list[dict]:
    path = tmp_path / "mail.log"
    path.write_text(log_text)
    proc = subprocess.run([sys.executable, "-m", "mailban", "replay", "--json",
                           "--config", str(config.SHIPPED_DEFAULT), str(path), *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_only_the_stolen_account_and_the_hacked_uid_are_acted_on(tmp_path: Path) -> None:
    out = replay(outbound_incident().text(), tmp_path)
    decisions = [d for d in out if d["decision"] == "ban"]
    acted = {(d["jail"], d["key_type"], d["key"]) for d in decisions}
    assert acted == {("outbound-user", "user", "victim@example.test"), ("outbound-uid", "uid", "1033")}
    by_key = {d["key"]: d for d in decisions}
    victim = by_key["victim@example.test"]
    assert victim["count"] == 200 and victim["actions"] == ["notify", "queue-hold", "sasl-disable"]
    assert len(victim["ips"]) == 30  # used from 30 addresses within the hour
    assert by_key["1033"]["count"] == 200 and by_key["1033"]["actions"] == ["notify", "queue-hold"]


def test_distributed_password_guessing_bans_all_attackers_not_the_owner(tmp_path: Path) -> None:
    log = Log(seed=9)
    rng = log.rng
    for u in range(100):  # ordinary traffic around the attack
        log.authenticated_message(T0 + rng.uniform(0, 600), f"user{u}@example.test", f"203.0.113.{u + 1}")
    owner = "198.18.0.50"
    for n in range(60):
        for k in range(2):
            log.sasl_failure(T0 + 60 + n * 4 + k, "ceo@example.test", f"198.51.100.{n + 1}")
    log.sasl_failure(T0 + 150, "ceo@example.test", owner)          # the owner mistypes once...
    log.authenticated_message(T0 + 160, "ceo@example.test", owner)  # ...and then logs in
    decisions = replay(log.text(), tmp_path)
    users = [d for d in decisions if d["key_type"] == "user"]
    ips = {d["key"] for d in decisions if d["key_type"] == "ip"}
    assert [(d["jail"], d["key"]) for d in users] == [("account-guess", "ceo@example.test")]
    assert ips == {f"198.51.100.{n + 1}" for n in range(60)}
    assert owner not in ips
    assert all(d["cause"] == "user ceo@example.test" for d in decisions if d["key_type"] == "ip")
    assert not any(d["jail"] == "mail-abuse" for d in decisions)  # two guesses each: under 5


def test_hostile_user_names_never_choose_the_banned_address(tmp_path: Path) -> None:
    log = Log(seed=3)
    hostile = 'x" ; $(touch /tmp/pwned) rip=6.6.6.6 unknown[6.6.6.6]: SASL'
    for n in range(12):
        log.sasl_failure(T0 + n, hostile, f"198.51.100.{n + 1}")
    decisions = replay(log.text(), tmp_path)
    ips = {d["key"] for d in decisions if d["key_type"] == "ip"}
    assert ips == {f"198.51.100.{n + 1}" for n in range(12)}
    assert not Path("/tmp/pwned").exists()
