"""Compile filter pattern templates into anchored regular expressions.

Inputs: a template string such as `warning: <CLIENT>: SASL <WORD> authentication failed: <ANY>`.
Output: a `CompiledPattern` (bytes regex, the literal to pre-check, the fields it captures), or a
`PatternError` carrying the 1-based column of the fault within the template.

The template language is a regular expression in which `<NAME>` placeholders (upper-case names
from PLACEHOLDERS) stand for the fields mailban extracts. The grammar is parsed with pyparsing so
that a typo such as `<CLEINT>` is reported at its column with the list of known names, instead of
silently matching the literal text. Named groups `(?P<...>)` are reserved for placeholders.

Security note: the client address is only ever taken from an `ip` group, and the placeholders that
create it (<CLIENT>, <IP>, <SMRELAY>, <HOSTIP>) match only the bracketed or `rip=`-style positions
where the MTA itself writes the client. Patterns are matched from the start of the message and
should end with `$`, so that attacker text (HELO, user names, addresses) cannot slide a forged
`host[ip]` into the place the real one occupies. `<USER>` is greedy for the same reason: it takes
everything up to the *last* occurrence of the server-written text that follows it.

Cost: Python's `re` backtracks, so a repeated group that contains a quantifier or an alternation
(`(a+)+`, `(a|aa)+`, `(.*a){20}`) can take exponential time on a line that almost matches.
`backtracking_hazard` refuses such templates (and prefixes) at load, with the column of the
group; atomic groups and possessive quantifiers are accepted. Figures, and why not RE2, in
docs/security.md.
Size: the whole pattern language (tokens, placeholders, their validation with file, line and
column, and the regex they compile to) is one compiler; splitting it would split its grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyparsing as pp

from .regexopt import cheaper_optionals

_IP = r"(?P<ip>[0-9A-Fa-f:.]{2,45})"
_HOST = r"[^\s\[\]]+"

# name -> (regex, fields it captures)
PLACEHOLDERS: dict[str, tuple[str, frozenset[str]]] = {
    # postfix `host[ip]`; the host part comes from DNS (validated by postfix, no brackets)
    "CLIENT": (rf"(?P<host>{_HOST})\[{_IP}\]", frozenset({"host", "ip"})),
    # a bare address, e.g. after `rip=` (dovecot) or inside `[...]` (postscreen)
    "IP": (rf"(?:IPv6:)?{_IP}", frozenset({"ip"})),
    # sendmail `relay=[ip]`, `relay=host [ip]`, `relay=host [ip] (may be forged)`. The value is
    # sendmail's $_ macro: `[ident@]host [ip]` or `[ident@][ip]`, then ` (may be forged)`; the
    # ident is `IDENT:name` with some OSTYPEs. The RFC 1413 ident name is the client's choice,
    # but sendmail drops spaces, commas, brackets, `=`, `@` and `>` from it and cuts it to 99
    # characters (seen on the real sendmail, tests/filters/sendmail-redteam.log); the host is the
    # reverse DNS name, which the resolver accepted as a host name. So the value holds no space
    # but the one before the bracket, no comma, no bracket but the address's, and ends with the
    # address: a value cut short (`relay=%.100s` with a long ident or host) holds no `]` and
    # gives no address.
    "SMRELAY": (
        rf"(?:(?:IDENT:)?[\w.!#$%&'*+/^`{{|}}~-]{{1,128}}@)?(?:(?P<host>[^\s\[\],@]+) )?\[(?:IPv6:)?{_IP}\]"
        r"(?: \(may be forged\))?",
        frozenset({"host", "ip"}),
    ),
    # Exim's client, as host_and_ident() writes it (src/host.c): `H=` (not always), the verified
    # reverse name (a DNS name Exim checked: letters, digits, `_`, `.`, `/`, `-`; never `<=` or
    # `=>`, so the sender of an arrival line cannot pass for it), the HELO name in
    # parentheses when it differs (Exim accepts only letters, digits, `.`, `-` and an address
    # literal `[...]` unless helo_accept_junk_hosts is set: then a HELO holding `) [ip] (` can
    # pass for the address, a known limit, docs/quickstart.md), then `[ip]` or `[ip]:port` (+incoming_port), then ` I=[ip]:port`
    # (+incoming_interface), ` U=ident` (RFC 1413: the client's text, after the address) and
    # ` Ci=N` (+connection_id). Exim writes it before any other text the client chose, except in
    # the lines that quote a command first (`SMTP syntax error in "..." H=...`).
    "EXIMHOST": (
        rf"(?:H=)?(?:\w[\w./-]* )?(?:\([^\s()]*\) )?\[(?:IPv6:)?{_IP}\](?::\d+)?"
        r"(?: I=\[[0-9A-Fa-f:.]+\](?::\d+)?)?(?: U=\S*)?(?: Ci=\d+)?",
        frozenset({"ip"}),
    ),
    # A client's argument that the program writes twice: once as itself (sendmail `arg1=<...>`)
    # and once echoed in its reply (`reject=550 5.7.1 <...>... Relaying denied`). <ECHO> must
    # repeat exactly what <ARG> took, so a forged `, relay=[x], reject=...` inside the argument
    # cannot end it early: the text before the real relay and the text after the real reply
    # code must be the same string. Bounded, so that trying every split stays cheap.
    # sendmail shortens an echo of 203 characters or more to its first 100, `...` and its last
    # 100 (arg1 stays whole; it accepts 255 at most): the long form is tried first, so the
    # longest split that the echo confirms wins.
    "ARG": (r"(?:(?P<arghead>[^\n]{100})[^\n]{3,2048}(?P<argtail>[^\n]{100})|(?P<arg>[^\n]{0,202}))",
            frozenset({"arg"})),
    "ECHO": (r"(?:(?P=arg)|(?P=arghead)\.\.\.(?P=argtail))", frozenset()),
    # How many times the line says it happened (`5 attempts`): the event counts that many.
    "COUNT": (r"(?P<count>\d{1,6})", frozenset({"count"})),
    "HOST": (_HOST, frozenset()),
    # attacker-chosen login names: greedy, so the server-written text after it anchors the match
    "USER": (r"(?P<user>.*)", frozenset({"user"})),
    # An authenticated account name as the server returns it (postfix `sasl_username=`): taken
    # up to the first `, ` field postfix adds after it (`, sasl_sender=<AUTH= parameter>`),
    # which is the client's text; an account name holds no `, sasl_`.
    "ACCOUNT": (r"(?P<user>[^\n]*?)", frozenset({"user"})),
    "SENDER": (r"(?P<sender>[^<>]*)", frozenset({"sender"})),
    # A sender written as the client sent it, `>` and all (a quoted local part): greedy, so the
    # server-written fields after it anchor the match.
    "RAWSENDER": (r"(?P<sender>[^\n]*)", frozenset({"sender"})),
    # A login name inside a `(name,ip...)` prefix (dovecot's auth lines): no comma, no
    # parenthesis, so the address after it is always the program's.
    "LOGIN": (r"(?P<user>[^,()\n]*)", frozenset({"user"})),
    "ADDR": (r"[^<>]*", frozenset()),
    # Exim's envelope sender on an arrival line (`<= sender`): the client's MAIL FROM, which
    # holds spaces only inside a quoted local part (`"x H=[6.6.6.6] A=a:b"@example.test`, as
    # Exim logs it). Taken as quoted strings and runs without space or quote, possessively, so
    # it always ends at the first space outside quotes: no forged field inside it can be read
    # as one of Exim's. `<>` (a bounce) is no sender.
    "EXIMSENDER": (r'(?:<>|(?P<sender>(?:[^\s"]++|"(?:[^"\\\n]++|\\.)*+")++))', frozenset({"sender"})),
    # Exim's `A=authenticator:ACCOUNT` (server_set_id, the name the client authenticated as):
    # no space, taken up to a `:` (+smtp_mailauth appends `:sender`, the client's AUTH= text).
    "EXIMACCOUNT": (r"(?P<user>[^\s:]++)", frozenset({"user"})),
    # A local account's login name (Exim's `U=` on a local submission): the event's `user`
    # carries it only until the pipeline resolves it to a uid (Pipeline.uid_of); `login` marks
    # the rule for that (FilterSet.login_rules). Login names hold no space.
    "LOGINNAME": (r"(?P<user>[^\s]+)", frozenset({"user", "login"})),
    # postfix and sendmail queue ids, and Exim's message ids: `1rKx2p-0004Ab-1F`, and since 4.97
    # `1tAbCd-000000012Ab-1FGh` (time, pid and fraction of a second in base 62).
    "QID": (r"(?P<qid>[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4})"
            r"|[0-9A-Za-z]{5,20})", frozenset({"qid"})),
    "UID": (r"(?P<uid>\d{1,10})", frozenset({"uid"})),
    "NRCPT": (r"(?P<nrcpt>\d{1,7})", frozenset({"nrcpt"})),
    "STATUS": (r"(?P<status>sent|bounced|deferred|expired)", frozenset({"status"})),
    "NUM": (r"\d+", frozenset()),
    "WORD": (r"\S+", frozenset()),
    "ANY": (r".*", frozenset()),
}

_FIELDS_WITH_IP = frozenset({"ip"})


class PatternError(ValueError):
    """A template that cannot be compiled; `column` is 1-based within the template."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    regex: re.Pattern[bytes]
    # Text every match holds, checked before the regex runs; several (a tuple) when the rule's
    # matches share no text but each holds one of them (`literal = ["a", "b"]`: any of).
    literal: bytes | tuple[bytes, ...]
    fields: frozenset[str]
    source: str


