"""The daemon's policy bridge: the Postfix policy service (mailban/policy) fed and heard.

Inputs: the settings (`policy_listen`), the bans in force, and the action runner's notices
(bans about to be applied, bans lifted). Outputs: the service's view of what mailban acts on
(`Decisions`, replaced whole: the service thread reads one reference, no lock), handed over
before a new ban's actions run, so that postfix's next request is answered by it while a
postmap or a reload is still going on; the inline jails' decisions, taken from the service and
carried out like a log jail's (Daemon.decide: rate limit, actions, commit, fleet).
The service runs in a process of its own (mailban/policy/child.py: the GIL made a thread wait
behind log parsing) and owns the inline jails; this side reaches them only through messages.
A child that dies is forked again (backoff 1 s doubling to 60 s), with the bans in force.
The daemon keeps a mirror of the inline jails (`mirror`: daemon/mirror.py): restored from the
database at start, given to each child it forks (the fork copies it), and kept up with the
windows the child sends (once a second and with each inline ban, as what changed:
policy/windowsync.py), which the state writer commits as they came, undecoded; the mirror
decodes them only when read (status, explain, `ban --jail`, an unban, a reload, a fork, a fold
without a child). Every FOLD_EVERY seconds the writer has the child send its windows whole
(a snapshot), which lets it drop what came before. So a restart of mailban (kill -9 included) or
of the child loses at most about a second of inline counting, and status, explain and
`ban --jail` read the inline jails here (their counts as of the child's last send).
Must never: stop mail (postfix's default action, DUNNO, answers while the service is down) or
stop the daemon because the socket cannot be bound (said in status and the log).
"""

from __future__ import annotations

import logging
import selectors
import time
from typing import TYPE_CHECKING, Any

from .. import checkpoint
from ..config import Config
from ..core.jails import IgnoreList, Jail, JailSpec
from ..core.records import Ban
from ..state import WindowRow
from ..policy.answer import Decisions, Inline, inline_jail
from ..policy import windowsync
from ..policy.child import PolicyProcess
from .mirror import Mirror

if TYPE_CHECKING:
    from .loop import Daemon
    from .writer import StateWriter

log = logging.getLogger("mailban")
RESTART_MIN, RESTART_MAX = 1.0, 60.0


def take_windows(proc: PolicyProcess, mirror: Mirror, writer: StateWriter) -> None:
    """The windows the child sent: saved as they came (State's window_changes) and kept for the
    mirror, both undecoded (the mirror applies them when read). (bench/policy.py runs this too.)"""
    if proc.windows:
        blobs, proc.windows = proc.windows, []
        writer.inline_changes += blobs
        mirror.take(blobs)
    if proc.snapshot == "done":  # every window came whole since the marker: what came before can go
        proc.snapshot = ""
        mirror.snapshot_done()
        writer.snapshot_done = True


