"""Rules simple enough to match without the regex engine: a queue id, then fixed text.

Input: a compiled rule (its filter's prefix, its template, its regex). Output: the rule's shape,
a short bytes string the C matcher (`_speedups.c`, `shape_match`) reads, or None when the rule is
not one of these shapes (it then runs its regex, as every rule did before).

Why: most lines of an Exim log are a message's `QID => ...`, `QID -> ...` and `QID Completed`
(exim-queue.toml: `<QID> => `, `<QID> Completed(?: QT=\\S+)?$`). A call into Python's `re` costs
~1,400 instructions before it reads a byte, and the builder then asks the match object for its
`qid` group (another call); finding a message id and a fixed marker in C costs a few dozen.

The shapes, each after the filter's prefix (empty, or exactly EXIM_PREFIX, the stamp and `[pid] `
Exim writes into syslog):
    <QID>TEXT                 TEXT: fixed text (regex escapes of punctuation allowed)
    <QID>TEXT$
    <QID>TEXT(?:MORE\\S+)?$    MORE: fixed text, e.g. ` QT=` (the time a message spent queued)
A shape is recognised only when the rule's regex is, character for character, the one these
parts compile to (`compile_pattern`'s own expansion of the prefix and <QID>): a filter that
edits its prefix or a placeholder that changes simply runs its regex again.

Three more rules have an "arrival shape" (end kind 3, 4, 5), Exim's `<=` lines as exim-queue.toml
writes its `arrival-auth`, `arrival` and `local` rules, character for character (ARRIVAL_TEMPLATES,
with the placeholders as EXIM_PLACEHOLDERS has them). Their regexes read an arrival line up to
`S=` at ~50 instructions a byte (7,500-14,000 a call); the C matcher (`arrival_match`) reads the
common form of the line forward, since every way back those regexes could take ends on a byte that
cannot follow (possessive runs; each optional field starts with a space and a name no later field
starts with), and gives the `qid`, `sender`, `ip` and `user` spans. Any other form (a quoted local
part in the sender, ` I=`, ` U=` or ` Ci=` after the client, a field cut short) it leaves to the
rule's regex, which then decides: the C code never answers where it has not read the whole match.

The C matcher follows the regex's backtracking order exactly (tests/test_shapes.py compares it
with the regex on every shipped sample, both bench logs and adversarial lines): the prefix's two
possessive groups are taken whole or not at all; <QID>'s three alternatives are tried in order,
the last one (5 to 20 letters and digits) from its longest length down; `$` matches at the end
or before a final newline. The only group such a rule captures is `qid`.
"""

from __future__ import annotations

import re

from .patterns import PLACEHOLDERS
from .regexopt import cheaper_optionals

# The prefix of filters.d/exim.toml and exim-queue.toml (the C matcher knows this one).
EXIM_PREFIX = (r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3})?(?: [-+][0-9]{4})? )?+"
               r"(?:\[[0-9]{1,10}\] )?+")
_PREFIXES = {"": 0, EXIM_PREFIX: 1}
# TEXT: literal characters, or a backslash before punctuation (`\*\*`); no class, group, quantifier
# or anchor.
_TEXT = r"(?:[^\\\[\](){}.*+?|^$]|\\[^A-Za-z0-9])+"
_TEMPLATE = re.compile(rf"<QID>(?P<text>{_TEXT})(?:(?P<end>\$)|\(\?:(?P<more>{_TEXT})\\S\+\)\?\$)?")
_UNESCAPE = re.compile(r"\\(.)")
MAX_TEXT = 255
# What the C code is written for: if <QID> ever changes, no rule has a shape until it is taught.
QID_REGEX = (r"(?P<qid>[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4})"
             r"|[0-9A-Za-z]{5,20})")


