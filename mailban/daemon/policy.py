"""The daemon's policy bridge: the Postfix policy service (mailban/policy) fed and heard.

Inputs: the settings (`policy_listen`), the bans in force, and the action runner's notices
(bans about to be applied, bans lifted). Outputs: the service's view of what mailban acts on
(`Decisions`, replaced whole: the service thread reads one reference, no lock), handed over
before a new ban's actions run, so that postfix's next request is answered by it while a
postmap or a reload is still going on; the inline jails' decisions, taken from the service and
carried out like a log jail's (Daemon.decide: rate limit, actions, commit, fleet).
The service runs in a thread of its own and owns the inline jails; this side reaches them only
through `PolicyServer.call`.
Must never: stop mail (postfix's default action, DUNNO, answers while the service is down) or
stop the daemon because the socket cannot be bound (said in status and the log).
"""

from __future__ import annotations

import logging
import selectors
import time
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..core.jails import IgnoreList, Jail
from ..core.records import Ban
from ..policy.answer import Decisions, Inline, inline_jail

if TYPE_CHECKING:
    from ..policy.server import PolicyServer
    from .loop import Daemon

log = logging.getLogger("mailban")


class PolicyBridge:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.server: PolicyServer | None = None

    def _jails(self, cfg: Config, old: Inline | None = None) -> list[Jail]:
        """The configuration's inline jails; their counts and bans carry over a reload."""
        protected = tuple(net for net, _why in self.daemon.protected)
        ignore = IgnoreList(tuple(cfg.settings.ignoreip) + protected)
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

    def start(self, active: list[Ban]) -> None:
        settings = self.daemon.config.settings
        inline = Inline(self._jails(self.daemon.config))
        if not settings.policy_listen:
            if inline.jails:
                log.warning("jails %s are inline but policy_listen is not set: they count nothing",
                            ", ".join(j.spec.name for j in inline.jails))
            return
        from ..policy.server import PolicyServer

        for ban in active:
            for jail in inline.jails:
                if jail.spec.name == ban.jail:
                    jail.note_ban(ban.key, ban.until, ban.key_type)
        try:
            self.server = PolicyServer(settings.policy_listen, inline, socket_mode=settings.policy_socket_mode,
                                       socket_owner=settings.policy_socket_owner)
        except (OSError, KeyError) as exc:  # postfix falls back to its default action meanwhile
            log.error("policy service: cannot listen on %s: %s", settings.policy_listen, exc)
            self.daemon.errors.append(f"policy service: cannot listen on {settings.policy_listen}: {exc}")
            return
        self.refresh(active=active)
        self.server.start()
        self.daemon.selector.register(self.server.fileno(), selectors.EVENT_READ, self._take)
        log.info("policy service listening on %s (%d inline jails)", settings.policy_listen, len(inline.jails))

    def refresh(self, extra: list[Ban] | None = None, active: list[Ban] | None = None) -> None:
        """Hand the service what mailban acts on now: the bans in force (the database's and
        those it has not taken yet) and `extra`, about to be applied."""
        if self.server is None:
            return
        now = time.time()
        if active is None:
            try:
                active = self.daemon.writer.active(now)
            except Exception:  # the database fails: what it has not taken yet still counts
                active = [b for b in self.daemon.writer.unsaved_bans if b.until > now]
        types = {name: action.type for name, action in self.daemon.config.actions.items()}
        self.server.decisions = Decisions.from_bans([*active, *(extra or ())], types, now)

    def applying(self, bans: list[Ban]) -> None:
        """The action runner is about to carry these out (first: the service answers at once)."""
        self.refresh(bans)

    def lifted(self, bans: list[Ban] | None) -> None:
        """Bans lifted (unban, folds; None: all of them): the inline jails forget them and
        count afresh, and the service stops answering for them."""
        if self.server is None:
            return
        if bans is None:
            self.server.call(lambda inline: inline.forget_all())
        else:
            keys = [(b.key_type, b.key) for b in bans]
            self.server.call(lambda inline: [inline.forget(kt, k) for kt, k in keys])
        self.refresh()

    def _take(self, _selector: Any = None) -> None:
        """The inline jails decided: recorded and carried out like a log jail's decision."""
        if self.server is None:
            return
        bans = self.server.take_bans()
        if bans:
            self.daemon.fleet.publish(self.daemon.decide(bans, time.time()).bans)

    def reloaded(self, cfg: Config) -> None:
        if self.server is None:
            return
        if cfg.settings.policy_listen != self.server.listen:
            log.warning("policy_listen changed: it takes effect at the next start of mailban")

        def swap(inline: Inline) -> None:
            inline.jails = self._jails(cfg, inline)

        self.server.call(swap)
        self.refresh()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
