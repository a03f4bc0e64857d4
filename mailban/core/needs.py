"""Which rules' events the pipeline needs, decided once when a configuration loads.

Input: the filters and the enabled jails' specs. Output: the (filter, rule id) of the "quiet"
rules, whose events nothing after the filters would read: no jail selects them, correlation does
not need them, they name no address. Their lines are still matched (a quiet rule that matches
still stops its filter's search, as any rule does) and counted per (kind, filter) for the
metrics, but no Event is built, correlated or offered to the jails: the C matcher
(`_speedups.match_lines`) gives such a line as (time, line number, line, None, None), which
lets time pass for the jails holding addresses on probation exactly as the event did
(`Pipeline.quiet`), and nothing else. The Python matcher builds the events and drops them
(`filters.without_quiet`): the same items.

Why: most lines of an Exim log are successful deliveries (`QID => ...`), one event each, which
no default jail counts; building, correlating and routing each cost more than matching it.

A rule is needed when any of these holds:
- its kind opens, reads for later lines or closes a message's record (submission, queued,
  removed: correlate.py), or is a failure (the correlator holds a failure without an address
  until its session names one);
- it captures an address (`ip`): an event with one may release held failures, and its address
  is one of the keys replay shows;
- a jail wants its kind (`Jail.wants`: the kinds it counts, and logins and submissions for
  `ban_ips` jails, which note where an account's owner logs in) and, unless it is a `ban_ips`
  jail, selects it by filter, rule and fixed status (a rule whose status comes from the line,
  <STATUS>, may have any status).
Every enabled jail counts, inline ones too (`replay --report` reads their events).
What changes: `stale` (per jail, events not counted because their line was already older than
its find time when read) no longer counts events the jail would not have counted anyway.
"""

from __future__ import annotations

from typing import Iterable

from .filters import Filter, Rule
from .jails import PROOF_KINDS, JailSpec
from .records import FAILURE_KINDS, KINDS

# The kinds correlate.py keeps state for.
CORRELATED_KINDS = frozenset({"submission", "queued", "removed"})


def quiet_rules(filters: Iterable[Filter], jails: Iterable[JailSpec]) -> frozenset[tuple[str, str]]:
    """(filter, rule id) of the rules whose events nothing needs (see the module doc)."""
    specs = [spec for spec in jails if spec.enabled]
    return frozenset((rule.filter, rule.id) for f in filters for rule in f.rules
                     if not _needed(rule, specs))


def _needed(rule: Rule, jails: list[JailSpec]) -> bool:
    fields = rule.pattern.fields
    if rule.kind in CORRELATED_KINDS or rule.kind in FAILURE_KINDS or "ip" in fields:
        return True
    return any(_wants(spec, rule) for spec in jails)


def _wants(spec: JailSpec, rule: Rule) -> bool:
    """Whether the jail's offer() would do more with the rule's events than let time pass."""
    kinds = spec.kinds or KINDS
    if rule.kind not in kinds:
        return spec.ban_ips and rule.kind in PROOF_KINDS
    if spec.ban_ips:
        # offer() on a kind it wants ticks a ban_ips jail's probation unless the line is stale
        # (the daemon), where Pipeline.quiet ticks every time: such rules stay needed
        return True
    name = f"{rule.filter}.{rule.id}"
    if spec.filters and rule.filter not in spec.filters:
        return False
    if spec.rules and rule.id not in spec.rules and name not in spec.rules:
        return False
    if spec.exclude and (rule.filter in spec.exclude or name in spec.exclude):
        return False
    if spec.statuses and "status" not in rule.pattern.fields and rule.status not in spec.statuses:
        return False
    return True
