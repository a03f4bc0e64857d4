"""The table the C matcher uses to find which of a filter's literals occur in a line, in one pass.

A rule runs its regex only on lines that hold its literal (`Rule.pattern.literal`). Checking the
literals one by one costs a `memchr` pass over the line per literal: 20 passes for postfix's
smtpd rules on every smtpd line, most of which hold none of them. This table lets the C module
(`_speedups.first_rule`) find all of a filter's literals in one pass that skips ahead, the
Wu-Manber way:

- `m` is the length of the filter's shortest literal; only the first `m` bytes of each literal
  (its prefix) steer the scan, and each candidate is then compared in full;
- `shift[h]`, for the hash `h` of two adjacent bytes, is how far the end of an `m`-byte window
  can move when those two bytes end it: `m - 1` when the pair occurs in no prefix, less when it
  occurs, 0 when it ends a prefix;
- `cand[h2]` (a second, smaller hash of the same pair) is the set of literals whose prefix ends
  with a pair of that hash, checked with `memcmp` when the shift is 0. Hash collisions only make
  the shifts smaller and the candidates more: the answer is exact either way.

The answer is the same as `literal in line` for every rule (tests/test_speedups.py compares them
on the bench log and on random lines). On the bench log the scan looks at about one byte in five.

A rule may give several literals (any of them: `literal = ["a", "b"]`, a tuple here): each steers
the scan like a literal of its own, and a candidate's rule is found when one of its literals is
there (the C code compares each of the rule's literals at the candidate's place).

Layout (native byte order, read by `_speedups.c`): uint64 m, uint64 mask of the rules that have
a literal, uint64 cand[256], uint8 shift[4096]. The literals themselves are read from the rules.
Only the first 64 rules of a filter are indexed; the C code checks any further rule's literal on
its own.
"""

from __future__ import annotations

from array import array

WIDTH = 64          # rules per index (bits of a uint64)
SHIFT_SLOTS = 4096  # must match _speedups.c
CAND_SLOTS = 256


def shift_slot(a: int, b: int) -> int:
    return ((a << 4) ^ b) & (SHIFT_SLOTS - 1)


def cand_slot(a: int, b: int) -> int:
    return (a * 31 + b) & (CAND_SLOTS - 1)


def literal_index(literals: list[bytes | tuple[bytes, ...]]) -> bytes | None:
    """The scan table of a filter's rules' literals (bytes, or a tuple of them per rule), or None
    when there is nothing to gain (no literal, or one shorter than two bytes: the C code then
    checks them one by one)."""
    indexed = [(r, text) for r, lit in enumerate(literals[:WIDTH]) if lit
               for text in ((lit,) if isinstance(lit, bytes) else lit)]
    if not indexed:
        return None
    m = min(len(lit) for _, lit in indexed)
    if m < 2:
        return None
    mask = 0
    cand = array("Q", [0] * CAND_SLOTS)
    shift = bytearray([m - 1]) * SHIFT_SLOTS
    for r, lit in indexed:
        mask |= 1 << r
        for j in range(1, m):  # the pair lit[j-1:j+1] ends the window m - 1 - j bytes early
            h = shift_slot(lit[j - 1], lit[j])
            shift[h] = min(shift[h], m - 1 - j)
        cand[cand_slot(lit[m - 2], lit[m - 1])] |= 1 << r
    return array("Q", [m, mask]).tobytes() + cand.tobytes() + bytes(shift)
