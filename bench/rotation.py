"""Rotation under load: 50,000 lines/s for N minutes, a rotation every minute, nothing lost.

    python bench/rotation.py                    # 10 minutes at 50,000 lines/s
    python bench/rotation.py --minutes 2 --rate 20000 --rotate 30

The daemon follows the log in a network namespace with real nftables (root needed), as in
bench/crash.py but without kills: a writer appends `--rate` unique lines per second and rotates
the log every `--rotate` seconds, rename and copytruncate alternately (bench/loadgen.py). Checked
at the end: the daemon's persisted line counter (`status` sources[].total) equals the lines
written (zero lost, zero read twice), exactly the planned addresses are banned (3 failures each,
none of the 2-failure ones), kernel sets = database. The daemon's resident memory (VmRSS) is
sampled every `--sample` seconds and printed with the lines read so far, to show it flat.
tests/test_rotation_load.py runs a 20-second version.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from crash import scenario  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=50_000.0, help="lines per second")
    ap.add_argument("--rotate", type=float, default=60.0, help="seconds between rotations")
    ap.add_argument("--banned", type=int, default=5000)
    ap.add_argument("--near", type=int, default=5000)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mailban-rotation-", dir=args.workdir or None) as tmp:
        figures = scenario(Path(tmp), 0, args.minutes * 60, args.rate, args.rotate, args.banned, args.near,
                           args.seed, say=lambda _s: None, rss_every=args.sample)
    rss = figures.pop("rss", [])
    print(json.dumps(figures))
    for t, mb, lines in rss:
        print(f"t={t:7.1f}s  rss={mb:6.1f} MB  lines read={lines}")
    if rss:
        steady = [mb for t, mb, _ in rss if t >= min(60.0, args.minutes * 30)]
        if steady:
            print(f"RSS after warm-up: min {min(steady):.1f} MB, max {max(steady):.1f} MB")
    for problem in figures["failed"]:
        print("FAILED:", problem)
    if not figures["failed"]:
        print(f"OK: {figures['written']} lines written, {figures['read']} read (0 lost, 0 twice), "
              f"{figures['bans']} bans = kernel, rotations {figures['rotations']}")
    return 1 if figures["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
