"""The `queue-hold` action: put a key's queued messages on hold, release them on unban.

Config (actions.d/queue-hold.toml): postqueue, postsuper, postcat, scan_limit, timeout (seconds a
program may run before it is killed and the action marked failing; default 30).
Handles `user`, `uid`, `sender` and `ip` bans on postfix.
do: list the queue (`postqueue -j`), pick the key's messages that are not on hold yet, and hold
them in one call (`postsuper -h -`, queue ids on stdin). A message belongs to the key when
- the queue-id correlation saw it submitted by that user, uid or address (ActionContext), or
- its envelope sender is the key (sender bans), or
- its envelope names the SASL user (`postcat -e`: `sasl_username=`), checked for user bans on
  queues up to `scan_limit` messages, so that mail queued before mailban started is found too.
Messages submitted while the ban lasts are held as they arrive (`hold_more`, called by the
daemon for every new queued message of a banned key).
undo: release what this action held for the key (`postsuper -H -`). `purge(...)` deletes it
instead (`mailban purge-held`). What was held is kept in a JSON file in the state directory, so
a restart does not forget it.
Sendmail: not handled (its queue has no hold; `sendmail -qQ` quarantine is documented as a
manual step in docs/outbound.md).
Security note: queue ids are checked against postfix's own `postqueue -j` output and the
[0-9A-Za-z] alphabet before they are passed on; nothing reaches a shell.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from ..core.records import Ban
from .base import ActionContext, check_options
from .executor import ActionError, run, write_atomically

log = logging.getLogger("mailban.action.queue-hold")
_QID = re.compile(r"^[0-9A-Za-z]{5,20}$")
# Programs are argv lists, so that a second postfix instance is reached with `-c DIR`.
_OPTIONS: dict[str, Any] = {"postqueue": list, "postsuper": list, "postcat": list, "scan_limit": int,
                            "timeout": (int, float)}


class QueueHoldAction:
    self_expiring = False

    def __init__(self, name: str, options: dict[str, Any], context: ActionContext | None = None) -> None:
        self.validate(options)
        self.name = name
        self.context = context or ActionContext()
        self.postqueue = list(options.get("postqueue", ["postqueue"]))
        self.postsuper = list(options.get("postsuper", ["postsuper"]))
        self.postcat = list(options.get("postcat", ["postcat"]))
        self.scan_limit = options.get("scan_limit", 5000)
        self.timeout = float(options.get("timeout", 30))  # seconds before a program is killed
        self.path = os.path.join(self.context.state_dir, f"held-{name}.json")
        self.held: dict[str, list[str]] = self._load()

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        check_options(options, _OPTIONS)
        if options.get("scan_limit", 0) < 0:
            raise ValueError("`scan_limit` must be 0 or more")
        if not 0 < options.get("timeout", 30) <= 600:
            raise ValueError("`timeout` must be between 0 and 600 seconds")

    # ---- the action --------------------------------------------------------------------------
    def start(self, active: list[Ban]) -> None:
        still = {self._key(b.key_type, b.key) for b in active}
        for key in [k for k in self.held if k not in still]:
            # Bans that ended while mailban was down: release their messages now.
            key_type, _, value = key.partition("\0")
            self._release(key_type, value)

    def ban(self, bans: list[Ban]) -> None:
        queue = self.queue()
        for ban in bans:
            qids = self._belonging(ban.key_type, ban.key, queue)
            self._hold(ban.key_type, ban.key, qids)

    def hold_more(self, key_type: str, key: str, qids: list[str]) -> None:
        """Hold messages that a banned key submitted after the ban (they are in the queue now)."""
        wanted = [q for q in qids if _QID.match(q)]
        if wanted:
            self._hold(key_type, key, wanted)

    def unban(self, bans: list[Ban]) -> None:
        for ban in bans:
            self._release(ban.key_type, ban.key)

    def unban_all(self) -> None:
        for key in list(self.held):
            key_type, _, value = key.partition("\0")
            self._release(key_type, value)

    def purge(self, key_type: str, key: str) -> int:
        """Delete (instead of release) what was held for a key. Returns the number deleted."""
        qids = self.held.pop(self._key(key_type, key), [])
        if qids:
            run([*self.postsuper, "-d", "-"], stdin="".join(f"{q}\n" for q in qids).encode(), timeout=self.timeout)
            self._save()
        return len(qids)

    def stop(self) -> None:
        """Held mail stays held while mailban is down; unban or expiry releases it later."""

    def health(self) -> str | None:
        return None

    def held_for(self, key_type: str, key: str) -> list[str]:
        return list(self.held.get(self._key(key_type, key), []))

    # ---- the queue ---------------------------------------------------------------------------
    def queue(self) -> dict[str, dict[str, Any]]:
        """queue id -> postqueue -j record, for every message in the queue."""
        out = run([*self.postqueue, "-j"], timeout=self.timeout)
        found: dict[str, dict[str, Any]] = {}
        for raw in out.splitlines():
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            qid = item.get("queue_id")
            if isinstance(qid, str) and _QID.match(qid):
                found[qid] = item
        return found

    def _belonging(self, key_type: str, key: str, queue: dict[str, dict[str, Any]]) -> list[str]:
        candidates = {q for q, item in queue.items() if item.get("queue_name") != "hold"}
        mine = {q for q in self.context.queue_ids(key_type, key) if q in candidates}
        if key_type == "sender":
            mine |= {q for q in candidates if queue[q].get("sender") == key}
        elif key_type == "user" and len(candidates - mine) <= self.scan_limit:
            needle = f"sasl_username={key}".encode()
            for qid in sorted(candidates - mine):
                try:
                    envelope = run([*self.postcat, "-e", "-q", qid], timeout=min(10, self.timeout))
                except ActionError:
                    continue  # delivered and gone in the meantime
                if any(line.endswith(needle) and b"named_attribute: " in line for line in envelope.splitlines()):
                    mine.add(qid)
        return sorted(mine)

    def _hold(self, key_type: str, key: str, qids: list[str]) -> None:
        if not qids:
            self._remember(key_type, key, [])
            return
        run([*self.postsuper, "-h", "-"], stdin="".join(f"{q}\n" for q in qids).encode(), timeout=self.timeout)
        self._remember(key_type, key, qids)
        log.warning("held %d queued messages of %s %s", len(qids), key_type, key)

    def _release(self, key_type: str, key: str) -> None:
        qids = self.held.get(self._key(key_type, key), [])
        if qids:
            present = self.queue()
            qids = [q for q in qids if q in present]
            if qids:
                run([*self.postsuper, "-H", "-"], stdin="".join(f"{q}\n" for q in qids).encode(), timeout=self.timeout)
                log.info("released %d held messages of %s %s", len(qids), key_type, key)
        self.held.pop(self._key(key_type, key), None)
        self._save()

    # ---- what was held, on disk --------------------------------------------------------------
    @staticmethod
    def _key(key_type: str, key: str) -> str:
        return f"{key_type}\0{key}"

    def _remember(self, key_type: str, key: str, qids: list[str]) -> None:
        entry = self.held.setdefault(self._key(key_type, key), [])
        entry.extend(q for q in qids if q not in entry)
        self._save()

    def _load(self) -> dict[str, list[str]]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        return {k: [q for q in v if isinstance(q, str) and _QID.match(q)]
                for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}

    def _save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_atomically(self.path, json.dumps(self.held, indent=1), mode=0o600)
