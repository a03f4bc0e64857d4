"""FileTail and Watcher on real files: rotation, truncation, restarts, odd bytes.

Every test writes numbered lines (`n=000042 ...`) through a writer that behaves like a syslog
daemon (an O_APPEND descriptor it keeps until told to reopen), performs one of the things logrotate
and admins do to a log, and checks that every numbered line came out exactly once. The rotated
files' grace period is patched, never slept through.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from mailban.sources import tail as tail_mod
from mailban.sources.tail import FileTail, Position, Watcher, iter_file_lines

NUM = re.compile(rb"^n=(\d{6}) ")


class Writer:
    """Appends numbered lines like syslog: one O_APPEND descriptor, reopened on request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.n = 0
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lock = threading.Lock()

    def line(self, n: int, payload: bytes = b"") -> bytes:
        return b"n=%06d postfix/smtpd[1]: " % n + (payload or b"x" * (n % 37))

    def write(self, count: int = 1, payload: bytes = b"") -> None:
        with self.lock:
            for _ in range(count):
                self.n += 1
                os.write(self.fd, self.line(self.n, payload) + b"\n")

    def raw(self, data: bytes) -> None:
        with self.lock:
            os.write(self.fd, data)

    def reopen(self) -> None:
        with self.lock:
            os.close(self.fd)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        os.close(self.fd)


