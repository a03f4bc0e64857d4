"""Follow the systemd journal (Debian 12 logs postfix and dovecot only there by default).

Inputs: `journalctl -f -o json` (a child process; argv list) selected by systemd unit and/or
syslog identifier, from the cursor saved by the last run. Outputs: the same syslog-format lines a
log file would hold (`2026-11-25T10:00:01.123456+00:00 host ident[pid]: message`), so that every
filter works unchanged, and the cursor after the last line handed out (committed with the
decisions, like a file position).

Forged lines: any local user can write a journal entry with any identifier (`logger -t
postfix/smtpd ...`), but the journal adds fields the writer cannot choose (`_EXE`, `_COMM`,
`_UID`). With `trust = "strict"` (the default) an entry is accepted only when its executable lies
in a directory of the MTAs' own programs and, for postfix, its process name is the program its
identifier claims (`postfix/smtpd` from `smtpd`). Entries refused this way are counted and shown
in `mailban status`. Plain log files carry no such fields: see docs/security.md.
Must never: pass journal text to a shell, block the daemon (the pipe is non-blocking), or stop
the daemon when journalctl exits (it is restarted from the last cursor).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("mailban.journal")

NAME = "journal"  # the name its lines, counts and position are kept under
DEFAULT_UNITS = ("postfix@-.service", "postfix.service", "dovecot.service", "sendmail.service")
# Where the MTAs' own programs live (Debian and common layouts): the executable of a trusted
# entry starts with one of these.
TRUSTED_EXE = ("/usr/lib/postfix/", "/usr/libexec/postfix/", "/usr/sbin/postfix", "/usr/sbin/postlog",
               "/usr/lib/dovecot/", "/usr/libexec/dovecot/", "/usr/sbin/dovecot",
               "/usr/lib/sm.bin/", "/usr/libexec/sendmail/", "/usr/sbin/sendmail")
FIELDS = "MESSAGE,SYSLOG_IDENTIFIER,_PID,_HOSTNAME,_COMM,_EXE,_UID,_SYSTEMD_UNIT"
RESTART_DELAY = 2.0
MAX_PENDING = 20_000


@dataclass(frozen=True, slots=True)
class JournalPosition:
    cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> JournalPosition | None:
        if not data or not isinstance(data.get("cursor"), str):
            return None
        return cls(data["cursor"])


def available() -> bool:
    """Is there a journal to read on this host: journald running, or journal files present?"""
    if shutil.which("journalctl") is None:
        return False
    if os.path.exists("/run/systemd/journal/socket"):
        return True
    for top in ("/run/log/journal", "/var/log/journal"):
        for _dirpath, _dirs, files in os.walk(top):
            if any(f.endswith(".journal") for f in files):
                return True
    return False


def _text(value: Any) -> str:
    """journalctl writes non-UTF-8 fields as arrays of byte values."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        try:
            return bytes(v for v in value if isinstance(v, int) and 0 <= v < 256).decode("utf-8", "replace")
        except ValueError:
            return ""
    return "" if value is None else str(value)


def trusted(entry: dict[str, Any], trusted_exe: tuple[str, ...]) -> bool:
    """Was this entry written by the program its identifier names? (Fields the writer cannot set.)"""
    exe = _text(entry.get("_EXE"))
    if not exe or not exe.startswith(trusted_exe):
        return False
    ident = _text(entry.get("SYSLOG_IDENTIFIER"))
    if ident.startswith("postfix"):
        # postfix/smtpd, postfix/submission/smtpd: the process is named after the last part
        # (the kernel keeps the first 15 characters of a process name).
        return _text(entry.get("_COMM")) == ident.rsplit("/", 1)[-1][:15]
    return True


def to_line(entry: dict[str, Any]) -> bytes | None:
    """The syslog line this entry would have been in a log file."""
    message = _text(entry.get("MESSAGE"))
    ident = _text(entry.get("SYSLOG_IDENTIFIER")) or _text(entry.get("_COMM"))
    if not message or not ident:
        return None
    try:
        usec = int(_text(entry.get("__REALTIME_TIMESTAMP")))
    except ValueError:
        return None
    stamp = datetime.fromtimestamp(usec / 1e6, timezone.utc).isoformat(timespec="microseconds")
    host = _text(entry.get("_HOSTNAME")) or "localhost"
    pid = _text(entry.get("_PID"))
    tag = f"{ident}[{pid}]" if pid.isdigit() else ident
    # One entry is one line: a newline inside a message would otherwise start a forged line.
    message = message.replace("\n", " ").replace("\r", " ")
    return f"{stamp} {host} {tag}: {message}".encode("utf-8", "replace")


