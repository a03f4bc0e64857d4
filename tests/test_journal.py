"""The journal source against real journal files (systemd-journal-remote writes them, the real
journalctl reads them): lines as a log file would hold them, forged entries refused, the cursor
resumed after a restart, appended entries followed."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailban.core.syslog import SyslogParser
from mailban.sources.journal import JournalPosition, JournalSource, to_line, trusted, TRUSTED_EXE
from tests import journal_files as jf

pytestmark = pytest.mark.skipif(not jf.available(), reason="systemd-journal-remote is not installed")


def read_until(src: JournalSource, count: int, timeout: float = 10.0) -> list[bytes]:
    lines: list[bytes] = []
    end = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < end:
        lines += src.read_lines()
        if len(lines) < count:
            time.sleep(0.05)
    return lines


def test_real_entries_become_syslog_lines_and_forgeries_are_refused(tmp_path: Path) -> None:
    journal = tmp_path / "mail.journal"
    t0 = time.time() - 60
    jf.append(journal, [
        (t0, jf.SMTPD, jf.sasl_failure("198.51.100.7")),
        (t0 + 1, jf.FORGER, jf.sasl_failure("198.51.100.66")),
        (t0 + 2, jf.RENAMED, jf.sasl_failure("198.51.100.67")),
        (t0 + 3, jf.SMTPD, "multi\nline [198.51.100.68] message"),
        (t0 + 4, jf.SMTPD, jf.sasl_failure("2001:db8::7")),
    ])
    src = JournalSource(units=("postfix@-.service",), files=(str(journal),), from_end=False)
    try:
        lines = read_until(src, 3)
        assert len(lines) == 3 and src.forged == 2
        assert b"198.51.100.66" not in b"".join(lines) and b"198.51.100.67" not in b"".join(lines)
        assert lines[1].endswith(b"multi line [198.51.100.68] message")  # one entry, one line
        header = SyslogParser(time.time()).parse(lines[0])
        assert header is not None and header.program == b"postfix/smtpd" and header.host == b"mx1"
        assert abs(header.time - t0) < 1e-3
        cursor = src.position.cursor
        assert cursor
    finally:
        src.close()
    # a restart resumes after the cursor: nothing old again, then what was appended meanwhile
    jf.append(journal, [(t0 + 10, jf.SMTPD, jf.sasl_failure("198.51.100.9"))])
    again = JournalSource(units=("postfix@-.service",), files=(str(journal),), saved=JournalPosition(cursor))
    try:
        lines = read_until(again, 1)
        assert len(lines) == 1 and b"198.51.100.9" in lines[0]
        # follow: entries appended while it runs arrive
        jf.append(journal, [(t0 + 11, jf.SMTPD, jf.sasl_failure("198.51.100.10"))])
        lines = read_until(again, 1)
        assert len(lines) == 1 and b"198.51.100.10" in lines[0]
    finally:
        again.close()


def test_trust_rules() -> None:
    assert trusted(jf.SMTPD, TRUSTED_EXE)
    assert not trusted(jf.FORGER, TRUSTED_EXE)
    assert not trusted(jf.RENAMED, TRUSTED_EXE)
    assert not trusted({**jf.SMTPD, "_COMM": "qmgr"}, TRUSTED_EXE)  # qmgr cannot speak for smtpd
    assert trusted({"_COMM": "imap-login", "_EXE": "/usr/lib/dovecot/imap-login",
                    "SYSLOG_IDENTIFIER": "dovecot"}, TRUSTED_EXE)
    assert not trusted({"SYSLOG_IDENTIFIER": "dovecot"}, TRUSTED_EXE)  # no trusted fields at all


def test_to_line_handles_binary_and_missing_fields() -> None:
    entry = {"__REALTIME_TIMESTAMP": "1795600000000000", "SYSLOG_IDENTIFIER": "postfix/smtpd",
             "_PID": "12", "_HOSTNAME": "mx", "MESSAGE": [104, 105, 0xFF]}
    stamp = datetime.fromtimestamp(1795600000, timezone.utc).isoformat(timespec="microseconds")
    assert to_line(entry) == f"{stamp} mx postfix/smtpd[12]: hi\ufffd".encode()
    assert to_line({"MESSAGE": "x"}) is None
