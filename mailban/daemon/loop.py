"""The daemon's loop: follow the sources, feed the pipeline, hand what it decides to the others.

Inputs: the configuration; the sources' lines (inotify or a descriptor that wakes the loop);
control requests; signals (HUP reload, TERM/INT stop). Outputs: through its parts, each one
object with one job:
- inputs.Inputs follows the sources the settings name and counts what each gave;
- runner.ActionRunner carries decisions out (retries, backoff, health);
- writer.StateWriter commits bans, positions and changed windows in one SQLite transaction;
- commands.ControlCommands answers the control socket (status, ban, unban, explain, ...);
- fleet.FleetBridge shares decisions and counts with other nodes through Redis;
- policy.PolicyBridge feeds the Postfix policy service (mailban/policy) and carries out what
  its inline jails decide.
One thread, one loop: every iteration reads what the sources have, runs each batch of lines
through the pipeline and its decision stage (the rate limit, prefix folds: core/decisions.py,
the same stage replay runs), applies the resulting bans in one batch per action, then commits
the bans, the source's position (with the number of lines read so far) and the windows the
batch changed together. At start the windows are restored and reading resumes at the committed
positions, so a `kill -9` loses no line, counts none twice, and keeps partially counted windows.
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
from typing import Any

from .. import __version__, checkpoint, config as config_mod
from ..control import ConfigRefused, ControlServer
from ..core.decisions import Folded, Outcome, Suppressed
from ..core.errors import ConfigError
from ..core.pipeline import Pipeline, count_events
from ..core.records import Ban
from ..core.syslog import Header
from ..hostaddrs import labelled
from ..localtime import local_to_epoch
from ..metrics import Metrics
from ..sources import Source
from ..state import State
from .commands import ControlCommands
from .fleet import FleetBridge
from .inputs import Inputs
from .policy import PolicyBridge
from .runner import ActionRunner
from .writer import StateWriter

log = logging.getLogger("mailban")
BATCH_LINES = 5000
HOUSEKEEPING_EVERY = 1.0  # seconds: expiry, due decisions, action retries, database retry


class Daemon:
    def __init__(self, config_path: str | None) -> None:
        """Load the configuration (ConfigError when it is refused), then set everything up:
        the database, the actions with the bans they own, the pipeline with its restored
        windows, the sources at their committed positions, the control socket, the signals."""
        self.config_path = config_path
        self.config = config_mod.load(config_path)
        settings = self.config.settings
        logging.basicConfig(level=getattr(logging, settings.loglevel.upper()),
                            format="%(levelname)s %(name)s: %(message)s")
        import sdnotify

        self.notifier = sdnotify.SystemdNotifier()
        self.started = time.time()
        self.stop_requested = False
        self.reload_requested = False
        self.errors: list[str] = []
        # Per jail, the decisions the rate limit held back (Pipeline.decide_into), summed over reloads.
        self.suppressed: dict[str, int] = {}
        # Networks never banned, each with why (this host's addresses, mynetworks): for the
        # refusals of a manual ban; set with each pipeline.
        self.protected: tuple[tuple[Any, str], ...] = ()
        # When a decision may fall due with time alone (Outcome.wake_at; None: none pending).
        self.wake_at: float | None = None

        self.metrics = Metrics(settings.metrics)
        self.writer = StateWriter(State(settings.state_dir), self.notify_status)
        now = time.time()
        self.writer.state.expire(now)
        active = self.writer.state.active(now)
        self.policy = PolicyBridge(self)  # listens in run()
        self.runner = ActionRunner(self.writer, self.metrics, self.notify_status, self._queue_ids, self.policy)
        self.fleet = FleetBridge(self)  # connects in run()
        self.runner.build(self.config, active)
        self.pipeline = self._build_pipeline(self.config, active)
        saved = self.writer.state.windows()
        self.restored = checkpoint.restore(self.pipeline.jails, saved, now) + self.policy.restore(active, saved, now)
        self.wake_at = self.pipeline.wake_at()
        self.active_at_start = len(active)

        self.selector = selectors.DefaultSelector()
        self.inputs = Inputs(self.selector)
        self.inputs.follow(self.config, self.writer.state.positions(), self._commit_start)
        self.inputs.follow_direct_smtp(self.config, self.writer.state.positions())
        self.commands = ControlCommands(self)
        self.control = ControlServer(settings.socket, settings.socket_mode, self.commands.handlers(),
                                     group=settings.control_group or None)
        self.control.register(self.selector)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wakeup)

    # ---- start-up ---------------------------------------------------------------------------
    def run(self) -> int:
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        # The policy service forks first: a child forked while the fleet's threads run could
        # inherit a lock one of them holds.
        self.policy.start(self.writer.active(time.time()))
        self.fleet.start()
        log.info("mailban %s started: config %s, %d jails, %d active bans and %d counting windows restored",
                 __version__, self.config.path, len(self.pipeline.jails), self.active_at_start, self.restored)
        self.notifier.notify("READY=1")
        self.notify_status()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _queue_ids(self, key_type: str, key: str) -> list[str]:
        """Queue ids the correlation saw submitted by this key (for queue-hold)."""
        return self.pipeline.correlator.queue_ids(key_type, key)

    def _build_pipeline(self, cfg: config_mod.Config, active: list[Ban]) -> Pipeline:
        self.protected = tuple(labelled()) if cfg.settings.protect_own else ()
        protected = tuple(net for net, _why in self.protected)
        if protected:
            log.info("never banned: this host's addresses and postfix's mynetworks (%s)",
                     ", ".join(str(n) for n in protected[:12]) + (" ..." if len(protected) > 12 else ""))
        pipeline = cfg.pipeline(time.time(), local_to_epoch, protected)
        for ban in active:
            pipeline.note_ban(ban)
        checkpoint.track(pipeline.jails)  # after the restored bans: their windows are not changes
        # Repeat offenders: the decisions of the longest repeat window, from the history.
        longest = max((j.spec.repeat_window for j in pipeline.jails), default=0.0)
        if longest:
            for jail_name, _key_type, key, when in self.writer.state.offenses(time.time() - longest):
                jail = pipeline.jail(jail_name)
                if jail is not None:
                    jail.note_offense(key, when)
        return pipeline

    def _commit_start(self, positions: dict[str, dict[str, Any]]) -> None:
        self.writer.commit(self.pipeline, (), positions)

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
            for source in self.inputs.ready():
                self._drain(source)
            if self.inputs.direct_smtp is not None:
                self._drain_direct_smtp()
            self.inputs.watch_fds()
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_EVERY
                self._housekeeping()
            if watchdog_every and now >= next_watchdog:
                next_watchdog = now + watchdog_every
                self.notifier.notify("WATCHDOG=1")

    def _drain(self, tail: Source) -> None:
        pipeline, inputs = self.pipeline, self.inputs
        while True:
            lines = tail.read_lines(BATCH_LINES)
            if not lines:
                return
            now = time.time()
            pipeline.parser.set_now(now)
            pipeline.parser.previous = inputs.previous_line.get(tail.path)
            # Per (kind, filter), the events read, for the metrics (not counted when off).
            tally: dict[tuple[str, str], int] | None = {} if self.metrics.enabled else None
            out = pipeline.run(lines, now, tail.path, tally)
            inputs.previous_line[tail.path] = pipeline.parser.previous
            if pipeline.stale:
                inputs.note_stale(pipeline.stale, tail.path, now)
            total = inputs.read(tail.path, len(lines), now)
            bans = self.execute(out, now, {tail.path: {**tail.position.to_dict(), "lines": total}})
            if self.metrics.enabled:
                self.metrics.batch(tail.path, len(lines), tally, bans + [s.ban for s in out.suppressed])
            self.fleet.batch(bans)
            if len(lines) < BATCH_LINES:
                return

    def _drain_direct_smtp(self) -> None:
        """The kernel's direct-SMTP counters (polled once a second by the source) through the
        pipeline like a line's events; their position is committed with what they caused."""
        source = self.inputs.direct_smtp
        assert source is not None
        events = source.read_events()
        if not events:
            return
        now = time.time()
        out = Outcome()
        self.pipeline.step(events, Header(now, None, b"direct-smtp", None, 0), now, out)
        out.wake_at = self.pipeline.wake_at()
        bans = self.execute(out, now, {source.path: source.position.to_dict()})
        if self.metrics.enabled:
            tally: dict[tuple[str, str], int] = {}
            count_events(events, tally)
            self.metrics.batch(source.path, 0, tally, bans)
        self.fleet.batch(bans)

    def decide(self, bans: list[Ban], now: float) -> list[Ban]:
        """Bans decided outside a batch of lines (fell due with time, fleet-wide crossings)
        through the pipeline's decision stage, then carried out; returns the bans acted on."""
        out = Outcome(wake_at=self.pipeline.wake_at())
        self.pipeline.decide_into(out, bans)
        return self.execute(out, now)

    def execute(self, out: Outcome, now: float, positions: dict[str, dict[str, Any]] | None = None) -> list[Ban]:
        """Carry out what the pipeline asks for: the held-back decisions said and recorded, the
        bans through the actions, the messages of held keys held, one commit with the
        positions, then the single bans a prefix ban replaced lifted (after the commit: they
        may be from this batch). Returns the bans acted on."""
        bans: list[Ban] = []
        if out.commands:
            bans = out.bans
            suppressed, holds = out.suppressed, out.holds
            if suppressed:
                self._held_back(suppressed, now)
            if bans:
                self.runner.apply(bans)
            if holds:
                self.runner.hold(holds)
        self.writer.commit(self.pipeline, bans, positions)
        if out.commands:
            self._lift_folded(out.folds, now)
        self.wake_at = out.wake_at
        return bans

    def _held_back(self, held: list[Suppressed], now: float) -> None:
        """The decisions the rate limit held back are recorded and said, not acted on."""
        for s in held:
            ban = s.ban
            count = self.suppressed[ban.jail] = self.suppressed.get(ban.jail, 0) + 1
            if count == 1 or count % 1000 == 0:
                log.error("jail %s: more than %d decisions in a minute; not acting on %s %s and the "
                          "next ones (%d so far): check the jail and its filters", ban.jail, s.limit,
                          ban.key_type, ban.key, count)
        self.writer.record([(now, "suppressed", s.ban.jail, s.ban.key_type, s.ban.key, {"reason": s.reason})
                            for s in held])
        self.notify_status()

    def _lift_folded(self, folds: list[Folded], now: float) -> None:
        """A prefix ban replaces the single-address bans of its jail inside it (Pipeline.decide_into
        found them): lift those, once the prefix ban is in place."""
        covered = self.writer.take_folded(folds, now)
        if covered:
            self.runner.unapply(covered)

    # ---- once a second ----------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = time.time()
        self._update_gauges(now)
        writer = self.writer
        if writer.error is not None and not writer.commit(self.pipeline, force=True):
            expired: list[Ban] = []  # expiry waits for the database
        else:
            longest = max((j.spec.findtime for j in [*self.pipeline.jails, *self.policy.jails()]), default=0.0)
            expired = writer.expire(now, longest)
        if expired:
            log.info("%d bans expired", len(expired))
            writer.record([(now, "expire", b.jail, b.key_type, b.key, {}) for b in expired])
            still = {(b.key_type, b.key) for b in writer.state.active_on({(b.key_type, b.key) for b in expired}, now)}
            self.runner.unapply([b for b in expired if (b.key_type, b.key) not in still], expiry=True)
            self.policy.refresh()
            self.notify_status()
        if self.wake_at is not None and now >= self.wake_at:
            self.fleet.batch(self.decide(self.pipeline.tick(now, now), now))
        self.runner.housekeeping(now)
        self.policy.housekeeping()

    def _update_gauges(self, now: float) -> None:
        if not self.metrics.enabled:
            return
        inputs = self.inputs
        idle = {path: now - inputs.last_read.get(path, self.started) for path in inputs.lines_read}
        self.metrics.gauges(self.writer.state.active_per_jail(now), inputs.backlog(), idle)
        if inputs.direct_smtp is not None:
            self.metrics.direct_smtp(inputs.direct_smtp.summary())

    def notify_status(self) -> None:
        """The systemd STATUS line: bans in force and every fault, in a word each."""
        writer = self.writer
        try:
            bans = len(writer.state.active(time.time())) + len(writer.unsaved_bans)
        except Exception:
            bans = len(writer.unsaved_bans)
        text = f"{bans} active bans"
        if self.suppressed:
            text += f"; SAFETY VALVE held back {sum(self.suppressed.values())} decisions"
        failing = self.runner.failing()
        if failing:
            text += f"; FAILING actions: {', '.join(failing)}"
        if writer.error:
            text += f"; DATABASE FAILING ({len(writer.unsaved_bans)} bans kept in memory): {writer.error}"
        text += self.fleet.status_text()
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
        active = self.writer.state.active(time.time())
        self.runner.build(new, active)
        old = self.pipeline
        self.pipeline = self._build_pipeline(new, active)
        self.pipeline.take_over(old)  # counting goes on across a reload
        try:
            self.writer.state.keep_windows([*((j.spec.name, j.spec.key) for j in self.pipeline.jails),
                                            *((s.name, s.key) for s in new.jails if s.enabled and s.inline)])
        except Exception as exc:
            log.error("cannot drop the saved windows of removed jails: %s", exc)
        self.wake_at = self.pipeline.wake_at()
        self.fleet.reloaded(new)
        self.config = new
        self.policy.reloaded(new)
        self.inputs.follow(new, self.writer.state.positions(), self._commit_start)
        self.inputs.follow_direct_smtp(new, self.writer.state.positions())
        log.info("configuration reloaded from %s", new.path)
        self.notifier.notify("READY=1")
        self.notify_status()
        return f"reloaded {new.path}"

    def _shutdown(self) -> None:
        log.info("stopping: bans stay in the kernel sets and expire there on time")
        self.policy.stop()  # postfix's default action (DUNNO) answers meanwhile
        self.notifier.notify("STOPPING=1")
        positions = self.inputs.close()
        if not self.writer.commit(self.pipeline, [], positions, force=True):
            log.error("stopping with %d bans the database did not take (they stay in the actions); "
                      "lines since the last commit are read again at the next start", len(self.writer.unsaved_bans))
        self.runner.stop()
        self.control.close()
        self.fleet.stop()
        self.writer.state.close()
