"""Follow log files through rotation, truncation and restarts, reading whole lines only.

Inputs: a path and the position saved by the last run (device, inode, offset and a digest of the
file's first bytes). Outputs: complete lines (bytes, without the newline) and the position just
after the last line handed out, which the daemon commits together with the decisions those lines
caused, so that a restart neither re-reads nor skips a line.

How each case is recognised (checked whenever the file is read, driven by inotify on the file's
directory plus a one-second poll as a safety net):
- rename rotation (`mail.log` -> `mail.log.1`, new `mail.log`): the path's inode changes. The old
  file is drained to its end first, then the new one is read from its start. The old descriptor
  stays open for `GRACE` seconds, because a syslog daemon keeps writing into the renamed file
  until it is told to reopen.
- copytruncate / truncation: the file is shorter than our offset, or its first bytes differ from
  the digest (truncated, then regrown past our offset before we looked). Lines we had not read yet
  are recovered from the rotated copy (a sibling `mail.log.1`, `mail.log-20261125`, ... whose
  first bytes match) before the truncated file is read from its start.
- delete and recreate: like a rename; the deleted file is drained through the open descriptor.
- restart: the saved inode is looked up among the siblings (rotated while we were down), drained
  from the saved offset, then the current file is read from its start. The saved position names
  one file: a rotated file while it has unread lines, else the current one. This is exact because
  the path is checked before anything is read and the current file is read only after the rotated
  ones; a writer that still appends to the renamed file after the new one was read (within GRACE)
  could, after a crash at that moment, make the new file's lines be read again.
A partial last line waits until its newline arrives. Lines longer than MAX_LINE are cut.
Must never: raise on a missing, unreadable or vanishing file (it is retried), or decode text.
Size: following a file through rotation, truncation and restarts and the inotify watcher that
wakes it are one mechanism; the fallback without inotify_simple is inotify_fallback.py.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

try:
    from inotify_simple import INotify, flags
except ImportError:  # Debian has no python3-inotify-simple: the package uses mailban's own
    from ..inotify_fallback import INotify, flags  # type: ignore[assignment]

log = logging.getLogger("mailban.tail")

HEAD_BYTES = 256
MAX_LINE = 256 * 1024
CHUNK = 256 * 1024
GRACE = 10.0
POLL_EVERY = 1.0


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading stands in one file: enough to find the file again after a rotation."""

    dev: int
    inode: int
    offset: int
    head_len: int
    head: str

    def to_dict(self) -> dict[str, Any]:
        return {"dev": self.dev, "inode": self.inode, "offset": self.offset,
                "head_len": self.head_len, "head": self.head}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Position | None:
        try:
            return cls(int(data["dev"]), int(data["inode"]), int(data["offset"]),
                       int(data["head_len"]), str(data["head"]))
        except (KeyError, TypeError, ValueError):
            return None


class _Open:
    """One open file descriptor and the bytes read from it that are not handed out yet."""

    __slots__ = ("fd", "dev", "inode", "offset", "buf", "head_len", "head", "skipping", "closed_at")

    def __init__(self, fd: int, st: os.stat_result, offset: int) -> None:
        self.fd = fd
        self.dev = st.st_dev
        self.inode = st.st_ino
        self.offset = offset  # file offset of buf[0]: everything before it was handed out
        self.buf = b""
        self.head_len = 0
        self.head = ""
        self.skipping = False  # inside an over-long line: drop bytes up to the next newline
        self.closed_at = 0.0

    def read_head(self) -> None:
        """Refresh the digest of the first bytes while the file is still shorter than HEAD_BYTES.

        Only a consistent extension is taken (the bytes we knew are still there): first bytes that
        changed mean a truncation, which `head_matches()` must go on reporting.
        """
        if self.head_len >= HEAD_BYTES:
            return
        try:
            data = os.pread(self.fd, HEAD_BYTES, 0)
        except OSError:
            return
        if len(data) > self.head_len and (self.head_len == 0 or _digest(data[: self.head_len]) == self.head):
            self.head_len = len(data)
            self.head = _digest(data)

    def head_matches(self) -> bool:
        if self.head_len == 0:
            return True
        try:
            return _digest(os.pread(self.fd, self.head_len, 0)) == self.head
        except OSError:
            return False

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def _open(path: str) -> tuple[int, os.stat_result] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return fd, os.fstat(fd)
    except OSError:
        os.close(fd)
        return None


