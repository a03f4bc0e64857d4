"""Hostile and broken input: the syslog parser, the pattern compiler and the config loader, fuzzed.

- syslog: any bytes (and mutations of real lines) give a Header or None, never an exception, and
  a Header's fields stay inside the line.
- compile_pattern: any template text gives a CompiledPattern or a PatternError with a column
  inside the template, never another exception.
- config.load: generated TOML documents (random values for every known key, unknown keys,
  broken syntax, filter and action files) in a temporary config directory load or raise
  ConfigError naming the file, a line inside it and a column >= 1; nothing else escapes.
- catastrophic patterns (`(a+)+$`, `(a|aa)+$`, `(.*a){20}`, ...) written by an admin are refused
  at load with file:line:column, while every shipped filter still loads; the shipped rules stay
  fast on adversarial 256 KB lines (figures in docs/security.md, bench/regex_safety.py).
Examples per property: MAILBAN_FUZZ_EXAMPLES (default 120).
"""

from __future__ import annotations

import os
import re
import string
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mailban import config
from mailban.core.errors import ConfigError
from mailban.core.patterns import PLACEHOLDERS, PatternError, backtracking_hazard, compile_pattern
from mailban.core.regexopt import cheaper_optionals
from mailban.core.syslog import REPEATS, SyslogParser
from tests.filter_samples import NOW, SAMPLES, all_filters

EXAMPLES = int(os.environ.get("MAILBAN_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
REAL_LINES = [raw for path in sorted(SAMPLES.glob("*.log")) for raw in path.read_bytes().split(b"\n")
              if raw and not raw.startswith(b"#")]


# ---- syslog ------------------------------------------------------------------------------------
@st.composite
def mutated_line(draw: st.DrawFn) -> bytes:
    line = bytearray(draw(st.sampled_from(REAL_LINES)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        pos = draw(st.integers(0, max(0, len(line) - 1)))
        if op == "flip" and line:
            line[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del line[pos:pos + draw(st.integers(1, 20))]
        elif op == "insert":
            line[pos:pos] = draw(st.binary(max_size=12))
        else:
            line[pos:pos] = line[pos:pos + draw(st.integers(1, 40))] * draw(st.integers(1, 50))
    return bytes(line)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), mutated_line()), now=st.floats(0, 4e9))
def test_syslog_parser_never_raises(raw: bytes, now: float) -> None:
    header = SyslogParser(now).parse(raw)
    if header is not None:
        assert 0 < header.msg_start <= len(raw)
        # the program is named in the line, but for Exim's own files, whose lines name none
        # (`exim`), and `last message repeated N times` lines, which name none (syslog.REPEATS)
        if header.program == REPEATS:
            assert b"last message repeated " in raw[header.msg_start:]
        else:
            assert header.program and (header.program in raw or header.program == b"exim")
        assert header.time == header.time  # not NaN
    fset = all_filters()
    if header is not None:
        fset.match(raw, header)  # and the filters take whatever the parser accepted


# ---- pattern compiler ----------------------------------------------------------------------------
_PIECES = [f"<{n}>" for n in PLACEHOLDERS] + ["<CLEINT>", "<>", "<a>", "(", ")", "(?P<ip>", "(?P=ip)", "[", "]", "\\",
                                              "*", "+", "?", "{2,}", "{", "|", "$", "^", "(?:", "(?>", "(?i)", ".*",
                                              "\\d+", "[^>]*", "a", " ", ":", "=", "\\(", "\\[", "(?!x)", "++"]
template = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.sampled_from(_PIECES), st.text(alphabet=string.printable, max_size=4)), max_size=14).map("".join),
)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # re's "possible nested set" on random `[[`
@FUZZ
@given(text=template, prefix=st.sampled_from(["", r"(?:\w+: )?", "(a+)+"]), literal=st.one_of(st.none(), st.text(max_size=5)))
def test_pattern_compiler_refuses_with_a_column_or_compiles(text: str, prefix: str, literal: str | None) -> None:
    try:
        compiled = compile_pattern(text, prefix, literal)
    except PatternError as exc:
        assert 1 <= exc.column <= max(1, len(text) + 1), (text, exc.column, exc.message)
        assert exc.message
        return
    assert prefix != "(a+)+"
    # the prefix comes first, `(?:X)?` written `(?:X|)` (regexopt) unless the template's first
    # character makes it lazy or possessive
    assert compiled.regex.pattern.startswith((cheaper_optionals(prefix).encode(), prefix.encode()))
    compiled.regex.match(b"Nov 25 11:12:00 x: " + text.encode("utf-8", "replace"))


def test_a_tab_in_a_pattern_stays_a_tab_and_columns_count_it_as_one() -> None:
    """pyparsing expanded tabs to spaces before parsing: the pattern then matched spaces, and the
    columns after a tab were off by seven (found by the property above)."""
    assert b"\t" in compile_pattern("x\ty <IP>$").regex.pattern
    with pytest.raises(PatternError) as caught:
        compile_pattern("\t)")
    assert caught.value.column == 2


