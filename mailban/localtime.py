"""The host's local time zone, for BSD syslog timestamps (which carry no zone)."""

from __future__ import annotations

import time


def local_to_epoch(t: tuple[int, int, int, int, int, int]) -> float:
    return time.mktime((*t, 0, 0, -1))
