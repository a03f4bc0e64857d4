"""The daemon's fleet bridge: this node's decisions and counts out to Redis, other nodes' in.

Inputs: the running daemon (its pipeline, action runner, state writer and control commands) and
a `cluster.Cluster` when the configuration has a `[cluster]` table. Outputs: this node's decisions
published (bans after every batch, manual bans, unbans), what shared jails counted sent, and the
results the cluster threads hand back applied in the loop: fleet-wide crossings decided with
`Jail.decide_shared`, other nodes' bans and unbans carried out through this node's own actions
and recorded with cause `node X`, never published again.
The loop calls start/stop/reloaded, batch (after each batch of lines) and status_text; the
control commands call publish, unbanned and status.
Must never: block the loop on Redis (cluster.py does the I/O in its threads), apply a remote
decision on an address this node never bans (its own addresses, mynetworks, ignoreip), or
publish a decision that came from another node.
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from typing import TYPE_CHECKING

from .. import __version__
from ..config import Config
from ..core.durations import format_duration
from ..core.jails import IgnoreList, JailSpec
from ..core.records import Ban
from ..hostaddrs import never_ban

if TYPE_CHECKING:
    from ..cluster import Cluster
    from .loop import Daemon

log = logging.getLogger("mailban")


class FleetBridge:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cluster: Cluster | None = None
        self._ignore: IgnoreList | None = None
        self._shown: str | None = None

    def start(self) -> None:
        """At start, after the actions and the pipeline: connect when configured."""
        cs = self.daemon.config.cluster
        if cs is None:
            shared = [s.name for s in self.daemon.config.jails if s.enabled and s.shared]
            if shared:
                log.warning("jails %s are marked shared but there is no [cluster] table: they count "
                            "on this host only", ", ".join(shared))
            return
        from .. import cluster as cluster_mod

        self._ignore = self._never(self.daemon.config)
        self.cluster = cluster_mod.Cluster(cs, self.daemon.writer.path, __version__)
        self.daemon.selector.register(self.cluster.fileno(), selectors.EVENT_READ, self._poll)
        self.cluster.start()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    def reloaded(self, new: Config) -> None:
        if new.cluster != self.daemon.config.cluster:
            log.warning("the [cluster] table changed: it takes effect at the next restart")
        if self.cluster is not None:
            self._ignore = self._never(new)

    @staticmethod
    def _never(cfg: Config) -> IgnoreList:
        protected = tuple(never_ban()) if cfg.settings.protect_own else ()
        return IgnoreList(tuple(cfg.settings.ignoreip) + protected)

    # ---- this node's decisions out --------------------------------------------------------------
    def batch(self, bans: list[Ban]) -> None:
        """After a batch of lines (or due decisions): publish its decisions, share its counts."""
        if self.cluster is None:
            for jail in self.daemon.pipeline.jails:
                if jail.shared_out:
                    jail.shared_out = []  # no fleet to share with
            return
        self.publish(bans)  # before the counts: the ban stops the fleet's counting
        self.cluster.share(j for j in self.daemon.pipeline.jails if j.spec.shared)

    def share_inline(self, counted: list[tuple[str, list]], specs: dict[str, JailSpec]) -> None:
        """What shared inline jails counted (the policy service's process sends it): into the
        fleet's windows, as a log jail's counts are."""
        if self.cluster is None:
            return
        self.cluster.share(SimpleNamespace(spec=specs[name], shared_out=items)
                           for name, items in counted if name in specs and specs[name].shared)

    def _spec(self, name: str) -> JailSpec | None:
        """A log jail's spec, or an inline jail's (those live in the policy service's process)."""
        jail = self.daemon.pipeline.jail(name)
        return jail.spec if jail is not None else self.daemon.policy.inline_specs().get(name)

    def publish(self, bans: list[Ban]) -> None:
        if self.cluster is None:
            return
        for ban in bans:
            spec = self._spec(ban.jail)
            shared = spec is not None and spec.shared and ban.key_type == spec.key
            self.cluster.publish("ban", ban=ban, windows=[f"{ban.jail}:{ban.key}"] if shared else [])

    def unbanned(self, req: dict[str, Any], key_type: str | None, key: str | None) -> None:
        """After `unban` (key None: all): lift it on every node, unless it came from one."""
        if self.cluster is None:
            return
        self.cluster.lifted(key_type, key)
        if req.get("_remote"):
            return
        if key is None:
            self.cluster.publish("unban-all")
            return
        specs = [j.spec for j in self.daemon.pipeline.jails] + list(self.daemon.policy.inline_specs().values())
        windows = [f"{s.name}:{key}" for s in specs if s.shared and s.key == key_type]
        self.cluster.publish("unban", str(key_type), key, windows=windows)

    # ---- results in -----------------------------------------------------------------------------
    def _poll(self, _selector: Any = None) -> None:
        if self.cluster is None:
            return
        try:
            self._results()
        except Exception:  # a bug here must not stop detection: logged, the loop goes on
            log.exception("cluster: cannot handle what Redis returned")

    def _results(self) -> None:
        cluster = self.cluster
        crossings, decisions, last = cluster.poll()
        now = time.time()
        bans: list[Ban] = []
        inline = self.daemon.policy.inline_specs()
        for name, key, total, when, nodes, lines in crossings:
            jail = self.daemon.pipeline.jail(name)
            if jail is None and name in inline and inline[name].shared:
                cause = f"fleet: {total} in {format_duration(inline[name].findtime)} on {nodes} nodes"
                self.daemon.policy.crossing(name, key, now, when, total, tuple(lines), cause)
                continue
            if jail is None or not jail.spec.shared:
                continue
            ban = jail.decide_shared(key, now, when, total, tuple(lines))
            if ban is not None:
                bans.append(replace(ban, cause=f"fleet: {total} in {format_duration(jail.spec.findtime)} on {nodes} nodes"))
                self.daemon.writer.unsaved_windows.add((name, "key", key))
        if bans:
            self.publish(self.daemon.decide(bans, now))
        if last is not None:
            ids = self._carry_out(decisions, now)
            cluster.applied(ids, last)
        if cluster.error != self._shown:
            self._shown = cluster.error
            self.daemon.notify_status()

    def _carry_out(self, decisions: list[tuple[str, str, str, dict[str, Any]]], now: float) -> list[str]:
        """Carry out other nodes' decisions in stream order; their ids (applied or skipped)."""
        from ..cluster import ban_from

        pending: list[Ban] = []
        ids: list[str] = []
        for sid, did, op, data in decisions:
            ids.append(did)
            origin = str(data.get("node", "?"))
            if op == "ban":
                try:
                    ban = ban_from(data)
                except (KeyError, ValueError, TypeError) as exc:
                    log.warning("cluster: decision %s from node %s is not valid (%s); skipped", sid, origin, exc)
                    continue
                if ban.until <= now or self._refused(ban, origin):
                    continue
                ban = replace(ban, actions=self._actions(ban),
                              cause=f"node {origin}" + (f": {ban.cause}" if ban.cause else ""))
                pending = [b for b in pending if (b.jail, b.key_type, b.key) != (ban.jail, ban.key_type, ban.key)]
                pending.append(ban)
            elif op in ("unban", "unban-all"):
                key_type, key = (None, None) if op == "unban-all" else (str(data.get("key_type")), str(data.get("key")))
                pending = [b for b in pending if key is not None and (b.key_type, b.key) != (key_type, key)]
                req: dict[str, Any] = {"all": True} if key is None else {"key_type": key_type, "key": key}
                try:
                    self.daemon.commands.unban({**req, "_remote": origin})
                except ValueError as exc:
                    log.warning("cluster: unban %s from node %s refused: %s", sid, origin, exc)
                    continue
                log.info("cluster: node %s lifted %s", origin, "every ban" if key is None else f"{key_type} {key}")
                if key is not None:  # who asked, next to the unban row commands.unban wrote
                    self.daemon.writer.record([(now, "remote-unban", "-", str(key_type), key, {"node": origin})])
        if pending:
            for ban in pending:
                log.info("cluster: node %s decided %s %s (jail %s)", ban.cause[5:].split(":")[0], ban.key_type,
                         ban.key, ban.jail)
                self.daemon.pipeline.note_ban(ban)
                self.daemon.writer.unsaved_windows.add((ban.jail, "net" if ban.key_type == "net" else "key", ban.key))
            # Decided on another node: not through this node's rate limit again.
            self.daemon.runner.apply(pending)
            self.daemon.writer.commit(self.daemon.pipeline, pending)
        return ids

    def _refused(self, ban: Ban, origin: str) -> bool:
        """Addresses this node never bans stay unbanned whatever another node decided."""
        ignore = self._ignore
        jail = self.daemon.pipeline.jail(ban.jail)
        refused = False
        if ban.key_type == "ip":
            refused = (ignore is not None and ban.key in ignore) or (
                jail is not None and jail.spec.key == "ip" and ban.key in jail.ignore)
        elif ban.key_type == "net" and ignore is not None:
            net = ipaddress.ip_network(ban.key)
            refused = any(net.overlaps(n) for n in ignore.networks)
        if refused:
            log.warning("cluster: node %s banned %s %s, which this node never bans; not applied here",
                        origin, ban.key_type, ban.key)
        return refused

    def _actions(self, ban: Ban) -> tuple[str, ...]:
        """This node's actions for another node's decision: the same-named jail's, else the ones
        named in the decision that exist here, else nft for an address."""
        if ban.observe:
            return ()
        jail = self.daemon.pipeline.jail(ban.jail)
        if jail is not None:
            if jail.spec.mode == "observe":
                return ()
            wanted = jail.spec.ip_actions if ban.key_type in ("ip", "net") and jail.spec.key != "ip" else jail.spec.actions
        else:
            wanted = ban.actions
        chosen = tuple(a for a in wanted if a in self.daemon.runner)
        if not chosen and ban.key_type in ("ip", "net") and "nft" in self.daemon.runner:
            chosen = ("nft",)
        return chosen

    # ---- status ---------------------------------------------------------------------------------
    def status(self, status: dict[str, Any]) -> dict[str, Any]:
        status["cluster"] = self.cluster.status(status.get("bans", [])) if self.cluster is not None else None
        return status

    def status_text(self) -> str:
        line = self.cluster.status_line() if self.cluster is not None else None
        return f"; {line}" if line else ""
