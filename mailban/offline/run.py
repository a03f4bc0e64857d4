"""`mailban test` and `mailban replay`: the daemon's pipeline run over log files, offline.

Inputs: log files (or "-" for stdin), the configuration. Outputs: a summary or JSON lines on
stdout. Executes no action: replay only prints what the daemon would decide. Uses the same
Pipeline as the daemon, with the log's own timestamps as the clock.
Size: `test` and `replay` share how files are read, merged by time and matched in C batches
(file_events, matched_lines, ReadCount); kept with both commands rather than split three ways.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from typing import IO, Any, Iterable, Iterator

from ..config import Config
from ..core.decisions import Folded, Outcome, Suppressed
from ..core.durations import format_duration
from ..core.filters import Filter, FilterSet, TallySet
from ..core.pipeline import Pipeline
from ..core.records import Ban, Event
from ..core.syslog import Header, SyslogParser
from .. import localusers
from ..localtime import local_to_epoch
from .progress import Progress
from ..speedups import speedups
from .scan import (PendingCounter, RangeTally, default_jobs, map_ranges, split_ranges, tally_lines,
                   worth_splitting)
from ..sources.tail import iter_file_line_lists, iter_file_lines


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).astimezone().isoformat(timespec="seconds")


def event_json(event: Event) -> str:
    return json.dumps(
        {
            "line": event.lineno,
            "time": iso(event.time),
            "filter": event.filter,
            "rule": event.rule,
            "kind": event.kind,
            "ip": event.ip,
            "user": event.user,
            "uid": event.uid,
            "sender": event.sender,
            "queue_id": event.queue_id,
            "recipients": event.recipients,
            "status": event.status,
            "count": event.count,
        },
        ensure_ascii=False,
    )


def run_test(paths: list[str], filters: list[Filter], as_json: bool, out: IO[str] = sys.stdout,
             jobs: int | None = None) -> int:
    """Run filters over logs: JSON lines per event, or a summary like fail2ban-regex's.

    For the summary, large regular files are scanned in `jobs` worker processes (default: one
    per CPU) over byte ranges, merged in file order; the output is the same as with one
    process (see scan.py). JSON output is written by this process alone.
    """
    jobs = default_jobs() if jobs is None else jobs
    if as_json:
        return _test_json(paths, filters, out)
    with no_cycle_collection():  # forked workers inherit the setting
        return _test_summary(paths, filters, out, jobs)


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """The cycle collector off for a run over logs: `test` and `replay` make millions of
    short-lived tuples and no reference cycles, and the collector's passes over the growing
    tallies, windows and records cost 10-15% of the run (perf, bench/README.md) and found
    nothing (replay of the 1M-line benchmark log: 64 MB peak RSS either way)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _test_summary(paths: list[str], filters: list[Filter], out: IO[str], jobs: int) -> int:
    tallies = TallySet(filters)
    now = time.time()
    lines = parsed = matched = missed = 0
    failing = False
    per_rule: dict[tuple[str, str, str], int] = {}
    per_ip: dict[str, int] = {}
    # Where each address was first counted, (file, line, event on the line): ties in "Top
    # addresses" are listed in that order, as a single pass over the lines would list them.
    first: dict[str, tuple[int, int, int]] = {}
    per_rule_get, per_ip_get = per_rule.get, per_ip.get
    # The same queue-id correlation as the daemon: it drops qmgr's retries and gives a
    # message's later lines the address of the client that submitted it.
    correlation = PendingCounter(per_rule, per_ip, first)
    started = time.perf_counter()
    write = out.write
    progress = Progress(paths)
    for n, path in enumerate(paths):
        if worth_splitting(path, jobs):
            results: Iterable[RangeTally] = map_ranges(tally_lines, path, jobs, tallies, now)
            whole = False
            range_bytes = os.path.getsize(path) // max(len(split_ranges(path, jobs)), 1) if progress.enabled else 0
        else:
            results = [tally_lines(progress.lines_of(iter_file_lines(path)), tallies, now)]
            whole = True
        offset = 0  # lines of this file in the ranges before
        for r_lines, r_parsed, r_matched, r_missed, r_failing, r_rules, r_ips, r_first, pending in results:
            if not whole and progress.enabled:
                progress.advance(range_bytes, r_lines)  # a range is done (ranges are of about equal size)
            parsed += r_parsed
            matched += r_matched
            missed += r_missed
            failing = failing or r_failing
            for key, count in r_rules.items():
                per_rule[key] = per_rule_get(key, 0) + count
            for ip, count in r_ips.items():
                lineno, j = r_first[ip]
                pos = (n, offset + lineno, j)
                old = per_ip_get(ip)
                if old is None:
                    per_ip[ip] = count
                    first[ip] = pos
                else:
                    per_ip[ip] = old + count
                    if pos < first[ip]:
                        first[ip] = pos
            correlation.add(pending, n, offset)
            offset += r_lines
        lines += offset
    progress.finish()
    elapsed = max(time.perf_counter() - started, 1e-9)
    write(f"Lines: {lines} read, {parsed} with a syslog header, {matched} matched, "
          f"{lines - parsed} skipped (no header)\n")
    write(f"Filters: {', '.join(f.name for f in filters)} ({sum(len(f.rules) for f in filters)} rules)\n")
    write(f"Time: {elapsed:.3f} s, {lines / elapsed:,.0f} lines/s\n")
    if per_rule:
        write("\nMatches per rule:\n")
        width = max(len(f"{f}.{r}") for f, r, _ in per_rule)
        for (fname, rule, kind), count in sorted(per_rule.items(), key=lambda kv: (-kv[1], kv[0])):
            write(f"  {count:>9}  {fname + '.' + rule:<{width}}  {kind}\n")
        write("\nTop addresses:\n")
        for ip in heapq.nsmallest(10, per_ip, key=lambda ip: (-per_ip[ip], first[ip])):
            write(f"  {per_ip[ip]:>9}  {ip}\n")
    else:
        write("\nNo line matched.\n")
    if failing:
        shown = " ".join(shlex.quote(p) for p in paths)
        write(f"\nHint: {missed:,} lines of the programs the filters cover matched no rule, and some read like "
              f"failures (fail, reject, denied, invalid, ...): `mailban test --missed {shown}` groups them by "
              f"shape.\n")
    return 0