def _grammar() -> pp.ParserElement:
    placeholder = pp.Regex(r"<[A-Z][A-Z0-9_]*>").set_name("placeholder")
    placeholder.set_parse_action(lambda s, loc, t: ("ph", t[0][1:-1], loc))
    escaped = pp.Regex(r"\\.", re.DOTALL).set_parse_action(lambda s, loc, t: ("re", t[0], loc))
    text = pp.Regex(r"[^<\\]+|<").set_parse_action(lambda s, loc, t: ("re", t[0], loc))
    # Whitespace is significant in a pattern: pyparsing must not skip it.
    for element in (placeholder, escaped, text):
        element.leave_whitespace()
    # parse_with_tabs: pyparsing would otherwise expand tabs to spaces before parsing, changing
    # what a pattern with a tab matches and shifting every column after it (found by fuzzing).
    return (pp.ZeroOrMore(placeholder | escaped | text) + pp.StringEnd()).leave_whitespace().parse_with_tabs()


_GRAMMAR = _grammar()
_RESERVED_GROUP = re.compile(r"\(\?P<|\(\?P=|\(\?<[A-Za-z_]")


def compile_pattern(template: str, prefix: str = "", literal: str | list[str] | None = None) -> CompiledPattern:
    """Compile `template` (preceded by the filter's `prefix` regex) to a bytes regex."""
    if not template:
        raise PatternError("the pattern is empty", 1)
    try:
        tokens = _GRAMMAR.parse_string(template, parse_all=True)
    except pp.ParseBaseException as exc:  # pragma: no cover - the grammar accepts any text
        raise PatternError(f"cannot parse the pattern: {exc.msg}", exc.col) from None
    bad = _RESERVED_GROUP.search(template)
    if bad:
        raise PatternError(
            "named groups are reserved for placeholders; use (?:...) or a placeholder",
            bad.start() + 1,
        )
    parts: list[str] = []
    fields: set[str] = set()
    for kind, value, loc in tokens:
        if kind == "ph":
            if value == "ECHO" and "arg" not in fields:
                raise PatternError("<ECHO> repeats what an earlier <ARG> took; put <ARG> first", loc + 1)
            if value not in PLACEHOLDERS:
                known = ", ".join(f"<{n}>" for n in PLACEHOLDERS)
                raise PatternError(f"unknown placeholder <{value}>; known ones are {known}", loc + 1)
            regex, captured = PLACEHOLDERS[value]
            for name in captured:
                if name in fields:
                    raise PatternError(
                        f"<{value}> captures '{name}', which an earlier placeholder already "
                        "captures; a pattern may name the client (or user, ...) only once",
                        loc + 1,
                    )
            fields |= captured
            parts.append(regex)
        else:
            parts.append(value)
    body = "".join(parts)
    try:
        regex = re.compile(cheaper_optionals(prefix + body).encode(), re.DOTALL)
    except re.error as exc:
        col = 1 if exc.pos is None else max(1, _map_column(tokens, exc.pos - len(prefix)))
        raise PatternError(f"invalid regular expression: {exc.msg}", col) from None
    danger = backtracking_hazard(prefix)
    if danger is not None:
        raise PatternError(f"in the filter's `prefix` at its column {danger[0] + 1}: {danger[1]}", 1)
    danger = backtracking_hazard(body) or wildcard_sequence_hazard(body)
    if danger is not None:
        raise PatternError(danger[1], max(1, _map_column(tokens, danger[0])))
    if literal is None:
        texts = [longest_literal(body)]
    else:
        texts = [literal] if isinstance(literal, str) else literal
        if not isinstance(literal, str) and (not texts or not all(texts)):
            raise PatternError("a list of literals must hold at least one, none of them empty", 1)
        for text in texts:
            if text and text not in template.replace("\\", ""):
                raise PatternError(f"the literal {text!r} does not occur in the pattern", 1)
    encoded = tuple(t.encode() for t in texts)
    return CompiledPattern(regex, encoded[0] if len(encoded) == 1 else encoded, frozenset(fields), template)