class Reader:
    """Collects what a FileTail hands out and checks the numbering."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.lines: list[bytes] = []

    def drain(self, tail: FileTail) -> list[bytes]:
        got: list[bytes] = []
        while True:
            lines = tail.read_lines(limit=1000)
            if not lines:
                break
            got.extend(lines)
        for line in got:
            m = NUM.match(line)
            assert m, f"not a numbered line: {line[:80]!r}"
            self.seen.append(int(m.group(1)))
        self.lines.extend(got)
        return got

    def check(self, written: int) -> None:
        dupes = sorted({n for n in self.seen if self.seen.count(n) > 1})
        missing = sorted(set(range(1, written + 1)) - set(self.seen))
        assert not dupes, f"read twice: {dupes[:20]}"
        assert not missing, f"lost: {missing[:20]} ({len(missing)} in all)"
        assert len(self.seen) == written


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "mail.log"


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail_mod, "GRACE", 0.0)


def test_follows_appends_and_starts_at_end_or_beginning(log: Path) -> None:
    w = Writer(log)
    w.write(5)
    r = Reader()
    t_end = FileTail(str(log), from_end=True)
    t_start = FileTail(str(log), from_end=False)
    assert t_end.read_lines() == []
    w.write(3)
    assert [NUM.match(x).group(1) for x in t_end.read_lines()] == [b"000006", b"000007", b"000008"]
    r.drain(t_start)
    r.check(8)
    t_end.close(), t_start.close(), w.close()


def test_rename_rotation_drains_old_file_first(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail_mod, "GRACE", 3600.0)
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    w.write(50)
    r.drain(t)
    w.write(10)  # not read yet when the rotation happens
    os.rename(log, str(log) + ".1")
    w.write(10)  # syslog keeps writing into the renamed file until it is told to reopen
    w.reopen()
    w.write(10)  # into the new mail.log
    r.drain(t)
    assert r.seen == list(range(1, 81)), "the old file must be drained before the new one"
    assert t.rotations == 1
    # Within the grace period the renamed file is still followed ...
    os.write(os.open(str(log) + ".1", os.O_WRONLY | os.O_APPEND), w.line(81) + b"\n")
    w.n += 1
    w.write(5)
    r.drain(t)
    r.check(86)
    assert len(t.old) == 1
    # ... and closed once the grace period is over and it has nothing more.
    monkeypatch.setattr(tail_mod, "GRACE", 0.0)
    w.write(2)
    r.drain(t)
    assert t.old == []
    r.check(88)
    t.close(), w.close()


def test_copytruncate_recovers_unread_lines_from_the_copy(log: Path, no_grace: None) -> None:
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    w.write(40)
    r.drain(t)
    w.write(15)  # unread at copy time
    with w.lock:  # logrotate's own race: nothing may be written between copy and truncate
        shutil.copyfile(log, str(log) + ".1")
        os.truncate(log, 0)
    w.write(7)
    r.drain(t)
    r.check(62)
    assert t.truncations == 1
    assert r.seen == list(range(1, 63))
    w.write(3)
    r.drain(t)
    r.check(65)
    t.close(), w.close()


def test_copytruncate_before_anything_was_read(log: Path, no_grace: None) -> None:
    """Offset 0 but lines in the file: the copy still holds them all."""
    w, r = Writer(log), Reader()
    w.write(3)
    t = FileTail(str(log), from_end=False)
    with w.lock:
        shutil.copyfile(log, str(log) + ".1")
        os.truncate(log, 0)
    w.write(2)
    r.drain(t)
    r.check(5)
    t.close(), w.close()


def test_truncation_and_regrowth_past_the_offset(log: Path, no_grace: None) -> None:
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    w.write(10)
    r.drain(t)
    os.truncate(log, 0)  # plain truncation: an admin's `: > mail.log`
    w.write(30)  # more bytes than before: the size alone does not show the truncation
    r.drain(t)
    r.check(40)
    os.truncate(log, 0)
    w.write(1)
    r.drain(t)
    r.check(41)
    t.close(), w.close()


def test_delete_and_recreate(log: Path, no_grace: None) -> None:
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    w.write(20)
    r.drain(t)
    w.write(5)
    os.unlink(log)
    w.write(5)  # still into the deleted file (read through the open descriptor)
    r.drain(t)
    assert t.cur is None
    w.reopen()  # creates mail.log anew
    w.write(6)
    r.drain(t)
    r.check(36)
    assert r.seen == list(range(1, 37))
    t.close(), w.close()


def test_missing_file_is_picked_up_when_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "mail.log"
    t = FileTail(str(path), from_end=True)  # from_end does not apply to a file that appears later
    assert t.read_lines() == [] and t.position == Position(0, 0, 0, 0, "")
    path.parent.mkdir()
    w, r = Writer(path), Reader()
    w.write(4)
    r.drain(t)
    r.check(4)
    t.close(), w.close()


def test_partial_last_line_waits_for_its_newline(log: Path) -> None:
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    w.write(2)
    whole = w.line(3)
    w.raw(whole[:10])
    assert len(r.drain(t)) == 2
    pos = t.position
    assert pos.offset == os.path.getsize(log) - 10  # the partial line is not consumed
    w.raw(whole[10:20])
    assert r.drain(t) == []
    w.raw(whole[20:] + b"\n")
    w.n = 3
    assert r.drain(t) == [whole]
    r.check(3)
    t.close(), w.close()


def test_long_line_and_odd_bytes_pass_through_unchanged(log: Path) -> None:
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    big = b"A" * (100 * 1024)
    odd = b"bad \xff\xfe\xc3( utf8, NUL \x00 inside \x00\x00, CR \r end"
    w.write(1)
    w.write(1, payload=big)
    w.write(1, payload=odd)
    w.write(1)
    got = r.drain(t)
    r.check(4)
    assert got[1] == w.line(2, big) and len(got[1]) > 100 * 1024
    assert got[2] == w.line(3, odd)
    t.close(), w.close()


def test_over_long_line_is_cut_and_the_next_line_survives(log: Path) -> None:
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    w.write(1, payload=b"B" * (tail_mod.MAX_LINE * 2 + 17))
    w.write(1)
    got = r.drain(t)
    assert len(got[0]) == tail_mod.MAX_LINE
    r.check(2)
    t.close(), w.close()


def test_restart_resumes_a_file_rotated_while_down(log: Path, no_grace: None) -> None:
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    w.write(30)
    r.drain(t)
    saved = Position.from_dict(t.position.to_dict())
    t.close()
    # While the daemon is down: more lines, then a rename rotation, then lines in the new file.
    w.write(12)
    os.rename(log, str(log) + ".1")
    w.reopen()
    w.write(8)
    t = FileTail(str(log), saved, from_end=True)  # from_end must not apply to a saved position
    r.drain(t)
    r.check(50)
    assert r.seen == list(range(1, 51))
    t.close(), w.close()


def test_restart_same_file_and_after_copytruncate(log: Path, no_grace: None) -> None:
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    w.write(10)
    r.drain(t)
    saved = t.position
    t.close()
    w.write(5)
    t = FileTail(str(log), saved)
    r.drain(t)
    r.check(15)
    saved = t.position
    t.close()
    w.write(5)
    with w.lock:
        shutil.copyfile(log, str(log) + ".1")
        os.truncate(log, 0)
    w.write(3)
    t = FileTail(str(log), saved)
    r.drain(t)
    r.check(23)
    t.close(), w.close()


def test_restart_while_a_rotated_file_was_still_being_drained(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A position saved in the middle of draining a rotated file points into that file."""
    monkeypatch.setattr(tail_mod, "GRACE", 3600.0)
    w, r = Writer(log), Reader()
    t = FileTail(str(log), from_end=False)
    w.write(10)
    r.drain(t)
    w.write(30)
    os.rename(log, str(log) + ".1")
    w.reopen()
    w.write(10)
    got = t.read_lines(limit=7)
    r.seen.extend(int(NUM.match(x).group(1)) for x in got)
    saved = t.position
    t.close()
    monkeypatch.setattr(tail_mod, "GRACE", 0.0)
    t = FileTail(str(log), saved)
    r.drain(t)
    r.check(50)
    t.close(), w.close()


