"""Split a mail log line into its syslog header and message, fast.

Inputs: one raw line (bytes, no newline) and the reference time `now` (epoch seconds, injected).
Output: a `Header` tuple (time, host, program, pid, msg_start) or None for anything that is not a
log line we understand. The message is not copied: callers match it in place from `msg_start`.

Formats understood (docs/configuration.md, "Log line formats", lists them with their sources):
- BSD syslog:  `Nov 20 08:00:01 host prog[pid]: msg` (no year: inferred, never in the future);
  the day padded with a space, a zero (`Sep 08`, dovecot's own stamp) or not at all (`Sep 8`).
- RFC 3339:    `2026-11-20T08:00:01.123456+00:00 host prog[pid]: msg` (`Z`, `+0000`, or no zone:
  local time), and with a space for the `T` (`2019-10-15 08:08:52[.usecs]`, a dovecot
  `log_timestamp` of `%Y-%m-%d %H:%M:%S`).
- postfix `maillog_file` (postlogd) writes the BSD form above, so it needs nothing special.
- dovecot `log_path` files: `Nov 20 08:00:01 auth: Info: msg` (no host, no pid).
Tags like `auth-worker(1234)` carry the pid in parentheses; both forms are split.
- A `<PRI>` before either stamp (forwarding templates), and RFC 5424:
  `<22>1 2026-11-20T08:00:01.003Z host app procid msgid [sd] msg` (app -> program, procid ->
  pid, `-` for none; the structured data skipped, a BOM before the message skipped).
- FreeBSD syslogd -v/-vv: `Nov 20 08:00:01 <mail.info> host prog[pid]: msg` (`<2.6>` with -v).
- TAI64N (daemontools multilog `t`): `@4000000067a1b2c3d4e5f607 prog: msg`.
- No time at all: `prog: msg` (dovecot's `log_timestamp = ""`, multilog without `t`), only with
  no host. Such a line, and an RFC 5424 line whose time is `-`, is timed by the last line that
  had a time (`last`: `mailban test`/`replay`, a file read in order) or, once the daemon moves
  `now` with set_now (lines read as they arrive), by `now`.
- Exim's own log files (mainlog, rejectlog; `log_file_path`): `2026-12-03 13:05:53 msg`, the
  seconds followed by `.mmm` (log_selector +millisec), then ` +0100` (log_timezone), then
  `[pid] ` (+pid). No host, no program: the line gets the program `exim`, and the pid of its
  `[pid]` when written. A line after such a stamp is Exim's when it has a zone, a `[pid]` or a
  message id (`1rKx2p-0004Ab-1F`, `1tAbCd-000000012Ab-1FGh` since 4.97) right after the stamp, or
  when it is not `prog: msg` (dovecot's log_timestamp) nor `host prog[pid]: msg`.
- rsyslog's repeat folding (`$RepeatedMsgReduction on`): `host prog[pid]: message repeated 18
  times: [ msg]` stands for 18 more copies of `msg`; `unfold` gives the line it stands for and N.

Must never: raise on any input (garbage, NUL bytes, invalid UTF-8, 100 KB lines), read the clock,
or decode the message. Security note: everything after the header is attacker-influenced text;
the header itself can be forged by any local user writing to syslog (see docs/security.md).
Size: every header format real hosts write (BSD, RFC 3339, RFC 5424, programs' own logs,
repeat lines) in one parser, which must stay line for line the twin of the C module's header
cut (tests/test_speedups.py compares them).
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
# The rarer stamps (parse_py's slow path). A BSD stamp whose day is not padded to two bytes
# (`Sep 8 08:00:01`: some syslog daemons and templates); read as the padded one.
_BSD_UNPADDED = re.compile(rb"([A-Z][a-z]{2}) ([1-9]) ([0-9]{2}:[0-9]{2}:[0-9]{2}) ").match
# An RFC 3339 stamp with a space for the `T` (dovecot's `log_timestamp = "%Y-%m-%d %H:%M:%S "`,
# with `.%{usecs}` or a zone after it or not), then the space that ends it.
_ISO_SPACE = re.compile(rb"([0-9]{4}-[0-9]{2}-[0-9]{2}) ([0-9]{2}:[0-9]{2}:[0-9]{2}[^ ]{0,20}) ").match
# What follows Exim's own stamp (src/log.c, tod.c): ` +0100` (log_timezone), `[pid] ` (+pid).
_EXIM_ZONE_PID = re.compile(rb"(?:([-+][0-9]{4}) )?(?:\[([0-9]{1,10})\] )?").match
# An Exim message id right after the stamp: `1rKx2p-0004Ab-1F`, or 4.97's `1tAbCd-000000012Ab-1FGh`.
_EXIM_ID = re.compile(rb"[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4}) ").match
EXIM = b"exim"
# `<PRI>` (0..191) that forwarding templates put before the stamp; `1 ` after it is RFC 5424.
_PRI = re.compile(rb"<(?:[0-9]|[1-9][0-9]|1[0-8][0-9]|19[01])>").match
# TAI64N: `@`, 2^62 + 10 + the Unix second in 16 hex digits, the nanoseconds in 8, a space.
_TAI64N = re.compile(rb"@(4[0-9a-f]{15})([0-9a-f]{8}) ").match
TAI64_UNIX = (1 << 62) + 10  # the label of Unix time 0, as daemontools' tai64n writes it
# RFC 5424 after `<PRI>1 `: TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG], each
# `-` when absent; SD is `-` or `[id name="value" ...]` elements (`\"`, `\\`, `\]` escaped in a
# value), written strictly so that the match stays linear, and bounded (10 elements of 10
# parameters of 256 bytes: a forged 256 KB line costs a few ms, not tens).
_RFC5424 = re.compile(
    rb"(-|[0-9]{4}-[0-9]{2}-[0-9]{2}T[^ ]{8,32}) ([!-~]{1,255}) ([!-~]{1,48}) ([!-~]{1,128}) [!-~]{1,32} "
    rb"(?:-|(?:\[[^\]\x22= ]{1,32}(?: [^\]\x22= ]{1,32}=\x22(?:[^\x22\\]|\\.){0,256}\x22){0,10}\]){1,10})"
    rb"(?: |$)", re.S).match
# FreeBSD syslogd -v (`<2.6>`) and -vv (`<mail.info>`): facility.level between stamp and host.
_FACPRI = re.compile(rb"<[a-z0-9]{1,10}\.[a-z0-9]{1,10}> ").match
BOM = b"\xef\xbb\xbf"
# What a line with no stamp may start with (its program's name).
_TAG_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


# rsyslog's fold, as rsyslog 8 writes it (`message repeated %d times: [%.800s]` around the message,
# whose text starts with the space that followed the tag): only at the start of the message,
# where the program's own text begins, so no client-written text can fold a line.
REPEATED = b"message repeated "
_FOLD = re.compile(rb"message repeated ([1-9][0-9]{0,8}) times: \[ ?").match


# The other fold, `last message repeated N times`: identical messages after the first are held
# back, and a line of their own says how many there were. It stands for the file's previous line
# (the held-back copies are that line's), and the readers, who know that line, expand it
# (SyslogParser.expand). Three forms: FreeBSD's syslogd before 12, sysklogd and macOS (`--- ...
# ---`) write it with the host and no program (its Header gets the program REPEATS: no real
# tag is empty); FreeBSD 12 on writes it as its own (`syslogd: last message ...`), and rsyslog
# with RepeatedMsgContainsOriginalMsg off under the repeated line's program.
REPEATS = b""
LAST_REPEATED = b"last message repeated "
_LAST_REPEATED = re.compile(rb"(?:--- )?last message repeated ([1-9][0-9]{0,8}) times?(?: ---)?\Z").match


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

    __slots__ = ("now", "last", "previous", "follow", "_to_epoch", "_bsd_cache", "_iso_cache", "_fast", "parse")
    # How many times each cache holds before it is cleared (the C loops read it too).
    CACHE_MAX = _CACHE_MAX

    def __init__(self, now: float, to_epoch: LocalToEpoch = utc_to_epoch, fast: Any = None) -> None:
        self.now = now
        # The time of the last line that had one: what a line without a time gets while the
        # parser reads a file in order (`test`, `replay`). The C loops keep it too (they write
        # it here before they hand a line to parse_py, and when they end).
        self.last = now
        # The last line of the file being read that had a header of a program (not a REPEATS
        # line): what `last message repeated N times` stands for. The readers keep it, per file.
        self.previous: bytes | None = None
        # Set by set_now: the parser follows live logs, and a line without a time gets `now`
        # (its arrival), never a time another line (of any file, perhaps forged) carried;
        # `last` is then not used (and C no longer keeps it).
        self.follow = False
        self._to_epoch = to_epoch
        self._bsd_cache: dict[bytes, float] = {}
        self._iso_cache: dict[bytes, float] = {}
        self._fast = fast
        self.parse: Callable[[bytes], Header | None] = self._bind()

    def _bind(self) -> Callable[[bytes], Header | None]:
        fast = self._fast
        if fast is None:
            return self.parse_py
        # Reading in order, C stores each stamped line's time in `last` (the parser passed last).
        args = (self._bsd_cache, self._bsd_time, self._iso_cache, self._iso_time, self.parse_py, Header)
        return functools.partial(fast.parse_header, *args) if self.follow else \
            functools.partial(fast.parse_header, *args, self)

    def set_now(self, now: float) -> None:
        """Move the reference time (the daemon calls this as wall time advances); from the
        first call on, a line without a time of its own is timed by `now`."""
        if int(now) // 3600 != int(self.now) // 3600:
            # Year inference depends on `now`; drop cached conversions when the hour turns.
            self._bsd_cache.clear()
        self.now = now
        if not self.follow:
            self.follow = True
            self.parse = self._bind()

    def expand(self, line: bytes, header: Header) -> tuple[bytes, Header, int] | None:
        """A `last message repeated N times` line (see REPEATS) as (the line it stands for,
        its Header, N): the previous line of the file (`previous`) with this line's stamp and
        host, so that the copies count at the time the syslog daemon reported them. None when
        there is no previous line to repeat (the file's first line, a line of another format)."""
        previous = self.previous
        if previous is None:
            return None
        last = self.last
        before = self.parse(previous)
        if before is None or before.program == REPEATS:
            self.last = last
            return None
        # the stamp and host of this line (up to its tag, if it has one), the tag and message of
        # the previous line
        tag_at = previous.rfind(before.program, 0, before.msg_start)
        cut = line.rfind(header.program, 0, header.msg_start)
        inner = line[:cut] + previous[tag_at:] if tag_at >= 0 and cut >= 0 else b""
        after = self.parse(inner) if inner else None
        self.last = last
        if after is None or after.program != before.program or inner[after.msg_start:] != previous[before.msg_start:]:
            return None  # a form the stamp cannot be moved onto (RFC 5424): not guessed
        m = _LAST_REPEATED(line, header.msg_start)
        return inner, after, int(m.group(1)) if m is not None else 1

    def parse_py(self, line: bytes) -> Header | None:
        # The hot path of the whole daemon: every line comes through here, so the common case
        # (a cached BSD timestamp, then `host prog[pid]: `) is written out inline, with the
        # rarer forms handled by _rest and _other.
        if len(line) < 20:
            return self._other(line)
        first = line[0]
        if 65 <= first <= 90 and line[15] == 32:  # 'A'..'Z': a month name, BSD format
            stamp = line[:15]
            when = self._bsd_cache.get(stamp)
            if when is None:
                when = self._bsd_time(stamp)
                if when is None:
                    return self._other(line)
            pos = 16
        elif 48 <= first <= 57:  # a digit: RFC 3339
            end = line.find(b" ", 0, 40)
            if end < 19:
                if end == 10 and line[19] == 32:
                    # Exim's own log, `YYYY-MM-DD HH:MM:SS ` (the C cut leaves these to Python):
                    # what _other would do, with the stamp's time cached under its 19 bytes (a
                    # key with a space, which no RFC 3339 stamp of _iso_time's has).
                    stamp = line[:19]
                    when = self._iso_cache.get(stamp)
                    if when is None:
                        got = self._stamp(line, 0)
                        if got is None or got[1] != 20:
                            return self._other(line)
                        when = got[0]
                        if len(self._iso_cache) >= _CACHE_MAX:
                            self._iso_cache.clear()
                        self._iso_cache[stamp] = when
                    return self._exim(line, when, 20)
                return self._other(line)
            when = self._iso_time(line[:end])
            if when is None:
                return self._other(line)
            pos = end + 1
        else:
            return self._other(line)
        # The common form, `host prog[pid]: msg` or `host prog: msg`, in one regex match; the
        # step-by-step split in _rest handles the others and decides every edge case.
        m = _HOST_TAG(line, pos)
        if m is not None and m.end() - m.start(2) <= MAX_TAG + 1:
            self.last = when
            host, tag, pid = m.groups()
            return _new_header(Header, (when, host, tag, pid, m.end()))
        if first >= 65 and line.startswith(b"<", pos):  # after a BSD stamp: FreeBSD syslogd -v's `<mail.info> `
            fp = _FACPRI(line, pos)
            if fp is not None:
                pos = fp.end()
        return self._rest(line, when, pos, True)

    def _rest(self, line: bytes, when: float, pos: int, hosted: bool) -> Header | None:
        """The header after its stamp: `host prog[pid]: msg`, or (also when not `hosted`: a
        line with no stamp) `prog: msg` with no host, dovecot log_path's form."""
        if hosted:
            m = _HOST_TAG(line, pos)
            if m is not None and m.end() - m.start(2) <= MAX_TAG + 1:
                self.last = when
                host, tag, pid = m.groups()
                return _new_header(Header, (when, host, tag, pid, m.end()))
        # dovecot 2.4's own log file names an auth request in its tag, user name included:
        # `auth(user,ip,sasl:plain)<session>: Info: ...`. The user name may hold spaces and
        # colons, so the tag cannot be cut; the whole text is the message, from `auth`.
        auth24 = _DOVECOT24_AUTH(line, pos)
        if auth24 is not None:
            if hosted:
                self.last = when
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
        elif not hosted:
            return None
        else:
            host = line[pos:sp]
            if _LAST_REPEATED(line, sp + 1) is not None:
                self.last = when
                return _new_header(Header, (when, host, REPEATS, None, sp + 1))
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
        if hosted:
            self.last = when
        return _new_header(Header, (when, host, tag, pid, sp + 1))

    def _other(self, line: bytes) -> Header | None:
        """The rarer forms: `<PRI>` and RFC 5424, unpadded BSD days, a space for the `T`,
        TAI64N, and no stamp at all."""
        pos = 0
        pri = _PRI(line)
        if pri is not None:
            pos = pri.end()
            if line.startswith(b"1 ", pos):
                return self._rfc5424(line, pos + 2)
        got = self._stamp(line, pos)
        if got is not None and pri is None and line[10:11] == b" " and 48 <= line[0] <= 57:
            return self._exim(line, got[0], got[1])
        if got is not None:
            when, pos, bsd = got
            if bsd and line.startswith(b"<", pos):  # FreeBSD syslogd -v
                fp = _FACPRI(line, pos)
                if fp is not None:
                    pos = fp.end()
            elif line[0] == 64 and not line.startswith(b"@", pos):
                # multilog's stamp before the program's own (dovecot's log_timestamp): the
                # TAI64N time stays, the program's stamp (local, no year) is skipped
                inner = self._stamp(line, pos)
                if inner is not None:
                    pos = inner[1]
            return self._rest(line, when, pos, True)
        if pri is not None or not line or line[0] not in _TAG_START:
            return None
        # No stamp: only `prog: msg` (a tag and its message) qualifies, timed by its neighbours.
        return self._rest(line, self.now if self.follow else self.last, 0, False)

    def _exim(self, line: bytes, when: float, pos: int) -> Header | None:
        """A line whose stamp is `YYYY-MM-DD HH:MM:SS[.fff]` and a space: Exim's own log file, or
        (`prog: msg`, `host prog[pid]: msg` after it) dovecot's log_timestamp or a template."""
        m = _EXIM_ZONE_PID(line, pos)
        zone, pid = m.groups()
        if zone is not None:
            zoned = self._iso_time(line[:10] + b"T" + line[11:pos - 1] + zone)
            if zoned is None:
                return None
            when = zoned
        if zone is None and pid is None and _EXIM_ID(line, pos) is None:
            other = self._rest(line, when, pos, True)
            if other is not None:
                return other
        self.last = when
        return _new_header(Header, (when, None, EXIM, pid, m.end()))

    def _stamp(self, line: bytes, pos: int) -> tuple[float, int, bool] | None:
        """(time, where the text after it starts, whether BSD) for a stamp at `pos`, or None."""
        if len(line) < pos + 2:
            return None
        first = line[pos]
        if first == 64:  # `@`: TAI64N
            m = _TAI64N(line, pos)
            if m is None:
                return None
            nano = int(m.group(2), 16)
            if nano > 999_999_999:
                return None
            return int(m.group(1), 16) - TAI64_UNIX + nano / 1e9, m.end(), False
        if 65 <= first <= 90:
            if line[pos + 15 : pos + 16] == b" ":
                when = self._bsd_time(line[pos : pos + 15])
                if when is not None:
                    return when, pos + 16, True
            m = _BSD_UNPADDED(line, pos)
            if m is None:
                return None
            when = self._bsd_time(b"%s  %s %s" % m.groups())
            return None if when is None else (when, m.end(), True)
        if 48 <= first <= 57:
            end = line.find(b" ", pos, pos + 40)
            if end >= pos + 19:
                when = self._iso_time(line[pos:end])
                if when is not None:
                    return when, end + 1, False
            m = _ISO_SPACE(line, pos)
            if m is None:
                return None
            when = self._iso_time(m.group(1) + b"T" + m.group(2))
            return None if when is None else (when, m.end(), False)
        return None

    def _rfc5424(self, line: bytes, pos: int) -> Header | None:
        m = _RFC5424(line, pos)
        if m is None:
            return None
        stamp, host, app, procid = m.groups()
        if app == b"-":
            return None  # no program: no filter could cover it
        if stamp == b"-":
            when = self.now if self.follow else self.last
        else:
            when = self._iso_time(stamp)
            if when is None:
                return None
            self.last = when
        start = m.end()
        if line.startswith(b" ", start):
            start += 1  # rsyslog keeps the space that followed a BSD tag: `- -  msg`
        if line.startswith(BOM, start):
            start += 3
        return _new_header(Header, (when, None if host == b"-" else host, app,
                                    None if procid == b"-" else procid, start))

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
