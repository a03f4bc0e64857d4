"""`mailban test` and `mailban replay`: the daemon's pipeline run over log files, offline.

Inputs: log files (or "-" for stdin), the configuration. Outputs: a summary or JSON lines on
stdout. Executes no action: replay only prints what the daemon would decide. Uses the same
Pipeline as the daemon, with the log's own timestamps as the clock.
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from typing import IO, Iterator

from .config import Config
from .core.durations import format_duration
from .core.correlate import Correlator
from .core.filters import Filter, FilterSet
from .core.records import Ban, Event
from .core.syslog import Header, SyslogParser
from .localtime import local_to_epoch
from .sources.tail import iter_file_lines


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
        },
        ensure_ascii=False,
    )


def run_test(paths: list[str], filters: list[Filter], as_json: bool, out: IO[str] = sys.stdout) -> int:
    """Run filters over logs: JSON lines per event, or a summary like fail2ban-regex's."""
    fset = FilterSet(filters)
    parser = SyslogParser(time.time(), local_to_epoch)
    parse = parser.parse
    match = fset.match
    # The same queue-id correlation as the daemon, so that delivery lines show their account.
    correlate = Correlator().process
    lines = parsed = matched = 0
    per_rule: dict[tuple[str, str, str], int] = {}
    per_ip: dict[str, int] = {}
    per_rule_get, per_ip_get = per_rule.get, per_ip.get
    started = time.perf_counter()
    write = out.write
    for path in paths:
        lineno = 0
        for line in iter_file_lines(path):
            lineno += 1
            header = parse(line)
            if header is None:
                continue
            parsed += 1
            events = match(line, header, path, lineno)
            if not events:
                continue
            matched += 1
            for event in events:
                event = correlate(event, header)
                if event is None:
                    continue
                if as_json:
                    write(event_json(event) + "\n")
                else:
                    # Plain dicts with get(): Counter's += costs twice as much per event.
                    key = (event.filter, event.rule, event.kind)
                    per_rule[key] = per_rule_get(key, 0) + 1
                    ip = event.ip
                    if ip:
                        per_ip[ip] = per_ip_get(ip, 0) + 1
        lines += lineno
    elapsed = max(time.perf_counter() - started, 1e-9)
    if as_json:
        return 0
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
        for ip, count in Counter(per_ip).most_common(10):
            write(f"  {count:>9}  {ip}\n")
    else:
        write("\nNo line matched.\n")
    return 0


def _parsed_lines(path: str, parser: SyslogParser) -> Iterator[tuple[float, int, bytes, Header, str]]:
    lineno = 0
    for line in iter_file_lines(path):
        lineno += 1
        header = parser.parse(line)
        if header is not None:
            yield header.time, lineno, line, header, path


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


def run_replay(paths: list[str], config: Config, as_json: bool, out: IO[str] = sys.stdout) -> int:
    """Push logs through the whole pipeline with log time as the clock; print each decision.

    Several files are merged by timestamp (mail.log and dovecot.log side by side), as the
    daemon would have seen them. When the logs end, what falls due with time alone (an account
    attacker's grace period) is decided as the daemon's clock would have decided it.
    """
    pipeline = config.pipeline(time.time(), local_to_epoch)
    streams = [_parsed_lines(p, pipeline.parser) for p in paths]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda item: item[0])
    decisions = 0
    lines = 0
    started = time.perf_counter()

    def show(bans: list[Ban]) -> None:
        nonlocal decisions
        for ban in bans:
            decisions += 1
            if as_json:
                out.write(json.dumps(ban_json(ban), ensure_ascii=False) + "\n")
            else:
                out.write(
                    f"{iso(ban.time)}  {ban.jail}  ban {ban.key_type} {ban.key if ban.key_type == 'ip' else repr(ban.key)}  "
                    f"({ban.count} in {format_duration(ban.findtime)}, for "
                    f"{format_duration(ban.until - ban.time)})  -> {', '.join(ban.actions)}"
                    + (f"  because of {ban.cause}" if ban.cause else "") + "\n"
                )

    last = 0.0
    for last, lineno, line, header, source in merged:
        lines += 1
        _events, bans = pipeline.feed_parsed(line, header, None, source, lineno)
        if bans:
            show(bans)
    grace = max((j.spec.owner_grace for j in pipeline.jails), default=0.0)
    show(pipeline.tick(last + grace))
    if not as_json:
        elapsed = max(time.perf_counter() - started, 1e-9)
        out.write(f"\n{decisions} decisions from {lines} log lines in {elapsed:.2f} s "
                  f"({lines / elapsed:,.0f} lines/s); no action was executed.\n")
    return 0