def test_position_round_trip() -> None:
    pos = Position(1, 2, 3, 4, "ab")
    assert Position.from_dict(pos.to_dict()) == pos
    assert Position.from_dict({"dev": 1}) is None
    assert Position.from_dict({"dev": "x", "inode": 1, "offset": 1, "head_len": 1, "head": ""}) is None


def test_everything_in_turn_with_a_concurrent_writer(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer thread appends all the time; the test rotates, truncates, deletes, restarts.

    The writer goes on writing into a renamed or deleted file until it reopens, as syslog does:
    the grace period covers that, and is ended (patched to 0) only at the end.
    """
    monkeypatch.setattr(tail_mod, "GRACE", 3600.0)
    w, r = Writer(log), Reader()
    w.write(1)
    t = FileTail(str(log), from_end=False)
    watcher = Watcher()
    watcher.add(t)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            w.write(3)

    thread = threading.Thread(target=writer)
    thread.start()

    def progress(lines: int = 300) -> None:
        """Let the writer write and the reader read `lines` more lines (no sleeping)."""
        target = w.n + lines
        while w.n < target:
            for tail in watcher.wait(0.05):
                r.drain(tail)

    try:
        progress()
        os.rename(log, str(log) + ".1")  # rename rotation
        progress(50)
        w.reopen()
        progress()
        with w.lock:  # copytruncate
            shutil.copyfile(log, str(log) + ".2")
            os.truncate(log, 0)
        progress()
        r.drain(t)
        with w.lock:  # plain truncation, after everything was read
            r.drain(t)
            os.truncate(log, 0)
        progress()
        os.unlink(log)  # delete and recreate
        progress(50)
        w.reopen()
        progress()
        # restart: stop reading, rotate while "down", resume from the saved position
        first = t
        with w.lock:
            r.drain(t)
            saved = t.position
            watcher.remove(t)
        progress_down = w.n + 200
        while w.n < progress_down:
            pass
        os.rename(log, str(log) + ".3")
        w.reopen()
        t = FileTail(str(log), saved)
        watcher.add(t)
        progress()
    finally:
        stop.set()
        thread.join()
    r.drain(t)
    monkeypatch.setattr(tail_mod, "GRACE", 0.0)
    r.drain(t)
    assert t.old == []
    r.check(w.n)
    assert (first.rotations, first.truncations) == (2, 2)
    watcher.close()
    w.close()


def test_watcher_reports_writes_and_polls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a" / "mail.log", tmp_path / "b.log"
    a.parent.mkdir()
    b.write_bytes(b"")
    ta, tb = FileTail(str(a)), FileTail(str(b))
    watcher = Watcher()
    watcher.add(ta)
    watcher.add(tb)
    watcher.wait(0)  # the first call polls everything
    assert watcher.wait(0) == []
    with open(b, "ab") as fh:
        fh.write(b"n=000001 x\n")
    assert watcher.wait(1) == [tb]
    assert tb.read_lines() == [b"n=000001 x"]
    watcher.next_poll = 0.0  # the once-a-second poll is due
    assert set(watcher.wait(0)) == {ta, tb}
    watcher.close()


def test_iter_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"a\n\xff\x00b\n" + b"C" * (tail_mod.MAX_LINE + 5) + b"\nlast")
    lines = list(iter_file_lines(str(path)))
    assert lines[:2] == [b"a", b"\xff\x00b"]
    assert len(lines[2]) == tail_mod.MAX_LINE
    assert lines[3] == b"last"


def test_a_missing_log_is_a_warning_only_when_no_other_log_exists(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The shipped default names the mail logs of every layout; a postfix host lacks Exim's and
    RHEL's: those are said at info level, not as warnings, while another configured log exists."""
    import logging
    from types import SimpleNamespace

    from mailban.sources.tail import open_source

    present, absent = tmp_path / "mail.log", tmp_path / "maillog"
    present.write_text("")
    settings = SimpleNamespace(logs=[str(present), str(absent)])
    with caplog.at_level(logging.INFO, logger="mailban"):
        open_source(str(absent), settings, None, True).read_lines()
    (record,) = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert record.levelno == logging.INFO
    caplog.clear()
    present.unlink()
    with caplog.at_level(logging.INFO, logger="mailban"):
        open_source(str(absent), settings, None, True).read_lines()
    (record,) = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert record.levelno == logging.WARNING
