"""Rewrites a compiled rule's regex into one Python's `re` runs faster, matching exactly the same.

Input: the regex text of a rule (its filter's prefix and its pattern with the placeholders
expanded). Output: the same text with each greedy optional non-capturing group `(?:X)?` written
as `(?:X|)`.

Why: `re` (sre, Python 3.11) runs `(?:X)?` as a REPEAT with a MAX_UNTIL, which allocates and
frees a repeat context on every attempt; `(?:X|)` is a BRANCH, which saves a mark and tries X,
then the empty string: the same order, so the same match, the same groups and the same
backtracking. Exim's lines go through many such groups (`<EXIMHOST>` has six): callgrind, an
arrival line read up to its client, 10,600 -> 7,400 instructions per call (bench/README.md).

Only `(?:` groups are rewritten: a capturing group that does not take part is None, not empty,
and an atomic group `(?>X)?` may be skipped as a whole, which `(?>X|)` could not. A lazy `)??`
and a possessive `)?+` stay as they are. Never changes what a pattern matches:
tests/test_patterns.py compares both forms on every shipped rule and sample line.
"""

from __future__ import annotations

import re

_VERBOSE_OR_COMMENT = re.compile(r"\(\?[aiLmsu]*x|\(\?#")
_SPECIAL = re.compile(r"[\\\[()]")  # what the scan stops at: an escape, a class, a group's ends


def cheaper_optionals(regex: str) -> str:
    """`regex` with each greedy `(?:X)?` written `(?:X|)` (same length, same matches)."""
    if ")?" not in regex or _VERBOSE_OR_COMMENT.search(regex):
        return regex  # nothing to do; or `#` comments, which could hold parentheses
    out = list(regex)
    stack: list[bool] = []  # for each open group: whether it is `(?:`
    i = 0
    while (found := _SPECIAL.search(regex, i)) is not None:
        i = found.start()
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _class_end(regex, i)
            continue
        if c == "(":
            stack.append(regex.startswith("(?:", i))
        elif stack:  # `)`
            plain = stack.pop()
            if plain and regex[i + 1:i + 2] == "?" and regex[i + 2:i + 3] not in ("?", "+"):
                out[i], out[i + 1] = "|", ")"
                i += 2
                continue
        i += 1
    return "".join(out)


def _class_end(regex: str, i: int) -> int:
    """The index after the character class that starts at regex[i] (`[`)."""
    j = i + 1
    if regex[j:j + 1] == "^":
        j += 1
    if regex[j:j + 1] == "]":  # a `]` first in the class is itself
        j += 1
    while j < len(regex) and regex[j] != "]":
        j += 2 if regex[j] == "\\" else 1
    return j + 1