_HAZARD_ADVICE = ("; a line that does not match could then take exponential time (the regex engine "
                  "backtracks). Use a character class, a possessive quantifier (*+, ++, {m,n}+) or an "
                  "atomic group (?>...)")
_REPEAT = re.compile(r"\{(\d*)(,?)(\d*)\}")


def backtracking_hazard(regex: str) -> tuple[int, str] | None:
    """(position, reason) of the first group that is repeated more than once and contains a
    quantifier or an alternation, e.g. `(a+)+`, `(a|aa)+`, `(.*a){20}`, `(a?){25}`; else None.

    These are the constructs that make a backtracking engine take exponential time on a line
    that almost matches. Atomic groups `(?>...)` and possessive quantifiers (`*+`, `++`, `?+`,
    `{m,n}+`) cannot be backtracked into and are accepted. Sequences of wildcards (`.*x.*y`)
    are polynomial, not exponential, and are accepted (docs/security.md gives their cost).
    """
    # Open groups: [start, atomic, contains a quantifier, contains an alternation].
    stack: list[list[Any]] = [[0, False, False, False]]
    last_group: list[Any] | None = None  # the group that closed just before, if the last atom
    i, n = 0, len(regex)
    while i < n:
        c = regex[i]
        quant: tuple[int, int] | None = None  # (max repetitions, end index)
        if c == "\\":
            last_group = None
            i += 2
            continue
        if c == "[":
            last_group = None
            i = _class_end(regex, i) + 1
            continue
        if c == "(":
            atomic = regex.startswith("(?>", i)
            stack.append([i, atomic, False, False])
            last_group = None
            if not regex.startswith("(?", i):
                i += 1
            elif regex.startswith(("(?:", "(?>", "(?=", "(?!"), i):
                i += 3
            elif regex.startswith(("(?<=", "(?<!"), i):
                i += 4
            elif regex.startswith(("(?P<", "(?<"), i):
                i = regex.find(">", i) + 1 or n
            elif regex.startswith("(?P=", i):  # a back-reference: one atom
                stack.pop()
                i = regex.find(")", i) + 1 or n
            else:  # inline flags `(?i)` (no group) or `(?s:...)`, a conditional `(?(1)...)`
                j = i + 2
                while j < n and regex[j] not in ":)(":
                    j += 1
                if j < n and regex[j] == ")":
                    stack.pop()
                i = j + 1
            continue
        if c == ")":
            group = stack.pop() if len(stack) > 1 else [0, False, False, False]
            parent = stack[-1]
            if not group[1]:  # an atomic group's inside cannot be backtracked into
                parent[2] = parent[2] or group[2]
                parent[3] = parent[3] or group[3]
            last_group = group
            i += 1
            continue
        if c == "|":
            stack[-1][3] = True
            last_group = None
            i += 1
            continue
        if c in "*+?":
            quant = (1 if c == "?" else 2, i + 1)
        elif c == "{":
            m = _REPEAT.match(regex, i)
            if m and (m.group(1) or m.group(3)):
                high = m.group(3) if m.group(2) else m.group(1)
                quant = (int(high) if high else 2, m.end())
        if quant is None:
            last_group = None
            i += 1
            continue
        most, end = quant
        possessive = end < n and regex[end] == "+"
        if end < n and regex[end] in "?+":
            end += 1  # lazy or possessive modifier
        if last_group is not None and most > 1 and not possessive and not last_group[1] \
                and (last_group[2] or last_group[3]):
            what = "a quantifier" if last_group[2] else "an alternation"
            return last_group[0], (f"the group at this column is repeated and contains {what} "
                                   f"(like (a+)+ or (a|aa)+){_HAZARD_ADVICE}")
        if not possessive:
            stack[-1][2] = True
        last_group = None
        i = end
    return None


