"""`mailban test --missed`: the lines of the programs mailban has filters for that no rule matched,
grouped by shape, so that an admin sees in seconds what mailban overlooks on their host.

Inputs: logs, the loaded filters. Output: one group per (program, shape), most frequent first,
each with its count and its first line as an example; as text or JSON lines.
A shape is the message with what varies from line to line replaced: addresses (`IP`), anything
between angle brackets (`<*>`), values after `user=`, `relay=` and their kind (`=*`), and every
word that holds a digit (`#`: queue ids, pids, counts, session ids, host names with numbers).
Lines of programs no filter covers (cron, kernel, ...) are not listed: mailban cannot have missed
what it never looks at.
Security note: the example lines are attacker-influenced text, printed as data (JSON-escaped in
`--json`, control characters escaped in the text form).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import IO, Any

from ..core.filters import Filter, FilterSet
from ..core.syslog import SyslogParser
from ..localtime import local_to_epoch
from .run import ReadCount, file_events
from .scan import looks_like_failure
from ..speedups import speedups

MAX_SHAPE = 240

_IPV6 = rb"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})"
_IPV4 = rb"(?:\d{1,3}\.){3}\d{1,3}"


def _ip_or(m: re.Match[bytes], replacement: bytes, group: int = 1) -> bytes:
    """`replacement` where the match holds an address (`00:30:00` is a time, not one)."""
    try:
        ipaddress.ip_address(m.group(group).decode("ascii"))
    except ValueError:
        return m.group(0)
    return replacement


_REPLACEMENTS: tuple[tuple[re.Pattern[bytes], Any], ...] = (
    # a queue id opening the message (postfix `4F2A31C0D5:`, its long form, sendmail's
    # `6AMBC3nP023582:`), with or without a digit in it
    (re.compile(rb"\A(?:[0-9A-F]{6,12}|[0-9A-Za-z]{12,20}): "), b"QID: "),
    # Exim: its own stamp and `[pid]` inside a syslog message, then a message id (`1rKx2p-0004Ab-1F`,
    # 4.97+ `1tAbCd-000000012Ab-1FGh`) opening the text
    (re.compile(rb"\A(?:[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}(?:\.[0-9]{3})?(?: [-+][0-9]{4})? )?\[[0-9]+\] "), b""),
    (re.compile(rb"\A[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}(?:\.[0-9]{3})?(?: [-+][0-9]{4})? "), b""),
    (re.compile(rb"\A[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4}) "), b"QID "),
    # `<...>` holds addresses, user names, session ids (no nesting, bounded: linear)
    (re.compile(rb"<[^<>\n]{0,512}>"), b"<*>"),
    # key=value pairs whose value is a name or an address chosen elsewhere
    (re.compile(rb"\b(user|ruser|rhost|relay|sasl_username|sasl_sender|authid|helo|orig_to|to|from|"
                rb"method|mech|mechanism|proto|ctladdr)=(?!<)[^,;\s)]{1,512}"), rb"\1=*"),
    # postfix's `name[ip]` and `name[ip]:port`: the name varies too, but `unknown` (no reverse
    # DNS) says something
    (re.compile(rb"([\w.-]*)\[(?:IPv6:)?(" + _IPV6 + rb"|" + _IPV4 + rb")\](?::\d+)?"),
     lambda m: _ip_or(m, (b"unknown" if m.group(1) == b"unknown" else b"host" if m.group(1) else b"") + b"[IP]", 2)),
    (re.compile(rb"(?<![\w:.])(" + _IPV6 + rb"|" + _IPV4 + rb")(?![\w:.])"), lambda m: _ip_or(m, b"IP")),
    # postfix's per-command counters (`ehlo=1 auth=0/1 quit=1 commands=2/3`): one shape for all
    (re.compile(rb"\b[a-z]+=\d+(?:/\d+)?(?: [a-z]+=\d+(?:/\d+)?)+"), b"counters"),
    # any other word holding a digit: ids, numbers, numbered host names
    # (but dovecot's `pop3-login` is a name)
    (re.compile(rb"(?<![\w.+-])(?!pop3-login)[\w.+-]*\d[\w.+-]*"), b"#"),
)


def shape_of(message: bytes) -> str:
    """The message with what varies between lines of one kind replaced (see the module doc)."""
    for pattern, replacement in _REPLACEMENTS:
        message = pattern.sub(replacement, message)
    text = message.decode("utf-8", "replace")
    return text if len(text) <= MAX_SHAPE else text[:MAX_SHAPE] + "..."


@dataclass
class Group:
    program: str
    shape: str
    count: int
    source: str
    lineno: int
    example: str
    failure: bool  # the example reads like a failure (scan.looks_like_failure, as the summary's hint)


class MissedLines:
    """Groups the missed lines of one or more logs, in the order they are read."""

    def __init__(self) -> None:
        self.groups: dict[tuple[bytes, str], Group] = {}
        self.lines = 0

    def add(self, program: bytes, message: bytes, line: bytes, source: str, lineno: int) -> None:
        self.lines += 1
        shape = shape_of(message)
        key = (program, shape)
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = Group(program.decode("utf-8", "replace"), shape, 1, source, lineno,
                                     line.decode("utf-8", "replace"), looks_like_failure(message))
        else:
            group.count += 1

    def ranked(self) -> list[Group]:
        """Most frequent first; ties in the order first seen."""
        return sorted(self.groups.values(), key=lambda g: -g.count)


def collect(paths: list[str], filters: list[Filter], now: float) -> MissedLines:
    """The missed lines of `paths` (each file in order), grouped. Reads every line with a header
    through the same walk as replay (`offline.file_events`, in C where it is built)."""
    fset = FilterSet(filters)
    parser = SyslogParser(now, local_to_epoch, speedups())
    missed = MissedLines()
    for path in paths:
        for _t, lineno, line, header, events in file_events(path, parser, fset, ReadCount(), True, None):
            # rules_for caches per program: a line of a program no filter covers costs a dict lookup
            if not events and fset.rules_for(header.program):
                missed.add(header.program, line[header.msg_start:], line, path, lineno)
    return missed


def _printable(text: str) -> str:
    """Control characters (a forged line may hold escape sequences) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def write_missed(missed: MissedLines, as_json: bool, out: IO[str]) -> None:
    groups = missed.ranked()
    if as_json:
        for g in groups:
            out.write(json.dumps({"count": g.count, "program": g.program, "shape": g.shape,
                                  "looks_like_failure": g.failure, "example": {
                                      "file": g.source, "line": g.lineno, "text": g.example}}) + "\n")
        return
    if not groups:
        out.write("Missed: every line of the programs the filters cover matched a rule.\n")
        return
    failures = sum(g.count for g in groups if g.failure)
    out.write(f"Missed: {missed.lines} lines of the programs the filters cover matched no rule, "
              f"in {len(groups)} shapes; {failures} of them look like failures (marked !).\n\n")
    for g in groups:
        mark = "!" if g.failure else " "
        out.write(f"{g.count:>9} {mark} {_printable(g.program)}: {_printable(g.shape)}\n")
        out.write(f"{'':>12}e.g. {_printable(g.source)}:{g.lineno}: {_printable(g.example)}\n")
