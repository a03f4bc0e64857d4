"""Filters: turn log lines into typed events.

Inputs: filter documents (parsed TOML, see docs/filters.md) and raw lines with their parsed header.
Output: `Event` records. A filter declares the programs it covers (shell-style globs matched
against the syslog tag) and ordered rules; the first rule of a filter that matches a line wins.

Speed: the program name selects the few rules that can apply (a dict lookup, cached per program
name), and each rule's literal is checked with a plain substring test before its regex runs, so
most lines are never handed to a regex at all.

Security note: only a rule's `ip` group becomes an event's address, and only after `ipaddress`
accepted it; every other field is attacker-influenced text and travels as data.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .patterns import CompiledPattern, PatternError, compile_pattern
from .records import KINDS, STATUSES, Event, normalize_ip
from .syslog import Header
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
    if literal is not None and not isinstance(literal, str):
        raise doc.error(where + ("literal",), "`literal` must be a string")
    try:
        compiled = compile_pattern(template, prefix, literal)
    except PatternError as exc:
        line, col = doc.where(where + ("pattern",))
        # `col` points at the opening quote of the value; the template starts one further on.
        raise ConfigError(doc.path, line, col + exc.column, f"rule {rid!r}: {exc.message}") from None
    if status is not None and "status" in compiled.fields:
        raise doc.error(where + ("status",), "give either `status` or a <STATUS> placeholder, not both")
    return Rule(name, rid, kind, compiled, status)


def _only_keys(doc: TomlDoc, where: tuple[Any, ...], table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise doc.error(
                where + (key,), f"unknown key {key!r}; expected one of {', '.join(sorted(allowed))}"
            )


class FilterSet:
    """All active filters, with the per-program dispatch table the hot path uses."""

    __slots__ = ("filters", "_dispatch")

    def __init__(self, filters: list[Filter]) -> None:
        self.filters = tuple(filters)
        # program -> tuple of (literal, regex match method, rule), grouped by filter in order
        self._dispatch: dict[bytes, tuple[tuple[tuple[bytes, Any, Rule], ...], ...]] = {}

    def rules_for(self, program: bytes) -> tuple[tuple[tuple[bytes, Any, Rule], ...], ...]:
        hit = self._dispatch.get(program)
        if hit is not None:
            return hit
        name = program.decode("utf-8", "replace")
        groups = tuple(
            tuple((r.pattern.literal, r.pattern.regex.match, r) for r in f.rules)
            for f in self.filters
            if f.covers(name)
        )
        # Forged tags (any local user can pick one) must not grow the cache without bound.
        if len(self._dispatch) < _PROGRAM_CACHE_MAX:
            self._dispatch[program] = groups
        return groups

    def match(self, line: bytes, header: Header, source: str = "", lineno: int = 0) -> list[Event]:
        """The events a line produces: at most one per filter, in filter order."""
        groups = self.rules_for(header.program)
        if not groups:
            return []
        events: list[Event] = []
        start = header.msg_start
        for group in groups:
            for literal, match, rule in group:
                if literal and literal not in line:
                    continue
                m = match(line, start)
                if m is None:
                    continue
                event = _event(rule, m, header, line, source, lineno)
                if event is not None:
                    events.append(event)
                break
        return events


def _event(rule: Rule, m: re.Match[bytes], header: Header, line: bytes, source: str, lineno: int) -> Event | None:
    fields = rule.pattern.fields
    ip = None
    if "ip" in fields:
        raw_ip = m.group("ip")
        ip = normalize_ip(raw_ip.decode("ascii", "replace"))
        if ip is None:
            return None  # the rule promised an address and the line holds none: no event
    user = None
    if "user" in fields:
        raw = m.group("user")
        if raw is not None and raw not in _NO_USER:
            user = raw.decode("utf-8", "replace")
    sender = None
    if "sender" in fields and m.group("sender") is not None:
        sender = m.group("sender").decode("utf-8", "replace")
    uid = int(m.group("uid")) if "uid" in fields and m.group("uid") else None
    qid = m.group("qid").decode("ascii") if "qid" in fields and m.group("qid") else None
    nrcpt = int(m.group("nrcpt")) if "nrcpt" in fields and m.group("nrcpt") else None
    status = m.group("status").decode("ascii") if "status" in fields and m.group("status") else rule.status
    return Event(
        time=header.time,
        kind=rule.kind,
        filter=rule.filter,
        rule=rule.id,
        ip=ip,
        user=user,
        uid=uid,
        sender=sender,
        queue_id=qid,
        recipients=nrcpt,
        status=status,
        source=source,
        lineno=lineno,
        line=line.decode("utf-8", "replace"),
    )
