"""What every action is and shares: the `Action` interface with all its capabilities declared,
`ActionBase` (which every shipped action inherits), the context the daemon lends it, and option
checking.

An action kind is one class, built by the registry (registry.py) as `Class(name, options,
context)` after `Class.validate(options)` accepted its options at load time. The daemon calls
the methods below directly: it never asks whether an action "has" a method, so every optional
capability is a method or a flag here, with the default that means "not this action's business".
Adding a capability means adding it here, with its default, and nowhere else but in the actions
that use it and the daemon code that calls it.
Must never: run a shell, or let one action's failure stop detection (the daemon catches what
these methods raise, marks the action failing and retries it with backoff).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from ..core.records import Ban


def _no_queue_ids(key_type: str, key: str) -> list[str]:
    return []


@dataclass(frozen=True)
class ActionContext:
    """What the daemon lends its actions: where to keep state, and the queue-id correlation
    (the queue ids of the messages a user, uid, sender or address submitted)."""

    state_dir: str = "/var/lib/mailban"
    queue_ids: Callable[[str, str], list[str]] = field(default=_no_queue_ids)


@runtime_checkable
class Action(Protocol):
    """What the daemon (daemon/runner.py, daemon/commands.py) calls on an action; ActionBase gives the
    defaults and says what each member means."""

    name: str
    one_timeout_per_key: bool
    self_expiring: bool
    undoable: bool
    holds_mail: bool

    def start(self, active: list[Ban]) -> None: ...
    def ban(self, bans: list[Ban]) -> list[str]: ...
    def ban_notes(self) -> dict[str, str]: ...
    def unban(self, bans: list[Ban]) -> None: ...
    def unban_all(self) -> bool: ...
    def stop(self) -> None: ...
    def health(self) -> str | None: ...
    def check(self) -> None: ...
    def check_config(self) -> list[str]: ...
    def tick(self, now: float) -> None: ...
    def hold_more(self, key_type: str, key: str, qids: list[str]) -> None: ...
    def held_for(self, key_type: str, key: str) -> list[str]: ...
    def purge(self, key_type: str, key: str) -> int: ...


class ActionBase:
    """The defaults of every capability; an action kind overrides what it does.

    Required: `ban()`; and, for an action that takes options, `validate(options)` and an
    `__init__(name, options, context)` that calls it and sets `self.name`. Every other member has a default that is right
    for an action that does not have that capability.
    """

    name: str

    # ---- capabilities (class attributes) ----------------------------------------------------
    # One entry, hence one expiry, per key (an nft element and its timeout). The daemon's
    # _apply hands ban() every ban still active on the same keys too, so that the action keeps
    # the longest one and a shorter ban never cuts a longer one short. (nft)
    one_timeout_per_key: bool = False
    # What the action did ends by itself when the ban's time is up (a kernel element timeout, a
    # mail that was sent): the daemon's expiry does not call unban(). An explicit unban still
    # does. (nft, notify)
    self_expiring: bool = False
    # unban() undoes something worth a line in `mailban explain`'s history ("undone"); False for
    # an action with nothing to undo (notify: a mail cannot be unsent). (daemon._unapply)
    undoable: bool = True
    # The action holds a key's queued mail: while a user, uid or sender ban with it lasts, the
    # daemon hands hold_more() the queue ids that key goes on submitting. (queue-hold)
    holds_mail: bool = False

    # ---- load time ----------------------------------------------------------------------------
    def __init__(self, name: str, options: dict[str, Any], context: ActionContext | None = None) -> None:
        """How the registry builds every action kind (a kind with options overrides it)."""
        self.validate(options)
        self.name = name

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        """Refuse bad options with ValueError naming the key in backquotes (`key`), which the
        registry turns into file:line:column. Default: the action takes no options."""
        check_options(options, {})

    # ---- do and undo (every action) -----------------------------------------------------------
    def start(self, active: list[Ban]) -> None:
        """Set up, and restore what the still-active bans given need (idempotent: called at
        start, on reload, and again after a failure before the retry). Default: nothing."""

    def ban(self, bans: list[Ban]) -> list[str]:
        """Carry the bans out (idempotent). Returns what did not work although the ban is in
        place (e.g. a failed postfix reload), shown in explain, list and status; raises when the
        ban is not in place (retried with backoff)."""
        raise NotImplementedError(f"action {type(self).__name__} does not implement ban()")

    def ban_notes(self) -> dict[str, str]:
        """What the last ban() did per key that is worth a word beside "ok" in `mailban
        explain` (nft: "cut 2 live connections"). Default: nothing."""
        return {}

    def unban(self, bans: list[Ban]) -> None:
        """Undo the bans (idempotent: also for keys it never banned). Default: nothing to undo."""

    def unban_all(self) -> bool:
        """`mailban unban --all`: lift everything this action holds, also what the database does
        not know of, and return True. The default returns False: the daemon then undoes the
        database's bans one by one with unban()."""
        return False

    def stop(self) -> None:
        """The daemon stops. Bans should stay in force (they expire or are undone later).
        Default: nothing."""

    # ---- upkeep (optional) -----------------------------------------------------------------
    def health(self) -> str | None:
        """What is wrong although the calls succeed (not set up, done but not in full), for
        `mailban status`; None when all is well (the default)."""
        return None

    def check(self) -> None:
        """Called every few seconds while the action works: raise if what it set up is gone
        (an nft table deleted behind its back), and the daemon's retry calls start() again.
        Default: nothing to check."""

    def check_config(self) -> list[str]:
        """What the MTA's configuration lacks for this action to work (Exim's ACLs not reading
        its list files), for `mailban check`; also reflected in health() after start(). Reads
        configuration only, changes nothing. Default: nothing to check."""
        return []

    def tick(self, now: float) -> None:
        """Called about once a second: work that is due later (a rate-limited digest mail, a
        retry of locked queue items). Default: nothing."""

    # ---- holding mail (holds_mail actions) --------------------------------------------------
    def hold_more(self, key_type: str, key: str, qids: list[str]) -> None:
        """Hold these newly queued messages of a key banned with this action (holds_mail)."""

    def held_for(self, key_type: str, key: str) -> list[str]:
        """The queue ids held for a key (`mailban explain`). Default: none."""
        return []

    def purge(self, key_type: str, key: str) -> int:
        """Delete instead of release what is held for a key (`mailban purge-held`); returns the
        number deleted. Default: 0."""
        return 0


def check_options(options: dict[str, Any], known: dict[str, type | tuple[type, ...]]) -> None:
    """Refuse unknown keys and values of the wrong type, naming the key (as `key`)."""
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"`{key}` is not an option of this action; known: {', '.join(sorted(known)) or 'none'}")
        want = known[key]
        if isinstance(value, bool) and want is not bool:
            raise ValueError(f"`{key}` has the wrong type")
        if not isinstance(value, want):
            raise ValueError(f"`{key}` has the wrong type")
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"`{key}` must be a list of non-empty strings (an argv list)")