# An unbounded run of (almost) any character: `.*`, `.+?`, `[^\n]*`, `[\s\S]*`. (`\S+` cannot
# cross a space, which every field separator of a mail log holds, so it is not counted.)
_BROAD = re.compile(r"(?:\.|\[\^\\n\]|\[\^\\r\\n\]|\[\\s\\S\])(?:\*|\+|\{\d*,\})\??")
_TERMINAL = re.compile(r"[)?]*(?:\$|\||\)*$)")


def wildcard_sequence_hazard(regex: str) -> tuple[int, str] | None:
    r"""(position, reason) of an unbounded wildcard that follows another one and is not the last
    thing the pattern matches (`.+?, (?:reply=.*?, )?stat=`, `<USER>...\(.*\)$`); else None.

    Two such wildcards make a line that almost matches cost time quadratic in its length: for
    every place the first one may end, the second scans the rest of the line (8 s for one
    256 KB line, measured on two shipped rules before they were rewritten). A wildcard inside
    an atomic group `(?>...)` or with a possessive quantifier is not backtracked into and does
    not count; a last `.*` before `$` (or the end) always matches at once and is allowed.
    """
    atomic_depth = 0
    stack: list[bool] = []
    seen: int | None = None
    i, n = 0, len(regex)
    while i < n:
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if c == "[" and not regex.startswith(("[^\\n]", "[^\\r\\n]", "[\\s\\S]"), i):
            i = _class_end(regex, i) + 1
            continue
        if c == "(":
            atomic = regex.startswith("(?>", i)
            stack.append(atomic)
            atomic_depth += atomic
            i += 1
            continue
        if c == ")":
            if stack:
                atomic_depth -= stack.pop()
            i += 1
            continue
        m = _BROAD.match(regex, i)
        if m is None:
            i += 1
            continue
        end = m.end()
        possessive = end < n and regex[end] == "+" and not m.group(0).endswith("?")
        if atomic_depth == 0 and not possessive:
            if seen is not None and not _TERMINAL.match(regex, end):
                return i, ("this wildcard follows another one (at column "
                           f"{seen + 1} of the expanded pattern) and more text follows it; a line "
                           "that almost matches could then take time quadratic in its length. Take "
                           "the first part with an atomic group (?>...), or use a character class "
                           "that cannot cross the text after it")
            if seen is None:
                seen = i
        i = end + (1 if possessive else 0)
    return None


