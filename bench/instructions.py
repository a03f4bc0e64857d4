"""Instructions per line: `mailban test` and `mailban replay` on the postfix and the Exim host's log.

    python bench/instructions.py [--lines 100000] [--seed 1] [--commands test,replay] [--keep DIR]
    python bench/instructions.py --sessions 20000 [...]

Wall clock on a shared 2-CPU machine varies by 2-4x from run to run; instruction counts do not.
This runs each command under callgrind (`valgrind --tool=callgrind`, whole process, one job,
PYTHONHASHSEED=0) on an empty log (start-up) and on genlog.py's log of each MTA, and prints the
instructions per line with start-up subtracted, and the Exim/postfix ratio (issue 16's figure:
the Exim host's log within 10% of the postfix host's). With --keep DIR the callgrind.out files
stay there for `callgrind_annotate`. With --sessions N each log holds the same host traffic
instead of the same number of lines (genlog.py --sessions: N ordinary sessions, messages in and
out, IMAP logins, noise, and the attacks among them; Exim writes a message in about 3 lines where
postfix writes 7 to 9, so its log is shorter): it prints, beside the per-line figures, the
instructions for the whole log and the Exim/postfix ratio of those, the cost of the same
traffic. Needs valgrind (apt-get install valgrind); about 10 minutes
for the default 100,000 lines.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from genlog import count_lines, size_args  # noqa: E402
PY = sys.executable
MTAS = ("postfix", "exim")


def log_for(mta: str, lines: int, seed: int, where: Path, sessions: int | None = None) -> Path:
    size = size_args(lines, sessions)
    path = where / f"{mta}-{seed}-{size[0][2]}{size[1]}.log"
    if not path.exists():
        subprocess.run([PY, str(HERE / "genlog.py"), *size, "--seed", str(seed),
                        "--format", "bsd", "--mta", mta, "-o", str(path)], check=True)
    return path


def instructions(command: str, log: Path, out: Path) -> int:
    """Instructions (Ir) of `mailban COMMAND LOG` as one whole process under callgrind."""
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            PY, "-m", "mailban", command, str(log)]
    if command == "test":
        argv += ["--jobs", "1"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind gave no count for {command} {log}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=None,
                    help="instead of --lines: logs of the same traffic (this many ordinary sessions)")
    ap.add_argument("--commands", default="test,replay")
    ap.add_argument("--keep", type=Path, help="keep the logs and callgrind.out files here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailban-instructions-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        empty = where / "empty.log"
        empty.write_bytes(b"")
        logs = {mta: log_for(mta, args.lines, args.seed, where, args.sessions) for mta in MTAS}
        lines = {mta: count_lines(logs[mta]) for mta in MTAS}
        if args.sessions is None:
            print(f"{args.lines:,} lines, seed {args.seed}; instructions per line, start-up subtracted")
        else:
            print(f"{args.sessions:,} sessions, seed {args.seed}: postfix {lines['postfix']:,} lines, "
                  f"Exim {lines['exim']:,}; instructions start-up subtracted")
        for command in args.commands.split(","):
            start = instructions(command, empty, where / f"callgrind.{command}.empty")
            per, work = {}, {}
            for mta in MTAS:
                total = instructions(command, logs[mta], where / f"callgrind.{command}.{mta}")
                work[mta] = total - start
                per[mta] = work[mta] / lines[mta]
                print(f"  {command:6} {mta:7} {total / 1e9:7.3f} G whole, {per[mta]:9,.0f} a line", flush=True)
            print(f"  {command:6} start-up {start / 1e9:.3f} G; Exim/postfix {per['exim'] / per['postfix']:.2f}x a line",
                  flush=True)
            if args.sessions is not None:
                print(f"  {command:6} the same traffic: postfix {work['postfix'] / 1e9:.3f} G, "
                      f"Exim {work['exim'] / 1e9:.3f} G; Exim/postfix {work['exim'] / work['postfix']:.2f}x",
                      flush=True)


if __name__ == "__main__":
    main()
