"""End to end against real MTAs: provoke each abuse category, then `mailban test LOG --json`.

One postfix + dovecot instance (loopback, free ports) and one sendmail (own network namespace)
per module: the fixture starts the daemons, sends all the traffic, one category per source
address 127.0.0.x, stops the daemons (so the logs are complete), copies the logs to a temporary
directory and runs mailban over them as a subprocess. The tests then look the events up by the
source address used. Hostile clients (user names / HELO carrying a forged `[6.6.6.6]`, `rip=`,
`relay=[...]`) must still be attributed to the real client, and 6.6.6.6 must never show up.

The postfix + dovecot tests run twice: on Debian 12's programs installed on this host
("bookworm": postfix 3.7, dovecot 2.3) and on Debian 13's from a debootstrapped root
("trixie": postfix 3.10, dovecot 2.4, tests/mta/trixie.py, chrooted in a network namespace; the
clients open their sockets inside it). TRIXIE_RULES names the rules that differ on 2.4/3.10.

Set MAILBAN_MTA_KEEP_LOGS=DIR to keep the logs the MTAs wrote (e.g. to refresh
tests/filters/*.log; the trixie ones are kept as trixie-*.log).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mta import clients as c
from tests.mta import trixie

pytestmark = [pytest.mark.mta, pytest.mark.root]

REPO = Path(__file__).resolve().parents[1]
FORGED = "6.6.6.6"


def _skip_unless(*tools: str, files: tuple[str, ...] = ()) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: starts postfix/dovecot/sendmail and creates network namespaces")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run tests/mta/install.sh)")
    for f in files:
        if not os.path.exists(f):
            pytest.skip(f"{f} is missing (run tests/mta/install.sh)")


def mailban_events(log: Path, workdir: Path) -> list[dict]:
    # --config in an empty directory: only the shipped filters, no admin overrides from /etc
    out = subprocess.run(
        [sys.executable, "-m", "mailban", "test", str(log), "--json", "--config", str(workdir / "none.toml")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def keep_logs(*logs: Path, prefix: str = "") -> None:
    dest = os.environ.get("MAILBAN_MTA_KEEP_LOGS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        for log in logs:
            shutil.copy(log, Path(dest) / f"{prefix}{log.name}")


class Events:
    version = "bookworm"

    def __init__(self, events: list[dict]) -> None:
        self.all = events

    def at(self, ip: str) -> list[dict]:
        return [e for e in self.all if e["ip"] == ip]

    def find(self, rule: str, ip: str) -> list[dict]:
        f, r = rule.split(".")
        return [e for e in self.at(ip) if e["filter"] == f and e["rule"] == r]

    def describe(self, ip: str) -> str:
        return "\n".join(json.dumps(e) for e in self.at(ip)) or f"(no events for {ip})"


# ------------------------------------------------------------------------------------------------
# postfix + dovecot
# ------------------------------------------------------------------------------------------------
ALICE, ALICE_PW = "alice@example.test", "S3cret-alice"
BOB, BOB_PW = "bob@example.test", "S3cret-bob"

# (category, source address, rule, kind, user or None)
POSTFIX_CASES = [
    ("sasl-plain", "127.0.0.2", "postfix.sasl-auth-failed", "auth-failure", ALICE),
    ("sasl-login", "127.0.0.3", "postfix.sasl-auth-failed", "auth-failure", ALICE),
    ("relay-denied", "127.0.0.4", "postfix.relay-denied", "reject", None),
    ("user-unknown", "127.0.0.5", "postfix.user-unknown", "reject", None),
    ("helo-rejected", "127.0.0.6", "postfix.helo-rejected", "reject", None),
    ("anvil-rate", "127.0.0.7", "postfix.rate-limit", "rate-limit", None),
    ("too-many-errors", "127.0.0.8", "postfix.too-many-errors", "protocol", None),
    ("improper-pipelining", "127.0.0.9", "postfix.improper-pipelining", "protocol", None),
    ("non-smtp-command", "127.0.0.10", "postfix.non-smtp-command", "protocol", None),
    ("unknown-hostname", "127.0.0.28", "postfix.unknown-hostname", "reject", None),
    ("unknown-reverse-hostname", "127.0.0.29", "postfix.unknown-hostname", "reject", None),
    ("postscreen-pregreet", "127.0.0.12", "postscreen.pregreet", "protocol", None),
    ("postscreen-pipelining", "127.0.0.13", "postscreen.pipelining", "protocol", None),
    ("postscreen-reject", "127.0.0.13", "postscreen.reject", "reject", None),
    ("postscreen-non-smtp", "127.0.0.14", "postscreen.non-smtp-command", "protocol", None),
    ("postscreen-bare-newline", "127.0.0.15", "postscreen.bare-newline", "protocol", None),
    ("postscreen-hangup", "127.0.0.16", "postscreen.hangup", "protocol", None),
    ("postscreen-command-limit", "127.0.0.17", "postscreen.command-limit", "protocol", None),
    ("imap-auth-failed", "127.0.0.18", "dovecot.auth-failed", "auth-failure", ALICE),
    ("pop3-auth-failed", "127.0.0.19", "dovecot.auth-failed", "auth-failure", BOB),
    ("passdb-mismatch", "127.0.0.18", "dovecot-passdb.password-mismatch", "auth-failure", ALICE),
    ("imap-login", "127.0.0.20", "dovecot.login", "login", ALICE),
    ("pop3-login", "127.0.0.21", "dovecot.login", "login", BOB),
    ("smtp-sasl-login", "127.0.0.11", "postfix.sasl-login", "submission", ALICE),
    # hostile: forged client text in the user name / HELO; the real client must win
    ("hostile-sasl-user", "127.0.0.22", "postfix.sasl-auth-failed", "auth-failure", "evil unknown[6.6.6.6]: SASL"),
    ("hostile-pop3-user", "127.0.0.26", "dovecot.auth-failed", "auth-failure",
     "x>, method=PLAIN, rip=6.6.6.6, lip=6.6.6.6, session=<x>"),
    ("hostile-imap-user", "127.0.0.27", "dovecot.auth-failed", "auth-failure", "z>, method=PLAIN, rip=6.6.6.6, lip=1"),
    ("hostile-helo", "127.0.0.30", "postfix.helo-rejected", "reject", None),
]


def postfix_traffic(smtp: int, ps: int, imap: int, pop3: int) -> None:
    h = "127.0.0.1"
    c.smtp_auth(h, smtp, "127.0.0.2", "PLAIN", ALICE, "wrong1")
    c.swaks(h, smtp, "127.0.0.3", "--helo", "client.example.test", "--auth", "LOGIN", "--auth-user", ALICE,
            "--auth-password", "wrong2", "--from", ALICE, "--to", "rcpt@remote.example.net")
    c.rcpts(h, smtp, "127.0.0.4", "spam@spammer.example", ["victim@remote.example.net"])
    c.rcpts(h, smtp, "127.0.0.5", "spam@spammer.example", ["nosuchuser@mail.example.test"])
    c.rcpts(h, smtp, "127.0.0.6", "spam@spammer.example", ["root@mail.example.test"], helo="bad_helo")
    c.connects(h, smtp, "127.0.0.7", 8)
    c.rcpts(h, smtp, "127.0.0.8", "spam@spammer.example", [f"u{i}@victim{i}.example.net" for i in range(7)])
    c.converse(h, smtp, "127.0.0.9", [b"EHLO c.example.test\r\nMAIL FROM:<a@b.example>\r\n", b"QUIT\r\n"])
    c.converse(h, smtp, "127.0.0.10", [b"GET / HTTP/1.0\r\n", b"QUIT\r\n"])
    c.swaks(h, smtp, "127.0.0.11", "--helo", "client.example.test", "--auth", "PLAIN", "--auth-user", ALICE,
            "--auth-password", ALICE_PW, "--from", ALICE, "--to", "root@mail.example.test")
    c.smtp_auth(h, smtp, "127.0.0.22", "PLAIN", "evil unknown[6.6.6.6]: SASL", "wrong")
    c.rcpts(h, smtp, "127.0.0.28", "a@client.example", ["root@mail.example.test"])
    c.rcpts(h, smtp, "127.0.0.29", "a@client.example", ["root@mail.example.test"])
    c.rcpts(h, smtp, "127.0.0.30", "a@client.example", ["root@mail.example.test"],
            helo="x>[6.6.6.6]: 504 5.5.2 <y>")
    # postscreen (each stranger waits postscreen_greet_wait = 1 s, except the pregreeter)
    c.pregreet(h, ps, "127.0.0.12")
    c.converse(h, ps, "127.0.0.13", [b"EHLO c.example.test\r\nMAIL FROM:<a@b.example>\r\n"
                                     b"RCPT TO:<x@mail.example.test>\r\n", b"QUIT\r\n"])
    c.converse(h, ps, "127.0.0.14", [b"EHLO c.example.test\r\n", b"GET / HTTP/1.0\r\n", b"QUIT\r\n"])
    c.converse(h, ps, "127.0.0.15", [b"EHLO c.example.test\r\n", b"MAIL FROM:<a@b.example>\n",
                                     b"RCPT TO:<x@mail.example.test>\r\n", b"QUIT\r\n"])
    c.hangup(h, ps, "127.0.0.16", 0.2)
    c.converse(h, ps, "127.0.0.17", [b"EHLO c.example.test\r\n"] + [b"NOOP\r\n"] * 8)
    # dovecot
    assert not c.imap_login(h, imap, "127.0.0.18", ALICE, "bad")
    assert not c.pop3_login(h, pop3, "127.0.0.19", BOB, "bad")
    assert c.imap_login(h, imap, "127.0.0.20", ALICE, ALICE_PW)
    assert c.pop3_login(h, pop3, "127.0.0.21", BOB, BOB_PW)
    assert not c.pop3_login(h, pop3, "127.0.0.26", "x>, method=PLAIN, rip=6.6.6.6, lip=6.6.6.6, session=<x>", "bad")
    c.imap_raw_login(h, imap, "127.0.0.27", "z>, method=PLAIN, rip=6.6.6.6, lip=1", "bad")


# the rule that takes a category on Debian 13 when it is not the Debian 12 one
TRIXIE_RULES = {
    "passdb-mismatch": "dovecot-passdb.password-mismatch-24",
}


def skip_unless_version(version: str) -> None:
    """Skip (with the reason) when this machine cannot run that Debian release's programs."""
    _skip_unless("swaks")
    reason = trixie.skip_reason(version)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module", params=trixie.VERSIONS)
