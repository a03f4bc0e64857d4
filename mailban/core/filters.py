"""Filters: turn log lines into typed events.

Inputs: filter documents (parsed TOML, see docs/filters.md) and raw lines with their parsed header.
Output: `Event` records. A filter declares the programs it covers (shell-style globs matched
against the syslog tag) and ordered rules; the first rule of a filter that matches a line wins.

Speed: the program name selects the few filters that can apply (a dict lookup, cached per program
name); each filter's rules are joined into one alternation regex matched once at the start of the
message (most lines match nothing and cost one C-level match per filter), with each rule's
literal still required before its match counts; events are built by per-rule builders that read
only the fields the rule captures.

`TallySet` selects rules the same way and returns only what `mailban test`'s summary counts.

Security note: only a rule's `ip` group becomes an event's address, and only after `ipaddress`
accepted it; every other field is attacker-influenced text and travels as data.
Size: a filter's compiled form and the matcher that reads it (program selection, literals, the
Python twin of the C matcher) change together, so they stay in one module.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError
from .literals import literal_index
from .patterns import CompiledPattern, PatternError, compile_pattern
from .records import KINDS, STATUSES, Event, normalize_ip
from .shapes import SHAPED_GROUP, rule_shape, shaped_group
from .syslog import LAST_REPEATED, REPEATED, REPEATS, Header, SyslogParser, unfold
from .tomldoc import TomlDoc

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_PROGRAM_CACHE_MAX = 1024
# Placeholder values that mean "no user": postfix writes sasl_username=(unavailable) when the
# SASL server did not say, dovecot writes user=<> for an empty login name.
_NO_USER = frozenset({b"", b"(unavailable)", b"unknown"})


@dataclass(frozen=True, slots=True)
class Rule:
    filter: str
    id: str
    kind: str
    pattern: CompiledPattern
    # A fixed delivery status for rules whose line states it in words of its own (sendmail's
    # `stat=Sent`, `dsn=5.x.x`); rules with a <STATUS> placeholder take it from the line.
    status: str | None = None
    # A queue id then fixed text (shapes.py): matched in C without the regex engine, same result.
    shape: bytes | None = None


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    path: str
    description: str
    programs: tuple[str, ...]
    rules: tuple[Rule, ...]

    def covers(self, program: str) -> bool:
        return any(fnmatch.fnmatchcase(program, glob) for glob in self.programs)


def build_filter(name: str, doc: TomlDoc) -> Filter:
    """Validate a parsed filter file; refuse it with file, line and column on any fault."""
    data = doc.data
    _only_keys(doc, (), data, {"filter", "rule"})
    head = data.get("filter")
    if not isinstance(head, dict):
        raise doc.error((), "a filter file needs a [filter] table with `programs`")
    _only_keys(doc, ("filter",), head, {"description", "programs", "prefix"})
    programs = head.get("programs")
    if not isinstance(programs, list) or not programs or not all(
        isinstance(p, str) and p for p in programs
    ):
        raise doc.error(("filter", "programs"), "`programs` must be a non-empty list of names or globs")
    prefix = head.get("prefix", "")
    if not isinstance(prefix, str):
        raise doc.error(("filter", "prefix"), "`prefix` must be a string (a regular expression)")
    try:
        re.compile(prefix)
    except re.error as exc:
        raise doc.error(("filter", "prefix"), f"`prefix` is not a valid regular expression: {exc.msg}")
    rules_data = data.get("rule")
    if not isinstance(rules_data, list) or not rules_data:
        raise doc.error((), "a filter file needs at least one [[rule]]")
    rules: list[Rule] = []
    ids: set[str] = set()
    for i, raw in enumerate(rules_data):
        rules.append(_build_rule(name, doc, i, raw, prefix, ids))
    return Filter(
        name=name,
        path=doc.path,
        description=str(head.get("description", "")),
        programs=tuple(programs),
        rules=tuple(rules),
    )


def _build_rule(name: str, doc: TomlDoc, i: int, raw: Any, prefix: str, ids: set[str]) -> Rule:
    where = ("rule", i)
    if not isinstance(raw, dict):
        raise doc.error(where, "each [[rule]] must be a table")
    _only_keys(doc, where, raw, {"id", "kind", "pattern", "literal", "description", "status"})
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        raise doc.error(where + ("id",), "`id` must be a short lower-case name (letters, digits, - _ .)")
    if rid in ids:
        raise doc.error(where + ("id",), f"rule id {rid!r} is used twice in this filter")
    ids.add(rid)
    kind = raw.get("kind")
    if kind not in KINDS:
        raise doc.error(where + ("kind",), f"`kind` must be one of {', '.join(sorted(KINDS))}")
    template = raw.get("pattern")
    if not isinstance(template, str) or not template:
        raise doc.error(where + ("pattern",), "`pattern` must be a non-empty string")
    status = raw.get("status")
    if status is not None and status not in STATUSES:
        raise doc.error(where + ("status",), f"`status` must be one of {', '.join(sorted(STATUSES))}")
    literal = raw.get("literal")
    if literal is not None and not isinstance(literal, str) and not (
            isinstance(literal, list) and literal and all(isinstance(t, str) and t for t in literal)):
        raise doc.error(where + ("literal",), "`literal` must be a string or a list of non-empty strings (any of them)")
    try:
        compiled = compile_pattern(template, prefix, literal)
    except PatternError as exc:
        line, col = doc.where(where + ("pattern",))
        # `col` points at the opening quote of the value; the template starts one further on.
        raise ConfigError(doc.path, line, col + exc.column, f"rule {rid!r}: {exc.message}") from None
    if "login" in compiled.fields and kind != "submission":
        # the pipeline resolves login names on submissions only (Pipeline.correlated): a
        # login name left in `user` would count as a SASL account
        raise doc.error(where + ("pattern",), "<LOGINNAME> is for `submission` rules only")
    if status is not None and "status" in compiled.fields:
        raise doc.error(where + ("status",), "give either `status` or a <STATUS> placeholder, not both")
    return Rule(name, rid, kind, compiled, status, rule_shape(prefix, template, compiled.regex.pattern))


def _only_keys(doc: TomlDoc, where: tuple[Any, ...], table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise doc.error(
                where + (key,), f"unknown key {key!r}; expected one of {', '.join(sorted(allowed))}"
            )


# The compiled form of one rule for the hot path: (literal, regex match method, event builder,
# shape); the literal is bytes, or a tuple of them when the rule has several (any of them:
# `holds`); the shape (shapes.py) lets the C loops match without the regex, or is None.
Compiled = tuple[bytes | tuple[bytes, ...], Any, Callable[..., "Event | None"], "bytes | None"]
# One group per filter covering a program: (combined match, marker group -> rule index, rules
# with the builders the combined regex needs, rules for one-by-one matching, and each rule's
# spec, which the C loops of `_speedups` build from instead of calling the builder).
# (combined regex's match, markers, joined builders, rules one by one, event specs, the rules'
# literal index for the C matcher: literals.literal_index, or shapes.SHAPED_GROUP when every rule
# has a shape)
Group = tuple[Any, dict[int, int], tuple[Compiled, ...], tuple[Compiled, ...], tuple[Any, ...], bytes | None]
# Bounded caches of converted fields, shared by all filters: most lines name a few thousand
# addresses again and again. Cleared when full (a spray of distinct addresses must not grow it).
_IP_CACHE_MAX = 65536
_ip_cache: dict[bytes, str | None] = {}
# Patterns that cannot be joined into one alternation without changing what they match: group
# back-references (the group numbers shift) and global inline flags (they would apply to all).
_NOT_COMBINABLE = re.compile(rb"\\[1-9]|\(\?P=|\(\?\(|\(\?[aiLmsux]+\)")
_GROUP_NAME = re.compile(rb"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")
_new_event = tuple.__new__


def _ip(raw: bytes) -> str | None:
    ip = _ip_cache.get(raw, False)
    if ip is False:
        ip = normalize_ip(raw.decode("ascii", "replace"))
        if len(_ip_cache) >= _IP_CACHE_MAX:
            _ip_cache.clear()
        _ip_cache[raw] = ip
    return ip  # type: ignore[return-value]


class FilterSet:
    """All active filters, with the per-program dispatch table the hot path uses.

    In Python (this class's match()), each filter's rules are also joined into one regular
    expression, `(?:rule1)()|(?:rule2)()|...`,
    matched once at the start of the message: the regex engine tries the rules in order, like the
    one-by-one loop, and the empty marker group that closed last names the rule that matched.
    A line that matches no rule of a filter (most lines) costs one C-level match per filter
    instead of a substring test per rule. The literal pre-check keeps its meaning: when the
    matching rule's literal is not in the line, matching goes on one by one after that rule.
    The C loops (`_speedups`) find a filter's literals in one pass instead (literals.py) and
    never use that regex, so it is compiled only when match() first meets the program: a
    `mailban test` or `replay` that runs in C does not pay for it.
    """

    __slots__ = ("filters", "_dispatch", "_combined", "login_rules", "quiet")
    # Makes the per-rule builders: `(rule, group-name suffix) -> build(m, time, line, source,
    # lineno)`; what they return is what match() returns (Events here, see TallySet). Looked up
    # through a lambda because the builders are defined further down.
    _make_builder: Callable[..., Callable[..., Any]] = staticmethod(lambda rule, suffix="": _builder(rule, suffix))
    _make_spec: Callable[..., Any] = staticmethod(lambda rule, suffix="": event_spec(rule, suffix))

    def __init__(self, filters: list[Filter], quiet: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.filters = tuple(filters)
        # (filter, rule id) of the rules whose events nothing needs (needs.py): the C matcher
        # builds none for them (their spec is their metrics key, (kind, filter)); match() still
        # does, and the pipeline drops them (without_quiet).
        self.quiet = quiet
        # (filter, rule id) of the rules whose `user` is a local login name (<LOGINNAME>, Exim's
        # `U=` on local submissions), which the pipeline resolves to a uid (Pipeline.uid_of).
        self.login_rules = frozenset((r.filter, r.id) for f in self.filters for r in f.rules
                                     if "login" in r.pattern.fields)
        self._dispatch: dict[bytes, tuple[Group, ...]] = {}
        self._combined: dict[bytes, tuple[Group, ...]] = {}

    def rules_for(self, program: bytes) -> tuple[Group, ...]:
        """The groups of the filters covering a program, without their combined regex (the
        C loops' dispatch table)."""
        hit = self._dispatch.get(program)
        if hit is not None:
            return hit
        name = program.decode("utf-8", "replace")
        groups = tuple(_group(f, self._make_builder, self._spec_of) for f in self.filters if f.covers(name))
        # Forged tags (any local user can pick one) must not grow the cache without bound.
        if len(self._dispatch) < _PROGRAM_CACHE_MAX:
            self._dispatch[program] = groups
        return groups

    def _spec_of(self, rule: Rule) -> Any:
        if (rule.filter, rule.id) in self.quiet:
            return (rule.kind, rule.filter)
        return self._make_spec(rule)

    def without_quiet(self, events: list[Event], counts: dict[tuple[str, str], int] | None) -> list[Event] | None:
        """A line's events without those of quiet rules, or None when it had only such events
        (what the C matcher gives: see needs.py); each dropped event is counted in `counts`
        under (kind, filter), when given."""
        quiet = self.quiet
        if not quiet:
            return events
        kept = [e for e in events if (e.filter, e.rule) not in quiet]
        if len(kept) < len(events) and counts is not None:
            for e in events:
                if (e.filter, e.rule) in quiet:
                    counts[(e.kind, e.filter)] = counts.get((e.kind, e.filter), 0) + 1
        return kept if kept or not events else None

    def _combined_for(self, program: bytes) -> tuple[Group, ...]:
        """rules_for's groups with each filter's combined regex, for match()."""
        name = program.decode("utf-8", "replace")
        covering = [f for f in self.filters if f.covers(name)]
        groups = tuple(_combine(f, g, self._make_builder) for f, g in zip(covering, self.rules_for(program)))
        if len(self._combined) < _PROGRAM_CACHE_MAX:
            self._combined[program] = groups
        return groups

    def match(self, line: bytes, header: Header, source: str = "", lineno: int = 0) -> list[Event]:
        """The events a line produces: at most one per filter, in filter order."""
        groups = self._combined.get(header.program)
        if groups is None:
            groups = self._combined_for(header.program)
        if not groups:
            return []
        start = header.msg_start
        shown = None
        if line.startswith(REPEATED, start):  # rsyslog's fold: match the line it stands for
            folded = unfold(line, start)
            if folded is not None:
                shown = line
                line, times = folded
        events: list[Event] = []
        for combined, markers, joined, rules, _, _ in groups:
            if combined is not None:
                m = combined(line, start)
                if m is None:
                    continue
                k = markers[m.lastindex]
                literal, _, build, _ = joined[k]
                if literal and not holds(literal, line):
                    event = _one_by_one(rules, k + 1, line, header, source, lineno)
                else:
                    event = build(m, header.time, line, source, lineno)
            else:
                event = _one_by_one(rules, 0, line, header, source, lineno)
            if event is not None:
                events.append(event)
        return events if shown is None else refolded(events, times, shown)

    def match_logged(self, parser: SyslogParser, line: bytes, header: Header, source: str = "",
                     lineno: int = 0) -> list[Event]:
        """match() for a line a reader took from a file in order: it also keeps the parser's
        `previous` line, and expands `last message repeated N times` (see syslog.REPEATS)
        into the events of the line it repeats, each counting N, shown as logged."""
        if header.program != REPEATS and not line.startswith(LAST_REPEATED, header.msg_start):
            parser.previous = line
            return self.match(line, header, source, lineno)
        expanded = parser.expand(line, header)
        if expanded is None:
            return []
        inner, inner_header, times = expanded
        return refolded(self.match(inner, inner_header, source, lineno), times, line)

    def scan_context(self, parser: Any) -> tuple[Any, ...]:
        """What the C loops of `_speedups` (tally, match_lines) read from the parser and these
        filters: (parser, dispatch table, rules_for, the address cache, its conversion, and the
        two halves of rsyslog's folds: syslog.unfold and refolded)."""
        return parser, self._dispatch, self.rules_for, _ip_cache, _ip, unfold, refolded


def refolded(results: list[Any], times: int, line: bytes) -> list[Any]:
    """A folded line's events (see syslog.unfold): each counts `times` copies and shows the line
    as logged, so `explain` shows the fold that made the count. A summary's Tallies (plain
    tuples) count lines, and stay as they are."""
    if not results:
        return results
    shown = line.decode("utf-8", "replace")
    return [r._replace(count=r.count * times, line=shown) if isinstance(r, Event) else r for r in results]


def holds(literal: bytes | tuple[bytes, ...], line: bytes) -> bool:
    """Whether the line holds a rule's literal, or one of its literals (a tuple: any of them)."""
    if literal.__class__ is bytes:
        return literal in line  # type: ignore[operator]
    return any(text in line for text in literal)


def _one_by_one(rules: tuple[Compiled, ...], first: int, line: bytes, header: Header,
                source: str, lineno: int) -> Event | None:
    """The first rule from `first` on whose literal is in the line and whose regex matches."""
    start = header.msg_start
    for literal, match, build, _shape in rules[first:]:
        if literal and not holds(literal, line):
            continue
        m = match(line, start)
        if m is not None:
            return build(m, header.time, line, source, lineno)
    return None


def _group(f: Filter, make: Callable[..., Callable[..., Any]], spec: Callable[..., Any]) -> Group:
    """A filter's group for one-by-one matching (the combined regex is left to _combine)."""
    rules = tuple((r.pattern.literal, r.pattern.regex.match, make(r), r.shape) for r in f.rules)
    specs = tuple(spec(r) for r in f.rules)
    shaped = shaped_group([(r.shape, r.pattern.literal) for r in f.rules])
    return None, {}, (), rules, specs, SHAPED_GROUP if shaped else literal_index([r.pattern.literal for r in f.rules])


def _combine(f: Filter, group: Group, make: Callable[..., Callable[..., Any]]) -> Group:
    """The group with the filter's rules joined into one regex (see FilterSet), or as it is when
    they cannot be joined."""
    _, _, _, rules, specs, index = group
    sources = [r.pattern.regex.pattern for r in f.rules]
    if any(_NOT_COMBINABLE.search(src) for src in sources):
        return group
    alternatives = []
    for k, src in enumerate(sources):
        renamed = _GROUP_NAME.sub(lambda m, k=k: b"(?P<%s_%d>" % (m.group(1), k), src)  # type: ignore[misc]
        alternatives.append(b"(?:%s)(?P<_rule_%d>)" % (renamed, k))
    try:
        combined = re.compile(b"|".join(alternatives), re.DOTALL)
    except (re.error, OverflowError, RecursionError):
        return group
    markers = {combined.groupindex[f"_rule_{k}"]: k for k in range(len(sources))}
    joined = tuple((r.pattern.literal, None, make(r, f"_{k}"), None) for k, r in enumerate(f.rules))
    return combined.match, markers, joined, rules, specs, index


def event_spec(rule: Rule, suffix: str = "") -> tuple[Any, ...]:
    """What `_builder`'s closure and the C matcher (`_speedups.match_lines`) build an Event
    from: (Event, kind, filter, rule id, fixed status, then the group names of ip, user,
    sender, uid, qid, nrcpt and status, None for fields the rule does not capture, then the
    user values that mean "no user", then the group name of the count (<COUNT>) or None)."""
    fields = rule.pattern.fields
    groups = tuple(name + suffix if name in fields else None
                   for name in ("ip", "user", "sender", "uid", "qid", "nrcpt", "status"))
    return (Event, rule.kind, rule.filter, rule.id, rule.status, *groups, _NO_USER,
            "count" + suffix if "count" in fields else None)


def _builder(rule: Rule, suffix: str = "") -> Callable[[re.Match[bytes], float, bytes, str, int], Event | None]:
    """An event builder specialised to the fields the rule's pattern captures.

    Deciding once per rule which groups to read keeps the per-line work to the fields that
    exist; the rule's kind was validated when the filter was loaded, so the event is built
    without checking it again. `suffix` names the rule's groups within a combined regex."""
    (_, kind, fname, rid, fixed_status, g_ip, g_user, g_sender, g_uid, g_qid, g_nrcpt, g_status,
     no_user, g_count) = event_spec(rule, suffix)
    want_ip, want_user, want_sender = g_ip is not None, g_user is not None, g_sender is not None
    want_uid, want_qid, want_nrcpt = g_uid is not None, g_qid is not None, g_nrcpt is not None
    want_status = g_status is not None
    want_count = g_count is not None

    def build(m: re.Match[bytes], when: float, line: bytes, source: str, lineno: int) -> Event | None:
        ip = user = sender = uid = qid = nrcpt = None
        status = fixed_status
        count = 1
        if want_ip:
            ip = _ip(m.group(g_ip))
            if ip is None:
                return None  # the rule promised an address and the line holds none: no event
        if want_user:
            raw = m.group(g_user)
            if raw is not None and raw not in no_user:
                user = raw.decode("utf-8", "replace")
        if want_sender:
            raw = m.group(g_sender)
            if raw:  # the null sender <> (bounces) is nobody: never a key to count or hold
                sender = raw.decode("utf-8", "replace")
        if want_uid:
            raw = m.group(g_uid)
            if raw:
                uid = int(raw)
        if want_qid:
            raw = m.group(g_qid)
            if raw:
                qid = raw.decode("ascii")
        if want_nrcpt:
            raw = m.group(g_nrcpt)
            if raw:
                nrcpt = int(raw)
        if want_status:
            raw = m.group(g_status)
            if raw:
                status = raw.decode("ascii")
        if want_count:
            raw = m.group(g_count)
            if raw:
                count = max(1, int(raw))  # `0 attempts` still reached the door once
        return _new_event(Event, (when, kind, fname, rid, ip, user, uid, sender, qid, nrcpt, status, source,
                     lineno, line.decode("utf-8", "replace"), count))

    return build


# What a TallySet yields per matching rule: ((filter, rule id, kind), address, queue id).
Tally = tuple[tuple[str, str, str], "str | None", "str | None"]


class TallySet(FilterSet):
    """The same rule selection as FilterSet, yielding only what a summary counts.

    `match()` returns one `Tally` per filter whose rule matched, exactly where FilterSet.match
    would return an Event (same rule, same refusal of a line whose `ip` group is no address),
    but builds no Event and decodes no text: `mailban test` without --json counts rules and
    addresses, and building 14-field records for half the lines of a log was most of its work.
    The queue id is there for the one stage a summary still needs, queue-id correlation (it
    drops qmgr's retries and fills in the submitting client's address).
    """

    __slots__ = ()
    _make_builder = staticmethod(lambda rule, suffix="": _tally_builder(rule, suffix))
    _make_spec = staticmethod(lambda rule, suffix="": tally_spec(rule, suffix))


def tally_spec(rule: Rule, suffix: str = "") -> tuple[Any, ...]:
    """What `_speedups.tally` needs to build a rule's Tally in C, as _tally_builder's closure
    does in Python: (key, ip group name or None, queue-id group name or None, (key, None, None))."""
    fields = rule.pattern.fields
    key = (rule.filter, rule.id, rule.kind)
    return (key, "ip" + suffix if "ip" in fields else None, "qid" + suffix if "qid" in fields else None,
            (key, None, None))


def _tally_builder(rule: Rule, suffix: str = "") -> Callable[[re.Match[bytes], float, bytes, str, int], Tally | None]:
    """A Tally builder for one rule: its key, and the two fields a summary needs (see _builder)."""
    key, g_ip, g_qid, plain = tally_spec(rule, suffix)

    if g_ip is not None:
        def build(m: re.Match[bytes], when: float, line: bytes, source: str, lineno: int) -> Tally | None:
            ip = _ip(m.group(g_ip))
            if ip is None:
                return None  # as _builder: the rule promised an address and the line holds none
            qid = m.group(g_qid) if g_qid is not None else None
            return (key, ip, qid.decode("ascii") if qid else None)
    elif g_qid is not None:
        def build(m: re.Match[bytes], when: float, line: bytes, source: str, lineno: int) -> Tally | None:
            qid = m.group(g_qid)
            return (key, None, qid.decode("ascii")) if qid else plain
    else:
        def build(m: re.Match[bytes], when: float, line: bytes, source: str, lineno: int) -> Tally | None:
            return plain

    return build
