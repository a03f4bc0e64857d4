"""mailban/inotify_fallback.py, the stand-in for inotify_simple where Debian lacks it: the same
events as the real library for the same file operations, and registered only when the real one
is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mailban import inotify_fallback

ROOT = Path(__file__).resolve().parent.parent


def scenario(lib: ModuleType, directory: Path) -> list[tuple[int, str]]:
    """(mask, name) of what a tail's directory watch sees through a rotation."""
    ino = lib.INotify()
    try:
        flags = lib.flags
        mask = (flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE
                | flags.CLOSE_WRITE | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF)
        wd = ino.add_watch(str(directory), mask)
        assert ino.read(timeout=0) == []
        log = directory / "mail.log"
        log.write_bytes(b"one\n")
        os.rename(log, directory / "mail.log.1")
        log.write_bytes(b"two\n")
        (directory / "mail.log.1").unlink()
        events = list(ino.read(timeout=1000))
        ino.rm_watch(wd)
        events += ino.read(timeout=1000)
        assert all(e.wd == wd for e in events)
        return [(int(e.mask), e.name) for e in events]
    finally:
        ino.close()


def test_same_events_as_inotify_simple(tmp_path: Path) -> None:
    real = pytest.importorskip("inotify_simple")
    if real is inotify_fallback:
        pytest.skip("inotify_simple is not installed here: nothing to compare with")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ours = scenario(inotify_fallback, tmp_path / "a")
    theirs = scenario(real, tmp_path / "b")
    assert ours == theirs
    assert (int(inotify_fallback.flags.IGNORED), "") in ours  # rm_watch's last word


def test_used_only_where_inotify_simple_is_missing() -> None:
    probe = "import mailban, mailban.sources.tail as t; print(t.INotify.__module__)"
    # -S: no site-packages, so no inotify_simple, as on a Debian host with the package
    bare = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bare.stdout.strip() == "mailban.inotify_fallback", bare.stderr
    full = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    try:
        import inotify_simple  # noqa: F401  (the real one, where installed, wins)
    except ImportError:
        return
    assert full.stdout.strip() == "inotify_simple", full.stderr
