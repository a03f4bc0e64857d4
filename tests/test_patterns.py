from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailban.core.patterns import PatternError, compile_pattern, longest_literal


def test_placeholders_expand_and_capture() -> None:
    p = compile_pattern(r"warning: <CLIENT>: SASL \S+ authentication failed: .*$")
    m = p.regex.match(b"warning: mx.example[192.0.2.7]: SASL PLAIN authentication failed: x")
    assert m is not None and m.group("ip") == b"192.0.2.7" and m.group("host") == b"mx.example"
    assert p.fields == {"ip", "host"}
    assert p.literal == b"authentication failed:"


def test_a_rule_may_give_several_literals_any_of_which_holds() -> None:
    p = compile_pattern(r"(?:no such user|user unknown): <IP>$", literal=["no such user", "user unknown"])
    assert p.literal == (b"no such user", b"user unknown")
    assert compile_pattern(r"a (?:b|c)$", literal=["a "]).literal == b"a "  # a list of one: as a string
    for bad in (["no such user", "mailbox full"], [], ["no such user", ""]):
        with pytest.raises(PatternError):
            compile_pattern(r"(?:no such user|user unknown): <IP>$", literal=bad)


def test_whitespace_is_significant() -> None:
    p = compile_pattern(r"a <NUM> b$")
    assert p.regex.match(b"a 12 b") and not p.regex.match(b"a12b")


@pytest.mark.parametrize(
    "template, column, words",
    [
        ("foo <CLEINT> bar", 5, "unknown placeholder <CLEINT>"),
        ("abc [ def", 5, "unterminated character set"),
        ("<CLIENT> x <IP>", 12, "already captures"),
        ("x (?P<ip>y)", 3, "reserved"),
        ("", 1, "empty"),
    ],
)
def test_errors_name_the_column(template: str, column: int, words: str) -> None:
    with pytest.raises(PatternError) as exc:
        compile_pattern(template)
    assert exc.value.column == column
    assert words in exc.value.message


def test_literal_is_conservative() -> None:
    assert longest_literal(r"(?:a|b)longer text here") == "longer text here"
    assert longest_literal(r"foo|barbaz") == ""
    assert longest_literal(r"abcd?efgh") == "efgh"
    assert longest_literal(r"Relay access denied; .*$") == "Relay access denied;"


def test_cheaper_optionals_keeps_every_shipped_rule_matching_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # regexopt writes `(?:X)?` as `(?:X|)` (no repeat context per attempt in Python's re): every
    # shipped rule must take the same span and the same groups from every sample and bench line.
    import time
    from pathlib import Path

    from mailban import config
    from mailban.core import patterns
    from mailban.core.syslog import SyslogParser
    from tests.bench_modules import genlog

    root = Path(__file__).resolve().parent
    fast = config.load_filters(root)
    monkeypatch.setattr(patterns, "cheaper_optionals", lambda regex: regex)
    plain = config.load_filters(root)
    assert any(a.pattern.regex.pattern != b.pattern.regex.pattern
               for f, g in zip(fast, plain) for a, b in zip(f.rules, g.rules))
    lines = [line for path in sorted((root / "filters").glob("*.log")) for line in path.read_bytes().split(b"\n")]
    for mta in ("postfix", "exim"):
        lines += [line.encode() for line in genlog().generate(3000, seed=5, fmt="bsd", mta=mta)]
    parser = SyslogParser(time.time())
    compared = 0
    for line in lines:
        header = parser.parse(line)
        starts = {0} if header is None else {0, header.msg_start}
        for f, g in zip(fast, plain):
            if header is not None and not f.covers(header.program.decode("utf-8", "replace")):
                continue
            for a, b in zip(f.rules, g.rules):
                for start in starts:
                    x, y = a.pattern.regex.match(line, start), b.pattern.regex.match(line, start)
                    assert (x is None) == (y is None), (f.name, a.id, line)
                    if x is not None and y is not None:
                        assert x.span() == y.span() and x.groupdict() == y.groupdict(), (f.name, a.id, line)
                        compared += 1
    assert compared > 10_000


_REGEX_PIECES = ["(?:", ")", ")?", ")??", ")?+", "(?P<g>", "(?>", "a", "b", "|", "[ab)]", "[]a]", "\\)", "\\(",
                 "a?", "b*", ".", "(?=a)", "(?:a)?", "(?:ab|a)?", "(?:a)*", "$"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_REGEX_PIECES), max_size=12).map("".join),
       st.lists(st.sampled_from(["a", "b", ")", "ab", ""]), max_size=8).map("".join))
def test_cheaper_optionals_matches_as_the_regex_it_rewrites(regex: str, text: str) -> None:
    import re

    from mailban.core.regexopt import cheaper_optionals

    try:
        plain = re.compile(regex)
    except re.error:
        return
    fast = re.compile(cheaper_optionals(regex))
    for start in range(len(text) + 1):
        x, y = plain.match(text, start), fast.match(text, start)
        assert (x is None) == (y is None), (regex, text)
        if x is not None and y is not None:
            assert x.span() == y.span() and x.groups() == y.groups(), (regex, text)
