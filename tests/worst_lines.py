"""The slowest lines for each filter rule, found by search instead of written by hand.

A backtracking regex is slow on a line that keeps several of its wildcards alive at once: long
runs of the very separators and fields the rule looks for (`, user=` repeated for a greedy user
name, `, delay=..., dsn=5.0.0, reply=` for a lazy recipient). So for each rule, starting from real
lines of it (its injection template with harmless values, and its sample lines), this tries every
segment between two separators of the message, repeated to fill the line, with and without the
rest of the real line after it. Each candidate is timed at a small size; the slowest few are the
rule's worst lines, which the suite then matches at the longest size the tail hands out (256 KB).

Used by tests/test_hostile_input.py (the 50 ms bound) and bench/regex_safety.py (the figures).
"""

from __future__ import annotations

import random
import time
from typing import Iterator

from mailban.core.filters import FilterSet, Rule
from mailban.core.syslog import SyslogParser
from tests.filter_samples import NOW, SAMPLES

_SEPARATORS = set(b" ,;:=<>()[]\"'")
_MAX_SEGMENT = 96
_MAX_SEGMENTS = 400
HEADER = b"Nov 25 11:12:00 mail %s[4242]: "


def seeds(fset: FilterSet, templates: dict[str, tuple[str, str, str | None]],
          harmless: dict[str, str]) -> dict[str, list[tuple[bytes, bytes]]]:
    """filter.rule -> [(program, message)] of real lines of that rule."""
    out: dict[str, list[tuple[bytes, bytes]]] = {}
    for program, message, rule in templates.values():
        if rule:
            text = message.format(ip="198.51.100.77", **harmless)
            out.setdefault(rule, []).append((program.encode(), text.encode()))
            # the optional parts a rule may take after the real line: a parenthesised reason,
            # a reply before the status, another field
            for tail in (" (x", " (x)", ", reply=550 x", ", x=y"):
                out[rule].append((program.encode(), (text + tail).encode()))
    parser = SyslogParser(NOW)
    for path in sorted(SAMPLES.glob("*.log")):
        expect = None
        for raw in path.read_bytes().split(b"\n"):
            if raw.startswith(b"# expect:"):
                expect = raw[9:].decode().strip().split(" ")[0]
                continue
            if not raw or raw.startswith(b"#") or not expect or expect == "none":
                continue
            header = parser.parse(raw)
            if header is not None and len(out.get(expect, ())) < 4:
                out.setdefault(expect, []).append((header.program, raw[header.msg_start:]))
            expect = None
    return out


Shape = tuple[bytes, bytes, bytes, bytes]  # program, text before the run, repeated unit, text after


def shapes(message: bytes, rng: random.Random) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(before, unit, after) cut from one real message at its separators."""
    bounds = [0] + [i + 1 for i, c in enumerate(message) if c in _SEPARATORS] + [len(message)]
    bounds = sorted(set(bounds))
    pairs = [(i, j) for a, i in enumerate(bounds) for j in bounds[a + 1:] if 0 < j - i <= _MAX_SEGMENT]
    if len(pairs) > _MAX_SEGMENTS:
        pairs = rng.sample(pairs, _MAX_SEGMENTS)
    for i, j in pairs:
        unit = message[i:j]
        yield message[:i], unit, b""
        yield message[:i], unit, message[j:]
        yield message[:j], unit, message[j:]


def build(shape: Shape, size: int) -> tuple[bytes, int]:
    """The line of a shape at about `size` bytes, and where its message starts."""
    program, before, unit, after = shape
    head = HEADER % program
    times = max(1, (size - len(head) - len(before) - len(after)) // len(unit))
    return head + before + unit * times + after, len(head)


def _time(rule: Rule, line: bytes, start: int) -> float:
    match = rule.pattern.regex.match
    began = time.perf_counter()
    match(line, start)
    return time.perf_counter() - began


def worst_lines(fset: FilterSet, rule_seeds: dict[str, list[tuple[bytes, bytes]]], probe: int = 8192,
                keep: int = 3, seed: int = 20) -> dict[str, list[Shape]]:
    """filter.rule -> its `keep` slowest shapes, timed at `probe` bytes."""
    rng = random.Random(seed)
    rules = {f"{f.name}.{r.id}": r for f in fset.filters for r in f.rules}
    out: dict[str, list[Shape]] = {}
    for name, rule in rules.items():
        timed: list[tuple[float, Shape]] = []
        for program, message in rule_seeds.get(name, ()):
            for before, unit, after in shapes(message, rng):
                shape = (program, before, unit, after)
                line, start = build(shape, probe)
                timed.append((_time(rule, line, start), shape))
        timed.sort(key=lambda t: t[0], reverse=True)
        out[name] = [shape for _t, shape in timed[:keep]]
    return out


def timed_at(fset: FilterSet, worst: dict[str, list[Shape]], size: int) -> dict[str, tuple[float, bytes]]:
    """filter.rule -> (seconds, line) of the slowest of its worst shapes rebuilt at `size` bytes."""
    rules = {f"{f.name}.{r.id}": r for f in fset.filters for r in f.rules}
    result: dict[str, tuple[float, bytes]] = {}
    for name, found in worst.items():
        rule = rules[name]
        slowest: tuple[float, bytes] = (0.0, b"")
        for shape in found:
            line, start = build(shape, size)
            took = min(_time(rule, line, start) for _ in range(3))
            if took >= slowest[0]:
                slowest = (took, line)
        result[name] = slowest
    return result
