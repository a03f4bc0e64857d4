"""`mailban test`'s summary over byte ranges in worker processes equals a one-process pass.

The oracle is the plain loop the summary used to be: every line parsed, filtered into Events and
correlated, counted per rule and per address (ties in "Top addresses" in first-seen order). The
log mixes generated traffic with lines that stress range boundaries: garbage, no header, a line
longer than MAX_LINE, qmgr retries, and a last line without its newline.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path

import pytest

from mailban import config
from mailban.offline import scan
from mailban.core.correlate import Correlator
from mailban.core.filters import Filter, FilterSet
from mailban.core.syslog import SyslogParser
from mailban.localtime import local_to_epoch
from mailban.offline import run_test
from mailban.sources.tail import MAX_LINE, iter_file_lines

from .bench_modules import genlog


def _oracle(path: str, filters: list[Filter]) -> str:
    fset, parser, correlate = FilterSet(filters), SyslogParser(time.time(), local_to_epoch), Correlator().process
    lines = parsed = matched = missed = 0
    failing = False
    per_rule: Counter[tuple[str, str, str]] = Counter()
    per_ip: dict[str, int] = {}
    for line in iter_file_lines(path):
        lines += 1
        header = parser.parse(line)
        if header is None:
            continue
        parsed += 1
        events = fset.match(line, header, path, lines)
        matched += bool(events)
        if not events and fset.rules_for(header.program):
            missed += 1
            failing |= any(w in line[header.msg_start:][:1024].lower() for w in scan.FAILURE_STEMS)
        for event in events:
            event = correlate(event, header)
            if event is not None:
                per_rule[(event.filter, event.rule, event.kind)] += 1
                if event.ip:
                    per_ip[event.ip] = per_ip.get(event.ip, 0) + 1
    width = max(len(f"{f}.{r}") for f, r, _ in per_rule)
    out = [f"Lines: {lines} read, {parsed} with a syslog header, {matched} matched, "
           f"{lines - parsed} skipped (no header)", "", "Matches per rule:"]
    out += [f"  {c:>9}  {f + '.' + r:<{width}}  {k}"
            for (f, r, k), c in sorted(per_rule.items(), key=lambda kv: (-kv[1], kv[0]))]
    out += ["", "Top addresses:"] + [f"  {c:>9}  {ip}" for ip, c in Counter(per_ip).most_common(10)]
    if failing:
        out += ["", f"Hint: {missed:,} lines of the programs the filters cover matched no rule, and some read like "
                    f"failures (fail, reject, denied, invalid, ...): `mailban test --missed {path}` groups them by shape."]
    return "\n".join(out) + "\n"


def _summary(path: str, filters: list[Filter], jobs: int) -> str:
    out = io.StringIO()
    assert run_test([path], filters, False, out, jobs=jobs) == 0
    return "".join(line for line in out.getvalue().splitlines(True)
                   if not line.startswith(("Time:", "Filters:")))


@pytest.fixture()
def log(tmp_path: Path) -> Path:
    lines = list(genlog().generate(6000, seed=11))
    # A deferred message's qmgr line again (a retry: counted once), in another range.
    retry = next(line for line in lines if "postfix/qmgr" in line and "nrcpt=" in line)
    extra = ["garbage", "", "Nov 24 00:00:00 mx1 postfix/smtpd[1]: " + "x" * (MAX_LINE + 10), retry]
    path = tmp_path / "mixed.log"
    body = "\n".join(lines[:3000] + extra + lines[3000:] + extra[:2] + [retry]) + "\n" + lines[0]
    path.write_text(body)  # no newline after the last line
    return path


def test_ranges_cover_the_file_at_line_starts(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "RANGE_BYTES", 4096)
    ranges = scan.split_ranges(str(log), 2)
    data = log.read_bytes()
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data) and len(ranges) > 50
    assert all(a[1] == b[0] and data[b[0] - 1:b[0]] == b"\n" for a, b in zip(ranges, ranges[1:]))
    joined = [line for a, b in ranges for line in scan.iter_range_lines(str(log), a, b)]
    assert joined == list(iter_file_lines(str(log)))


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_summary_in_workers_equals_one_pass(log: Path, jobs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(scan, "RANGE_BYTES", 8192)  # many ranges: messages span their boundaries
    filters = config.load_filters(log.parent / "no-such-conf", None)
    assert _summary(str(log), filters, jobs) == _oracle(str(log), filters)