def _map_column(tokens: pp.ParseResults, pos: int) -> int:
    """Map a position in the expanded regex back to a 1-based column in the template."""
    offset = 0
    for kind, value, loc in tokens:
        width = len(PLACEHOLDERS[value][0]) if kind == "ph" else len(value)
        if pos < offset + width:
            return loc + 1 + (0 if kind == "ph" else pos - offset)
        offset += width
    last = tokens[-1] if tokens else ("re", "", 0)
    return last[2] + len(last[1]) + 1


_PLAIN = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _:;,=@/-'\"!%&~#<>`")
_ESCAPABLE = set(".[](){}*+?|^$\\/-:<>=@ ")


def longest_literal(regex: str) -> str:
    """The longest run of text that every match must contain, for a cheap substring pre-check.

    Conservative: only text at nesting depth 0 counts, a character followed by a quantifier is
    dropped, and a top-level alternation disables the pre-check (returns "").
    """
    best = ""
    run: list[str] = []
    depth = 0
    i = 0
    n = len(regex)

    def flush() -> None:
        nonlocal best
        text = "".join(run)
        if len(text) > len(best):
            best = text
        run.clear()

    while i < n:
        c = regex[i]
        if c == "\\" and i + 1 < n:
            nxt = regex[i + 1]
            if depth == 0 and nxt in _ESCAPABLE:
                run.append(nxt)
            else:
                flush()
            i += 2
        elif c == "(":
            flush()
            depth += 1
            i += 1
        elif c == ")":
            depth = max(0, depth - 1)
            i += 1
        elif c == "[":
            flush()
            close = _class_end(regex, i)
            i = close + 1
        elif c in "?*+{":
            if depth == 0 and c != "+" and run:
                run.pop()  # the quantified character is optional
            flush()
            i += 1
        elif c == "|":
            if depth == 0:
                return ""
            i += 1
        elif depth == 0 and c in _PLAIN:
            run.append(c)
            i += 1
        else:
            flush()
            i += 1
    flush()
    return best.strip() if len(best.strip()) >= 3 else ""


def _class_end(regex: str, start: int) -> int:
    i = start + 1
    if i < len(regex) and regex[i] == "^":
        i += 1
    if i < len(regex) and regex[i] == "]":
        i += 1
    while i < len(regex):
        if regex[i] == "\\":
            i += 2
            continue
        if regex[i] == "]":
            return i
        i += 1
    return len(regex) - 1
