"""Split a mail log line into its syslog header and message, fast.

Inputs: one raw line (bytes, no newline) and the reference time `now` (epoch seconds, injected).
Output: a `Header` tuple (time, host, program, pid, msg_start) or None for anything that is not a
log line we understand. The message is not copied: callers match it in place from `msg_start`.

Formats understood:
- BSD syslog:  `Nov 20 08:00:01 host prog[pid]: msg` (no year: inferred, never in the future)
- RFC 3339:    `2026-11-20T08:00:01.123456+00:00 host prog[pid]: msg`
- postfix `maillog_file` (postlogd) writes the BSD form above, so it needs nothing special.
- dovecot `log_path` files: `Nov 20 08:00:01 auth: Info: msg` (no host, no pid).
Tags like `auth-worker(1234)` carry the pid in parentheses; both forms are split.
- rsyslog's repeat folding (`$RepeatedMsgReduction on`): `host prog[pid]: message repeated 18
  times: [ msg]` stands for 18 more copies of `msg`; `unfold` gives the line it stands for and N.

Must never: raise on any input (garbage, NUL bytes, invalid UTF-8, 100 KB lines), read the clock,
or decode the message. Security note: everything after the header is attacker-influenced text;
the header itself can be forged by any local user writing to syslog (see docs/security.md).
"""

from __future__ import annotations

import calendar
import functools
import re
from datetime import datetime
from typing import Any, Callable, NamedTuple

