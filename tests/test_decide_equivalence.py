"""replay decides exactly what the daemon decides, on the 1M-line bench log, valve and folds included.

The daemon's path: Pipeline.run over batches of 5,000 lines as Daemon._drain reads them (each
line parsed and matched on its own), its Outcome printed by offline.DecisionPrinter. Replay's
path: `run_replay` (lines matched in C batches, merged by time, Pipeline.step per line). Both
print JSON with log time as the clock; the output must be byte-identical. The daemon's one
difference, wall time as the clock (ban times, skipping lines already too old when read), is
by design and covered by tests/test_replay_equivalence.py, which runs the real daemon in a
network namespace on a smaller log.

The configuration is the shipped one with max_bans_per_minute = 5, so that the bench log's
bursts of decisions trip the rate limit, and the prefix-fold scenario of tests/cases is spliced
into the log (its lines restamped), so that a /64 ban folds single bans.
Pure: no namespace, no daemon, no clock. MAILBAN_EQUIVALENCE_LINES shortens the log.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from mailban import config
from mailban.localtime import local_to_epoch
from mailban.offline import DecisionPrinter, run_replay

from .bench_modules import genlog

LINES = int(os.environ.get("MAILBAN_EQUIVALENCE_LINES", "1000000"))
BATCH = 5000  # daemon/loop.py BATCH_LINES
FOLD_CASE = Path(__file__).resolve().parent / "cases" / "prefix-fold" / "input.log"


def _log(path: Path) -> None:
    lines = list(genlog().generate(LINES, seed=1))
    at = 0  # before the bench log's bursts: the valve lets the fold's four bans through at any length
    stamp = lines[at][:15]  # BSD "Nov 24 08:00:00"
    fold = [f"{stamp} {line.split(' ', 1)[1]}" for line in FOLD_CASE.read_text().splitlines()]
    path.write_text("\n".join(lines[:at] + fold + lines[at:]) + "\n")


def test_replay_prints_what_the_daemon_path_decides(tmp_path: Path) -> None:
    log = tmp_path / "bench.log"
    _log(log)
    conf = tmp_path / "mailban.toml"
    conf.write_text("[mailban]\nmax_bans_per_minute = 5\n")
    cfg = config.load(str(conf))
    now = time.time()  # both parsers infer the year of BSD stamps from the same moment

    replayed = io.StringIO()
    assert run_replay([str(log)], cfg, True, replayed) == 0

    pipeline = cfg.pipeline(now, local_to_epoch)
    daemon = io.StringIO()
    printer = DecisionPrinter(pipeline, True, daemon)
    last = 0.0
    with log.open("rb") as f:
        lines = f.read().split(b"\n")[:-1]
    for first in range(0, len(lines), BATCH):
        out = pipeline.run(lines[first:first + BATCH], None, str(log))
        printer.show(out)
    header = pipeline.parser.parse(lines[-1])
    assert header is not None
    last = header.time
    printer.finish(last)

    got, expected = daemon.getvalue(), replayed.getvalue()
    decisions = [json.loads(line)["decision"] for line in expected.splitlines()]
    # What the test is about: the rate limit and a fold happened, and many bans.
    assert decisions.count("suppressed") >= 50 and decisions.count("folded") == 1
    assert decisions.count("ban") >= 1000
    assert got == expected
