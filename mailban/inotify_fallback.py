"""The part of inotify_simple's API that mailban uses, on libc's inotify calls (ctypes).

Why: Debian (12 and 13) has no python3-inotify-simple, and mailban's Debian package takes its
dependencies from Debian alone. mailban/sources/tail.py imports this module when `import
inotify_simple` fails; where the real library is installed (pip, the test virtualenv) it is used
and this module is not loaded.

Provides: `INotify` (fileno, add_watch, rm_watch, read(timeout ms), close), `flags`, `Event`
(wd, mask, cookie, name), with the semantics of inotify_simple 1.3 for those calls: read()
returns what is queued, else waits up to `timeout` ms (None or negative: forever; 0: not at all).
Must never: read or watch anything by itself; it is a thin wrapper over three system calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import fcntl
import os
import select
import struct
import termios
from collections import namedtuple
from typing import Any

Event = namedtuple("Event", ["wd", "mask", "cookie", "name"])
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
_libc: Any = None


class flags(enum.IntFlag):
    ACCESS = 0x00000001
    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    CLOSE_NOWRITE = 0x00000010
    OPEN = 0x00000020
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    EXCL_UNLINK = 0x04000000
    MASK_ADD = 0x20000000
    ISDIR = 0x40000000
    ONESHOT = 0x80000000


def _call(function: Any, *args: Any) -> int:
    result = function(*args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


class INotify:
    def __init__(self, inheritable: bool = False, nonblocking: bool = False) -> None:
        global _libc
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mode = (0 if inheritable else os.O_CLOEXEC) | (os.O_NONBLOCK if nonblocking else 0)
        self.fd = _call(_libc.inotify_init1, mode)
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str | bytes | os.PathLike[str], mask: int) -> int:
        return _call(_libc.inotify_add_watch, self.fd, os.fsencode(path), ctypes.c_uint32(int(mask)))

    def rm_watch(self, wd: int) -> None:
        _call(_libc.inotify_rm_watch, self.fd, wd)

    def read(self, timeout: int | None = None, read_delay: int | None = None) -> list[Event]:
        data = self._queued()
        if not data and timeout != 0 and self._poll.poll(timeout):
            data = self._queued()
        return parse_events(data)

    def _queued(self) -> bytes:
        size = ctypes.c_int()
        fcntl.ioctl(self.fd, termios.FIONREAD, size)
        return os.read(self.fd, size.value) if size.value else b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> INotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_events(data: bytes) -> list[Event]:
    events = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        wd, mask, cookie, size = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        name = data[pos:pos + size].split(b"\x00", 1)[0]
        pos += size
        events.append(Event(wd, mask, cookie, os.fsdecode(name)))
    return events
