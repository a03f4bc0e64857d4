"""The daemon: follow logs, feed the pipeline, carry decisions out, answer the control socket
(the commands themselves live in daemon_commands.py, the fleet hooks in daemon_cluster.py).

Inputs: the configuration; log files (inotify); control requests; signals (HUP reload, TERM/INT
stop). Outputs: actions (nft set elements, ...), state in SQLite, systemd notifications.
One thread, one loop: every iteration reads what the logs have, applies the resulting bans in one
batch per action, then commits the bans, the file positions (with the number of lines read so
far) and the windows the batch changed in one transaction (see state.py and checkpoint.py). At
start the windows are restored and reading resumes at the committed positions, so a `kill -9`
loses no line, counts none twice, and keeps partially counted windows.
When the database cannot be written (read-only, disk full), detection and actions go on: the
uncommitted bans and touched windows are kept in memory and committed with the next batch that
succeeds (retried every second); positions in the database stay at the last commit, so a crash
meanwhile re-reads those lines, and re-decided bans are idempotent in every action.
A failing action is retried with backoff: `start()` again (which rebuilds what it owns, e.g. an nft
table deleted behind our back, from the database), then the bans and unbans it still owes. Actions
that can check themselves (`check()`) are checked every CHECK_EVERY seconds.
Every fault is shown in `mailban status`, the log and the systemd STATUS line.
Must never: stop because an action or the database fails, stop because a log is missing, or
keep a bad configuration (the last good one stays).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import __version__, checkpoint, config as config_mod, sources as sources_mod
from .actions import registry
from .actions.base import Action, ActionContext
from .control import ConfigRefused, ControlServer
from .core.durations import format_duration
from .core.errors import ConfigError
from .core.decisions import Folded
from .core.pipeline import Pipeline
from .core.records import Ban
from .daemon_cluster import ClusterHooks
from .daemon_commands import ControlCommands
from .localtime import local_to_epoch
from .hostaddrs import labelled
from .metrics import Metrics
from .sources import Source
from .sources.tail import Watcher
from .state import State

log = logging.getLogger("mailban")
BATCH_LINES = 5000
# A burst of too-old lines is logged once; a new burst after this long a quiet spell logs again.
STALE_QUIET = 60.0
HISTORY_DAYS = 180  # `explain` and repeat-offender history older than this is dropped
RETRY_MIN, RETRY_MAX = 1.0, 60.0
CHECK_EVERY = 5.0  # seconds between action self-checks (an nft table deleted behind our back)
WINDOW_KEEP = 7 * 86400  # saved windows idle for longer than this (plus the findtime) are pruned


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


class Daemon(ClusterHooks, ControlCommands):  # fleet hooks: daemon_cluster.py; control commands: daemon_commands.py
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self.config = config_mod.load(config_path)
        self.started = time.time()
        self.stop_requested = False
        self.reload_requested = False
        self.errors: list[str] = []
        self.lines_read: dict[str, int] = {}
        # Per log file, its last line with a program tag: what a `last message repeated N times`
        # line of that file stands for (SyslogParser.previous, which the files share).
        self.previous_line: dict[str, bytes | None] = {}
        self.last_read: dict[str, float] = {}
        # Per jail, the decisions the rate limit held back (Pipeline.decide), summed over reloads.
        self.suppressed: dict[str, int] = {}
        # Per jail, events not counted because their line was older than the find time when
        # read (Pipeline.stale, summed over reloads); when the last burst of them was logged.
        self.stale: dict[str, int] = {}
        self.stale_logged = 0.0
        # Networks never banned, each with why (this host's addresses, mynetworks): for the
        # refusals of a manual ban; set with each pipeline.
        self.protected: tuple[tuple[Any, str], ...] = ()
        # (key type, key) -> action -> what did not work when it acted (list, explain)
        self.action_problems: dict[tuple[str, str], dict[str, str]] = {}
        self.next_prune = 0.0
        self.next_check = 0.0
        # Lines read from each source since it was first followed (persisted with its position).
        self.lines_total: dict[str, int] = {}
        # What the database has not taken yet (it was read-only or full): committed next time.
        self.unsaved_bans: list[Ban] = []
        self.unsaved_positions: dict[str, dict[str, Any]] = {}
        self.unsaved_windows: checkpoint.Touched = set()
        self.state_error: str | None = None
        # The direct-smtp source (mailban/directsmtp), when `direct_smtp = true`.
        self.direct_smtp: Any = None

    # ---- start-up ---------------------------------------------------------------------------
    def run(self) -> int:
        logging.basicConfig(
            level=getattr(logging, self.config.settings.loglevel.upper()),
            format="%(levelname)s %(name)s: %(message)s",
        )
        import sdnotify

        self.notifier = sdnotify.SystemdNotifier()
        settings = self.config.settings
        self.metrics = Metrics(settings.metrics)
        self.state = State(settings.state_dir)
        now = time.time()
        self.state.expire(now)
        active = self.state.active(now)
        self.actions: dict[str, ActionSlot] = {}
        # (key_type, key) -> queue-hold action name, for keys whose new mail is held on arrival
        self.holding: dict[tuple[str, str], str] = {}
        self._build_actions(self.config, active)
        self.pipeline = self._build_pipeline(self.config, active)
        restored = checkpoint.restore(self.pipeline, self.state.windows(), now)
        self._refresh_holding(active)
        self.watcher = Watcher()
        # What the settings ask to read (sources.wanted), by name; the descriptors of those that
        # have one, as registered in the selector.
        self.sources: dict[str, Source] = {}
        self._source_fds: dict[str, int] = {}
        self._open_sources(self.config)
        self._open_direct_smtp(self.config)
        self.selector = selectors.DefaultSelector()
        self.control = ControlServer(settings.socket, settings.socket_mode, self._handlers(),
                                     group=settings.control_group or None)
        self.control.register(self.selector)
        self.selector.register(self.watcher.fileno(), selectors.EVENT_READ, None)
        self._watch_fds()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wakeup)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        self._cluster_start()
        log.info("mailban %s started: config %s, %d jails, %d active bans and %d counting windows restored",
                 __version__, self.config.path, len(self.pipeline.jails), len(active), restored)
        self.notifier.notify("READY=1")
        self._notify_status()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _build_actions(self, cfg: config_mod.Config, active: list[Ban]) -> None:
        wanted = {a for spec in cfg.jails if spec.enabled for a in spec.actions}
        wanted |= {a for spec in cfg.jails if spec.enabled and spec.ban_ips for a in spec.ip_actions}
        if "nft" in cfg.actions:
            wanted.add("nft")  # manual bans go through it
        context = ActionContext(state_dir=cfg.settings.state_dir, queue_ids=self._queue_ids)
        slots: dict[str, ActionSlot] = {}
        for name in sorted(wanted):
            impl = registry.create(cfg.actions[name], context)
            slot = self.actions.get(name) or ActionSlot(impl)
            slot.impl = impl
            slots[name] = slot
            mine = [b for b in active if name in b.actions]
            try:
                impl.start(mine)
                slot.error = slot.idle = None
            except Exception as exc:
                if mine:
                    self._action_failed(slot, name, "start", exc)
                    slot.pending_bans.extend(mine)
                else:
                    # Nothing needs it yet (e.g. queue-hold on a host whose postfix is stopped):
                    # idle, not failing; a decision that needs it starts it and tells.
                    slot.error, slot.idle = None, str(exc)
                    log.info("action %s idle until a decision needs it: %s", name, exc)
        self.actions = slots

    def _refresh_holding(self, active: list[Ban]) -> None:
        self.holding = {
            (b.key_type, b.key): name
            for b in active if b.key_type != "ip"
            for name in b.actions
            if name in self.actions and self.actions[name].impl.holds_mail
        }

    def _queue_ids(self, key_type: str, key: str) -> list[str]:
        """Queue ids the correlation saw submitted by this key (for queue-hold)."""
        pipeline = getattr(self, "pipeline", None)
        if pipeline is None:
            return []
        field_name = {"user": "user", "uid": "uid", "sender": "sender", "ip": "ip"}[key_type]
        want: Any = int(key) if key_type == "uid" else key
        return [qid for (_host, qid), msg in pipeline.correlator.messages.items()
                if getattr(msg, field_name) == want]

    def _hold_followers(self, queued: list[Any]) -> None:
        """Hold messages that a key already acted on keeps submitting (a PHP script goes on)."""
        wanted: dict[tuple[str, str, str], list[str]] = {}
        for event in queued:
            for key_type, value in (("user", event.user), ("uid", event.uid), ("sender", event.sender)):
                if value is None:
                    continue
                name = self.holding.get((key_type, str(value)))
                if name is not None:
                    wanted.setdefault((name, key_type, str(value)), []).append(event.queue_id)
        for (name, key_type, key), qids in wanted.items():
            slot = self.actions.get(name)
            if slot is None:
                continue
            try:
                slot.impl.hold_more(key_type, key, qids)
                self._action_ok(slot, name)
            except Exception as exc:
                self._action_failed(slot, name, "hold", exc)

    def _build_pipeline(self, cfg: config_mod.Config, active: list[Ban]) -> Pipeline:
        pipeline = self._new_pipeline(cfg, active)
        # Repeat offenders: the decisions of the longest repeat window, from the history.
        longest = max((j.spec.repeat_window for j in pipeline.jails), default=0.0)
        if longest:
            for jail_name, _key_type, key, when in self.state.offenses(time.time() - longest):
                jail = pipeline.jail(jail_name)
                if jail is not None:
                    jail.note_offense(key, when)
        return pipeline

    def _new_pipeline(self, cfg: config_mod.Config, active: list[Ban]) -> Pipeline:
        self.protected = tuple(labelled()) if cfg.settings.protect_own else ()
        protected = tuple(net for net, _why in self.protected)
        if protected:
            log.info("never banned: this host's addresses and postfix's mynetworks (%s)",
                     ", ".join(str(n) for n in protected[:12]) + (" ..." if len(protected) > 12 else ""))
        pipeline = cfg.pipeline(time.time(), local_to_epoch, protected)
        for ban in active:
            pipeline.note_ban(ban)
        checkpoint.track(pipeline)  # after the restored bans: their windows are not changes
        return pipeline

    def _open_sources(self, cfg: config_mod.Config) -> None:
        """Follow what the settings ask for (sources.wanted: the journal, or the log files), each
        from its committed position; stop following what they no longer name."""
        positions = self.state.positions()
        for path, saved in positions.items():
            if isinstance(saved, dict) and isinstance(saved.get("lines"), int):
                self.lines_total.setdefault(path, saved["lines"])
        from_end = cfg.settings.read_from == "end"
        wanted = sources_mod.wanted(cfg.settings)
        for name in [n for n in self.sources if n not in {n for _kind, n in wanted}]:
            self._close_source(name)
        for kind, name in wanted:
            if name in self.sources:
                continue
            saved = positions.get(name)
            source = sources_mod.create(kind, name, cfg.settings, saved if isinstance(saved, dict) else None,
                                        from_end)
            self.sources[name] = source
            if source.watch_dir is not None:
                self.watcher.add(source)
            self.lines_read.setdefault(name, 0)
            if saved is None:
                # Where reading starts (the end, by default) is committed at once: a crash before
                # the first batch must not move it to the end of lines written meanwhile.
                self._commit((), {name: {**source.position.to_dict(), "lines": 0}})

    def _close_source(self, name: str) -> None:
        source = self.sources.pop(name)
        if source.watch_dir is not None:
            self.watcher.remove(source)  # closes it
        else:
            source.close()

    # ---- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        watchdog_every = watchdog_usec / 2e6 if watchdog_usec else 0.0
        next_watchdog = next_housekeeping = 0.0
        while not self.stop_requested:
            for key, _mask in self.selector.select(timeout=0.5):
                if key.data is not None:
                    key.data(self.selector)
            if self.reload_requested:
                self.reload_requested = False
                try:
                    self.reload()
                except ValueError:
                    pass  # refused and logged by reload(): the running configuration stays
            for source in self.watcher.wait(0):
                self._drain(source)
            for source in [s for s in self.sources.values() if s.watch_dir is None]:
                self._drain(source)  # no Watcher for it: read at every turn, fileno() wakes us
            if self.direct_smtp is not None:
                self._drain_direct_smtp(self.direct_smtp)
            self._watch_fds()
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + 1.0
                self._housekeeping()
            if watchdog_every and now >= next_watchdog:
                next_watchdog = now + watchdog_every
                self.notifier.notify("WATCHDOG=1")

    def _watch_fds(self) -> None:
        """Keep the selector on each source's current descriptor (the journal's changes when
        journalctl restarts)."""
        fds = {name: source.fileno() for name, source in self.sources.items()}
        for name, old in list(self._source_fds.items()):
            if fds.get(name, -1) == old:
                continue
            try:
                self.selector.unregister(old)
            except (KeyError, ValueError):
                pass
            del self._source_fds[name]
        for name, fd in fds.items():
            if fd >= 0 and name not in self._source_fds:
                self.selector.register(fd, selectors.EVENT_READ, None)
                self._source_fds[name] = fd

    def _drain(self, tail: Source) -> None:
        pipeline = self.pipeline
        while True:
            lines = tail.read_lines(BATCH_LINES)
            if not lines:
                return
            now = time.time()
            pipeline.parser.set_now(now)
            pipeline.parser.previous = self.previous_line.get(tail.path)
            bans: list[Ban] = []
            queued: list[Any] = []
            holding = self.holding
            tally: Tally[tuple[str, str]] = Tally()
            metrics_on = self.metrics.enabled  # no per-event counting for metrics nobody serves
            for line in lines:
                events, new = pipeline.feed(line, now, tail.path)
                if events:
                    if metrics_on:
                        for e in events:
                            tally[(e.kind, e.filter)] += 1
                    if holding:
                        queued.extend(e for e in events if e.kind == "queued" and e.queue_id)
                if new:
                    bans.extend(new)
            self.previous_line[tail.path] = pipeline.parser.previous
            if pipeline.stale:
                self._note_stale(pipeline.stale, tail.path, now)
            self.lines_read[tail.path] = self.lines_read.get(tail.path, 0) + len(lines)
            total = self.lines_total[tail.path] = self.lines_total.get(tail.path, 0) + len(lines)
            self.last_read[tail.path] = now
            self.metrics.batch(tail.path, len(lines), tally, bans)
            folds: list[Folded] = []
            if bans:
                bans, folds = self._decide(bans, now)
                if bans:
                    self._apply(bans)
            if queued:
                self._hold_followers(queued)
            self._commit(bans, {tail.path: {**tail.position.to_dict(), "lines": total}})
            self._lift_folded(folds, now)  # after the commit: the singles may be from this batch
            self._cluster_batch(bans)
            if len(lines) < BATCH_LINES:
                return

    def _open_direct_smtp(self, cfg: config_mod.Config) -> None:
        """Count direct SMTP per uid when the settings ask for it (a reload may turn it on or
        off, or change its ports, users and allow list: the counters stay in the kernel)."""
        from .directsmtp.source import NAME, DirectSmtpSource

        if not cfg.settings.direct_smtp:
            if self.direct_smtp is not None:
                self.direct_smtp.remove()
                self.direct_smtp = None
            return
        if self.direct_smtp is not None:
            self.direct_smtp.reconfigure(cfg.settings)
            return
        saved = self.state.positions().get(NAME)
        self.direct_smtp = DirectSmtpSource(cfg.settings, saved if isinstance(saved, dict) else None)
        if self.direct_smtp.missing_users:
            log.info("direct-smtp: no such MTA users here (skipped): %s", ", ".join(self.direct_smtp.missing_users))

    def _drain_direct_smtp(self, source: Any) -> None:
        """The kernel's direct-SMTP counters (polled once a second by the source) through the
        jails like any event; their position is committed with the decisions they caused."""
        events = source.read_events()
        if not events:
            return
        from .core.syslog import Header

        now = time.time()
        _events, bans = self.pipeline.feed_events(events, Header(now, None, b"direct-smtp", None, 0), now)
        tally: Tally[tuple[str, str]] = Tally((e.kind, e.filter) for e in events)
        self.metrics.batch(source.path, 0, tally, bans)
        folds: list[Folded] = []
        if bans:
            bans, folds = self._decide(bans, now)
            if bans:
                self._apply(bans)
        self._commit(bans, {source.path: source.position.to_dict()})
        self._lift_folded(folds, now)
        self._cluster_batch(bans)

    def _note_stale(self, stale: dict[str, int], path: str, now: float) -> None:
        """Count the events the jails skipped as too old, and say so once per burst: a restored
        backup or a late log must not ban hundreds of addresses for what happened days ago, and
        the admin must not wonder why nothing is counted."""
        for name, count in stale.items():
            self.stale[name] = self.stale.get(name, 0) + count
        if now - self.stale_logged > STALE_QUIET:
            log.warning("not counting lines of %s that were already older than the find time when read "
                        "(a restored backup, a late log or a clock jump?); `mailban status` shows how many, "
                        "`mailban replay` counts them in log time", path)
        self.stale_logged = now
        stale.clear()

    def _lift_folded(self, folds: list[Folded], now: float) -> None:
        """A prefix ban replaces the single-address bans of its jail inside it (Pipeline.decide
        found them): lift those, once the prefix ban is in place."""
        if not folds:
            return
        into = {(f.net.jail, ip): f.net.key for f in folds for ip in f.ips}
        try:
            active = self.state.active(now)
        except Exception:  # the database fails: what it has not taken yet is in unsaved_bans
            active = []
        covered = [b for b in active + [b for b in self.unsaved_bans if b.until > now]
                   if b.key_type == "ip" and (b.jail, b.key) in into]
        self.unsaved_bans = [b for b in self.unsaved_bans if not (b.key_type == "ip" and (b.jail, b.key) in into)]
        for ban in covered:
            self.state.remove("ip", ban.key)
        if covered:
            self._unapply(covered)
            self._record([(now, "folded", b.jail, "ip", b.key, {"into": into[(b.jail, b.key)]}) for b in covered])

    def _commit(self, bans: Iterable[Ban] = (), positions: dict[str, dict[str, Any]] | None = None,
                force: bool = False) -> bool:
        """Commit bans, positions and touched windows in one transaction, with whatever an
        earlier failed commit left; on failure keep it all for the next try (see the header).
        While the database fails, only the once-a-second retry (`force`) tries: a locked
        database makes every try wait BUSY_TIMEOUT, which must not slow reading down."""
        checkpoint.collect(self.pipeline, self.unsaved_windows)  # the windows the jails changed
        self.unsaved_bans.extend(bans)
        if positions:
            self.unsaved_positions.update(positions)
        if not (self.unsaved_bans or self.unsaved_positions or self.unsaved_windows):
            return True
        if self.state_error is not None and not force:
            return False
        upserts, dropped = checkpoint.rows(self.pipeline, self.unsaved_windows)
        try:
            self.state.commit(self.unsaved_bans, self.unsaved_positions, upserts, dropped)
        except Exception as exc:  # sqlite3.Error, OSError: read-only, disk full, I/O error
            if self.state_error is None:
                log.error("cannot write the database %s: %s; detection and actions go on, %d bans "
                          "and the positions wait in memory and are committed when it works again",
                          self.state.path, exc, len(self.unsaved_bans))
            self.state_error = f"cannot write {self.state.path}: {exc}"
            self._notify_status()
            return False
        self.unsaved_bans, self.unsaved_positions = [], {}
        self.unsaved_windows = set()
        if self.state_error is not None:
            log.info("the database %s can be written again: everything kept in memory is committed",
                     self.state.path)
            self.state_error = None
            self._notify_status()
        return True

    def _decide(self, bans: list[Ban], now: float) -> tuple[list[Ban], list[Folded]]:
        """The pipeline's decision stage (rate limit, prefix folds) on new bans: the held-back
        ones are recorded and said, not acted on; returns the bans to act on and the folds."""
        kept, held, folds = self.pipeline.decide(bans)
        for s in held:
            ban = s.ban
            count = self.suppressed[ban.jail] = self.suppressed.get(ban.jail, 0) + 1
            if count == 1 or count % 1000 == 0:
                log.error("jail %s: more than %d decisions in a minute; not acting on %s %s and the "
                          "next ones (%d so far): check the jail and its filters", ban.jail, s.limit,
                          ban.key_type, ban.key, count)
        if held:
            self._record([(now, "suppressed", s.ban.jail, s.ban.key_type, s.ban.key, {"reason": s.reason})
                          for s in held])
            self._notify_status()
        return kept, folds

    def _apply(self, bans: list[Ban]) -> None:
        for ban in bans:
            # An address banned for an account's attack is banned until the account's ban ends,
            # so its duration is what is left of that one, not the jail's bantime.
            log.warning("ban %s %s (jail %s: %d events in %s) for %s via %s", ban.key_type, ban.key,
                        ban.jail, ban.count, format_duration(ban.findtime), format_duration(ban.until - ban.time),
                        ", ".join(ban.actions))
        now = time.time()
        rows: list[Any] = []
        fresh = set(bans)
        for name, slot in self.actions.items():
            mine = [b for b in bans if name in b.actions]
            if not mine:
                continue
            if slot.impl.one_timeout_per_key:
                # One entry per key (an nft element and its timeout): hand it the other bans
                # still active on the same keys too, so that it keeps the longest one and a
                # shorter ban (`mailban ban IP --for 3s` on an address banned for an hour) never
                # cuts a longer one short.
                keys = {(b.key_type, b.key) for b in mine}
                mine += [b for b in self.state.active_on(keys, now) if name in b.actions]
            started = time.monotonic()
            try:
                if slot.idle is not None:
                    slot.impl.start([b for b in self.state.active(now) if name in b.actions and b not in fresh])
                    slot.idle = None
                problems = slot.impl.ban(mine)
                self._action_ok(slot, name)
                # Done, but not in full (sasl-disable: the account is disabled, the postfix
                # reload or the kick failed): said as such in explain, list and status.
                result = f"done, but: {'; '.join(problems)}" if problems else "ok"
                for b in mine:
                    if problems:
                        self.action_problems.setdefault((b.key_type, b.key), {})[name] = result
                    else:
                        self.action_problems.get((b.key_type, b.key), {}).pop(name, None)
            except Exception as exc:
                slot.pending_bans.extend(mine)
                self._action_failed(slot, name, "ban", exc)
                result = f"failed, will retry: {exc}"
            took = round(time.monotonic() - started, 4)
            self.metrics.action(name, took, result == "ok")
            rows.extend((now, "action", b.jail, b.key_type, b.key, {"action": name, "result": result, "seconds": took})
                        for b in mine if b in fresh)
            if slot.impl.holds_mail:
                self.holding.update(((b.key_type, b.key), name) for b in mine if b.key_type != "ip")
        self._record(rows)

    def _record(self, rows: list[Any]) -> None:
        """History rows for `explain`; a full disk must not stop detection (logged, not raised)."""
        try:
            self.state.record_many(rows)
        except Exception as exc:
            log.error("cannot record history: %s", exc)

    def _unapply(self, bans: list[Ban], expiry: bool = False) -> None:
        """Undo bans in their actions. On expiry, actions whose effect expires by itself (nft
        element timeouts, a mail already sent) are left alone."""
        rows: list[Any] = []
        for name, slot in self.actions.items():
            mine = [b for b in bans if name in b.actions]
            if not mine or (expiry and slot.impl.self_expiring):
                continue
            for b in mine:
                self.holding.pop((b.key_type, b.key), None)
            slot.pending_bans = [b for b in slot.pending_bans if (b.key_type, b.key) not in {(m.key_type, m.key) for m in mine}]
            try:
                slot.impl.unban(mine)
                self._action_ok(slot, name)
                result = "undone"
            except Exception as exc:
                slot.pending_unbans.extend(mine)
                self._action_failed(slot, name, "unban", exc)
                result = f"undo failed, will retry: {exc}"
            if slot.impl.undoable:
                keys = {(b.key_type, b.key): b.jail for b in mine}
                rows.extend((time.time(), "action", jail, kt, k, {"action": name, "result": result})
                            for (kt, k), jail in keys.items())
        self._record(rows)

    def _action_failed(self, slot: ActionSlot, name: str, what: str, exc: Exception) -> None:
        if slot.error is None:
            log.error("action %s: %s failed: %s (will retry)", name, what, exc)
        slot.error = f"{what} failed: {exc}"
        slot.retry_at = time.monotonic() + slot.backoff
        slot.backoff = min(slot.backoff * 2, RETRY_MAX)
        self._notify_status()

    def _action_ok(self, slot: ActionSlot, name: str) -> None:
        slot.idle = None
        if slot.error is not None:
            log.info("action %s works again", name)
            slot.error = None
            self._notify_status()
        slot.backoff = RETRY_MIN

    def _update_gauges(self, now: float) -> None:
        if not self.metrics.enabled:
            return
        lag: dict[str, int] = {}
        for name, source in self.sources.items():
            behind = source.backlog()
            if behind is not None:
                lag[name] = behind
        idle = {path: now - self.last_read.get(path, self.started) for path in self.lines_read}
        self.metrics.gauges(self.state.active_per_jail(now), lag, idle)
        if self.direct_smtp is not None:
            self.metrics.direct_smtp(self.direct_smtp.summary())

    def _expire(self, now: float) -> list[Ban]:
        """Prune old history and windows (hourly) and delete the bans whose time is up."""
        try:
            if now >= self.next_prune:
                self.state.prune_history(now - HISTORY_DAYS * 86400)
                longest = max((j.spec.findtime for j in self.pipeline.jails), default=0.0)
                self.state.prune_windows(now - longest - WINDOW_KEEP)
                self.next_prune = now + 3600
            return self.state.expire(now)
        except Exception as exc:  # full or locked: expiry waits (nft elements expire by themselves)
            if self.state_error is None:
                log.error("cannot write the database %s: %s", self.state.path, exc)
                self.state_error = f"cannot write {self.state.path}: {exc}"
                self._notify_status()
            return []

    def _housekeeping(self) -> None:
        now = time.time()
        self._update_gauges(now)
        if self.state_error is not None and not self._commit(force=True):
            expired: list[Ban] = []  # expiry waits for the database
        else:
            expired = self._expire(now)
        if expired:
            log.info("%d bans expired", len(expired))
            self._record([(now, "expire", b.jail, b.key_type, b.key, {}) for b in expired])
            still = {(b.key_type, b.key) for b in self.state.active_on({(b.key_type, b.key) for b in expired}, now)}
            self._unapply([b for b in expired if (b.key_type, b.key) not in still], expiry=True)
            self._notify_status()
        due = self.pipeline.tick(now, now)
        if due:
            due, folds = self._decide(due, now)
            self._apply(due)
            self._commit(due)
            self._lift_folded(folds, now)
            self._cluster_batch(due)
        mono = time.monotonic()
        if mono >= self.next_check:
            self.next_check = mono + CHECK_EVERY
            for name, slot in self.actions.items():
                if slot.error is None and slot.idle is None:
                    try:
                        slot.impl.check()
                    except Exception as exc:
                        self._action_failed(slot, name, "check", exc)
        for name, slot in self.actions.items():
            try:
                slot.impl.tick(now)
            except Exception as exc:
                self._action_failed(slot, name, "tick", exc)
        mono = time.monotonic()
        for name, slot in self.actions.items():
            if (slot.pending_bans or slot.pending_unbans or slot.error) and mono >= slot.retry_at:
                pending = [b for b in slot.pending_bans if b.until > now]
                unbans = slot.pending_unbans
                slot.pending_bans, slot.pending_unbans = [], []
                try:
                    if slot.error:
                        # Rebuild what the action owns from the database (and what it has not
                        # taken yet), then hand it what it still owes.
                        active = self.state.active(now) + [b for b in self.unsaved_bans if b.until > now]
                        slot.impl.start([b for b in active if name in b.actions])
                    if pending:
                        slot.impl.ban(pending)
                    if unbans:
                        slot.impl.unban(unbans)
                    self._action_ok(slot, name)
                except Exception as exc:
                    slot.pending_bans.extend(pending)
                    slot.pending_unbans.extend(unbans)
                    self._action_failed(slot, name, "retry", exc)

    def _notify_status(self) -> None:
        if not hasattr(self, "notifier"):
            return
        try:
            bans = len(self.state.active(time.time())) + len(self.unsaved_bans)
        except Exception:
            bans = len(self.unsaved_bans)
        failing = [n for n, s in self.actions.items() if s.error]
        text = f"{bans} active bans"
        if self.suppressed:
            text += f"; SAFETY VALVE held back {sum(self.suppressed.values())} decisions"
        if failing:
            text += f"; FAILING actions: {', '.join(failing)}"
        if self.state_error:
            text += f"; DATABASE FAILING ({len(self.unsaved_bans)} bans kept in memory): {self.state_error}"
        text += self._cluster_status_text()
        self.notifier.notify(f"STATUS={text}")

    # ---- signals and reload -----------------------------------------------------------------
    def _on_stop(self, signum: int, _frame: Any) -> None:
        self.stop_requested = True

    def _on_reload(self, signum: int, _frame: Any) -> None:
        self.reload_requested = True

    def _drain_wakeup(self, _selector: selectors.BaseSelector) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def reload(self) -> str:
        self.notifier.notify("RELOADING=1")
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.notify("READY=1")
            raise ConfigRefused(f"reload refused, the running configuration stays: {exc}") from None
        active = self.state.active(time.time())
        self._build_actions(new, active)
        old = self.pipeline
        self.pipeline = self._build_pipeline(new, active)
        # Counting goes on across a reload: the correlation, the rate limit's recent decisions
        # and the windows of jails that kept their name and key carry over.
        self.pipeline.correlator = old.correlator
        if old.valve is not None and self.pipeline.valve is not None:
            self.pipeline.valve.recent = old.valve.recent
        for jail in self.pipeline.jails:
            before = old.jail(jail.spec.name)
            if before is not None and before.spec.key == jail.spec.key:
                jail.windows, jail.logins = before.windows, before.logins
        try:
            self.state.keep_windows((j.spec.name, j.spec.key) for j in self.pipeline.jails)
        except Exception as exc:
            log.error("cannot drop the saved windows of removed jails: %s", exc)
        self._refresh_holding(active)
        self._cluster_reloaded(new)
        self.config = new
        self._open_sources(new)
        self._open_direct_smtp(new)
        log.info("configuration reloaded from %s", new.path)
        self.notifier.notify("READY=1")
        self._notify_status()
        return f"reloaded {new.path}"

    def _shutdown(self) -> None:
        log.info("stopping: bans stay in the kernel sets and expire there on time")
        self.notifier.notify("STOPPING=1")
        positions = {name: {**source.position.to_dict(), "lines": self.lines_total.get(name, 0)}
                     for name, source in self.sources.items()}
        for source in self.sources.values():
            if source.watch_dir is None:
                source.close()  # the Watcher closes the others
        if not self._commit([], positions, force=True):
            log.error("stopping with %d bans the database did not take (they stay in the actions); "
                      "lines since the last commit are read again at the next start", len(self.unsaved_bans))
        for slot in self.actions.values():
            try:
                slot.impl.stop()
            except Exception as exc:
                log.warning("action stop failed: %s", exc)
        self.control.close()
        self.watcher.close()
        self._cluster_stop()
        self.state.close()

