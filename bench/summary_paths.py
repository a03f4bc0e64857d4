"""Does `mailban test`'s summary loop pay for being a second C loop? (issue 15)

    python bench/summary_paths.py LOG [--runs 3]          best wall time of each path
    python bench/summary_paths.py LOG --only tally|events  one path, e.g. under
        valgrind --tool=callgrind python bench/summary_paths.py LOG --only tally

One core, the same log, the default configuration:
- tally:  offline.scan.tally_lines, what each worker of the summary runs on its range
          (_speedups.tally: header cut, rule selection, a 3-field tally per match);
- events: the pipeline's own path as replay runs it: _speedups.match_lines building Events,
          queue-id correlation (_speedups.correlate), and counting per rule and address in
          Python, which is what the summary would be without its own loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailban import config  # noqa: E402
from mailban.core.filters import TallySet  # noqa: E402
from mailban.localtime import local_to_epoch  # noqa: E402
from mailban.offline.run import ReadCount, file_events  # noqa: E402
from mailban.offline.scan import tally_lines  # noqa: E402
from mailban.sources.tail import iter_file_lines  # noqa: E402


def by_tally(path: str, cfg: config.Config, now: float) -> int:
    return tally_lines(iter_file_lines(path), TallySet(list(cfg.filters)), now)[2]


def by_events(path: str, cfg: config.Config, now: float) -> int:
    pipeline = cfg.pipeline(now, local_to_epoch)
    per_rule: dict[tuple[str, str, str], int] = {}
    per_ip: dict[str, int] = {}
    matched = 0
    for _t, _n, _l, header, events in file_events(path, pipeline.parser, pipeline.filters, ReadCount(), False, None):
        matched += 1
        for e in pipeline.correlated(events, header):
            key = (e.filter, e.rule, e.kind)
            per_rule[key] = per_rule.get(key, 0) + 1
            if e.ip:
                per_ip[e.ip] = per_ip.get(e.ip, 0) + 1
    return matched


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=("tally", "events"))
    args = ap.parse_args()
    cfg = config.load(None)
    now = time.time()
    paths = {"tally": by_tally, "events": by_events}
    if args.only:
        paths[args.only](args.log, cfg, now)
        return 0
    for name, fn in paths.items():
        best = float("inf")
        for _ in range(args.runs):
            started = time.perf_counter()
            matched = fn(args.log, cfg, now)
            best = min(best, time.perf_counter() - started)
        print(f"{name:7} {best:7.2f} s  ({matched} lines matched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
