"""The jail settings: one table of fields, each with how its value is read and checked.

`config._jail` validates a `[jail.NAME]` table through it (an unknown key, a value of the wrong
type: refused with file, line and column), `mailban check --json` shows every field of every jail
from it, and tests/test_docs.py checks that the configuration reference (docs/configuration.md)
documents exactly these fields. Adding a jail setting: a field here, its JailSpec attribute
(mailban/core/jails.py), its line in the reference.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable

from .core.durations import parse_duration
from .core.jails import COUNT_MODES, INLINE_ANSWERS, MODES
from .core.records import JAIL_KEY_TYPES, KINDS, STATUSES


@dataclass(frozen=True)
class Names:
    """What a jail's settings may name: the loaded filters, their rules and the actions."""

    filters: frozenset[str]
    rules: frozenset[str]
    actions: frozenset[str]


# A field's reader: (value from the TOML file, the names it may refer to) -> the JailSpec value;
# raises ValueError with the message the admin sees.
Reader = Callable[[Any, Names], Any]


def names_of(value: Any, known: frozenset[str] | set[str], what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of {what} names")
    for v in value:
        if v not in known:
            raise ValueError(f"unknown {what} {v!r}; known: {', '.join(sorted(known)) or 'none'}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def boolean(key: str) -> Reader:
    def read(value: Any, _names: Names) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"`{key}` must be true or false")
        return value
    return read


def whole(key: str, least: int, message: str = "") -> Reader:
    def read(value: Any, _names: Names) -> int:
        if not _is_int(value) or value < least:
            raise ValueError(message or f"`{key}` must be a whole number of at least {least}")
        return int(value)
    return read


def choice(key: str, allowed: tuple[str, ...] | frozenset[str]) -> Reader:
    shown = ", ".join(sorted(allowed) if isinstance(allowed, frozenset) else allowed)

    def read(value: Any, _names: Names) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"`{key}` must be one of {shown}")
        return value
    return read


def duration(key: str, positive: bool = False) -> Reader:
    def read(value: Any, _names: Names) -> float:
        seconds = parse_duration(value)
        if positive and seconds <= 0:
            raise ValueError(f"`{key}` must be longer than zero")
        return seconds
    return read


def name_set(what: str, known: Callable[[Names], frozenset[str]], as_tuple: bool = False) -> Reader:
    def read(value: Any, names: Names) -> Any:
        found = names_of(value, known(names), what)
        return tuple(found) if as_tuple else frozenset(found)
    return read


def _prefix(key: str, top: int) -> Reader:
    def read(value: Any, _names: Names) -> int:
        if not _is_int(value) or not (value == 0 or 8 <= value < top):
            raise ValueError(f"`{key}` must be 0 (off) or a prefix length from 8 to {top - 1}")
        return int(value)
    return read


def _factor(value: Any, _names: Names) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 1 <= value <= 100:
        raise ValueError("`bantime_factor` must be a number from 1 (no escalation) to 100")
    return float(value)


def _weights(value: Any, names: Names) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, dict) or not all(_is_int(v) and 0 <= v <= 1000 for v in value.values()):
        raise ValueError("`weights` is a table of kind, rule or filter.rule = whole number of points (0 to 1000)")
    unknown = [k for k in value if k not in KINDS and k not in names.rules and k not in names.filters]
    if unknown:
        raise ValueError(f"`weights`: {unknown[0]!r} is no event kind, filter or rule")
    return tuple(sorted(value.items()))


def _ignorekeys(value: Any, _names: Names) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ValueError("`ignorekeys` must be a list of user names, uids or senders")
    return frozenset(str(v) for v in value)


def networks(value: Any, _names: Names | None = None) -> tuple[Any, ...]:
    """`ignoreip`: addresses and CIDR networks (also the [mailban] setting's reader)."""
    if not isinstance(value, list):
        raise ValueError("`ignoreip` must be a list of addresses or CIDR networks")
    nets = []
    for item in value:
        try:
            nets.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(nets)


# Every jail setting, in the order of the configuration reference.
JAIL_FIELDS: dict[str, Reader] = {
    "enabled": boolean("enabled"),
    "kinds": name_set("event kind", lambda n: KINDS),
    "filters": name_set("filter", lambda n: n.filters),
    "rules": name_set("rule", lambda n: n.rules),
    "exclude": name_set("filter or rule", lambda n: n.filters | n.rules),
    "statuses": name_set("delivery status", lambda n: STATUSES),
    "key": choice("key", frozenset(JAIL_KEY_TYPES)),
    "count": choice("count", COUNT_MODES),
    "min_ips": whole("min_ips", 0, "`min_ips` must be a whole number (0: no condition on addresses)"),
    "ban_ips": boolean("ban_ips"),
    "ip_actions": name_set("action", lambda n: n.actions, as_tuple=True),
    "owner_grace": duration("owner_grace"),
    "ignorekeys": _ignorekeys,
    "weights": _weights,
    "bantime_factor": _factor,
    "bantime_max": duration("bantime_max"),
    "repeat_window": duration("repeat_window"),
    "resolution": duration("resolution"),
    "prefix6": _prefix("prefix6", 128),
    "prefix4": _prefix("prefix4", 32),
    "prefix_min_ips": whole("prefix_min_ips", 2),
    "mode": choice("mode", MODES),
    "findtime": duration("findtime", positive=True),
    "maxretry": whole("maxretry", 1),
    "bantime": duration("bantime", positive=True),
    "actions": name_set("action", lambda n: n.actions, as_tuple=True),
    "ignoreip": networks,
    "max_keys": whole("max_keys", 1),
    "shared": boolean("shared"),
    "inline": boolean("inline"),
    "inline_answer": choice("inline_answer", INLINE_ANSWERS),
}


def shown(spec: Any) -> dict[str, Any]:
    """Every field of a JailSpec as JSON values (`mailban check --json`): sets as sorted lists,
    networks as text, weights as a table, durations in seconds."""
    out: dict[str, Any] = {}
    for name in JAIL_FIELDS:
        value = getattr(spec, name)
        if name == "weights":
            value = dict(value)
        elif isinstance(value, frozenset):
            value = sorted(value)
        elif isinstance(value, tuple):
            value = [str(v) for v in value]
        out[name] = value
    return out
