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
from mailban.core.shapes import ARRIVAL_TEMPLATES, EXIM_PREFIX, SHAPED_GROUP, implies_literal, rule_shape, shaped_group
from mailban.core.syslog import SyslogParser
from mailban.speedups import speedups
from tests.bench_modules import genlog

ROOT = Path(__file__).resolve().parent
fast = speedups()
needs_c = pytest.mark.skipif(fast is None, reason="the C module is not built")


def shaped(template: str, prefix: str) -> tuple[bytes | None, object]:
    compiled = compile_pattern(template, prefix)
    return rule_shape(prefix, template, compiled.regex.pattern), compiled.regex


def same(shape: bytes, regex: object, line: bytes, start: int) -> bool:
    """Whether the C matcher answered (an arrival shape may leave a line to the regex), after
    checking that its answer is the regex's."""
    m = regex.match(line, start)  # type: ignore[attr-defined]
    got = fast.shape_found(shape, line, start)
    if shape[1] >= 3:  # an arrival shape: {group: span}, None, or False (the regex decides)
        if got is False:
            return False
        assert (m is None) == (got is None), (regex.pattern, line, start, got)  # type: ignore[attr-defined]
        if m is not None:
            groups = regex.groupindex  # type: ignore[attr-defined]
            assert set(got) >= set(groups), (line, got)
            assert got == {name: m.span(name) if name in groups else (-1, -1) for name in got}, (line, start, got)
        return True
    assert (m is None) == (got is None), (regex.pattern, line, start, got)  # type: ignore[attr-defined]
    if m is not None:
        assert got == m.span("qid"), (regex.pattern, line, start)  # type: ignore[attr-defined]
    return True


def test_the_shipped_queue_rules_have_shapes() -> None:
    rules = {f"{f.name}.{r.id}": r.shape for f in config.load_filters(ROOT.parent) for r in f.rules}
    with_shape = {name for name, shape in rules.items() if shape is not None}
    assert {"exim-queue.delivered", "exim-queue.delivered-more", "exim-queue.cutthrough", "exim-queue.bounced",
            "exim-queue.deferred", "exim-queue.completed", "postfix-queue.removed", "exim-queue.arrival-auth",
            "exim-queue.arrival", "exim-queue.local"} == with_shape
    assert (rules["exim-queue.arrival-auth"], rules["exim-queue.arrival"], rules["exim-queue.local"]) == \
        (b"\x01\x03\x00\x00", b"\x01\x04\x00\x00", b"\x01\x05\x00\x00")
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


# Arrival lines (`<=`), whole, cut or with fields out of place: senders with spaces, quotes,
# backslashes, `<>` and forged fields inside; the client's forms (name, `(helo)`, `[ip]:port`,
# IPv6, I=, U=, Ci=, `H=H=`), the fields between P= and S= and their order, the account with and
# without `:sender`, the local login, newlines and tabs.
_ARRIVAL = ["2026-12-03 13:05:53 ", "[1234] ", "1rKx2p-0004Ab-1F", "1xZ7Xv-000000000rj-0e35", "abcde", " <= ",
            "<>", "a@b.test", '"x H=[6.6.6.6] A=a:b"@b.test', '"x\\" y"@b', '"unclosed', '\\', '"', " ",
            " R=parent", " R=", " H=", "H=", "mx.example.test ", "(helo) ", "(he lo) ", "[1.2.3.4]", "[IPv6:::1]",
            "[1]", ":25", ":", " I=[127.0.0.1]:2525", " I=[]", " U=ident", " U=", " Ci=7", " Ci=", " P=esmtpa",
            " P=local", " P=", " L", " L*-", " X=TLS1.3:x:256", " CV=no", ' DN="C=x, O=y"', ' DN="x', " SNI=a.b",
            " A=plain:alice@b.test", " A=plain:alice:x@y", " A=plain:", " A=:bob", " PRDR", " PRX=1.2.3.4", " K",
            " S=123", " S=", " S=1x", " U=www-data", "-esmtp", "-bsmtp", "-smtpx", " id=x", "\n", "\t", "é"]


@needs_c
@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_ARRIVAL), max_size=14).map("".join), st.sampled_from([3, 4, 5]))
def test_arrival_shapes_match_as_their_regex_on_hostile_lines(text: str, kind: int) -> None:
    template = next(t for t, k in ARRIVAL_TEMPLATES.items() if k == kind)
    shape, regex = shaped(template, EXIM_PREFIX)
    assert shape == bytes([1, kind, 0, 0])
    line = text.encode()
    for start in range(len(line) + 1):
        same(shape, regex, line, start)


def _arrival_line(kind: int, sender: str, client: str, fields: str) -> bytes:
    return f"2026-12-03 13:05:53 [1] 1rKx2p-0004Ab-1F <= {sender}{client}{fields}".encode()


@needs_c
@pytest.mark.parametrize("sender", ["a@b.test", "<>", '"x H=[6.6.6.6] A=a:b"@b.test', '"a\\"b c"@d', "<>x", '"x'])
@pytest.mark.parametrize("client", [" H=mx.b.test [1.2.3.4]", " H=(helo) [1.2.3.4]:25", " H=n (h) [IPv6:2001:db8::1]:25",
                                    " H=[1.2.3.4] I=[5.6.7.8]:25 U=x Ci=3", " R=r H=[1.2.3.4]", " U=www-data",
                                    " H=H=[1.2.3.4]", " H=(a b) [1.2.3.4]", " H=[1.2.3.4]:x"])
