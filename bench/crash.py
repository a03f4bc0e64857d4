"""kill -9 the daemon at random moments while it follows a log under load with rotations.

    python bench/crash.py                      # 20 kills over 60 s at 5,000 lines/s
    python bench/crash.py --kills 5 --seconds 20 --rate 2000 --seed 3

The daemon runs in a network namespace with real nftables (root needed). A writer appends
unique lines at `--rate` lines/s and rotates the log every `--rotate` seconds (rename and
copytruncate alternately, bench/loadgen.py); among the lines are SASL failures of `--banned`
addresses with exactly maxretry (3) failures each and of `--near` addresses with 2, spread over
the whole run so that windows are partially filled at most kills. At `--kills` random moments
the daemon gets SIGKILL and is started again at once. At the end:
- lines: the daemon's persisted line counter (`status` sources[].total) equals the lines written:
  none skipped, none read twice;
- bans: exactly the `--banned` addresses are banned, each once, with count 3 and 3 distinct lines
  (a line counted twice would show as a repeated line, or ban a `--near` address); none of the
  `--near` addresses is banned; no ban is lost;
- kernel: the nft sets hold exactly the database's banned addresses.
Prints the figures and exits 1 if a check fails. tests/test_crash.py runs a short version.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from loadgen import Writer, attack_plan, attacker  # noqa: E402
from tests.netns import Daemon, Link, wait_for, write_config  # noqa: E402

MAXRETRY = 3


def config(directory: Path, log: Path) -> Path:
    path = write_config(directory, [str(log)], maxretry=MAXRETRY, findtime="1h", bantime="1h")
    text = path.read_text().replace("journal = false\n", "journal = false\nmax_bans_per_minute = 1000000\n"
                                    'metrics = ""\n', 1)
    path.write_text(text)
    return path


def total_lines(d: Daemon) -> int:
    return sum(s.get("total", 0) for s in d.status()["sources"])


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def scenario(workdir: Path, kills: int, seconds: float, rate: float, rotate: float, banned: int,
             near: int, seed: int, say: Callable[[str], None] = print, rss_every: float = 0.0) -> dict[str, Any]:
    """Run the scenario; return the figures and the list of failed checks (empty: all good).
    With `rss_every`, the daemon's resident memory is sampled that often (figures["rss"])."""
    rng = random.Random(seed)
    link = Link()
    d: Daemon | None = None
    writer: Writer | None = None
    figures: dict[str, Any] = {"seed": seed, "kills": kills, "seconds": seconds, "rate": rate, "rotate": rotate}
    try:
        link.up()
        log = workdir / "mail.log"
        log.touch()
        d = Daemon(link, config(workdir / "etc", log)).start()
        writer = Writer(log, rate, seconds, rotate, attack_plan(banned, near, MAXRETRY, seed), seed, keep=6).start()
        started = time.monotonic()
        moments = sorted(rng.uniform(0.5, seconds - 0.5) for _ in range(kills))
        restarts: list[float] = []
        samples: list[tuple[float, float, int]] = []  # (seconds, MB, lines read so far)
        if rss_every:
            def sample() -> None:
                while not writer.done.is_set():
                    if d is not None and d.proc is not None:
                        try:
                            samples.append((round(time.monotonic() - started, 1), round(rss_mb(d.proc.pid), 1),
                                            total_lines(d)))
                        except (OSError, ValueError, AssertionError):
                            pass
                    writer.done.wait(rss_every)
            threading.Thread(target=sample, daemon=True).start()
        for at in moments:
            delay = started + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            assert d.proc is not None
            d.proc.kill()
            d.proc.wait(10)
            t0 = time.monotonic()
            d.start()
            restarts.append(time.monotonic() - t0)
        writer.join()
        wrote = writer.written
        waited = wait_for(lambda: total_lines(d) >= wrote, timeout=max(60.0, seconds), every=0.2,
                          what="every line read")
        time.sleep(1.0)  # anything read twice would show now
        read = total_lines(d)
        bans = d.call({"cmd": "list"})["bans"]
        kernel = set(link.nft_elements())
        want = {attacker(i) for i in range(banned)}
        never = {attacker(banned + i) for i in range(near)}
        keys = [b["key"] for b in bans]
        failed: list[str] = []
        if read != wrote:
            failed.append(f"lines: wrote {wrote}, the daemon read {read}")
        if sorted(keys) != sorted(want):
            failed.append(f"bans: missing {sorted(want - set(keys))[:5]}, unexpected "
                          f"{sorted(set(keys) - want)[:5]}, duplicates {len(keys) - len(set(keys))}")
        if set(keys) & never:
            failed.append(f"banned with {MAXRETRY - 1} failures (a line counted twice): {sorted(set(keys) & never)[:5]}")
        bad = [b["key"] for b in bans if b["count"] != MAXRETRY or len(set(b["lines"])) != MAXRETRY]
        if bad:
            failed.append(f"bans whose lines are not {MAXRETRY} distinct ones: {bad[:5]}")
        if kernel != set(keys):
            failed.append(f"kernel differs from the database: only in the kernel {sorted(kernel - set(keys))[:5]}, "
                          f"only in the database {sorted(set(keys) - kernel)[:5]}")
        restored = d.log().count("counting windows restored")
        figures.update(
            written=wrote, read=read, bans=len(keys), kernel=len(kernel), rotations=list(writer.rotations),
            restart_max=round(max(restarts, default=0.0), 2), restart_mean=round(sum(restarts) / max(1, len(restarts)), 2),
            catch_up=round(waited, 2), starts=restored, failed=failed,
        )
        if rss_every:
            samples.append((round(time.monotonic() - started, 1), round(rss_mb(d.proc.pid), 1), read))
            figures["rss"] = samples
        say(json.dumps(figures))
        return figures
    finally:
        if writer is not None:
            writer.done.wait(seconds + 30)
            writer.close()
        if d is not None:
            d.stop()
        link.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=5000.0, help="lines per second")
    ap.add_argument("--rotate", type=float, default=7.0, help="seconds between rotations")
    ap.add_argument("--banned", type=int, default=2000)
    ap.add_argument("--near", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="")
    args = ap.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mailban-crash-", dir=args.workdir or None) as tmp:
        figures = scenario(Path(tmp), args.kills, args.seconds, args.rate, args.rotate, args.banned,
                           args.near, args.seed)
    for problem in figures["failed"]:
        print("FAILED:", problem)
    if not figures["failed"]:
        print(f"OK: {figures['kills']} kills, {figures['written']} lines written and read exactly once, "
              f"{figures['bans']} bans = kernel, rotations {figures['rotations'].count('rename')} rename + "
              f"{figures['rotations'].count('copytruncate')} copytruncate")
    return 1 if figures["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
