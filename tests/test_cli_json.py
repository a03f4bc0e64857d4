"""Every read command speaks JSON for scripts: check (also when it refuses), test, replay and the
tuning report (status, list and explain are checked against a running daemon elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mailban import config
from tests.logsynth import T0, Log


def mailban(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailban", *args], capture_output=True, text=True, timeout=120)


def test_check_json(tmp_path: Path) -> None:
    ok = json.loads(mailban("check", "--json", "--config", str(config.SHIPPED_DEFAULT)).stdout)
    assert ok["ok"] and {j["name"] for j in ok["jails"]} >= {"mail-abuse", "account-guess", "outbound-user"}
    bad = tmp_path / "mailban.toml"
    bad.write_text('[jail.x]\nkinds = ["nope"]\n')
    proc = mailban("check", "--json", "--config", str(bad))
    refused = json.loads(proc.stdout)
    assert proc.returncode == 2 and not refused["ok"]
    assert (refused["file"], refused["line"], refused["column"]) == (str(bad), 2, 9)


def test_test_replay_and_report_json(tmp_path: Path) -> None:
    log = Log(seed=1)
    for n in range(6):
        log.sasl_failure(T0 + n, "alice@example.test", "198.51.100.9")
    path = tmp_path / "mail.log"
    path.write_text(log.text())
    events = [json.loads(l) for l in mailban("test", str(path), "--json").stdout.splitlines()]
    assert {e["ip"] for e in events if e["kind"] == "auth-failure"} == {"198.51.100.9"}
    decisions = [json.loads(l) for l in mailban("replay", "--json", "--config", str(config.SHIPPED_DEFAULT), str(path)).stdout.splitlines()]
    assert [(d["jail"], d["key"]) for d in decisions] == [("mail-abuse", "198.51.100.9")]
    html = tmp_path / "r.html"
    proc = mailban("replay", "--report", "--json", "--html", str(html), "--config", str(config.SHIPPED_DEFAULT), str(path))
    report = {r["jail"]: r for r in json.loads(proc.stdout)}
    assert report["mail-abuse"]["top"] == [["198.51.100.9", 6]] and html.exists()


def test_replay_warns_about_a_jail_that_would_ban_everyone(tmp_path: Path) -> None:
    log = Log(seed=4)
    for n in range(60):  # ordinary authenticated senders, one message each
        log.authenticated_message(T0 + n, f"user{n}@example.test", f"203.0.113.{n + 1}")
    path = tmp_path / "mail.log"
    path.write_text(log.text())
    cfg = tmp_path / "mailban.toml"
    cfg.write_text('[mailban]\nshipped_jails = false\nlogs = ["/x"]\n[jail.everyone]\nkinds = ["submission"]\nmaxretry = 1\nactions = ["nft"]\n')
    proc = mailban("replay", "--config", str(cfg), str(path))
    assert "WARNING: jail everyone would act on 60 of the 60 ips in these logs (100%)" in proc.stderr
    quiet = mailban("replay", "--config", str(config.SHIPPED_DEFAULT), str(path))
    assert "WARNING" not in quiet.stderr
