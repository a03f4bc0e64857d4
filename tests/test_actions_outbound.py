"""The outbound actions on real files with Debian's real postmap (no MTA needs to run): maps
written atomically, reversible, idempotent, and hostile names refused rather than written."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mailban.actions.defer import DeferAction
from mailban.actions.executor import ActionError, run, safe_token
from mailban.actions.notify import NotifyAction
from mailban.actions.sasl_disable import SaslDisableAction
from mailban.core.records import Ban

needs_postmap = pytest.mark.skipif(shutil.which("postmap") is None, reason="postfix's postmap is not installed")
HOSTILE = ["a b", "x\ny", "-oops", "evil:0:0", "#c", "tab\there", 'quo"te', "back\\slash", ""]


def ban(key_type: str, key: str, **kw: object) -> Ban:
    return Ban(jail="j", key_type=key_type, key=key, time=1000.0, until=4600.0, count=200,
               findtime=3600.0, actions=("x",), **kw)  # type: ignore[arg-type]


def query(map_path: Path, key: str) -> str | None:
    proc = subprocess.run(["postmap", "-q", key, f"hash:{map_path}"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


@needs_postmap
def test_sasl_disable_writes_both_sides_and_undoes_them(tmp_path: Path) -> None:
    deny, sasl_map = tmp_path / "mailban-deny", tmp_path / "sasl_access"
    action = SaslDisableAction("sasl-disable", {"dovecot_deny_file": str(deny), "postfix_map": str(sasl_map),
                                                "kick": [], "postfix_reload": ["true"]})
    action.start([])
    assert deny.read_text() == "" and query(sasl_map, "alice@example.test") is None
    action.ban([ban("user", "alice@example.test"), ban("ip", "198.51.100.1")])
    action.ban([ban("user", "alice@example.test")])  # idempotent
    assert deny.read_text() == "alice@example.test\n"
    assert query(sasl_map, "alice@example.test") == "REJECT account disabled by mailban, contact support"
    action.unban([ban("user", "alice@example.test")])
    assert deny.read_text() == "" and query(sasl_map, "alice@example.test") is None
    # a restart rebuilds the files from the database's active bans
    fresh = SaslDisableAction("sasl-disable", {"dovecot_deny_file": str(deny), "postfix_map": str(sasl_map),
                                               "kick": [], "postfix_reload": ["true"]})
    fresh.start([ban("user", "bob@example.test")])
    assert deny.read_text() == "bob@example.test\n"


@needs_postmap
def test_sasl_disable_refuses_names_it_cannot_write_safely(tmp_path: Path) -> None:
    deny, sasl_map = tmp_path / "deny", tmp_path / "sasl_access"
    action = SaslDisableAction("s", {"dovecot_deny_file": str(deny), "postfix_map": str(sasl_map),
                                     "kick": [], "postfix_reload": ["true"]})
    action.start([])
    for name in HOSTILE[:-1]:
        action.ban([ban("user", name)])  # recorded and shown, never written, not retried
    assert deny.read_text() == ""
    assert "REJECT" not in sasl_map.read_text()
    health = action.health() or ""
    assert "unsafe names" in health and "'a b'" in health
    action.unban([ban("user", name) for name in HOSTILE[:-1]])
    assert action.health() is None


@needs_postmap
def test_defer_maps_clients_and_senders(tmp_path: Path) -> None:
    clients, senders = tmp_path / "clients", tmp_path / "senders"
    action = DeferAction("defer", {"client_map": str(clients), "sender_map": str(senders)})
    action.start([ban("ip", "198.51.100.9")])
    action.ban([ban("sender", "spam@example.test"), ban("user", "ignored")])
    assert query(clients, "198.51.100.9") == "450 4.7.1 Service temporarily limited, please try again later"
    assert query(senders, "spam@example.test") is not None
    action.unban([ban("ip", "198.51.100.9"), ban("sender", "spam@example.test")])
    assert query(clients, "198.51.100.9") is None and query(senders, "spam@example.test") is None
    assert stat.S_IMODE(clients.stat().st_mode) == 0o644


def test_defer_refuses_a_permanent_reply() -> None:
    with pytest.raises(ValueError, match="4xx"):
        DeferAction.validate({"reply": "550 5.7.1 go away"})


def fake_sendmail(tmp_path: Path) -> Path:
    """Stands in for the MTA's sendmail(1) in this unit test only: the end-to-end test in
    tests/test_outbound_e2e.py delivers through the real postfix into the admin's mailbox."""
    script = tmp_path / "sendmail"
    script.write_text(f"#!{sys.executable}\nimport sys, json\n"
                      f"open({str(tmp_path / 'sent.jsonl')!r}, 'a').write(json.dumps([sys.argv[1:], sys.stdin.read()]) + '\\n')\n")
    script.chmod(0o755)
    return tmp_path / "sent.jsonl"