def open_source(name: str, settings: Any, saved: dict[str, Any] | None, from_end: bool) -> FileTail:
    """The `file` source kind (sources.KINDS): follow the log file `name`. A missing file is a
    warning only when no other configured log exists: the shipped default names the mail logs of
    every layout (Debian's mail.log, RHEL's maillog, Exim's mainlog), most of which a host lacks."""
    others = any(os.path.exists(p) for p in getattr(settings, "logs", ()) if p != name)
    return FileTail(name, Position.from_dict(saved) if saved else None, from_end=from_end, quiet_missing=others)


class FileTail:
    """Follow one log file (a sources.Source). Call read_lines() whenever the file may have
    changed: the Watcher below says when."""

    def __init__(self, path: str, saved: Position | None = None, from_end: bool = True,
                 quiet_missing: bool = False) -> None:
        self.path = path
        self.quiet_missing = quiet_missing
        self.dir, self.base = os.path.split(path)
        self.watch_dir: str | None = self.dir  # the Watcher's inotify on it says when to read
        self.cur: _Open | None = None
        self.old: list[_Open] = []  # rotated-away files still being drained
        self.warned_missing = False
        self.rotations = 0
        self.truncations = 0
        self._start(saved, from_end)

    # ---- opening ----------------------------------------------------------------------------
    def _start(self, saved: Position | None, from_end: bool) -> None:
        opened = _open(self.path)
        if opened is None:
            self._warn_missing()
            if saved is not None and saved.inode:
                self._resume_rotated(saved)
            return
        fd, st = opened
        if saved is not None and (saved.dev, saved.inode) == (st.st_dev, st.st_ino):
            cur = _Open(fd, st, 0)
            cur.head_len, cur.head = saved.head_len, saved.head
            if st.st_size >= saved.offset and cur.head_matches():
                cur.offset = saved.offset
                self.cur = cur
                cur.read_head()
                return
            # Truncated (or truncated and regrown) while we were down.
            cur.head_len, cur.head = 0, ""
            self._recover_copy(saved.offset, saved.head_len, saved.head)
            self.cur = cur
            cur.read_head()
            return
        if saved is not None:
            # The file we were reading was rotated while we were down: finish it first. (An
            # empty position means the file did not exist at the last stop: nothing to finish.)
            if saved.inode:
                self._resume_rotated(saved)
            self.cur = _Open(fd, st, 0)
        else:
            self.cur = _Open(fd, st, st.st_size if from_end else 0)
        self.cur.read_head()

    def _siblings(self) -> list[str]:
        try:
            names = os.listdir(self.dir or ".")
        except OSError:
            return []
        base = self.base
        found = []
        for name in names:
            if name != base and name.startswith(base) and name[len(base): len(base) + 1] in (".", "-", "_"):
                if not name.endswith((".gz", ".bz2", ".xz", ".zst", ".lz4")):
                    found.append(os.path.join(self.dir, name))
        return sorted(found)

    def _resume_rotated(self, saved: Position) -> None:
        for path in self._siblings():
            opened = _open(path)
            if opened is None:
                continue
            fd, st = opened
            if (st.st_dev, st.st_ino) == (saved.dev, saved.inode) and st.st_size >= saved.offset:
                old = _Open(fd, st, saved.offset)
                old.closed_at = time.monotonic()
                self.old.append(old)
                log.info("%s: resuming the rotated file %s at byte %d", self.path, path, saved.offset)
                return
            os.close(fd)
        log.warning("%s: the file read last time (inode %d) is gone; lines written to it after "
                    "the last stop could not be read", self.path, saved.inode)

    def _recover_copy(self, offset: int, head_len: int, head: str) -> None:
        """After a copytruncate, read what we had not read yet from the rotated copy."""
        if head_len == 0:
            return
        for path in self._siblings():
            opened = _open(path)
            if opened is None:
                continue
            fd, st = opened
            if st.st_size >= offset and _digest(os.pread(fd, head_len, 0)) == head:
                old = _Open(fd, st, offset)
                old.closed_at = -math.inf  # a copy: nobody writes to it, close it once drained
                self.old.append(old)
                return
            os.close(fd)

    def _warn_missing(self) -> None:
        if not self.warned_missing:
            self.warned_missing = True
            say = log.info if self.quiet_missing else log.warning
            say("%s does not exist (yet): watching for it to appear; the other logs and jails go on", self.path)

    # ---- reading ----------------------------------------------------------------------------
    @property
    def position(self) -> Position:
        """The position after the last line handed out, in the file that must be resumed.

        While a rotated file still has unread lines, that file's position is the one to save:
        after a crash it is found again among the siblings by its inode.
        """
        f = next((o for o in self.old if o.buf or self._has_more(o)), self.cur)
        if f is None:
            return Position(0, 0, 0, 0, "")
        f.read_head()
        return Position(f.dev, f.inode, f.offset, f.head_len, f.head)

    @staticmethod
    def _has_more(f: _Open) -> bool:
        try:
            return os.fstat(f.fd).st_size > f.offset + len(f.buf)
        except OSError:
            return False

    def read_lines(self, limit: int = 5000) -> list[bytes]:
        """Up to `limit` complete lines, oldest first: rotated files, then the current one.

        The path is checked first, so that a rotation found now is drained (the old file's last
        lines, the copy's unread lines) before the first line of the new file is handed out.
        """
        out: list[bytes] = []
        self._check_path()
        now = time.monotonic()
        for old in list(self.old):
            self._read_into(old, out, limit)
            if len(out) >= limit:
                return out
            if now - old.closed_at >= GRACE and not self._has_more(old):
                if old.buf and not old.skipping:
                    # The writer never finished its last line and never will: hand it out.
                    out.append(old.buf[:MAX_LINE])
                old.offset += len(old.buf)
                old.buf = b""
                old.close()
                self.old.remove(old)
        if self.cur is not None:
            self._read_into(self.cur, out, limit)
        return out

    def _read_into(self, f: _Open, out: list[bytes], limit: int) -> None:
        while len(out) < limit:
            buf = f.buf
            start = 0
            while len(out) < limit:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                if f.skipping:
                    f.skipping = False
                else:
                    line = buf[start:nl]
                    if len(line) > MAX_LINE:
                        line = line[:MAX_LINE]
                    out.append(line)
                start = nl + 1
            if start:
                f.offset += start
                f.buf = buf = buf[start:]
            if len(out) >= limit:
                return
            if len(buf) > MAX_LINE:
                # An over-long line: hand out its first MAX_LINE bytes, drop the rest.
                if not f.skipping:
                    out.append(buf[:MAX_LINE])
                f.skipping = True
                f.offset += len(buf)
                f.buf = buf = b""
            try:
                chunk = os.pread(f.fd, CHUNK, f.offset + len(buf))
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EINTR):
                    log.warning("%s: read error: %s", self.path, exc)
                return
            if not chunk:
                return
            f.buf = buf + chunk
            if f.head_len < HEAD_BYTES:
                f.read_head()

    def _check_path(self) -> None:
        """Notice rotation, truncation, deletion and (re)appearance of the path."""
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        cur = self.cur
        if cur is None:
            if st is None:
                return
            opened = _open(self.path)
            if opened is None:
                return
            fd, st = opened
            if self.warned_missing:
                log.info("%s appeared: reading it from its start", self.path)
            self.warned_missing = False
            self.cur = _Open(fd, st, 0)
            self.cur.read_head()
            return
        if st is not None and (st.st_dev, st.st_ino) == (cur.dev, cur.inode):
            # Shorter than what we read, or regrown past it with other first bytes. The head
            # check also covers offset 0: a copytruncate before anything was read.
            if st.st_size < cur.offset + len(cur.buf) or not cur.head_matches():
                self._truncated(cur)
            return
        # The path now names another file, or none: drain the old one, then switch.
        self.rotations += 1
        cur.closed_at = time.monotonic()
        self.old.append(cur)
        self.cur = None
        if st is None:
            log.info("%s was removed: finishing the old file, then waiting for a new one", self.path)
            return
        opened = _open(self.path)
        if opened is not None:
            fd, st = opened
            log.info("%s was rotated: finishing the old file, then reading the new one", self.path)
            self.cur = _Open(fd, st, 0)
            self.cur.read_head()

    def _truncated(self, cur: _Open) -> None:
        self.truncations += 1
        log.info("%s was truncated (copytruncate?): recovering unread lines from the copy, then "
                 "reading it from its start", self.path)
        self._recover_copy(cur.offset, cur.head_len, cur.head)
        cur.offset = 0
        cur.buf = b""
        cur.skipping = False
        cur.head_len, cur.head = 0, ""
        cur.read_head()

    def fileno(self) -> int:
        """No descriptor of its own: the Watcher's inotify on watch_dir wakes the daemon."""
        return -1

    def status(self) -> dict[str, Any]:
        return {"exists": os.path.exists(self.path)}

    def backlog(self) -> int | None:
        """Bytes in the file past the position (all of it, once it was rotated away)."""
        pos = self.position
        try:
            st = os.stat(self.path)
        except OSError:
            return 0
        return max(0, st.st_size - pos.offset) if st.st_ino == pos.inode else st.st_size

    def close(self) -> None:
        for f in self.old:
            f.close()
        self.old.clear()
        if self.cur is not None:
            self.cur.close()
            self.cur = None