MONTHS = {
    m.encode(): i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
# Tolerance for "in the future" when inferring a BSD timestamp's year: clocks of the logging
# host and of mailban may differ a little, and the log may be in another time zone than ours.
FUTURE_SLACK = 2 * 86400
MAX_TAG = 96
_CACHE_MAX = 4096


class Header(NamedTuple):
    time: float
    host: bytes | None
    program: bytes
    pid: bytes | None
    msg_start: int


# Building the tuple directly skips the generated __new__ (a Python-level call per line).
_new_header = tuple.__new__
# `host prog[pid]: ` with a plain program name and a numeric pid (or none), as the step-by-step
# split in parse() would cut it: host up to 255 bytes, the tag and its colon within MAX_TAG.
_HOST_TAG = re.compile(rb"([^ :]{1,255}) ([^ \[\]():]+)(?:\[([0-9]+)\])?: ").match
# `auth(user,ip,...)` but not dovecot 2.3's `auth-worker(1234): ` (a pid)
_DOVECOT24_AUTH = re.compile(rb"(auth(?:-worker)?)\((?![0-9]+\): )").match
# `.123456` or `,123` after the seconds of an RFC 3339 stamp (the digits may be missing).
_FRACTION = re.compile(rb"[.,](\d*)").match


# rsyslog's fold, as rsyslog 8 writes it (`message repeated %d times: [%.800s]` around the message,
# whose text starts with the space that followed the tag): only at the start of the message,
# where the program's own text begins, so no client-written text can fold a line.
REPEATED = b"message repeated "
_FOLD = re.compile(rb"message repeated ([1-9][0-9]{0,8}) times: \[ ?").match


def unfold(line: bytes, msg_start: int) -> tuple[bytes, int] | None:
    """(the line rsyslog folded, how many copies it stands for) for a `message repeated N
    times: [ msg]` line, else None. rsyslog cuts a long message at 800 bytes and still closes
    the bracket, so the last `]` is always its own and the message's own brackets stay."""
    m = _FOLD(line, msg_start)
    if m is None or not line.endswith(b"]"):
        return None
    return line[:msg_start] + line[m.end():-1], int(m.group(1))


# Converts a naive local time tuple (Y, M, D, h, m, s) to epoch seconds. The core defaults to
# UTC; the daemon and the CLI pass the host's local time zone (time.mktime), keeping this
# module free of clock and environment reads.
LocalToEpoch = Callable[[tuple[int, int, int, int, int, int]], float]


def utc_to_epoch(t: tuple[int, int, int, int, int, int]) -> float:
    return float(calendar.timegm((*t, 0, 0, 0)))


# A log's new second costs a _bsd_time() call (~50,000 in the 1M-line benchmark log): the
# year of `now` and the month lengths are the same every time.
@functools.lru_cache(maxsize=8)
def _year_of(now: float) -> int:
    return datetime.fromtimestamp(now).year if now > 0 else 1970


@functools.lru_cache(maxsize=64)
def _days_in(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


class SyslogParser:
    """Stateful only for speed: caches timestamp conversions (lines share their seconds).

    `parse` is `parse_py`, or with `fast` (the C module `_speedups`, see mailban.speedups) its C
    version: it cuts the common case itself (a BSD or RFC 3339 stamp through this parser's
    caches, then `host prog[pid]: `) and hands every other line to `parse_py`, so both give a
    line the same Header."""

    __slots__ = ("now", "_to_epoch", "_bsd_cache", "_iso_cache", "parse")

    def __init__(self, now: float, to_epoch: LocalToEpoch = utc_to_epoch, fast: Any = None) -> None:
        self.now = now
        self._to_epoch = to_epoch
        self._bsd_cache: dict[bytes, float] = {}
        self._iso_cache: dict[bytes, float] = {}
        self.parse: Callable[[bytes], Header | None] = (
            functools.partial(fast.parse_header, self._bsd_cache, self._bsd_time, self._iso_cache,
                              self._iso_time, self.parse_py, Header)
            if fast is not None else self.parse_py)

    def set_now(self, now: float) -> None:
        """Move the reference time (the daemon calls this as wall time advances)."""
        if int(now) // 3600 != int(self.now) // 3600:
            # Year inference depends on `now`; drop cached conversions when the hour turns.
            self._bsd_cache.clear()
        self.now = now

    def parse_py(self, line: bytes) -> Header | None:
        # The hot path of the whole daemon: every line comes through here, so the common case
        # (a cached BSD timestamp, then `host prog[pid]: `) is written out inline, with the
        # rarer forms handled by the same checks further down.
        if len(line) < 20:
            return None
        first = line[0]
        if 65 <= first <= 90:  # 'A'..'Z': a month name, BSD format
            if line[15] != 32:
                return None
            stamp = line[:15]
            when = self._bsd_cache.get(stamp)
            if when is None:
                when = self._bsd_time(stamp)
                if when is None:
                    return None
            pos = 16
        elif 48 <= first <= 57:  # a digit: RFC 3339
            end = line.find(b" ", 0, 40)
            if end < 19:
                return None
            when = self._iso_time(line[:end])
            if when is None:
                return None
            pos = end + 1
        else:
            return None
        # The common form, `host prog[pid]: msg` or `host prog: msg`, in one regex match; the
        # step-by-step split below handles the others and decides every edge case.
        m = _HOST_TAG(line, pos)
        if m is not None and m.end() - m.start(2) <= MAX_TAG + 1:
            host, tag, pid = m.groups()
            return _new_header(Header, (when, host, tag, pid, m.end()))
        # dovecot 2.4's own log file names an auth request in its tag, user name included:
        # `auth(user,ip,sasl:plain)<session>: Info: ...`. The user name may hold spaces and
        # colons, so the tag cannot be cut; the whole text is the message, from `auth`.
        auth24 = _DOVECOT24_AUTH(line, pos)
        if auth24 is not None:
            return _new_header(Header, (when, None, auth24.group(1), None, pos))
        # `host prog[pid]: msg`, or `prog: msg` with no host (dovecot log_path files)
        find = line.find
        sp = find(b" ", pos, pos + 256)
        if sp <= pos:
            return None
        if line[sp - 1] == 58:  # ':'
            if sp - 1 == pos:
                return None  # `: msg`: no program name
            host = None
            tag = line[pos : sp - 1]
        else:
            host = line[pos:sp]
            sp2 = find(b" ", sp + 1, sp + 2 + MAX_TAG)
            if sp2 < 0:
                # `host prog[pid]:` then end of line: an empty message
                if line.endswith(b":") and len(line) - sp <= MAX_TAG:
                    sp2 = len(line)
                else:
                    return None
            if line[sp2 - 1] != 58 or sp2 - 1 <= sp + 1:
                return None
            tag = line[sp + 1 : sp2 - 1]
            sp = sp2
        pid = None
        last = tag[-1]
        if last == 93 or last == 41:  # `]` or `)`: a pid, `prog[pid]` or `prog(pid)`
            open_at = tag.find(b"[" if last == 93 else b"(")
            if open_at > 0:
                pid = tag[open_at + 1 : -1]
                tag = tag[:open_at]
        if not tag:
            return None
        return _new_header(Header, (when, host, tag, pid, sp + 1))

    def _bsd_time(self, stamp: bytes) -> float | None:
        when = self._bsd_cache.get(stamp)
        if when is not None:
            return when
        month = MONTHS.get(stamp[:3])
        if month is None or stamp[3:4] != b" " or stamp[6:7] != b" ":
            return None
        try:
            day = int(stamp[4:6])
            hh, mm, ss = int(stamp[7:9]), int(stamp[10:12]), int(stamp[13:15])
        except ValueError:
            return None
        if stamp[9:10] != b":" or stamp[12:13] != b":" or not (1 <= day <= 31):
            return None
        if hh > 23 or mm > 59 or ss > 60:
            return None
        year = _year_of(self.now)
        try:
            when = None
            if day <= _days_in(year, month):
                when = self._to_epoch((year, month, day, hh, mm, min(ss, 59)))
            if when is None or when > self.now + FUTURE_SLACK:
                if day > _days_in(year - 1, month):
                    return None  # Feb 30, or Feb 29 in no recent leap year
                when = self._to_epoch((year - 1, month, day, hh, mm, min(ss, 59)))
        except (ValueError, OverflowError):
            return None
        if len(self._bsd_cache) >= _CACHE_MAX:
            self._bsd_cache.clear()
        self._bsd_cache[stamp] = when
        return when

    def _iso_time(self, stamp: bytes) -> float | None:
        # Cache on the whole seconds plus zone; add the fraction afterwards.
        base = stamp[:19]
        rest = stamp[19:]
        frac = 0.0
        m = _FRACTION(rest)
        if m is not None:
            if m.end() > 1:
                frac = float(b"0." + m.group(1))
            rest = rest[m.end():]
        key = base + rest
        when = self._iso_cache.get(key)
        if when is None:
            try:
                text = (base + (rest if rest not in (b"z", b"Z") else b"+00:00")).decode("ascii")
                dt = datetime.fromisoformat(text)
            except (ValueError, UnicodeDecodeError):
                return None
            if dt.tzinfo is None:
                t = dt.timetuple()
                when = self._to_epoch((t[0], t[1], t[2], t[3], t[4], t[5]))
            else:
                when = dt.timestamp()
            if len(self._iso_cache) >= _CACHE_MAX:
                self._iso_cache.clear()
            self._iso_cache[key] = when
        return when + frac
