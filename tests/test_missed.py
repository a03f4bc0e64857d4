"""`mailban test --missed`: the lines of covered programs that no rule matched, by shape."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from mailban.config import load_filters, shipped_dir
from mailban.offline.missed import collect, shape_of, write_missed
from mailban.offline import run_test


@pytest.mark.parametrize("message, shape", [
    (b"connect from mail75.mail.example.org[6.213.51.48]", "connect from host[IP]"),
    (b"connect from unknown[2001:db8::1]:2525", "connect from unknown[IP]"),
    (b"CONNECT from [222.12.84.112]:54163 to [203.0.113.1]:25", "CONNECT from [IP] to [IP]"),
    (b"disconnect from unknown[192.0.2.1] ehlo=1 auth=0/1 quit=1 commands=2/3",
     "disconnect from unknown[IP] counters"),
    (b"6AMBC3nP023582: <nosuchuser@mx.example.test>... User unknown", "QID: <*>... User unknown"),
    (b"ACDAFFAEAF: message-id=<a@b>", "QID: message-id=<*>"),
    (b"pop3-login: Disconnected (no auth attempts in 3 secs): user=<>, rip=192.0.2.9, lip=::1",
     "pop3-login: Disconnected (no auth attempts in # secs): user=<*>, rip=IP, lip=IP"),
    (b"pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=192.0.2.3",
     "pam_unix(dovecot:auth): authentication failure; logname= counters tty=dovecot ruser=* rhost=*"),
    # a time is not an address, a version that reads like one is shown as one
    (b"starting daemon (8.17.1.9): SMTP+queueing@00:30:00", "starting daemon (IP): SMTP+queueing@#:#:#"),
])
def test_shapes(message: bytes, shape: str) -> None:
    assert shape_of(message) == shape


def _log(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "mail.log"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


LINES = [
    "Nov 20 08:00:01 mx postfix/smtpd[1]: connect from unknown[192.0.2.1]",
    "Nov 20 08:00:01 mx postfix/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x",
    "Nov 20 08:00:02 mx postfix/smtpd[1]: disconnect from unknown[192.0.2.1] ehlo=1 quit=1 commands=2",
    "Nov 20 08:00:03 mx postfix/smtpd[2]: connect from unknown[192.0.2.2]",
    "Nov 20 08:00:03 mx postfix/smtpd[2]: NOQUEUE: reject: RCPT from unknown[192.0.2.2]: 450 4.2.0 <a>: Recipient address rejected: Greylisted",
    "Nov 20 08:00:04 mx CRON[3]: (root) CMD (run-parts /etc/cron.hourly) failed",  # no filter covers cron
    # a rule's literal is there but the pattern refuses the line (no address where one is promised)
    "Nov 20 08:00:05 mx postfix/smtpd[2]: warning: unknown[not-an-ip]: SASL LOGIN authentication failed: x",
]


def test_missed_groups_covered_lines_by_shape(tmp_path: Path) -> None:
    log = _log(tmp_path, LINES)
    missed = collect([log], load_filters(shipped_dir("filters.d").parent / "none"), time.time())
    groups = missed.ranked()
    assert missed.lines == 5
    assert [(g.count, g.program, g.shape, g.failure) for g in groups] == [
        (2, "postfix/smtpd", "connect from unknown[IP]", False),
        (1, "postfix/smtpd", "disconnect from unknown[IP] counters", False),
        (1, "postfix/smtpd", "NOQUEUE: reject: RCPT from unknown[IP]: # # <*>: Recipient address rejected: Greylisted", True),
        (1, "postfix/smtpd", "warning: unknown[not-an-ip]: SASL LOGIN authentication failed: x", True),
    ]
    assert (groups[0].lineno, groups[0].example) == (1, LINES[0])


def test_missed_output_text_and_json(tmp_path: Path) -> None:
    hostile = "Nov 20 08:00:05 mx postfix/smtpd[2]: warning: \x1b[31mred\x1b[0m rejected"
    log = _log(tmp_path, LINES + [hostile])
    missed = collect([log], load_filters(shipped_dir("filters.d").parent / "none"), time.time())
    text = io.StringIO()
    write_missed(missed, False, text)
    assert "\x1b" not in text.getvalue() and "\\x1b[31mred" in text.getvalue()
    assert text.getvalue().startswith("Missed: 6 lines of the programs the filters cover matched no rule, "
                                      "in 5 shapes; 3 of them look like failures (marked !).")
    out = io.StringIO()
    write_missed(missed, True, out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[0] == {"count": 2, "program": "postfix/smtpd", "shape": "connect from unknown[IP]",
                       "looks_like_failure": False, "example": {"file": log, "line": 1, "text": LINES[0]}}
    assert rows[-1]["example"]["text"] == hostile


@pytest.mark.parametrize("pure", [False, True])
def test_summary_hints_at_missed_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pure: bool) -> None:
    if pure:
        monkeypatch.setenv("MAILBAN_NO_SPEEDUPS", "1")
    filters = load_filters(shipped_dir("filters.d").parent / "none")
    out = io.StringIO()
    assert run_test([_log(tmp_path, LINES)], filters, False, out, jobs=1) == 0
    assert out.getvalue().endswith(
        f"Hint: 5 lines of the programs the filters cover matched no rule, and some read like failures (fail, "
        f"reject, denied, invalid, ...): `mailban test --missed {tmp_path / 'mail.log'}` groups them by shape.\n")
    out = io.StringIO()
    assert run_test([_log(tmp_path, LINES[:4])], filters, False, out, jobs=1) == 0
    assert "Hint" not in out.getvalue()