# Directory events that can concern a followed file: it was written, created, renamed or removed.
_DIR_FLAGS = (flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE
              | flags.CLOSE_WRITE | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF)


class Watcher:
    """inotify on the directories of the followed files, plus a periodic poll as a safety net.

    One watch per directory sees writes to, creation, renaming and removal of every file in it;
    a directory that does not exist yet is simply polled until it does. It takes any source
    with a `watch_dir` (sources.Source), a FileTail so far.
    """

    def __init__(self) -> None:
        self.inotify = INotify()
        self.tails: list[Any] = []
        self.watches: dict[int, str] = {}
        self.by_dir: dict[str, int] = {}
        self.next_poll = 0.0

    def fileno(self) -> int:
        return self.inotify.fileno()

    def add(self, tail: Any) -> None:
        self.tails.append(tail)
        self._watch(tail.watch_dir)

    def remove(self, tail: Any) -> None:
        if tail in self.tails:
            self.tails.remove(tail)
        tail.close()

    def _watch(self, directory: str) -> None:
        if directory in self.by_dir:
            return
        try:
            wd = self.inotify.add_watch(directory, _DIR_FLAGS)
        except OSError:
            return  # not there yet: the poll finds it
        self.watches[wd] = directory
        self.by_dir[directory] = wd

    def wait(self, timeout: float = 0) -> list[Any]:
        """The tails that may have new lines (every tail once a second, whatever happened)."""
        dirty: set[str] = set()
        overflow = False
        for event in self.inotify.read(timeout=int(timeout * 1000) if timeout else 0):
            if event.mask & flags.Q_OVERFLOW:
                overflow = True
                continue
            directory = self.watches.get(event.wd)
            if directory is None:
                continue
            if event.mask & flags.IGNORED:
                del self.by_dir[directory]
                del self.watches[event.wd]
                overflow = True
                continue
            dirty.add(directory)
        now = time.monotonic()
        if overflow or now >= self.next_poll:
            self.next_poll = now + POLL_EVERY
            for tail in self.tails:
                self._watch(tail.watch_dir)
            return list(self.tails)
        return [t for t in self.tails if t.watch_dir in dirty]

    def close(self) -> None:
        for tail in self.tails:
            tail.close()
        self.inotify.close()


