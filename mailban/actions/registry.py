"""Name -> implementation map for action types (the `type` in actions.d/*.toml).

Implementations are imported only when an action of their type is configured, so that `mailban
test` and `replay` never load libnftables. An unknown type and a missing dependency give two
different, clear errors.
Adding an action kind: its module (a class inheriting base.ActionBase, overriding what it does
and declaring its capabilities), one line in TYPES, its docs and its tests. Nothing in the
daemon: it calls the base.Action interface only.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..core.errors import ConfigError
from .base import Action, ActionBase, ActionContext

# type -> "module:Class"; the class inherits base.ActionBase: validate(options) (a staticmethod)
# checks the options at load time, Class(name, options, context) builds it, and it provides the
# base.Action interface (every capability declared there, with its default).
TYPES: dict[str, str] = {
    "nft": "mailban.actions.nft_action:NftAction",
    "sasl-disable": "mailban.actions.sasl_disable:SaslDisableAction",
    "queue-hold": "mailban.actions.queue_hold:QueueHoldAction",
    "defer": "mailban.actions.defer:DeferAction",
    "notify": "mailban.actions.notify:NotifyAction",
    "exec": "mailban.actions.exec_action:ExecAction",
    "direct-smtp-block": "mailban.actions.direct_smtp_block:DirectSmtpBlockAction",
}


def load(type_name: str) -> type[ActionBase]:
    """The class of an action type (imported now)."""
    module_name, _, cls = TYPES[type_name].partition(":")
    module = importlib.import_module(module_name)
    found: type[ActionBase] = getattr(module, cls)
    return found


def validate(action: Any) -> None:
    doc = action.doc
    if action.type not in TYPES:
        raise doc.error(("action", "type"), f"unknown action type {action.type!r}; known: {', '.join(sorted(TYPES))}")
    try:
        load(action.type).validate(action.options)
    except ImportError as exc:
        raise ConfigError(action.path, 1, 1, f"action type {action.type!r} needs a missing dependency: {exc}") from None
    except ValueError as exc:
        key = str(exc).split("`")[1] if "`" in str(exc) else None
        raise doc.error(("action", key) if key else ("action",), str(exc)) from None


def create(action: Any, context: ActionContext | None = None) -> Action:
    """An action configured in actions.d (config.ActionFile), built with what the daemon lends."""
    return load(action.type)(action.name, action.options, context or ActionContext())
