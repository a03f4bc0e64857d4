"""Durations as admins write them: 600, "600", "30s", "10m", "1h", "1d", "1w", "1h30m"."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?", re.IGNORECASE)
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> float:
    """Seconds in `value`; raises ValueError with a sentence an admin understands."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or text like '10m', '1h', '1d'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a duration must be a number of seconds or text like '10m', '1h', '1d'")
    text = value.strip()
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read {value!r} as a duration; write e.g. '600', '10m', '1h', '1d'")
        unit = m.group(2).lower() if m.group(2) else None
        total += float(m.group(1)) * _UNITS[unit]
        pos = m.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return total


def format_duration(seconds: float) -> str:
    """A duration as an admin writes it: `1h`, `10m`, `1w`, `1h30m`, `1h44m43s` (rounded to the
    second; the largest units first, only those that are not zero)."""
    seconds = int(round(seconds))
    if seconds <= 0:
        return "0s"
    if seconds % 604800 == 0:
        return f"{seconds // 604800}w"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