def chunk_line_lists(read: Callable[[], bytes]) -> Iterator[list[bytes]]:
    """The lines in the chunks `read()` returns until it returns b"", a list per chunk:
    newlines dropped, lines longer than MAX_LINE cut, a last line without a newline still a
    line. The one place where test, replay and the worker processes of mailban test cut bytes
    into lines (lists, so that a C loop can take a chunk's lines in one call)."""
    rest = b""
    while True:
        chunk = read()
        if not chunk:
            break
        if rest:
            chunk = rest + chunk
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_LINE * 4:
            rest = rest[:MAX_LINE]
        if lines and max(map(len, lines)) > MAX_LINE:
            lines = [line if len(line) <= MAX_LINE else line[:MAX_LINE] for line in lines]
        if lines:
            yield lines
    if rest:
        yield [rest[:MAX_LINE]]


def chunk_lines(read: Callable[[], bytes]) -> Iterator[bytes]:
    """chunk_line_lists(), a line at a time."""
    for lines in chunk_line_lists(read):
        yield from lines


def iter_file_lines(path: str) -> Iterator[bytes]:
    """Every line of a file (or stdin for "-"), without newlines, for test and replay.

    A last line without a newline is still a line; lines longer than MAX_LINE are cut.
    """
    for lines in iter_file_line_lists(path):
        yield from lines


def iter_file_line_lists(path: str) -> Iterator[list[bytes]]:
    """iter_file_lines(), a list of lines per 1 MB read."""
    fh = sys.stdin.buffer if path == "-" else open(path, "rb")
    try:
        yield from chunk_line_lists(lambda: fh.read(1 << 20))
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()