def _test_json(paths: list[str], filters: list[Filter], out: IO[str]) -> int:
    """`mailban test --json`: every event, correlated, one JSON object per line.

    One process: worker processes were measured slower here (1M lines: 9.97 s with two against
    8.83 s with one), as every event must travel back pickled and the JSON encoding, the larger
    part of the work, stays in this process anyway."""
    fast = speedups()
    # The daemon's stages without jails: one correlation across the files, each file in order.
    pipeline = Pipeline(SyslogParser(time.time(), local_to_epoch, fast), FilterSet(filters), [], fast=fast,
                        uid_of=localusers.uid_of)
    write = out.write
    for path in paths:
        for _t, _n, _line, header, events in matched_lines([path], pipeline.parser, pipeline.filters, ReadCount()):
            for event in pipeline.correlated(events, header):
                write(event_json(event) + "\n")
    return 0


class ReadCount:
    """What matched_lines read besides the events: lines with a header, and the time of the
    last one (in merged order)."""

    __slots__ = ("parsed", "last")

    def __init__(self) -> None:
        self.parsed = 0
        self.last = 0.0


def file_events(path: str, parser: SyslogParser, filters: FilterSet, count: ReadCount,
                 all_lines: bool, progress: Progress | None) -> Iterator[tuple[float, int, bytes, Header, list[Event]]]:
    """One log's lines with events (with all_lines, every line with a header), matched a read
    chunk at a time by `_speedups.match_lines` where the C module is built. A line whose events
    were all quiet rules' (core/needs.py: none for a FilterSet without quiet rules) comes as
    (time, line number, line, None, None)."""
    source = iter_file_line_lists(path)
    batches = progress.batches_of(source) if progress is not None else source
    fast = speedups()
    # A line without a time takes the last time of its own file (parser.last): several logs
    # share the parser while a merge interleaves them, so each keeps its own between batches;
    # so with the line a `last message repeated` line stands for (parser.previous).
    mine = parser.now
    previous = None
    if fast is not None:
        ctx = (*filters.scan_context(parser), Header)
        lineno = 0
        items: list[tuple[float, int, bytes, Header, list[Event]]] = []
        for batch in batches:
            parser.last, parser.previous = mine, previous
            lineno, parsed, last = fast.match_lines(batch, lineno, ctx, path, all_lines, items)
            mine, previous = parser.last, parser.previous
            if parsed:
                count.parsed += parsed
                count.last = last
            yield from items
            items.clear()
        return
    match = filters.match_logged
    for lineno, line in enumerate((line for batch in batches for line in batch), 1):
        parser.last, parser.previous = mine, previous
        header = parser.parse(line)
        mine = parser.last
        if header is None:
            continue
        count.parsed += 1
        count.last = header.time
        events = match(parser, line, header, path, lineno)
        previous = parser.previous
        if events:
            kept = filters.without_quiet(events, None)
            if kept is None:  # only quiet rules' events (core/needs.py), as the C matcher gives it
                yield header.time, lineno, line, None, None
                continue
            events = kept
        if events or all_lines:
            yield header.time, lineno, line, header, events