def open_source(name: str, settings: Any, saved: dict[str, Any] | None, from_end: bool) -> JournalSource:
    """The `journal` source kind (sources.KINDS), as the settings' journal_* keys describe it."""
    st = settings
    source = JournalSource(units=st.journal_units, identifiers=st.journal_identifiers, files=st.journal_files,
                           directory=st.journal_directory or None, saved=JournalPosition.from_dict(saved),
                           from_end=from_end, trust=st.journal_trust)
    log.info("reading the systemd journal (units %s%s)%s", ", ".join(st.journal_units),
             f"; identifiers {', '.join(st.journal_identifiers)}" if st.journal_identifiers else "",
             "" if st.journal is True else f": none of {', '.join(st.logs)} exists")
    return source


class JournalSource:
    """One `journalctl -f -o json` child (a sources.Source); read_lines() hands out converted
    lines. Read at every turn of the daemon's loop; fileno() wakes it."""

    watch_dir: str | None = None

    def __init__(self, units: tuple[str, ...] = DEFAULT_UNITS, identifiers: tuple[str, ...] = (),
                 files: tuple[str, ...] = (), directory: str | None = None,
                 saved: JournalPosition | None = None, from_end: bool = True, trust: str = "strict",
                 trusted_exe: tuple[str, ...] = TRUSTED_EXE, journalctl: str = "journalctl") -> None:
        self.path = NAME
        self.units = units
        self.identifiers = identifiers
        self.files = files
        self.directory = directory
        self.cursor = saved.cursor if saved else None
        self.from_end = from_end
        self.trust = trust
        self.trusted_exe = trusted_exe
        self.journalctl = journalctl
        self.proc: subprocess.Popen[bytes] | None = None
        self.buf = b""
        self.pending: deque[tuple[bytes, str | None]] = deque()
        self.forged = 0
        self.bad = 0
        self.restart_at = 0.0
        self.error: str | None = None
        self._spawn()

    def argv(self) -> list[str]:
        argv = [self.journalctl, "-f", "-o", "json", "--no-pager", "--output-fields", FIELDS]
        for path in self.files:
            argv.append(f"--file={path}")
        if self.directory:
            argv += ["-D", self.directory]
        if self.cursor:
            argv.append(f"--after-cursor={self.cursor}")
        else:
            argv += ["-n", "0" if self.from_end else "all"]
        matches: list[str] = [f"_SYSTEMD_UNIT={u}" for u in self.units]
        if self.identifiers:
            if matches:
                matches.append("+")
            matches += [f"SYSLOG_IDENTIFIER={i}" for i in self.identifiers]
        return argv + matches

    def _spawn(self) -> None:
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            self.proc = None
            self.error = f"cannot run journalctl: {exc.strerror}"
            self.restart_at = time.monotonic() + RESTART_DELAY
            log.error("%s", self.error)
            return
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.error = None

    def fileno(self) -> int:
        return self.proc.stdout.fileno() if self.proc and self.proc.stdout else -1

    @property
    def position(self) -> JournalPosition:
        return JournalPosition(self.cursor)

    def status(self) -> dict[str, Any]:
        return {"exists": self.error is None, "forged": self.forged, "error": self.error}

    def backlog(self) -> int | None:
        return None  # journalctl does not say how far behind it is

    def read_lines(self, limit: int = 5000) -> list[bytes]:
        self._fill(limit)
        out: list[bytes] = []
        pending = self.pending
        while pending and len(out) < limit:
            line, cursor = pending.popleft()
            if line:
                out.append(line)
            if cursor:
                self.cursor = cursor
        return out

    def _fill(self, limit: int) -> None:
        if self.proc is None:
            if time.monotonic() >= self.restart_at:
                self._spawn()
            return
        assert self.proc.stdout is not None
        while len(self.pending) < max(limit, 1) and len(self.pending) < MAX_PENDING:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                chunk = b""
            if not chunk:
                self._exited()
                return
            data = self.buf + chunk
            *lines, self.buf = data.split(b"\n")
            for raw in lines:
                self._entry(raw)

    def _entry(self, raw: bytes) -> None:
        try:
            entry = json.loads(raw)
        except ValueError:
            self.bad += 1
            return
        if not isinstance(entry, dict):
            self.bad += 1
            return
        cursor = entry.get("__CURSOR") if isinstance(entry.get("__CURSOR"), str) else None
        if self.trust == "strict" and not trusted(entry, self.trusted_exe):
            self.forged += 1
            if self.forged == 1 or self.forged % 1000 == 0:
                log.warning("journal: ignored %d entries whose writer is not the program they name "
                            "(last: %r from %r)", self.forged, _text(entry.get("SYSLOG_IDENTIFIER")),
                            _text(entry.get("_EXE")) or _text(entry.get("_COMM")))
            self.pending.append((b"", cursor))  # the cursor still moves past it
            return
        line = to_line(entry)
        self.pending.append((line or b"", cursor))

    def _exited(self) -> None:
        rc = self.proc.poll() if self.proc else None
        self.error = f"journalctl exited ({rc}); restarting from the last cursor"
        log.warning("%s", self.error)
        self.close()
        self.pending.clear()  # not handed out yet: the new journalctl reads them again
        self.restart_at = time.monotonic() + RESTART_DELAY

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        self.buf = b""
