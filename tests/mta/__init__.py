"""Real mail programs for the tests: harnesses, and what they share."""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path
from typing import Iterator


def debian_mirror() -> str:
    """The Debian mirror to debootstrap test roots from: MAILBAN_DEBIAN_MIRROR (or the older
    MAILBAN_TRIXIE_MIRROR), else the machine's own apt source, else deb.debian.org."""
    for name in ("MAILBAN_DEBIAN_MIRROR", "MAILBAN_TRIXIE_MIRROR"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    except OSError:
        pass
    return "http://deb.debian.org/debian"


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block's socket calls (and the programs it starts) in the network namespace `name`
    (setns of the calling thread: sockets opened inside keep their namespace after it)."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(there, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(here, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the host's namespace failed")
    finally:
        os.close(here)
        os.close(there)
