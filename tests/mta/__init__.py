"""Real mail programs for the tests: harnesses, and what they share."""

from __future__ import annotations

import os
from pathlib import Path


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
