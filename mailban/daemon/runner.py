"""The daemon's action runner: carries decisions out through the configured actions.

Inputs: bans to apply or undo (decided, manual, another node's), queued messages of keys already
acted on, and the passing of time. Outputs: calls on the actions (actions/base.Action: ban,
unban, hold_more, check, tick, ...), history rows (what each action did, for `explain`), metrics.
A failing action is retried with backoff: `start()` again (which rebuilds what it owns, e.g. an
nft table deleted behind our back, from the database), then the bans and unbans it still owes.
Actions that can check themselves (`check()`) are checked every CHECK_EVERY seconds. An action
whose MTA is not running here is idle (not failing) until a decision needs it.
Must never: stop because an action fails (said once, shown in status, retried), or probe an
action for a capability it did not declare (they are declared in actions/base.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from .. import config as config_mod
from ..actions import registry
from ..actions.base import Action, ActionContext
from ..core.durations import format_duration
from ..core.decisions import Hold
from ..core.records import Ban
from ..metrics import Metrics
from .writer import HistoryRow, StateWriter

log = logging.getLogger("mailban")
RETRY_MIN, RETRY_MAX = 1.0, 60.0
CHECK_EVERY = 5.0  # seconds between action self-checks (an nft table deleted behind our back)


class BanWatcher(Protocol):
    """Told of bans before the actions carry them out and after they are lifted (the policy
    service answers for them: daemon/policy.py)."""

    def applying(self, bans: list[Ban]) -> None: ...
    def lifted(self, bans: list[Ban] | None) -> None: ...  # None: every ban


@dataclass
class ActionSlot:
    """An action instance plus what it still owes (bans it failed to apply) and its health."""

    impl: Action
    pending_bans: list[Ban] = field(default_factory=list)
    pending_unbans: list[Ban] = field(default_factory=list)
    error: str | None = None
    # Why it could not start while no decision needed it (its MTA is not running here): shown
    # as idle, not failing, and started again when a decision needs it.
    idle: str | None = None
    retry_at: float = 0.0
    backoff: float = RETRY_MIN


class ActionRunner:
    def __init__(self, writer: StateWriter, metrics: Metrics, changed: Callable[[], None],
                 queue_ids: Callable[[str, str], list[str]], watcher: BanWatcher | None = None) -> None:
        self.writer = writer
        self.watcher = watcher  # told before bans are applied and after they are lifted
        self.metrics = metrics
        self._changed = changed  # the health shown in status changed
        self._queue_ids = queue_ids  # queue ids the correlation saw submitted by a key (queue-hold)
        self.slots: dict[str, ActionSlot] = {}
        # (key type, key) -> action -> what did not work when it acted (list, explain)
        self.problems: dict[tuple[str, str], dict[str, str]] = {}
        self.next_check = 0.0

    # ---- configuration ----------------------------------------------------------------------
    def build(self, cfg: config_mod.Config, active: list[Ban]) -> None:
        """The actions the configuration uses, each started with the bans it owns; a slot's
        debts and health carry over a reload."""
        wanted = {a for spec in cfg.jails if spec.enabled for a in spec.actions}
        wanted |= {a for spec in cfg.jails if spec.enabled and spec.ban_ips for a in spec.ip_actions}
        if "nft" in cfg.actions:
            wanted.add("nft")  # manual bans go through it
        context = ActionContext(state_dir=cfg.settings.state_dir, queue_ids=self._queue_ids)
        slots: dict[str, ActionSlot] = {}
        for name in sorted(wanted):
            impl = registry.create(cfg.actions[name], context)
            slot = self.slots.get(name) or ActionSlot(impl)
            slot.impl = impl
            slots[name] = slot
            mine = [b for b in active if name in b.actions]
            try:
                impl.start(mine)
                slot.error = slot.idle = None
            except Exception as exc:
                if mine:
                    self._failed(slot, name, "start", exc)
                    slot.pending_bans.extend(mine)
                else:
                    # Nothing needs it yet (e.g. queue-hold on a host whose postfix is stopped):
                    # idle, not failing; a decision that needs it starts it and tells.
                    slot.error, slot.idle = None, str(exc)
                    log.info("action %s idle until a decision needs it: %s", name, exc)
        self.slots = slots

    def __contains__(self, name: str) -> bool:
        return name in self.slots

    def names(self) -> tuple[str, ...]:
        return tuple(self.slots)

    # ---- acting -----------------------------------------------------------------------------
    def apply(self, bans: list[Ban]) -> None:
        if self.watcher is not None:
            self.watcher.applying(bans)
        for ban in bans:
            # An address banned for an account's attack is banned until the account's ban ends,
            # so its duration is what is left of that one, not the jail's bantime.
            log.warning("ban %s %s (jail %s: %d events in %s) for %s via %s", ban.key_type, ban.key,
                        ban.jail, ban.count, format_duration(ban.findtime), format_duration(ban.until - ban.time),
                        ", ".join(ban.actions))
        now = time.time()
        rows: list[HistoryRow] = []
        fresh = set(bans)
        for name, slot in self.slots.items():
            mine = [b for b in bans if name in b.actions]
            if not mine:
                continue
            if slot.impl.one_timeout_per_key:
                # One entry per key (an nft element and its timeout): hand it the other bans
                # still active on the same keys too, so that it keeps the longest one and a
                # shorter ban (`mailban ban IP --for 3s` on an address banned for an hour) never
                # cuts a longer one short.
                keys = {(b.key_type, b.key) for b in mine}
                mine += [b for b in self.writer.state.active_on(keys, now) if name in b.actions]
            started = time.monotonic()
            try:
                if slot.idle is not None:
                    slot.impl.start([b for b in self.writer.state.active(now) if name in b.actions and b not in fresh])
                    slot.idle = None
                problems = slot.impl.ban(mine)
                self._ok(slot, name)
                # Done, but not in full (sasl-disable: the account is disabled, the postfix
                # reload or the kick failed): said as such in explain, list and status.
                result = f"done, but: {'; '.join(problems)}" if problems else "ok"
                for b in mine:
                    if problems:
                        self.problems.setdefault((b.key_type, b.key), {})[name] = result
                    else:
                        self.problems.get((b.key_type, b.key), {}).pop(name, None)
            except Exception as exc:
                slot.pending_bans.extend(mine)
                self._failed(slot, name, "ban", exc)
                result = f"failed, will retry: {exc}"
            took = round(time.monotonic() - started, 4)
            self.metrics.action(name, took, result == "ok")
            # What the action did beyond "ok", for explain (nft: "cut 2 live connections").
            notes = slot.impl.ban_notes() if not result.startswith("failed") else {}
            rows.extend((now, "action", b.jail, b.key_type, b.key,
                         {"action": name, "result": result, "seconds": took,
                          **({"note": notes[b.key]} if b.key in notes else {})})
                        for b in mine if b in fresh)
        self.writer.record(rows)

    def unapply(self, bans: list[Ban], expiry: bool = False) -> None:
        """Undo bans in their actions. On expiry, actions whose effect expires by itself (nft
        element timeouts, a mail already sent) are left alone."""
        rows: list[HistoryRow] = []
        if self.watcher is not None and not expiry:
            self.watcher.lifted(bans)
        for name, slot in self.slots.items():
            mine = [b for b in bans if name in b.actions]
            if not mine or (expiry and slot.impl.self_expiring):
                continue
            undone = {(b.key_type, b.key) for b in mine}
            slot.pending_bans = [b for b in slot.pending_bans if (b.key_type, b.key) not in undone]
            try:
                slot.impl.unban(mine)
                self._ok(slot, name)
                result = "undone"
            except Exception as exc:
                slot.pending_unbans.extend(mine)
                self._failed(slot, name, "unban", exc)
                result = f"undo failed, will retry: {exc}"
            if slot.impl.undoable:
                keys = {(b.key_type, b.key): b.jail for b in mine}
                rows.extend((time.time(), "action", jail, kt, k, {"action": name, "result": result})
                            for (kt, k), jail in keys.items())
        self.writer.record(rows)

    def unban_all(self, removed: list[Ban]) -> None:
        """`unban --all`: nothing is owed any more, every action lifts everything."""
        if self.watcher is not None:
            self.watcher.lifted(None)
        rest = list(removed)
        for name, slot in self.slots.items():
            # A ban that failed before must not be retried later.
            slot.pending_bans, slot.pending_unbans = [], []
            # An action that lifts everything at once (also what the database does not know
            # of) says so; the others undo the database's bans one by one below.
            try:
                lifted_all = slot.impl.unban_all()
            except Exception as exc:
                lifted_all = True  # it lifts at once, but failed: shown as failing
                self._failed(slot, name, "unban", exc)
            else:
                if lifted_all:
                    self._ok(slot, name)
            if lifted_all:
                rest = [b for b in rest if name not in b.actions]
        self.unapply(rest)

    def lifted(self, keys: Iterable[tuple[str, str]]) -> None:
        for key in keys:
            self.problems.pop(key, None)

    def hold(self, holds: list[Hold]) -> None:
        """Hold the messages that keys already acted on keep submitting (the PHP script goes
        on): the pipeline found them (Pipeline.holding), one call per action and key."""
        wanted: dict[tuple[str, str, str], list[str]] = {}
        for h in holds:
            wanted.setdefault((h.action, h.key_type, h.key), []).append(h.queue_id)
        for (name, key_type, key), qids in wanted.items():
            slot = self.slots.get(name)
            if slot is None:
                continue
            try:
                slot.impl.hold_more(key_type, key, qids)
                self._ok(slot, name)
            except Exception as exc:
                self._failed(slot, name, "hold", exc)

    def held_for(self, key_type: str, key: str) -> list[Any]:
        held: list[Any] = []
        for slot in self.slots.values():
            held += slot.impl.held_for(key_type, key)
        return held

    def purge(self, key_type: str, key: str) -> int:
        return sum(slot.impl.purge(key_type, key) for slot in self.slots.values())

    # ---- time, health -----------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        """Self-checks (every CHECK_EVERY s), the actions' own timers, and retries of what
        failed, each with its backoff."""
        mono = time.monotonic()
        if mono >= self.next_check:
            self.next_check = mono + CHECK_EVERY
            for name, slot in self.slots.items():
                if slot.error is None and slot.idle is None:
                    try:
                        slot.impl.check()
                    except Exception as exc:
                        self._failed(slot, name, "check", exc)
        for name, slot in self.slots.items():
            try:
                slot.impl.tick(now)
            except Exception as exc:
                self._failed(slot, name, "tick", exc)
        mono = time.monotonic()
        for name, slot in self.slots.items():
            if (slot.pending_bans or slot.pending_unbans or slot.error) and mono >= slot.retry_at:
                pending = [b for b in slot.pending_bans if b.until > now]
                unbans = slot.pending_unbans
                slot.pending_bans, slot.pending_unbans = [], []
                try:
                    if slot.error:
                        # Rebuild what the action owns from the database (and what it has not
                        # taken yet), then hand it what it still owes.
                        slot.impl.start([b for b in self.writer.active(now) if name in b.actions])
                    if pending:
                        slot.impl.ban(pending)
                    if unbans:
                        slot.impl.unban(unbans)
                    self._ok(slot, name)
                except Exception as exc:
                    slot.pending_bans.extend(pending)
                    slot.pending_unbans.extend(unbans)
                    self._failed(slot, name, "retry", exc)

    def failing(self) -> list[str]:
        return [n for n, s in self.slots.items() if s.error]

    def status(self, types: dict[str, str]) -> list[dict[str, Any]]:
        return [
            {"name": n, "type": types.get(n, n),
             # failing (a program failed; retried) apart from what the action reports
             # about itself (not set up, done but not in full)
             "error": s.error,
             "warning": s.impl.health(),
             "idle": s.idle,
             "pending": len(s.pending_bans) + len(s.pending_unbans)}
            for n, s in self.slots.items()
        ]

    def stop(self) -> None:
        for slot in self.slots.values():
            try:
                slot.impl.stop()
            except Exception as exc:
                log.warning("action stop failed: %s", exc)

    def _failed(self, slot: ActionSlot, name: str, what: str, exc: Exception) -> None:
        if slot.error is None:
            log.error("action %s: %s failed: %s (will retry)", name, what, exc)
        slot.error = f"{what} failed: {exc}"
        slot.retry_at = time.monotonic() + slot.backoff
        slot.backoff = min(slot.backoff * 2, RETRY_MAX)
        self._changed()

    def _ok(self, slot: ActionSlot, name: str) -> None:
        slot.idle = None
        if slot.error is not None:
            log.info("action %s works again", name)
            slot.error = None
            self._changed()
        slot.backoff = RETRY_MIN
