"""`mailban test`'s summary on every core: a log file cut into byte ranges at line boundaries,
each range parsed and filtered in a worker process, the results merged in file order.

Inputs: a regular file, the filters (as a TallySet) and the number of worker processes. Outputs,
per range and in file order: counts per rule and per address, plus the events whose result
depends on earlier lines (those with a queue id, see `tally_lines`). Queue-id correlation, the
one stage that depends on order, stays with the caller in the main process, fed in file order,
so a run with N workers prints exactly what a run with one prints (ranges count their own
lines; the caller adds the lines of the ranges before).

The filters hold no state across lines, so the workers are forked after they are compiled and
inherit them (`fork` context); a range's result comes back pickled, which is why it carries
counts rather than events. JSON output and replay stay in one process: shipping every event
back cost more than the workers saved (measured, see bench/README.md).
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any, Callable, Iterator, TypeVar

from ..core.correlate import DEFAULT_MAX_MESSAGES, DEFAULT_TTL, Correlator
from ..core.filters import TallySet
from ..core.syslog import SyslogParser
from ..localtime import local_to_epoch
from ..speedups import speedups
from ..sources.tail import chunk_lines

# Below this size a file is read in the calling process: forking and merging cost more than
# they save (~50 ms against ~4 s per 100 MB).
MIN_PARALLEL_BYTES = 8 << 20
# Ranges are this size or smaller, and at least four per worker, so that the main process
# merges one while the workers scan the next, and no worker waits long for the slowest.
RANGE_BYTES = 8 << 20
_READ = 1 << 20

# A summary's result for one range: lines read, lines with a header, lines with an event,
# counts per rule and per address of the events that need no correlation, the position of
# each address's first counted event, and the events that do (in order):
# (time, rule key, address, host, queue id, lineno, index of the event on its line).
Pending = tuple[float, tuple[str, str, str], "str | None", "bytes | None", str, int, int]
RangeTally = tuple[int, int, int, int, bool, dict[tuple[str, str, str], int], dict[str, int],
                   dict[str, tuple[int, int]], list[Pending]]
# The words that make a line no rule matched look like a failure, worth `mailban test --missed`:
# the programs' vocabulary for a client doing something wrong (lower case, compared with the
# message's first 1,024 bytes lowered; the C tally is given this list).
FAILURE_STEMS = (b"fail", b"reject", b"denied", b"invalid", b"abort", b"refus", b"illegal", b"disallow",
                 b"too many", b"unknown user", b"user unknown", b"error", b"violation", b"timeout",
                 b"timed out", b"not allowed", b"mismatch", b"no such", b"not found", b"blocked", b"attack",
                 b"exceeded", b"penalty")


def looks_like_failure(message: bytes) -> bool:
    low = message[:1024].lower()
    return any(stem in low for stem in FAILURE_STEMS)
T = TypeVar("T")


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worth_splitting(path: str, jobs: int) -> bool:
    """A regular file large enough that worker processes pay (not stdin, not a pipe)."""
    if jobs < 2 or path == "-":
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    import stat

    return stat.S_ISREG(st.st_mode) and st.st_size >= MIN_PARALLEL_BYTES


def split_ranges(path: str, jobs: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges covering the file, each starting at a line's first byte."""
    size = os.path.getsize(path)
    parts = max(jobs * 4, -(-size // RANGE_BYTES))
    bounds = [0]
    with open(path, "rb") as fh:
        for i in range(1, parts):
            target = max(size * i // parts, bounds[-1])
            fh.seek(target)
            pos = target
            while True:
                chunk = fh.read(65536)
                if not chunk:
                    pos = size
                    break
                nl = chunk.find(b"\n")
                if nl >= 0:
                    pos += nl + 1
                    break
                pos += len(chunk)
            if pos >= size:
                break
            if pos > bounds[-1]:
                bounds.append(pos)
    bounds.append(size)
    return list(zip(bounds, bounds[1:]))


def iter_range_lines(path: str, start: int, end: int) -> Iterator[bytes]:
    """The lines of bytes [start, end) as `iter_file_lines` cuts them (newline dropped, long
    lines cut at MAX_LINE, a last line without newline still a line)."""
    with open(path, "rb") as fh:
        fh.seek(start)
        left = [end - start]

        def read() -> bytes:
            chunk = fh.read(min(_READ, left[0])) if left[0] > 0 else b""
            left[0] -= len(chunk)
            return chunk

        yield from chunk_lines(read)


# What forked workers inherit: set by the parent just before the pool starts.
_job: dict[str, Any] = {}


def tally_lines(source: Iterator[bytes], filters: TallySet, now: float) -> RangeTally:
    """Count what the filters match in one range, correlation left to the caller.

    An event without a queue id is counted here: queue-id correlation passes it through
    unchanged. One with a queue id may be dropped (a qmgr retry) or get its address from a
    line in an earlier range, so it is returned, in order, for the caller's Correlator.
    """
    fast = speedups()
    parser = SyslogParser(now, local_to_epoch, fast)
    per_rule: dict[tuple[str, str, str], int] = {}
    per_ip: dict[str, int] = {}
    first: dict[str, tuple[int, int]] = {}
    pending: list[Pending] = []
    # One object per distinct host and queue id: pickle then sends each once (a message's
    # queue id is on four or more lines) and the caller's correlation compares them by identity.
    same: dict[Any, Any] = {}
    if fast is not None:
        # The same loop in C (mailban/core/_speedups.c), with the same results.
        lines, parsed, matched, missed, failing = fast.tally(source, 0, filters.scan_context(parser), per_rule,
                                                             per_ip, first, pending, same, FAILURE_STEMS)
        return lines, parsed, matched, missed, bool(failing), per_rule, per_ip, first, pending
    parse = parser.parse
    match = filters.match_logged
    lines = parsed = matched = missed = 0
    failing = False
    per_rule_get, per_ip_get, add_pending = per_rule.get, per_ip.get, pending.append
    shared = same.setdefault
    for line in source:
        lines += 1
        header = parse(line)
        if header is None:
            continue
        parsed += 1
        tallies = match(parser, line, header)
        if not tallies:
            # a line of a covered program that no rule matched (does one read like a failure?)
            if filters.rules_for(header.program):
                missed += 1
                failing = failing or looks_like_failure(line[header.msg_start:])
            continue
        matched += 1
        for j, (key, ip, qid) in enumerate(tallies):
            if qid is not None:
                host = header.host
                add_pending((header.time, key, ip, shared(host, host), shared(qid, qid), lines, j))
                continue
            per_rule[key] = per_rule_get(key, 0) + 1
            if ip:
                count = per_ip_get(ip)
                if count is None:
                    per_ip[ip] = 1
                    first[ip] = (lines, j)
                else:
                    per_ip[ip] = count + 1
    return lines, parsed, matched, missed, failing, per_rule, per_ip, first, pending


class PendingCounter:
    """Queue-id correlation and counting of the events `tally_lines` left to the caller,
    fed in file order: into per_rule, per_ip and first (positions (file, line, event on the line)).

    The same records, evictions and retry drops as `Correlator.address_of`; in C where the
    `_speedups` module is built (which keeps its records, [time, address, queued], in a dict
    of its own), in Python through the Correlator otherwise."""

    def __init__(self, per_rule: dict[tuple[str, str, str], int], per_ip: dict[str, int],
                 first: dict[str, tuple[int, int, int]], ttl: float = DEFAULT_TTL,
                 max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.per_rule, self.per_ip, self.first = per_rule, per_ip, first
        self.correlator = Correlator(ttl, max_messages)
        self._fast = speedups()
        self._records: dict[Any, list[Any]] = {}

    def add(self, pending: list[Pending], fileno: int, offset: int) -> None:
        """Count one range's pending events; `offset`: the file's lines in the ranges before."""
        c = self.correlator
        if self._fast is not None:
            c.dropped += self._fast.merge(pending, fileno, offset, self._records, c.ttl, c.max_messages,
                                          self.per_rule, self.per_ip, self.first)
            return
        correlate = c.address_of
        per_rule, per_ip, first = self.per_rule, self.per_ip, self.first
        per_rule_get, per_ip_get = per_rule.get, per_ip.get
        for when, key, ip, host, qid, lineno, j in pending:
            kept, ip = correlate(key[2], qid, ip, host, when)
            if not kept:
                continue
            per_rule[key] = per_rule_get(key, 0) + 1
            if ip:
                pos = (fileno, offset + lineno, j)
                old = per_ip_get(ip)
                if old is None:
                    per_ip[ip] = 1
                    first[ip] = pos
                else:
                    per_ip[ip] = old + 1
                    if pos < first[ip]:
                        first[ip] = pos


def _run_job(task: tuple[int, int]) -> Any:
    return _job["fn"](iter_range_lines(_job["path"], task[0], task[1]), *_job["args"])


def map_ranges(fn: Callable[..., T], path: str, jobs: int, *args: Any) -> Iterator[T]:
    """fn(lines of a range, *args) over the file's ranges in `jobs` forked workers, yielded in
    file order. The arguments are inherited through fork, not pickled."""
    ranges = split_ranges(path, jobs)
    _job.update(fn=fn, path=path, args=args)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(min(jobs, len(ranges))) as pool:
        try:
            yield from pool.imap(_run_job, ranges)
        finally:
            _job.clear()