def test_notify_sends_one_digest_per_interval_and_escapes_attacker_text(tmp_path: Path) -> None:
    import json

    sent = fake_sendmail(tmp_path)
    now = [1000.0]
    action = NotifyAction("notify", {"to": "admin@example.test", "sendmail": str(tmp_path / "sendmail"),
                                     "interval": "10m", "hostname": "mx1.example.test"}, clock=lambda: now[0])
    hostile = "alice\nBcc: victim@example.net $(reboot)"
    action.ban([ban("user", hostile, lines=("line one", "line\x1b[31m two"), ips=("198.51.100.1",))])
    for i in range(500):  # the rest of the incident: no mail yet
        now[0] += 1
        action.ban([ban("ip", f"198.51.100.{i % 250 + 2}")])
    mails = [json.loads(line) for line in sent.read_text().splitlines()]
    assert len(mails) == 1
    argv, text = mails[0]
    assert argv == ["-i", "-f", "mailban", "admin@example.test"]
    headers, _, body = text.partition("\n\n")
    assert "Bcc" not in headers and "victim" not in headers
    assert "alice\\nBcc: victim@example.net $(reboot)" in body  # shown, escaped, on one line
    assert "\x1b" not in body and "\\x1b[31m" in body
    assert "undo: mailban unban --user 'alice\\nBcc" in body
    now[0] += 600
    action.tick(now[0])
    mails = sent.read_text().splitlines()
    assert len(mails) == 2
    assert "and 300 more decisions" in json.loads(mails[1])[1]


def test_executor_never_uses_a_shell_and_reports_failures(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    out = run(["echo", f"$(touch {marker}); `touch {marker}`"])
    assert b"$(touch" in out and not marker.exists()
    with pytest.raises(ActionError, match="not found"):
        run(["/nonexistent/program"])
    with pytest.raises(ActionError, match="exited with 1"):
        run(["false"])
    with pytest.raises(ActionError, match="within 0.2s"):
        run(["sleep", "5"], timeout=0.2)
    for name in HOSTILE:
        with pytest.raises(ActionError):
            safe_token(name, "user")


@needs_postmap
def test_sasl_disable_never_kicks_with_a_name_doveadm_reads_as_a_mask(tmp_path: Path) -> None:
    # doveadm kick takes a mask: "*" or "?" are wildcards, an address or network kicks by client
    # address. A banned account named like that must not disconnect everyone else.
    kicked = tmp_path / "kicked"
    recorder = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')", str(kicked)]
    action = SaslDisableAction("s", {"dovecot_deny_file": str(tmp_path / "deny"),
                                     "postfix_map": str(tmp_path / "sasl_access"),
                                     "postfix_reload": ["true"], "kick": recorder})
    action.start([])
    names = ["*", "a*@example.test", "b?b", "127.0.0.1", "10.0.0.0/8", "::1", "alice@example.test"]
    action.ban([ban("user", n) for n in names])
    assert kicked.read_text().splitlines() == ["alice@example.test"]
    assert set((tmp_path / "deny").read_text().splitlines()) == set(names) - {"::1"}  # still denied (":" cannot be)
