"""shapes.py and `_speedups.shape_found`: rules that are a queue id then fixed text, matched in C
without the regex engine, must match exactly where their regex matches and take the same queue
id, on every shipped sample, both bench logs and hostile lines."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailban import config
from mailban.core.filters import Filter, Rule
from mailban.core.patterns import compile_pattern
from mailban.core.shapes import EXIM_PREFIX, rule_shape
from mailban.core.syslog import SyslogParser
from mailban.speedups import speedups
from tests.bench_modules import genlog

ROOT = Path(__file__).resolve().parent
fast = speedups()
needs_c = pytest.mark.skipif(fast is None, reason="the C module is not built")


def shaped(template: str, prefix: str) -> tuple[bytes | None, object]:
    compiled = compile_pattern(template, prefix)
    return rule_shape(prefix, template, compiled.regex.pattern), compiled.regex


def same(shape: bytes, regex: object, line: bytes, start: int) -> None:
    m = regex.match(line, start)  # type: ignore[attr-defined]
    got = fast.shape_found(shape, line, start)
    assert (m is None) == (got is None), (regex.pattern, line, start, got)  # type: ignore[attr-defined]
    if m is not None:
        assert got == m.span("qid"), (regex.pattern, line, start)  # type: ignore[attr-defined]


def test_the_shipped_queue_rules_have_shapes() -> None:
    rules = {f"{f.name}.{r.id}": r.shape for f in config.load_filters(ROOT.parent) for r in f.rules}
    with_shape = {name for name, shape in rules.items() if shape is not None}
    assert {"exim-queue.delivered", "exim-queue.delivered-more", "exim-queue.cutthrough", "exim-queue.bounced",
            "exim-queue.deferred", "exim-queue.completed", "postfix-queue.removed"} == with_shape
    assert rules["exim-queue.completed"] == b"\x01\x02\x0a\x04 Completed QT="
    assert rules["exim-queue.bounced"] == b"\x01\x00\x04\x00 ** "


@pytest.mark.parametrize("template, prefix", [
    (r"<QID> => .*", ""),                     # more after the text
    (r"<QID> (?:=>|->) ", ""),                # an alternation
    (r"<QID> =>", "(?:x )?"),                 # a prefix the C code does not know
    (r"<QID> => <IP>", ""),                   # another placeholder
    (r"<QID> Completed(?: QT=\S+)?", ""),    # an optional part not before the end
    (r"<QID> a+", ""),                        # a quantifier
    (r"<QID>", ""),                           # no text
    (r"x<QID> =>", ""),                       # text before the id
])
def test_other_rules_have_no_shape(template: str, prefix: str) -> None:
    assert shaped(template, prefix)[0] is None


def test_a_filter_that_edits_the_prefix_runs_its_regex() -> None:
    assert shaped("<QID> => ", EXIM_PREFIX)[0] is not None
    assert shaped("<QID> => ", EXIM_PREFIX.replace("{1,10}", "{1,9}"))[0] is None


@needs_c
def test_shapes_match_as_their_regex_on_samples_and_both_bench_logs() -> None:
    filters = config.load_filters(ROOT.parent)
    rules = [(f, r) for f in filters for r in f.rules if r.shape is not None]
    lines = [line for path in sorted((ROOT / "filters").glob("*.log")) for line in path.read_bytes().split(b"\n")]
    lines += [line for path in sorted(Path("/work/shared/samples").glob("*.log")) for line in path.read_bytes().split(b"\n")] \
        if Path("/work/shared/samples").is_dir() else []
    for mta in ("postfix", "exim"):
        lines += [line.encode() for line in genlog().generate(20_000, seed=1, fmt="bsd", mta=mta)]
    parser = SyslogParser(time.time())
    matched = 0
    for line in lines:
        header = parser.parse(line)
        starts = {0} if header is None else {0, header.msg_start}
        for _, rule in rules:
            for start in starts:
                same(rule.shape, rule.pattern.regex, line, start)  # type: ignore[arg-type]
                matched += rule.pattern.regex.match(line, start) is not None
    assert matched > 5_000


# Hostile and edge lines: stamps with and without fractions and zones (complete or cut), pids of
# 0 to 11 digits, queue ids of both Exim formats, postfix's, and of wrong lengths and letters,
# markers complete, cut or doubled, trailing text and newlines.
_PIECES = ["2026-12-03 13:05:53 ", "2026-12-03 13:05:53.123 ", "2026-12-03 13:05:53 +0100 ",
           "2026-12-03 13:05:53 -0100", "2026-12-03 13:05:53.12 ", "2026-12-03 13:05:53", "2026-12-0x 13:05:53 ",
           "[1234] ", "[] ", "[12345678901] ", "[1234567890] ", "[12", "1rKx2p-0004Ab-1F", "1xZ7Xv-000000000rj-0e35",
           "4Bc9Q1Zz7", "abcd", "abcde", "a" * 20, "a" * 21, "1rKx2p-0004Ab-1", "1rKx2p-0004Ab-1FF", "1rKx2p", "-",
           " => ", " =>", "=> ", " -> ", " ** ", " Completed", " Completed QT=1s", " Completed QT=", " QT=",
           ": removed", ":", " ", "\n", "\t", "x", "é", "\r"]


@needs_c
@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=7).map("".join),
       st.sampled_from([r"<QID> => ", r"<QID> Completed(?: QT=\S+)?$", r"<QID>: removed$", r"<QID> \*\* ",
                        r"<QID>-x", r"<QID>a", r"<QID> Completed(?:x\S+)?$", r"<QID>\.x$", r"<QID> \\=$"]),
       st.sampled_from(["", EXIM_PREFIX]))
def test_shapes_match_as_their_regex_on_hostile_lines(text: str, template: str, prefix: str) -> None:
    shape, regex = shaped(template, prefix)
    assert shape is not None, template
    line = text.encode()
    for start in range(len(line) + 1):
        same(shape, regex, line, start)


@needs_c
def test_a_malformed_shape_is_refused() -> None:
    for bad in (b"", b"\x02\x00\x01\x00x", b"\x00\x03\x01\x00x", b"\x00\x00\x05\x00x"):
        with pytest.raises(TypeError):
            fast.shape_found(bad, b"1rKx2p-0004Ab-1F x", 0)


@needs_c
def test_the_c_loops_give_the_same_events_with_and_without_shapes() -> None:
    from mailban.core.filters import FilterSet
    from mailban.core.syslog import Header

    filters = config.load_filters(ROOT.parent)
    plain = [Filter(f.name, f.path, f.description, f.programs,
                    tuple(Rule(r.filter, r.id, r.kind, r.pattern, r.status, None) for r in f.rules)) for f in filters]
    lines = [line.encode() for line in genlog().generate(20_000, seed=1, fmt="bsd", mta="exim")]
    lines += [line.encode() for line in genlog().generate(5_000, seed=1, fmt="bsd", mta="postfix")]
    got = []
    for fs in (filters, plain):
        items: list[object] = []
        parser = SyslogParser(time.time())
        fast.match_lines(lines, 0, (*FilterSet(fs).scan_context(parser), Header), "x", False, items)
        got.append(items)
    assert got[0] == got[1] and len(got[0]) > 10_000
