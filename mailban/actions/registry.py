"""Name -> implementation map for action types (the `type` in actions.d/*.toml).

Implementations are imported only when an action of their type is configured, so that `mailban
test` and `replay` never load libnftables. An unknown type and a missing dependency give two
different, clear errors.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..core.errors import ConfigError

# type -> "module:Class"; the class has validate(options) (staticmethod), and is built with
# (name, options, context) and provides start(active), ban(bans), unban(bans), stop(), health(),
# and optionally tick(now), unban_all(), hold_more(...), purge(...).
TYPES: dict[str, str] = {
    "nft": "mailban.actions.nft_action:NftAction",
    "sasl-disable": "mailban.actions.sasl_disable:SaslDisableAction",
    "queue-hold": "mailban.actions.queue_hold:QueueHoldAction",
    "defer": "mailban.actions.defer:DeferAction",
    "notify": "mailban.actions.notify:NotifyAction",
    "exec": "mailban.actions.exec_action:ExecAction",
}


def _load(type_name: str) -> Any:
    module_name, _, cls = TYPES[type_name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls)


def validate(action: Any) -> None:
    doc = action.doc
    if action.type not in TYPES:
        raise doc.error(("action", "type"), f"unknown action type {action.type!r}; known: {', '.join(sorted(TYPES))}")
    try:
        _load(action.type).validate(action.options)
    except ImportError as exc:
        raise ConfigError(action.path, 1, 1, f"action type {action.type!r} needs a missing dependency: {exc}") from None
    except ValueError as exc:
        key = str(exc).split("`")[1] if "`" in str(exc) else None
        raise doc.error(("action", key) if key else ("action",), str(exc)) from None


def create(action: Any, context: Any = None) -> Any:
    from .base import ActionContext

    return _load(action.type)(action.name, action.options, context or ActionContext())