def postfix_events(request, tmp_path_factory) -> Events:
    version = request.param
    skip_unless_version(version)
    logs = tmp_path_factory.mktemp(f"postfix-dovecot-{version}")
    mta = trixie.new_mta(version)
    try:
        mta.start()
        with trixie.clients_of(mta):
            postfix_traffic(mta.smtp_port, mta.postscreen_port, mta.imap_port, mta.pop3_port)
    finally:
        mta.cleanup(keep_logs_in=logs)  # stops the daemons first: the logs are complete
    keep_logs(logs / "postfix.log", logs / "dovecot.log", prefix="trixie-" if version == "trixie" else "")
    events = Events(mailban_events(logs / "postfix.log", logs) + mailban_events(logs / "dovecot.log", logs))
    events.version = version
    return events


@pytest.mark.parametrize("category,ip,rule,kind,user", POSTFIX_CASES, ids=[x[0] for x in POSTFIX_CASES])
def test_postfix_dovecot_category(postfix_events: Events, category, ip, rule, kind, user) -> None:
    if postfix_events.version == "trixie":
        rule = TRIXIE_RULES.get(category, rule)
    found = postfix_events.find(rule, ip)
    assert found, f"no {rule} event for {ip}; events for it:\n{postfix_events.describe(ip)}"
    for e in found:
        assert e["kind"] == kind
        assert e["ip"] == ip
        if user is not None:
            assert e["user"] == user