@pytest.mark.parametrize("fields", [" P=esmtpa L. X=TLS1.3:x:256 CV=no DN=\"C=x\" SNI=s A=plain:al:x S=1 id=y",
                                    " P=esmtp S=2", " P=local S=3", " P=local-esmtp ", " P=esmtpa A=p:u PRDR PRX=1.1.1.1 K S=4",
                                    " P=esmtpa A=p:u S=", " P=esmtpa A=:u S=5", " P=esmtpa A=p:u S=6\n"])
def test_arrival_shapes_answer_the_common_forms_as_their_regex(sender: str, client: str, fields: str) -> None:
    for kind in (3, 4, 5):
        template = next(t for t, k in ARRIVAL_TEMPLATES.items() if k == kind)
        shape, regex = shaped(template, EXIM_PREFIX)
        assert shape is not None
        line = _arrival_line(kind, sender, client, fields)
        answered = same(shape, regex, line, 0)
        # the C matcher reads every form above but `H=H=`, a client cut short and a quote left open
        assert answered or "H=H=" in client or "(a b)" in client or ":x" in client, line


@needs_c
def test_arrival_shapes_answer_every_arrival_of_the_exim_bench_log_and_the_samples() -> None:
    filters = config.load_filters(ROOT.parent)
    rules = [r for f in filters for r in f.rules if r.shape is not None and r.shape[1] >= 3]
    lines = [line for path in sorted((ROOT / "filters").glob("*.log")) for line in path.read_bytes().split(b"\n")]
    lines += [line.encode() for line in genlog().generate(20_000, seed=1, fmt="bsd", mta="exim")]
    parser = SyslogParser(time.time())
    answered = left = 0
    for line in lines:
        header = parser.parse(line)
        if header is None or b" <= " not in line:
            continue
        for rule in rules:
            if same(rule.shape, rule.pattern.regex, line, header.msg_start):  # type: ignore[arg-type]
                answered += 1
            else:
                left += 1
    assert answered > 5_000 and left == 0


def test_a_filter_whose_every_rule_has_a_shape_holding_its_literal_skips_the_literal_scan() -> None:
    from mailban.core.filters import FilterSet

    filters = {f.name: f for f in config.load_filters(ROOT.parent)}
    assert shaped_group([(r.shape, r.pattern.literal) for r in filters["exim-queue"].rules])
    assert not shaped_group([(r.shape, r.pattern.literal) for r in filters["postfix-queue"].rules])
    groups = FilterSet(list(filters.values())).rules_for(b"exim")
    assert [g[5] for g in groups if g[5] == SHAPED_GROUP] == [SHAPED_GROUP]
    completed, _ = shaped(r"<QID> Completed(?: QT=\S+)?$", EXIM_PREFIX)
    assert completed is not None
    assert implies_literal(completed, b" Completed") and implies_literal(completed, b"Compl")
    assert not implies_literal(completed, b" QT=")  # the optional part: a match need not hold it
    assert implies_literal(completed, (b" QT=", b"Completed")) and not implies_literal(completed, (b" QT=", b"x"))
    auth = bytes([1, 3, 0, 0])
    assert implies_literal(auth, b" A=") and not implies_literal(auth, b" X=")
    assert implies_literal(bytes([1, 5, 0, 0]), b" P=local") and not implies_literal(bytes([1, 4, 0, 0]), b" A=")
    assert not shaped_group([(completed, b" QT=")]) and not shaped_group([(None, b"x")]) and not shaped_group([])


@needs_c
def test_a_shaped_group_gives_what_the_literal_scan_gives() -> None:
    """exim-queue matched without its literal scan (SHAPED_GROUP) and with it (its literal index):
    the same items on the Exim bench log, hostile arrival lines and lines that hold a rule's
    literal elsewhere."""
    import mailban.core.filters as filters_module
    from mailban.core.filters import FilterSet
    from mailban.core.syslog import Header

    filters = config.load_filters(ROOT.parent)
    lines = [line.encode() for line in genlog().generate(20_000, seed=2, fmt="bsd", mta="exim")]
    lines += [f"2026-12-03 13:05:5{i} [1] 1rKx2p-0004Ab-1F{text}".encode() for i, text in enumerate(
        [" <= a@b U=x P=local S=1 A=", " Completed => x", " => <= ", " x A= P=local Completed", " ** x", "== Completed"])]
    got = []
    for shaped_scan in (True, False):
        fs = FilterSet(filters)
        if not shaped_scan:
            original = filters_module.shaped_group
            filters_module.shaped_group = lambda rules: False  # type: ignore[assignment]
            try:
                fs = FilterSet(filters)
                assert all(g[5] != SHAPED_GROUP for g in fs.rules_for(b"exim"))
            finally:
                filters_module.shaped_group = original
        items: list[object] = []
        fast.match_lines(lines, 0, (*fs.scan_context(SyslogParser(time.time())), Header), "x", False, items)
        got.append(items)
    assert got[0] == got[1] and len(got[0]) > 10_000


@needs_c
def test_a_malformed_shape_is_refused() -> None:
    for bad in (b"", b"\x02\x00\x01\x00x", b"\x00\x03\x01\x00x", b"\x00\x00\x05\x00x", b"\x01\x06\x00\x00",
                b"\x00\x04\x00\x00", b"\x01\x05\x01\x00x"):
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
