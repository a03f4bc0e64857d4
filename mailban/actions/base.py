"""What every action shares: the context the daemon gives it, and option checking.

Each action kind has the same parts (see registry.py): `validate(options)` at load time, then
`start(active)`, `ban(bans)`, `unban(bans)`, `stop()`, `health()`; optional `tick(now)` for work
that is due later (a rate-limited notification).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


def _no_queue_ids(key_type: str, key: str) -> list[str]:
    return []


@dataclass(frozen=True)
class ActionContext:
    """What the daemon lends its actions: where to keep state, and the queue-id correlation
    (the queue ids of the messages a user, uid, sender or address submitted)."""

    state_dir: str = "/var/lib/mailban"
    queue_ids: Callable[[str, str], list[str]] = field(default=_no_queue_ids)


def check_options(options: dict[str, Any], known: dict[str, type | tuple[type, ...]]) -> None:
    """Refuse unknown keys and values of the wrong type, naming the key (as `key`)."""
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"`{key}` is not an option of this action; known: {', '.join(sorted(known))}")
        want = known[key]
        if isinstance(value, bool) and want is not bool:
            raise ValueError(f"`{key}` has the wrong type")
        if not isinstance(value, want):
            raise ValueError(f"`{key}` has the wrong type")
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"`{key}` must be a list of non-empty strings (an argv list)")