class PolicyBridge:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.proc: PolicyProcess | None = None
        self._fd = -1  # the link's descriptor, as registered in the daemon's selector
        self.restart_at = 0.0  # monotonic; when a dead child is forked again
        self.backoff = RESTART_MIN
        # The inline jails as the daemon knows them (their windows as of the child's last send,
        # decoded when read).
        self.mirror = self._mirror(Inline())
        daemon.writer.snapshot = self._snapshot

    def _mirror(self, inline: Inline) -> Mirror:
        mirror = Mirror(inline, on_resend=self._resend)
        self.daemon.writer.inline = mirror
        return mirror

    def _jails(self, cfg: Config) -> list[Jail]:
        """The configuration's inline jails, counting afresh."""
        protected = tuple(net for net, _why in self.daemon.protected)
        ignore = IgnoreList(tuple(cfg.settings.ignoreip) + protected)
        return [inline_jail(spec, IgnoreList(ignore.networks + spec.ignoreip))
                for spec in cfg.jails if spec.enabled and spec.inline]

    def _note(self, active: list[Ban]) -> None:
        """The mirror's jails know the bans in force (so a child forked with them answers for
        them, and no window is restored for a banned key)."""
        if not active:  # (every ban's `applying` comes here: a log jail's must not decode the mirror)
            return
        inline = self.mirror.inline
        for ban in active:
            jail = inline.jail(ban.jail)
            if jail is not None:
                jail.note_ban(ban.key, ban.until, ban.key_type)

    def restore(self, active: list[Ban], saved: list[WindowRow], now: float) -> int:
        """At start: the inline jails with the bans in force and their saved windows (`saved`:
        every jail's rows, State.windows()); returns how many windows were restored."""
        self.mirror = self._mirror(Inline(self._jails(self.daemon.config)))
        self._note(active)
        restored = checkpoint.restore(self.mirror.jails, saved, now)
        # then the changes saved since those rows were written (the writer folds them at its
        # first commit)
        windowsync.apply(self.mirror.jails, self.daemon.writer.state.window_changes(), now, note=False, replay=True)
        checkpoint.track(self.mirror.jails)  # after the restore: those windows are not changes
        return restored

    def jails(self) -> list[Jail]:
        """The inline jails (the mirror: status, explain, ban --jail)."""
        return self.mirror.jails

    def jail(self, name: str) -> Jail | None:
        return self.mirror.jail(name)

    def start(self, active: list[Ban]) -> None:
        settings = self.daemon.config.settings
        if not settings.policy_listen:
            if any(spec.enabled and spec.inline for spec in self.daemon.config.jails):
                log.warning("jails %s are inline but policy_listen is not set: they count nothing",
                            ", ".join(s.name for s in self.daemon.config.jails if s.enabled and s.inline))
            return
        from ..policy.server import PolicyServer

        try:
            server = PolicyServer(settings.policy_listen, socket_mode=settings.policy_socket_mode,
                                  socket_owner=settings.policy_socket_owner)
        except (OSError, KeyError) as exc:  # postfix falls back to its default action meanwhile
            log.error("policy service: cannot listen on %s: %s", settings.policy_listen, exc)
            self.daemon.errors.append(f"policy service: cannot listen on {settings.policy_listen}: {exc}")
            return
        self.proc = PolicyProcess(server, nice=settings.policy_nice)
        self.proc.on_lost = self._unregister
        self._fork(active)
        log.info("policy service listening on %s (%d inline jails)", settings.policy_listen,
                 sum(1 for s in self.daemon.config.jails if s.enabled and s.inline))

    def _fork(self, active: list[Ban]) -> None:
        assert self.proc is not None
        self._windows()  # what the last child sent before it died
        self._note(active)
        self._journal()
        # The child gets the mirror's jails (the fork copies them): it counts on from where the
        # database, or the last child, left them.
        self.proc.start(self.mirror.inline, self._decisions(active))
        self._fd = self.proc.fileno()
        self.daemon.selector.register(self._fd, selectors.EVENT_READ, self._take)

    def _unregister(self) -> None:
        if self._fd >= 0:
            try:
                self.daemon.selector.unregister(self._fd)
            except (KeyError, ValueError):
                pass
            self._fd = -1
        lived = time.monotonic() - (self.proc.started_at if self.proc else 0.0)
        self.backoff = RESTART_MIN if lived > RESTART_MAX else min(RESTART_MAX, self.backoff * 2)
        self.restart_at = time.monotonic() + (RESTART_MIN if lived > RESTART_MAX else self.backoff)

    def _active(self) -> list[Ban]:
        return self.daemon.writer.in_force(time.time())

    def _decisions(self, active: list[Ban]) -> Decisions:
        types = {name: action.type for name, action in self.daemon.config.actions.items()}
        return Decisions.from_bans(active, types, time.time())

    def refresh(self, extra: list[Ban] | None = None, active: list[Ban] | None = None) -> None:
        """Hand the service what mailban acts on now: the bans in force (the database's and
        those it has not taken yet) and `extra`, about to be applied."""
        if self.proc is None or not self.proc.alive:
            return
        if active is None:
            active = self._active()
        self.proc.send("decisions", self._decisions([*active, *(extra or ())]))

    def applying(self, bans: list[Ban]) -> None:
        """The action runner is about to carry these out (first: the service answers at once).
        An inline jail's ban decided elsewhere (another node, an admin) is noted by that jail,
        which answers for it from then on."""
        self.refresh(bans)
        inline = self.inline_specs()
        notes = [(b.jail, b.key, b.until, b.key_type) for b in bans if b.jail in inline]
        self._note([b for b in bans if b.jail in inline])
        self._journal()
        if notes and self.proc is not None and self.proc.alive:
            self.proc.send("note", notes)

    def inline_specs(self) -> dict[str, JailSpec]:
        """The enabled inline jails' specs by name."""
        return {s.name: s for s in self.daemon.config.jails if s.enabled and s.inline}

    def crossing(self, name: str, key: str, now: float, when: float, total: int, lines: tuple[str, ...],
                 cause: str) -> None:
        """The fleet's shared window of an inline jail crossed its threshold: the jail (in the
        service's process) decides, and its ban comes back like its own."""
        if self.proc is not None and self.proc.alive:
            self.proc.send("crossing", name, key, now, when, total, tuple(lines), cause)

    def lifted(self, bans: list[Ban] | None) -> None:
        """Bans lifted (unban, folds; None: all of them): the inline jails forget them and
        count afresh, and the service stops answering for them."""
        inline = self.mirror.inline
        if bans is None:
            inline.forget_all()
        else:
            for b in bans:
                inline.forget(b.key_type, b.key)
        self._journal()
        if self.proc is None or not self.proc.alive:
            return
        if bans is None:
            self.proc.send("forget_all")
        else:
            self.proc.send("forget", [(b.key_type, b.key) for b in bans])
        self.refresh()

    def _take(self, _selector: Any = None) -> None:
        """The inline jails decided: recorded and carried out like a log jail's decision."""
        if self.proc is None:
            return
        bans = self.proc.take_bans()
        self._windows()
        due, self.proc.saved = self.proc.saved, False
        if due and not bans:  # once a second while counting, after the second's last piece
            self.daemon.writer.commit(self.daemon.pipeline)
        if bans:
            self.daemon.fleet.publish(self.daemon.decide(bans, time.time()))  # commits the windows too
        if self.proc.shared:  # what `shared` inline jails counted, into the fleet's windows
            shared, self.proc.shared = self.proc.shared, []
            self.daemon.fleet.share_inline(shared, self.inline_specs())

    def _windows(self) -> None:
        if self.proc is not None:
            take_windows(self.proc, self.mirror, self.daemon.writer)

    def _resend(self, keys: list[windowsync.Key]) -> None:
        """Windows whose change the mirror could not follow (never seen: the link keeps the
        changes in order): asked whole, and the database gets the mirror's rows, not the changes."""
        log.warning("policy service: %d windows did not follow on in the mirror; asked whole", len(keys))
        self.daemon.writer.fold_inline = True
        if self.proc is not None and self.proc.alive:
            self.proc.send("resend", keys)

    def _snapshot(self) -> bool:
        """The writer's fold is due: have the child send every window whole (it then drops the
        changes before); False when there is no child to ask (it folds the mirror's rows)."""
        return self.proc is not None and self.proc.alive and self.proc.send("snapshot")

    def _journal(self) -> None:
        """The mirror's own changes (unbans, bans noted) saved in line with the child's."""
        items = self.mirror.own_changes()
        if items:
            self.daemon.writer.inline_changes.append(windowsync.pack(items, whole=True))

    def housekeeping(self) -> None:
        """Fork a child that died again, once its backoff has passed."""
        if self.proc is not None and not self.proc.alive and time.monotonic() >= self.restart_at:
            self._fork(self._active())

    def reloaded(self, cfg: Config) -> None:
        self.reload_mirror(cfg)
        if self.proc is None:
            return
        if cfg.settings.policy_listen != self.proc.listen:
            log.warning("policy_listen changed: it takes effect at the next start of mailban")
        self.proc.nice = cfg.settings.policy_nice  # for a child forked again (the running one keeps its own)
        if self.proc.alive:
            self.proc.send("jails", self._jails(cfg))
        self.refresh()

    def reload_mirror(self, cfg: Config) -> None:
        """A reload's inline jails in the mirror (a jail that keeps its name and key keeps its
        windows, as in the child: Inline.replace); called with or without a policy service."""
        jails = self._jails(cfg)
        checkpoint.track(jails)
        self.mirror.inline.replace(jails)
        checkpoint.take_touched(jails)
        self.daemon.writer.fold_inline = True  # rows for the jails as they are now

    def stop(self) -> None:
        """Stop the child, after it sent every window it changed (the daemon's last commit
        takes them) and the bans it decided meanwhile (carried out)."""
        if self.proc is not None:
            bans: list[Ban] = []
            if self.proc.alive:
                bans = self.proc.flush()
                self._unregister()
            self._windows()
            self.proc.stop()
            self.proc = None
            if bans:
                self.daemon.decide(bans, time.time())