def matched_lines(paths: list[str], parser: SyslogParser, filters: FilterSet, count: ReadCount,
                  progress: Progress | None = None) -> Iterator[tuple[float, int, bytes, Header, list[Event]]]:
    """(time, line number, line, header, events) of the lines of several logs that produce
    events, merged by time as the daemon would have seen them (mail.log and dovecot.log side
    by side); `count` gets the lines with a header.

    One log: only the lines with events come out (matched in batches in C where the module is
    built). Several: every line with a header goes through the merge by time (dropping the
    others first could change the merged order where a log's time goes backwards), and those
    without events are dropped after it."""
    if len(paths) == 1:
        return file_events(paths[0], parser, filters, count, False, progress)
    merged = heapq.merge(*(file_events(p, parser, filters, ReadCount(), True, progress) for p in paths),
                         key=lambda item: item[0])
    return _counted(merged, count)


def _counted(items: Iterator[tuple[float, int, bytes, Header, list[Event]]], count: ReadCount
             ) -> Iterator[tuple[float, int, bytes, Header, list[Event]]]:
    for item in items:
        count.parsed += 1
        count.last = item[0]
        if item[4] or item[4] is None:  # None: a quiet line, which lets time pass
            yield item


def ban_json(ban: Ban) -> dict[str, object]:
    return {
        "time": iso(ban.time),
        "jail": ban.jail,
        "key_type": ban.key_type,
        "key": ban.key,
        "count": ban.count,
        "findtime": ban.findtime,
        "bantime": ban.until - ban.time,
        "until": iso(ban.until),
        "actions": list(ban.actions),
        "lines": list(ban.lines),
        "ips": list(ban.ips),
        "cause": ban.cause or None,
    }


# A jail that acts on more than this share of the keys it counted (and on at least MANY of them)
# is reported by replay: it would ban (nearly) everyone.
TOO_MANY_SHARE = 0.3
MANY = 20
SEEN_CAP = 2_000_000


def run_replay(paths: list[str], config: Config, as_json: bool, out: IO[str] = sys.stdout) -> int:
    """Push logs through the whole pipeline with log time as the clock; print each decision.

    Several files are merged by timestamp (mail.log and dovecot.log side by side), as the
    daemon would have seen them. When the logs end, what falls due with time alone (an account
    attacker's grace period) is decided as the daemon's clock would have decided it.
    """
    with no_cycle_collection():
        return _replay(paths, config, as_json, out)


class DecisionPrinter:
    """Prints what the pipeline asks for (an Outcome: Pipeline.run in the daemon, Pipeline.step
    in replay) instead of carrying it out: one line per ban, fold and decision held back by the
    rate limit, as they come; at the end, per held key, how many more messages it would have
    had held. tests/test_decide_equivalence.py prints the daemon's batches with it too."""

    def __init__(self, pipeline: Pipeline, as_json: bool, out: IO[str]) -> None:
        self.pipeline = pipeline
        self.as_json = as_json
        self.out = out
        self.decisions = 0
        self.held_back = 0
        self.per_jail: dict[str, set[str]] = {}  # distinct keys each jail acted on
        # (action, jail, key type, key) -> messages a held key went on submitting
        self.followers: dict[tuple[str, str, str, str], int] = {}

    def show(self, cmds: Outcome) -> None:
        """Print the commands in the order the lines caused them, and empty `cmds`."""
        out, as_json = self.out, self.as_json
        for command in cmds.commands:
            if isinstance(command, Ban):
                self._ban(command)
            elif isinstance(command, Folded):
                net = command.net
                if as_json:
                    out.write(json.dumps({"decision": "folded", "time": iso(net.time), "jail": net.jail,
                                          "into": net.key, "ips": list(command.ips)}) + "\n")
                else:
                    out.write(f"{iso(net.time)}  {net.jail}  fold {len(command.ips)} single bans into {net.key}: "
                              f"{', '.join(command.ips)}\n")
            elif isinstance(command, Suppressed):
                self.held_back += 1
                ban = command.ban
                if as_json:
                    out.write(json.dumps({"decision": "suppressed", **ban_json(ban), "reason": command.reason},
                                         ensure_ascii=False) + "\n")
                else:
                    out.write(f"{iso(ban.time)}  {ban.jail}  held back: ban {ban.key_type} "
                              f"{ban.key if ban.key_type == 'ip' else repr(ban.key)} ({command.reason})\n")
            else:  # Hold: summed per key, shown at the end
                key = (command.action, command.jail, command.key_type, command.key)
                self.followers[key] = self.followers.get(key, 0) + 1
        cmds.clear()

    def _ban(self, ban: Ban) -> None:
        self.decisions += 1
        jail = self.pipeline.jail(ban.jail)
        if jail is not None and jail.spec.key == ban.key_type:
            self.per_jail.setdefault(ban.jail, set()).add(ban.key)
        if self.as_json:
            self.out.write(json.dumps({"decision": "ban", **ban_json(ban)}, ensure_ascii=False) + "\n")
        else:
            self.out.write(
                f"{iso(ban.time)}  {ban.jail}  ban {ban.key_type} {ban.key if ban.key_type == 'ip' else repr(ban.key)}  "
                f"({ban.count} in {format_duration(ban.findtime)}, for "
                f"{format_duration(ban.until - ban.time)})  -> {', '.join(ban.actions)}"
                + (f"  because of {ban.cause}" if ban.cause else "") + "\n"
            )

    def finish(self, last: float) -> None:
        """The logs ended at log time `last`: what falls due with time alone (an account
        attacker's grace) as the daemon's clock would have decided it, then the holds."""
        pipeline = self.pipeline
        grace = max((j.spec.owner_grace for j in pipeline.jails), default=0.0)
        cmds = Outcome()
        pipeline.decide_into(cmds, pipeline.tick(last + grace))
        self.show(cmds)
        for (action, jail_name, key_type, key), count in self.followers.items():
            if self.as_json:
                self.out.write(json.dumps({"decision": "hold", "action": action, "jail": jail_name,
                                           "key_type": key_type, "key": key, "messages": count},
                                          ensure_ascii=False) + "\n")
            else:
                self.out.write(f"{jail_name}: {action} held {count} more messages of {key_type} {key!r} as "
                               "they were submitted after the ban\n")


