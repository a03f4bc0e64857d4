"""Lines per second: `mailban test`, `mailban replay`, fail2ban-regex and sshg-parser, one run.

    python bench/throughput.py [--lines 1000000] [--seed 1] [--format bsd] [--runs 3] [--mta exim]
    python bench/throughput.py --sessions 200000 [--mta exim] ...   # the same traffic, either MTA

Generates the mixed log with bench/genlog.py (reused when it exists with the same parameters),
then times each tool on it as a whole process (wall time, start-up included), best of --runs,
one tool after the other (no two at once on the 2 cores). Prints a table and the ratios.

- mailban test LOG: all shipped filters, summary output.
- mailban replay LOG: the default configuration (four jails), whole pipeline, no action.
- fail2ban-regex -r --print-no-missed LOG 'postfix[mode=aggressive]': Debian's fail2ban with its
  one postfix filter (install: apt-get -o DPkg::Lock::Timeout=600 install -y fail2ban).
- sshg-parser < LOG: SSHGuard's C parser, unpacked from Debian's sshguard package
  (apt-get download sshguard; dpkg -x sshguard_*.deb DIR); pass --sshg DIR/usr/libexec/sshguard/sshg-parser.
Tools that are not installed are reported as missing, not timed.
With --sessions N the log holds N ordinary sessions and the attacks among them (genlog.py
--sessions) instead of a number of lines, so that a postfix and an Exim run time the same host
traffic (Exim writes a message in fewer lines); sessions per second are printed too.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from genlog import count_lines, size_args  # noqa: E402
PY = sys.executable


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}"


def ensure_log(lines: int, seed: int, fmt: str, mta: str = "postfix", sessions: int | None = None) -> Path:
    tag = fmt if mta == "postfix" else f"{mta}-{fmt}"
    size = size_args(lines, sessions)
    path = Path(f"/tmp/mailban-bench-{tag}-{seed}-{lines if sessions is None else f's{sessions}'}.log")
    if not path.exists():
        t = time.perf_counter()
        subprocess.run([PY, str(HERE / "genlog.py"), *size, "--seed", str(seed),
                        "--format", fmt, "--mta", mta, "-o", str(path)], check=True)
        print(f"generated {path} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path


def timed(argv: list[str], runs: int, stdin: Path | None = None) -> tuple[float, str]:
    best = float("inf")
    out = ""
    for _ in range(runs):
        fh = open(stdin, "rb") if stdin else subprocess.DEVNULL
        t = time.perf_counter()
        proc = subprocess.run(argv, stdin=fh, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        elapsed = time.perf_counter() - t
        if stdin:
            fh.close()  # type: ignore[union-attr]
        if proc.returncode != 0:
            raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout.decode(errors='replace')[-2000:]}")
        out = proc.stdout.decode(errors="replace")
        best = min(best, elapsed)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=None,
                    help="instead of --lines: this many ordinary sessions (the same traffic for either MTA)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("bsd", "rfc3339"), default="bsd")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mta", choices=("postfix", "exim"), default="postfix",
                    help="the log's MTA (genlog.py --mta); exim: fail2ban-regex runs its exim filter")
    ap.add_argument("--sshg", default="/tmp/sshg/root/usr/libexec/sshguard/sshg-parser")
    ap.add_argument("--skip-fail2ban", action="store_true")
    args = ap.parse_args()
    log = ensure_log(args.lines, args.seed, args.format, args.mta, args.sessions)
    n = count_lines(log)
    mailban = [PY, "-m", "mailban"]
    results: dict[str, float] = {}

    t, out = timed(mailban + ["test", str(log)], args.runs)
    results["mailban test"] = t
    summary = out.splitlines()[0] if out else ""
    t, out = timed(mailban + ["replay", str(log)], args.runs)
    results["mailban replay"] = t
    decisions = out.strip().splitlines()[-1] if out.strip() else ""
    if not args.skip_fail2ban and shutil.which("fail2ban-regex"):
        f2b_filter = "exim" if args.mta == "exim" else "postfix[mode=aggressive]"
        t, out = timed(["fail2ban-regex", "-r", "--print-no-missed", str(log), f2b_filter], max(1, args.runs - 2))
        results[f"fail2ban-regex {f2b_filter}"] = t
        f2b = next((line for line in out.splitlines() if line.startswith("Lines:")), "")
    else:
        f2b = "fail2ban-regex: not installed (or skipped)"
    if os.access(args.sshg, os.X_OK):
        t, _ = timed([args.sshg], args.runs, stdin=log)
        results["sshg-parser (C)"] = t
    print(f"machine: {machine()}")
    sessions = f", {args.sessions:,} sessions" if args.sessions else ""
    print(f"log: {log} ({n:,} lines{sessions}, {args.format}, seed {args.seed})")
    print(f"mailban test: {summary}")
    print(f"mailban replay: {decisions}")
    print(f"fail2ban-regex: {f2b}")
    print()
    print(f"{'tool':<42} {'wall s':>8} {'lines/s':>12}" + (f" {'sessions/s':>12}" if args.sessions else ""))
    for name, t in results.items():
        print(f"{name:<42} {t:>8.2f} {n / t:>12,.0f}" + (f" {args.sessions / t:>12,.0f}" if args.sessions else ""))
    base = results["mailban test"]
    print()
    for name, t in results.items():
        if name != "mailban test":
            print(f"mailban test is {t / base:.2f}x the speed of {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
