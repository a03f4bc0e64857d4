"""core/needs.py: the rules whose events nothing needs build none in the pipeline, and nothing the
pipeline decides, prints or counts changes: replay's decisions, the daemon path's decisions and
metrics, in C and in Python, the same with and without quiet rules."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from mailban import config
from mailban.core.decisions import Outcome
from mailban.core.filters import FilterSet
from mailban.core.needs import quiet_rules
from mailban.core.records import Event
from mailban.core.syslog import Header
from mailban.localtime import local_to_epoch
from mailban.offline import DecisionPrinter, run_replay
from mailban.speedups import speedups

from .bench_modules import genlog

SHIPPED_QUIET = {("exim-queue", "bounced"), ("exim-queue", "cutthrough"), ("exim-queue", "deferred"),
                 ("exim-queue", "delivered"), ("exim-queue", "delivered-more"), ("postfix-queue", "delivery"),
                 ("postfix-queue", "expired"), ("sendmail-queue", "bounced"), ("sendmail-queue", "deferred"),
                 ("sendmail-queue", "sent")}


def _config(tmp_path: Path, text: str = "") -> config.Config:
    conf = tmp_path / "mailban.toml"
    conf.write_text("[mailban]\n" + text)
    return config.load(str(conf))


def test_the_shipped_jails_need_no_delivery_events(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert quiet_rules(cfg.filters, cfg.jails) == SHIPPED_QUIET
    assert cfg.pipeline(time.time(), local_to_epoch).filters.quiet == SHIPPED_QUIET


def test_a_jail_on_bounces_needs_the_rules_that_can_bounce(tmp_path: Path) -> None:
    cfg = _config(tmp_path, '[jail.bounces]\nkinds = ["delivery"]\nstatuses = ["bounced"]\nkey = "user"\n')
    quiet = quiet_rules(cfg.filters, cfg.jails)
    assert ("exim-queue", "delivered") in quiet and ("sendmail-queue", "sent") in quiet
    # a fixed status of bounced, and postfix's <STATUS> (any status)
    assert ("exim-queue", "bounced") not in quiet and ("postfix-queue", "delivery") not in quiet
    off = _config(tmp_path, '[jail.bounces]\nkinds = ["delivery"]\nstatuses = ["bounced"]\nkey = "user"\n'
                            "enabled = false\n")
    assert quiet_rules(off.filters, off.jails) == SHIPPED_QUIET


def test_a_ban_ips_jail_on_deliveries_needs_them_all(tmp_path: Path) -> None:
    # its offer() ticks the probation unless the line is stale, which Pipeline.quiet cannot know
    cfg = _config(tmp_path, '[jail.account-guess]\nkinds = ["auth-failure", "delivery"]\nstatuses = ["bounced"]\n')
    assert not any(f == "exim-queue" for f, _ in quiet_rules(cfg.filters, cfg.jails))


def _exim_log(path: Path, lines: int) -> None:
    path.write_text("\n".join(genlog().generate(lines, seed=1, fmt="bsd", mta="exim")) + "\n")


@pytest.mark.parametrize("no_speedups", [False, True])
def test_replay_and_the_daemon_path_decide_and_count_the_same_without_quiet_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_speedups: bool) -> None:
    if no_speedups:
        monkeypatch.setenv("MAILBAN_NO_SPEEDUPS", "1")
    log = tmp_path / "exim.log"
    _exim_log(log, 30_000)
    cfg = _config(tmp_path, "max_bans_per_minute = 5\n")
    outputs, tallies = [], []
    for quiet in (True, False):
        if not quiet:
            monkeypatch.setattr(config, "quiet_rules", lambda filters, jails: frozenset())
        replayed = io.StringIO()
        assert run_replay([str(log)], cfg, True, replayed) == 0
        pipeline = cfg.pipeline(time.time(), local_to_epoch)
        assert bool(pipeline.filters.quiet) is quiet
        daemon = io.StringIO()
        printer = DecisionPrinter(pipeline, True, daemon)
        tally: dict[tuple[str, str], int] = {}
        lines = log.read_bytes().split(b"\n")[:-1]
        for at in range(0, len(lines), 5000):
            printer.show(pipeline.run(lines[at:at + 5000], None, str(log), tally))
        outputs.append((replayed.getvalue(), daemon.getvalue(), dict(pipeline.stale)))
        tallies.append(tally)
    assert outputs[0] == outputs[1]
    assert outputs[0][0].count('"decision": "ban"') > 10
    assert tallies[0] == tallies[1] and tallies[0][("delivery", "exim-queue")] > 5_000


def test_a_quiet_line_lets_time_pass_for_a_probation_as_its_event_did(tmp_path: Path) -> None:
    # account-guess (ban_ips) holds an address on probation; a successful delivery's line after
    # its deadline bans it, at that line's time, whether the delivery is an Event or quiet
    cfg = _config(tmp_path)
    outs = []
    for quiet in (False, True):
        pipeline = cfg.pipeline(time.time(), local_to_epoch)
        jail = pipeline.jail("account-guess")
        assert jail is not None
        jail.banned["victim@example.test"] = 5000.0
        jail.probation["192.0.2.7"] = (1000.0, "victim@example.test", "a line")
        jail.next_due = 1000.0
        out = Outcome()
        if quiet:
            pipeline.quiet(1200.0, None, out)
        else:
            delivery = Event.make((1200.0, "delivery", "exim-queue", "delivered", None, None, None, None,
                                   "1rKx2p-0004Ab-1F", None, "sent", "x", 1, "line", 1))
            pipeline.step([delivery], Header(1200.0, b"mx", b"exim", None, 0), None, out)
        outs.append(out.commands)
    assert outs[0] == outs[1] and len(outs[0]) == 1 and outs[0][0].key == "192.0.2.7"


def test_the_c_and_python_matchers_give_the_same_quiet_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = speedups()
    if fast is None:
        pytest.skip("the C module is not built")
    from mailban.core.syslog import SyslogParser
    from mailban.offline.run import ReadCount, file_events

    log = tmp_path / "exim.log"
    _exim_log(log, 10_000)
    cfg = _config(tmp_path)
    quiet = quiet_rules(cfg.filters, cfg.jails)
    got = []
    for c in (True, False):
        if not c:
            monkeypatch.setenv("MAILBAN_NO_SPEEDUPS", "1")
        parser = SyslogParser(1.8e9, local_to_epoch, speedups())
        got.append(list(file_events(str(log), parser, FilterSet(list(cfg.filters), quiet), ReadCount(), False, None)))
    monkeypatch.delenv("MAILBAN_NO_SPEEDUPS")
    assert got[0] == got[1]
    assert sum(1 for item in got[0] if item[4] is None) > 2_000
    counts: dict[tuple[str, str], int] = {}
    fast.match_lines(log.read_bytes().split(b"\n")[:-1], 0,
                     (*FilterSet(list(cfg.filters), quiet).scan_context(SyslogParser(1.8e9, local_to_epoch, fast)),
                      Header), "x", False, [], counts)
    assert counts[("delivery", "exim-queue")] > 2_000
