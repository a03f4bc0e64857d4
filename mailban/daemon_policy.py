"""The daemon's side of the policy service (mailban/policy): start it when `policy_listen` is
set, hand it the decisions whenever the active bans change (before the actions run, so that
postfix's next request is answered by the new decision while a postmap or a reload is still
going on), take its inline jails' bans and carry them out like the log jails' ones.

The service runs in a thread of its own and owns the inline jails; this side talks to it only
through `PolicyServer.decisions` (one reference, replaced whole) and `PolicyServer.call`.
"""

from __future__ import annotations

import logging
import selectors
import time
from typing import Any, Iterable

from .core.jails import IgnoreList, Jail
from .core.records import Ban
from .policy.answer import Decisions, Inline, inline_jail

log = logging.getLogger("mailban")


class PolicyHooks:
    policy: Any = None

    def _policy_jails(self, cfg: Any, old: Inline | None = None) -> list[Jail]:
        ignore = IgnoreList(tuple(cfg.settings.ignoreip) + tuple(n for n, _why in getattr(self, "protected", ())))
        jails = []
        for spec in cfg.jails:
            if not (spec.enabled and spec.inline):
                continue
            jail = inline_jail(spec, IgnoreList(ignore.networks + spec.ignoreip))
            before = old.jail(spec.name) if old is not None else None
            if before is not None and before.spec.key == spec.key:
                jail.windows, jail.banned, jail.offenses = before.windows, before.banned, before.offenses
            jails.append(jail)
        return jails

    def _policy_start(self, cfg: Any, active: list[Ban], selector: selectors.BaseSelector) -> None:
        settings = cfg.settings
        inline = Inline(self._policy_jails(cfg))
        if not settings.policy_listen:
            if inline.jails:
                log.warning("jails %s are inline but policy_listen is not set: they count nothing",
                            ", ".join(j.spec.name for j in inline.jails))
            return
        from .policy.server import PolicyServer

        for ban in active:
            for jail in inline.jails:
                if jail.spec.name == ban.jail:
                    jail.note_ban(ban.key, ban.until, ban.key_type)
        try:
            self.policy = PolicyServer(settings.policy_listen, inline, socket_mode=settings.policy_socket_mode,
                                       socket_owner=settings.policy_socket_owner)
        except (OSError, KeyError) as exc:  # postfix falls back to its default action meanwhile
            log.error("policy service: cannot listen on %s: %s", settings.policy_listen, exc)
            self.errors.append(f"policy service: cannot listen on {settings.policy_listen}: {exc}")  # type: ignore[attr-defined]
            return
        self._policy_refresh(active)
        self.policy.start()
        selector.register(self.policy.fileno(), selectors.EVENT_READ, self._policy_take)
        log.info("policy service listening on %s (%d inline jails)", settings.policy_listen, len(inline.jails))

    def _policy_refresh(self, extra: Iterable[Ban] = (), active: list[Ban] | None = None) -> None:
        """Hand the service what mailban acts on now (the database's active bans, those it has not
        taken yet, and `extra`, about to be applied)."""
        if self.policy is None:
            return
        now = time.time()
        if active is None:
            try:
                active = self.state.active(now)  # type: ignore[attr-defined]
            except Exception:
                active = []
        types = {name: action.type for name, action in self.config.actions.items()}  # type: ignore[attr-defined]
        self.policy.decisions = Decisions.from_bans([*active, *self.unsaved_bans, *extra], types, now)  # type: ignore[attr-defined]

    def _policy_take(self, _selector: Any = None) -> None:
        """The inline jails decided: record and carry out like a log jail's decision."""
        bans = self.policy.take_bans()
        if not bans:
            return
        now = time.time()
        bans, _folds = self._decide(bans, now)  # type: ignore[attr-defined]
        if bans:
            self._apply(bans)  # type: ignore[attr-defined]
            self._commit(bans)  # type: ignore[attr-defined]
            self._cluster_publish(bans)  # type: ignore[attr-defined]

    def _policy_lifted(self, bans: list[Ban], everything: bool = False) -> None:
        """Bans lifted (unban, folds): the inline jails forget them and count afresh."""
        if self.policy is None:
            return
        if everything:
            self.policy.call(lambda inline: inline.forget_all())
        else:
            keys = [(b.key_type, b.key) for b in bans]
            self.policy.call(lambda inline: [inline.forget(kt, k) for kt, k in keys])
        self._policy_refresh()

    def _policy_reloaded(self, cfg: Any) -> None:
        if self.policy is None:
            return
        if cfg.settings.policy_listen != self.policy.listen:
            log.warning("policy_listen changed: it takes effect at the next start of mailban")

        def swap(inline: Inline) -> None:
            inline.jails = self._policy_jails(cfg, inline)

        self.policy.call(swap)

    def _policy_stop(self) -> None:
        if self.policy is not None:
            self.policy.stop()
            self.policy = None