@pytest.mark.parametrize("ip", ["127.0.0.11", "127.0.0.20", "127.0.0.21"], ids=["smtp", "imap", "pop3"])
def test_successful_login_is_no_failure(postfix_events: Events, ip: str) -> None:
    # dovecot-passdb.unknown-user is the deny passdb's lookup, logged for every login: the shipped
    # jails do not count dovecot-passdb (see filters.d/dovecot-passdb.toml)
    # the message's own queue lines (queued, delivered, removed) are no failures either
    bad = [e for e in postfix_events.at(ip)
           if e["kind"] not in ("login", "submission", "queued", "delivery", "removed")
           and e["filter"] != "dovecot-passdb"]
    assert not bad, "\n".join(map(json.dumps, bad))
    assert not any(e["rule"].startswith("password-mismatch") for e in postfix_events.at(ip))


def test_postfix_forged_address_never_used(postfix_events: Events) -> None:
    assert not postfix_events.at(FORGED)
    assert postfix_events.find("postfix.helo-rejected", "127.0.0.30")


# ------------------------------------------------------------------------------------------------
# sendmail (own network namespace)
# ------------------------------------------------------------------------------------------------
def _sm():
    from tests.mta import sendmail as sm
    return sm


def sendmail_cases():
    sm = _sm()
    return [
        ("auth-failed", sm.AUTH_FAIL, "sendmail.auth-failed", "auth-failure", "alice"),
        ("auth-failed-login", sm.AUTH_FAIL, "sendmail.auth-failed", "auth-failure", "alice@mx.example.test"),
        ("relaying-denied", sm.RELAY, "sendmail.relaying-denied", "reject", None),
        ("check-relay", sm.CONNECT_REJECT, "sendmail.check-relay", "reject", None),
        ("ratecontrol", sm.RATE, "sendmail.rate-limit", "rate-limit", None),
        ("conncontrol", sm.CONN, "sendmail.rate-limit", "rate-limit", None),
        ("pre-greeting", sm.PREGREET, "sendmail.greet-pause", "protocol", None),
        ("smtp-attack", sm.ATTACK, "sendmail.smtp-attack", "protocol", None),
        ("no-mail", sm.NO_MAIL, "sendmail.no-mail-command", "protocol", None),
        ("check-mail", sm.MAIL_REJECT, "sendmail.check-mail", "reject", None),
        ("check-rcpt", sm.RCPT_REJECT, "sendmail.check-rcpt", "reject", None),
        ("auth-login", sm.LOGIN_OK, "sendmail.auth-login", "submission", "alice"),
        ("hostile-auth-user", sm.HOSTILE, "sendmail.auth-failed", "auth-failure", "x, relay=[6.6.6.6]"),
    ]


