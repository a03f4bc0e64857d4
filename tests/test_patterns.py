from __future__ import annotations

import pytest

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