# The arrival rules the C code reads (exim-queue.toml), by end kind; and the placeholders as the C
# code knows them: if one changes, these rules run their regexes until the C code is taught.
ARRIVAL_TEMPLATES = {
    (r"<QID> <= <EXIMSENDER>(?: R=\S++)? H=<EXIMHOST> P=\S++(?: L[*.]?-?)?(?: X=\S++)?(?: CV=\S++)?"
     r'(?: DN="[^"\n]*+")?(?: SNI=\S++)? A=[^\s:]++:<EXIMACCOUNT>(?::\S*+)?(?: PRDR)?(?: PRX=\S++)?(?: K)?'
     r" S=\d++(?: |$)"): 3,
    r"<QID> <= <EXIMSENDER>(?: R=\S+)? H=<EXIMHOST> P=\S++ ": 4,
    r"<QID> <= <EXIMSENDER> U=<LOGINNAME> P=local(?:-e?smtp|-bsmtp)? ": 5,
}
EXIM_PLACEHOLDERS = {
    "QID": QID_REGEX,
    "EXIMSENDER": r'(?:<>|(?P<sender>(?:[^\s"]++|"(?:[^"\\\n]++|\\.)*+")++))',
    "EXIMHOST": (r"(?:H=)?(?:\w[\w./-]* )?(?:\([^\s()]*\) )?\[(?:IPv6:)?(?P<ip>[0-9A-Fa-f:.]{2,45})\]"
                 r"(?::\d+)?(?: I=\[[0-9A-Fa-f:.]+\](?::\d+)?)?(?: U=\S*)?(?: Ci=\d+)?"),
    "EXIMACCOUNT": r"(?P<user>[^\s:]++)",
    "LOGINNAME": r"(?P<user>[^\s]+)",
}
_PLACEHOLDER = re.compile(r"<([A-Z]+)>")


def arrival_shape(prefix: str, template: str, regex: bytes) -> bytes | None:
    """The arrival shape of a rule (see the module doc), or None. Layout as rule_shape's, with
    end kind 3 (`arrival-auth`), 4 (`arrival`) or 5 (`local`) and no text."""
    kind = ARRIVAL_TEMPLATES.get(template)
    if kind is None or prefix != EXIM_PREFIX:
        return None
    if any(PLACEHOLDERS[name][0] != known for name, known in EXIM_PLACEHOLDERS.items()):
        return None
    expanded = _PLACEHOLDER.sub(lambda m: EXIM_PLACEHOLDERS[m[1]], template)
    if cheaper_optionals(prefix + expanded).encode() != regex:
        return None
    return bytes([1, kind, 0, 0])


def rule_shape(prefix: str, template: str, regex: bytes) -> bytes | None:
    """The shape of a rule (see the module doc) as the C matcher reads it, or None.

    Layout: prefix kind (0 none, 1 EXIM_PREFIX), end kind (0 none, 1 `$`, 2 `(?:MORE\\S+)?$`),
    len(TEXT), len(MORE), then TEXT and MORE."""
    arrival = arrival_shape(prefix, template, regex)
    if arrival is not None:
        return arrival
    kind = _PREFIXES.get(prefix)
    found = _TEMPLATE.fullmatch(template)
    if kind is None or found is None or PLACEHOLDERS["QID"][0] != QID_REGEX:
        return None
    text = _UNESCAPE.sub(r"\1", found["text"]).encode()
    more = _UNESCAPE.sub(r"\1", found["more"] or "").encode()
    end = 2 if found["more"] is not None else 1 if found["end"] else 0
    if not text or len(text) > MAX_TEXT or len(more) > MAX_TEXT or (end == 2 and not more):
        return None
    # The regex these parts make (the prefix, <QID> as the C code knows it, the rest as written)
    # must be the rule's own, character for character.
    if cheaper_optionals(prefix + QID_REGEX + found.group(0)[len("<QID>"):]).encode() != regex:
        return None
    return bytes([kind, end, len(text), len(more)]) + text + more


# In a filter's group, in place of its literal index (literals.py): every rule has a shape whose
# match holds the rule's literal, so the C matcher skips the literal scan and reads the prefix
# and the queue id once for all the rules (`first_rule`): the rule's literal pre-check cannot
# change the answer (a line its shape matches holds the literal).
SHAPED_GROUP = b"S"
# What an arrival shape's match always holds (its regex's fixed text), by end kind.
_ARRIVAL_TEXTS = {3: (b" <= ", b" H=", b" P=", b" A=", b" S="), 4: (b" <= ", b" H=", b" P="),
                  5: (b" <= ", b" U=", b" P=local")}


def implies_literal(shape: bytes, literal: bytes | tuple[bytes, ...]) -> bool:
    """Whether every line the shape matches holds the literal (one of them, for a tuple)."""
    texts = (literal,) if isinstance(literal, bytes) else literal
    if not texts or any(not text for text in texts):
        return True  # no literal (or an empty one): nothing to check
    fixed = _ARRIVAL_TEXTS.get(shape[1], ()) if shape[1] >= 3 else (shape[4:4 + shape[2]],)
    return any(text in part for text in texts for part in fixed)


def shaped_group(rules: list[tuple[bytes | None, bytes | tuple[bytes, ...]]]) -> bool:
    """Whether a filter's rules, (shape, literal) each, can all be matched by their shapes with no
    literal scan (SHAPED_GROUP)."""
    return bool(rules) and all(shape is not None and implies_literal(shape, literal) for shape, literal in rules)