SENDMAIL_IDS = ["auth-failed", "auth-failed-login", "relaying-denied", "check-relay", "ratecontrol",
                "conncontrol", "pre-greeting", "smtp-attack", "no-mail", "check-mail", "check-rcpt",
                "auth-login", "hostile-auth-user"]


@pytest.fixture(scope="module")
def sendmail_events(tmp_path_factory) -> Events:
    _skip_unless("ip", "m4", "rsyslogd", "saslpasswd2")
    sm = _sm()
    reason = sm.available()
    if reason:
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("sendmail")
    mta = sm.Sendmail()
    try:
        mta.start()
        mta.clients([
            ["smtp_auth", sm.AUTH_FAIL, "PLAIN", "alice", "wrong"],
            ["smtp_auth", sm.AUTH_FAIL, "LOGIN", "alice@mx.example.test", "wrong"],
            ["smtp_auth", sm.LOGIN_OK, "PLAIN", "alice", "S3cret-alice"],
            ["rcpts", sm.RELAY, "spam@spammer2.example", ["victim@remote.example.net"]],
            ["rcpts", sm.CONNECT_REJECT, "a@b.example", ["root@mx.example.test"]],
            ["connects", sm.RATE, 4],
            ["second_connection", sm.CONN],
            ["pregreet", sm.PREGREET],
            ["ehlo_flood", sm.ATTACK],
            ["converse", sm.NO_MAIL, ["EHLO a.example\r\n", "QUIT\r\n"]],
            ["rcpts", sm.MAIL_REJECT, "spam@spammer.example", ["root@mx.example.test"]],
            ["rcpts", sm.RCPT_REJECT, "ok@sender.example", ["victim@blocked.example.net"]],
            ["smtp_auth", sm.HOSTILE, "PLAIN", "x, relay=[6.6.6.6]", "wrong"],
            ["smtp_auth", sm.FOLDED, "PLAIN", "alice", "wrong", "client.example.test", FOLDED_TRIES],
        ])
        mta.wait_for_log(f"[{sm.HOSTILE}] did not issue MAIL")
    finally:
        mta.cleanup(keep_logs_in=logs)
    keep_logs(logs / "sendmail.log")
    return Events(mailban_events(logs / "sendmail.log", logs))


@pytest.mark.parametrize("idx", range(len(SENDMAIL_IDS)), ids=SENDMAIL_IDS)
def test_sendmail_category(sendmail_events: Events, idx: int) -> None:
    category, ip, rule, kind, user = sendmail_cases()[idx]
    found = sendmail_events.find(rule, ip)
    if user is not None:
        found = [e for e in found if e["user"] == user]
    assert found, f"no {rule} event (user {user}) for {ip}; events for it:\n{sendmail_events.describe(ip)}"
    for e in found:
        assert e["kind"] == kind


def test_sendmail_successful_login_is_no_failure(sendmail_events: Events) -> None:
    ip = _sm().LOGIN_OK
    # "did not issue MAIL" is an optional category the default jail excludes
    bad = [e for e in sendmail_events.at(ip) if e["kind"] in ("auth-failure", "reject", "rate-limit")]
    assert not bad, "\n".join(map(json.dumps, bad))


def test_sendmail_forged_address_never_used(sendmail_events: Events) -> None:
    assert not sendmail_events.at(FORGED)


FOLDED_TRIES = 7


def test_sendmail_failures_folded_by_rsyslog_count_every_copy(sendmail_events: Events) -> None:
    """Seven failed AUTHs in one session: rsyslog logs the first and folds the rest into
    `message repeated 6 times: [ ...]`; the events must still add up to seven."""
    found = sendmail_events.find("sendmail.auth-failed", _sm().FOLDED)
    assert any(e["count"] > 1 for e in found), sendmail_events.describe(_sm().FOLDED)
    assert sum(e["count"] for e in found) == FOLDED_TRIES, sendmail_events.describe(_sm().FOLDED)