# ---- the config loader ------------------------------------------------------------------------
_VALUES = st.one_of(
    st.integers(-5, 10**6), st.booleans(), st.text(max_size=12), st.floats(allow_nan=True),
    st.lists(st.text(max_size=8), max_size=3), st.sampled_from(["1h", "10m", "-1s", "0", "auth-failure", "ip", "user",
                                                                 "nft", "/var/log/x", "127.0.0.1/8", "::1", "bogus"]),
)
_KEYS = sorted(config._SETTINGS_KEYS | config._JAIL_KEYS | {"bogus", "kinds", "pattern", "type"})


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v).replace("inf", "inf").replace("nan", "nan")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@st.composite
def config_dir_files(draw: st.DrawFn) -> dict[str, str]:
    lines = ["[mailban]"]
    for key in draw(st.lists(st.sampled_from(_KEYS), max_size=4, unique=True)):
        lines.append(f"{key} = {_toml_value(draw(_VALUES))}")
    for jail in draw(st.lists(st.sampled_from(["auth", "a-b", "x"]), max_size=2, unique=True)):
        lines.append(f"[jail.{jail}]")
        lines.append(f'kinds = {_toml_value(draw(st.sampled_from([["auth-failure"], ["bogus"], "reject", 3])))}')
        for key in draw(st.lists(st.sampled_from(sorted(config._JAIL_KEYS | {"bogus"})), max_size=4, unique=True)):
            lines.append(f"{key} = {_toml_value(draw(_VALUES))}")
    text = "\n".join(lines) + "\n"
    if draw(st.booleans()):  # break the syntax somewhere
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["[", "]", "=", '"', "\n[[x", "= =", "\x00", "é"])) + text[cut:]
    files = {"mailban.toml": text}
    if draw(st.booleans()):
        pattern = draw(st.one_of(template, st.sampled_from(["(a+)+$", "<CLIENT>: x$", "(a|aa)+$"])))
        files["filters.d/custom.toml"] = (
            '[filter]\nprograms = ["x"]\n\n[[rule]]\nid = "r"\nkind = "auth-failure"\n'
            f"pattern = {_toml_value(pattern)}\n")
    if draw(st.booleans()):
        files["actions.d/custom.toml"] = f'[action]\ntype = {_toml_value(draw(_VALUES))}\n' + (
            f"ports = {_toml_value(draw(_VALUES))}\n" if draw(st.booleans()) else "")
    return files


@FUZZ
@given(files=config_dir_files())
def test_config_loader_loads_or_names_file_line_and_column(tmp_path_factory: pytest.TempPathFactory,
                                                           files: dict[str, str]) -> None:
    root = tmp_path_factory.mktemp("cfg")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        config.load(str(root / "mailban.toml"))
    except ConfigError as exc:
        assert exc.path and Path(exc.path).exists(), exc
        total = Path(exc.path).read_bytes().count(b"\n") + 1
        assert 1 <= exc.line <= total and exc.column >= 1, (str(exc), files)
        assert str(exc).startswith(f"{exc.path}:{exc.line}:{exc.column}: ")


