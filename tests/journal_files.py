"""Real journal files for tests, written by systemd-journal-remote from export-format input
(REAL-MTA.md section 7): the same binary format journald writes, read by the real journalctl."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT = uuid.uuid4().hex

# What journald records for a real postfix smtpd, and for `logger -t postfix/smtpd` run by a user.
SMTPD = {"_COMM": "smtpd", "_EXE": "/usr/lib/postfix/sbin/smtpd", "_UID": "107",
         "_SYSTEMD_UNIT": "postfix@-.service", "SYSLOG_IDENTIFIER": "postfix/smtpd"}
FORGER = {"_COMM": "logger", "_EXE": "/usr/bin/logger", "_UID": "1000",
          "_SYSTEMD_UNIT": "postfix@-.service", "SYSLOG_IDENTIFIER": "postfix/smtpd"}
# a renamed copy of logger: the process name is right, the executable is not
RENAMED = {"_COMM": "smtpd", "_EXE": "/home/eve/smtpd", "_UID": "1000",
           "_SYSTEMD_UNIT": "postfix@-.service", "SYSLOG_IDENTIFIER": "postfix/smtpd"}


def available() -> bool:
    return Path(JOURNAL_REMOTE).exists() and shutil.which("journalctl") is not None


def sasl_failure(ip: str, user: str = "alice@example.test") -> str:
    return f"warning: unknown[{ip}]: SASL PLAIN authentication failed: (reason unavailable), sasl_username={user}"


def append(journal: Path, entries: list[tuple[float, dict[str, str], str]], seq: list[int] = [0]) -> None:
    """Append entries (epoch time, trusted fields, MESSAGE) to a .journal file."""
    out = []
    for when, fields, message in entries:
        seq[0] += 1
        record = {"__REALTIME_TIMESTAMP": str(int(when * 1e6)), "__MONOTONIC_TIMESTAMP": str(1_000_000 + seq[0]),
                  "_BOOT_ID": BOOT, "_HOSTNAME": "mx1", "_TRANSPORT": "syslog", "PRIORITY": "4",
                  "SYSLOG_FACILITY": "2", "_PID": str(4000 + seq[0] % 100), **fields, "MESSAGE": message}
        out.append(b"".join(_field(k, v) for k, v in record.items()) + b"\n")
    subprocess.run([JOURNAL_REMOTE, f"--output={journal}", "-"], input=b"".join(out),
                   check=True, capture_output=True, timeout=30)


def _field(key: str, value: str) -> bytes:
    data = value.encode()
    if b"\n" in data:  # the export format's binary form: KEY, newline, 64-bit LE length, data
        return key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
    return key.encode() + b"=" + data + b"\n"