def _replay(paths: list[str], config: Config, as_json: bool, out: IO[str]) -> int:
    pipeline = config.pipeline(time.time(), local_to_epoch)
    progress = Progress(paths)
    read = ReadCount()
    matched = matched_lines(paths, pipeline.parser, pipeline.filters, read, progress)
    started = time.perf_counter()
    seen_keys: dict[str, set[Any]] = {spec.key: set() for spec in config.jails if spec.enabled}
    printer = DecisionPrinter(pipeline, as_json, out)

    # Every key the logs show, to put the decisions in proportion: (event field, keys seen).
    seen_fields = tuple((Event._fields.index(key_type), store) for key_type, store in seen_keys.items())
    fast = speedups()
    step = pipeline.step
    cmds = Outcome()
    commands = cmds.commands  # the same list all along: show() empties it in place
    quiet = pipeline.quiet
    probing = tuple(jail for jail in pipeline.jails if jail.spec.ban_ips)  # what a quiet line can tick
    for when, _, _, header, events in matched:
        if events is None:  # only events no jail or correlation needs (core/needs.py)
            for jail in probing:
                if jail.probation:
                    quiet(when, None, cmds)
                    if commands:
                        printer.show(cmds)
                    break
            continue
        events = step(events, header, None, cmds)
        if fast is not None:
            fast.seen(events, seen_fields, SEEN_CAP)  # the loop below, in C
        else:
            for event in events:
                for index, store in seen_fields:
                    value = event[index]
                    if value is not None and len(store) < SEEN_CAP:
                        store.add(str(value))
        if commands:
            printer.show(cmds)
    lines, last = read.parsed, read.last
    progress.finish()
    printer.finish(last)
    for jail in pipeline.jails:
        spec = jail.spec
        acted = len(printer.per_jail.get(spec.name, ()))
        seen = len(seen_keys.get(spec.key, ()))
        if acted >= MANY and acted > seen * TOO_MANY_SHARE:
            # maxretry 1 on normal traffic: the daemon's valve (max_bans_per_minute) would stop
            # it, but the admin should hear it before switching the jail on.
            print(f"mailban: WARNING: jail {spec.name} would act on {acted} of the {seen} {spec.key}s "
                  f"in these logs ({100 * acted / max(seen, 1):.0f}%): is its threshold too low for this "
                  "traffic? (mailban replay --report shows the peaks)", file=sys.stderr)
    if not as_json:
        elapsed = max(time.perf_counter() - started, 1e-9)
        held = f" ({printer.held_back} more held back by max_bans_per_minute)" if printer.held_back else ""
        out.write(f"\n{printer.decisions} decisions{held} from {lines} log lines in {elapsed:.2f} s "
                  f"({lines / elapsed:,.0f} lines/s); no action was executed.\n")
    return 0