# ---- catastrophic patterns ---------------------------------------------------------------------
CATASTROPHIC = [r"(a+)+$", r"(a|aa)+$", r"(.*a){20}", r"(a?){25}a{25}", r"(?:\w+\s?)+$", r"user=<(?:[^>]|>.*)*>$"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_catastrophic_pattern_is_refused_at_load_with_file_line_and_column(tmp_path: Path, pattern: str) -> None:
    (tmp_path / "filters.d").mkdir()
    (tmp_path / "filters.d" / "admin.toml").write_text(
        '[filter]\nprograms = ["postfix/smtpd"]\n\n[[rule]]\nid = "slow"\nkind = "auth-failure"\n'
        f"pattern = '<CLIENT>: {pattern}'\n")
    (tmp_path / "mailban.toml").write_text('[mailban]\nlogs = ["/var/log/mail.log"]\n')
    with pytest.raises(ConfigError) as caught:
        config.load(str(tmp_path / "mailban.toml"))
    exc = caught.value
    assert exc.path.endswith("admin.toml") and exc.line == 7, str(exc)
    # The column points at the repeated group inside the pattern (after `pattern = '<CLIENT>: `).
    group = re.search(r"\((?!\?:)|\(\?:", pattern)
    assert group is not None
    assert exc.column == len("pattern = '<CLIENT>: ") + 1 + group.start(), str(exc)
    assert "exponential time" in exc.message and "atomic group" in exc.message


def test_safe_rewrites_of_those_patterns_are_accepted() -> None:
    for safe in (r"(?>a+)+$", r"(a++)+$", r"a+$", r"(?:\w++\s)+$", r"user=<[^>]*>$", r"(?:ab)+$"):
        assert backtracking_hazard(safe) is None, safe
        compile_pattern(f"<CLIENT>: {safe}")


def test_every_shipped_filter_passes_the_check() -> None:
    fset = all_filters()
    assert sum(len(f.rules) for f in fset.filters) >= 46


def test_catastrophic_patterns_do_hang_pythons_engine() -> None:
    """Why the check exists: each character more doubles the time (a+)+$ takes to fail; six more
    characters take about 64 times as long (asserted loosely: other tests may share the CPU)."""
    regex = re.compile(r"(a+)+$")

    def best(n: int) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            assert regex.match("a" * n + "!") is None
            times.append(time.perf_counter() - started)
        return min(times)

    took16, took22 = best(16), best(22)
    assert took22 > 10 * took16 > 0, (took16, took22)


# The longest lines the tail hands out (MAX_LINE), built to make each shipped rule backtrack.
ADVERSARIAL = {
    "postfix/smtpd": ["warning: unknown[1.2.3.4]: SASL PLAIN authentication failed: ", ", sasl_username=",
                      "NOQUEUE: reject: RCPT from unknown[1.2.3.4]: 554 5.7.1 <", "<a>: ", "; from=<", "["],
    "postfix/qmgr": ["4F2A31C0D1: from=<", ">, size=1, nrcpt=1 (queue active)", ", status="],
    "postfix/smtp": ["4F2A31C0D1: to=<", ">, orig_to=<", ", relay=x, ", "delay=1, delays=1, dsn=2.0.0, status=sent "],
    "postfix/postscreen": ["NOQUEUE: reject: RCPT from [1.2.3.4]:25: 550 ", "PREGREET 1 after 1 from [1.2.3.4]:1: ", "["],
    "dovecot": ["imap-login: Disconnected ", "(auth failed, 1 attempts in 2 secs)", ": user=<", ">, rip=1.2.3.4, lip=",
                "auth: passwd-file(", "a,1.2.3.4", ",<", "): Password mismatch", "Login: user=<", ", "],
    "sm-mta": ["AUTH failure (PLAIN): x", ", user=", ", relay=[1.2.3.4]", "6APBLP2s018515: to=", "a, ctladdr=b, ",
               ", delay=00:00:00, ", "mailer=esmtp, pri=1, ", "reply=", "ruleset=check_rcpt, arg1=<", "> [",
               "6APBLP2s018515: from=<", ", msgid=<", "AUTH=server, relay=", "[1.2.3.4]", "rejecting commands from "],
}


def adversarial_lines(size: int) -> list[bytes]:
    out = []
    for program, pieces in ADVERSARIAL.items():
        for lead in pieces:
            for repeat in pieces:
                body = lead + repeat * (size // max(1, len(repeat)))
                out.append(f"Nov 25 11:12:00 mail {program}[1]: {body}"[: size].encode())
    return out


def test_shipped_rules_stay_fast_on_adversarial_long_lines() -> None:
    fset = all_filters()
    parser = SyslogParser(NOW)
    worst = 0.0
    for raw in adversarial_lines(256 * 1024):
        header = parser.parse(raw)
        assert header is not None
        started = time.perf_counter()
        fset.match(raw, header)
        worst = max(worst, time.perf_counter() - started)
    print(f"\nworst shipped-filter time on a 256 KB adversarial line: {worst * 1000:.1f} ms")
    assert worst < 0.5


def test_every_rule_matches_its_worst_256_kb_line_within_50_ms() -> None:
    """Each rule's slowest lines, searched from its own real lines (tests/worst_lines.py), at
    the longest line the tail hands out: linear rules take a few ms, a quadratic one seconds."""
    from tests.test_injection import HARMLESS, TEMPLATES
    from tests.worst_lines import seeds, timed_at, worst_lines

    fset = all_filters()
    found = worst_lines(fset, seeds(fset, TEMPLATES, HARMLESS))
    assert set(found) == {f"{f.name}.{r.id}" for f in fset.filters for r in f.rules}
    timings = timed_at(fset, found, 256 * 1024)
    slow = {name: round(sec * 1000, 1) for name, (sec, _line) in timings.items() if sec >= 0.05}
    name, (sec, _line) = max(timings.items(), key=lambda item: item[1][0])
    print(f"\nslowest rule on its worst 256 KB line: {name} {sec * 1000:.1f} ms")
    assert not slow, slow


@pytest.mark.parametrize("pattern", [
    # the two shapes that made shipped rules quadratic (docs/security.md): a lazy recipient then
    # a lazy reply, and a greedy user name then a parenthesised reason
    r"<QID>: to=.+?, delay=\d+, (?:reply=.*?, )?stat=.*$",
    r"[\w-]+\(<USER>,<IP>\): unknown user(?: \(.*\))?$",
])
def test_wildcard_sequences_are_refused_at_load(pattern: str) -> None:
    with pytest.raises(PatternError, match="follows another one"):
        compile_pattern(pattern)
