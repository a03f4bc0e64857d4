"""Daemon latency: failure line appended -> address in the kernel's nft set, under load (root).

    python bench/latency.py                        # 1,000 bans at 20,000 lines/s of traffic
    python bench/latency.py --bans 100 --rate 0    # quick, no background load

Builds the namespaces of tests/netns.py (Link), starts `mailban run` in the server namespace on
a config from tests/netns.write_config (one jail counting auth-failure events, maxretry 1, so one
failure line is one ban) and follows a log in a temporary directory. A writer thread appends
ordinary traffic to the log at `--rate` lines/s (bench/genlog.py lines, with every line that a
filter turns into an auth-failure taken out, so the background bans nothing), in chunks every
5 ms. A watcher process inside the server namespace does the measuring: for each ban it stamps
CLOCK_MONOTONIC, appends one SASL failure line for a new address (IPv4 from 198.51.100.0/24,
IPv6 from fd42:6d62::/64), then asks libnftables in-process (`get element`) until the address
is in the set, and stamps again. No process start-up is timed. Prints p50/p90/p99/max.
Removes the daemon, the namespaces and the nft table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.netns import Daemon, Link, append, write_config  # noqa: E402

WATCHER = r"""
import json, os, sys, time
from nftables import Nftables
log, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
nft = Nftables()
def addr(i):
    if i % 4 == 0 and i // 4 < 230:
        return "198.51.100.%d" % (10 + i // 4)
    return "fd42:6d62::1:%x" % i
out = []
for i in range(n):
    ip = addr(i)
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime())
    line = ("%s mail postfix/smtpd[4242]: warning: unknown[%s]: SASL PLAIN authentication failed: "
            "(reason unavailable), sasl_username=bench%d@example.test\n" % (stamp, ip, i)).encode()
    cmd = "get element inet mailban %s { %s }" % ("banned6" if ":" in ip else "banned4", ip)
    t0 = time.monotonic()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.write(fd, line)
    os.close(fd)
    while True:
        rc, _o, _e = nft.cmd(cmd)
        if rc == 0:
            break
        if time.monotonic() - t0 > 10:
            print(json.dumps({"timeout": ip}), flush=True)
            sys.exit(1)
        time.sleep(0.0001)
    out.append(time.monotonic() - t0)
    time.sleep(pause)
print(json.dumps({"latencies": out}), flush=True)
"""


def background_lines(count: int, seed: int) -> list[bytes]:
    """genlog.py traffic without the lines the daemon's filters call an auth failure."""
    import genlog

    from mailban import config
    from mailban.core.filters import FilterSet
    from mailban.core.syslog import SyslogParser
    from mailban.localtime import local_to_epoch

    fset = FilterSet(config.load_filters(Path("/nonexistent"), None))
    parser = SyslogParser(time.time(), local_to_epoch)
    kept = []
    for text in genlog.generate(count, seed=seed):
        line = (text + "\n").encode()
        header = parser.parse(line)
        if header is not None and any(e.kind == "auth-failure" for e in fset.match(line, header)):
            continue
        kept.append(line)
    return kept


class Load(threading.Thread):
    """Appends `lines` round-robin to `log` at `rate` lines/s, a chunk every 5 ms."""

    def __init__(self, log: Path, lines: list[bytes], rate: float) -> None:
        super().__init__(daemon=True)
        self.log, self.lines, self.rate = log, lines, rate
        self.stop = threading.Event()
        self.written = 0

    def run(self) -> None:
        if self.rate <= 0:
            return
        start = time.monotonic()
        pos = 0
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND)
        try:
            while not self.stop.is_set():
                due = int((time.monotonic() - start) * self.rate) - self.written
                if due > 0:
                    chunk = self.lines[pos:pos + due]
                    if len(chunk) < due:
                        chunk += self.lines[:due - len(chunk)]
                    pos = (pos + due) % len(self.lines)
                    os.write(fd, b"".join(chunk))
                    self.written += due
                time.sleep(0.005)
        finally:
            os.close(fd)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bans", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=20_000, help="background lines/s (0: none)")
    ap.add_argument("--pause", type=float, default=0.02, help="seconds between two bans")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    lines = background_lines(200_000, seed=11) if args.rate > 0 else []
    link = Link()
    daemon = None
    load = None
    tmp = tempfile.TemporaryDirectory(prefix="mailban-latency-")
    try:
        link.up()
        conf_dir = Path(tmp.name)
        log = conf_dir / "mail.log"
        append(log, b"")
        config = write_config(conf_dir / "conf", [str(log)], maxretry=1, bantime="1h")
        # 1,000 bans in half a minute are no runaway filter: lift the safety valve (600 a minute).
        config.write_text(config.read_text().replace("[mailban]\n", "[mailban]\nmax_bans_per_minute = 100000\n", 1))
        daemon = Daemon(link, config).start()
        load = Load(log, lines, args.rate)
        load.start()
        time.sleep(args.warmup)
        lines_before = daemon.lines_read()
        started = time.monotonic()
        res = subprocess.run(link.exec_argv(link.srv, [sys.executable, "-c", WATCHER, str(log), str(args.bans),
                                                         str(args.pause)]),
                             capture_output=True, text=True, timeout=args.bans * 15 + 60)
        elapsed = time.monotonic() - started
        written = load.written
        load.stop.set()
        load.join(5)
        time.sleep(0.5)
        behind = written + args.bans - daemon.lines_read()
        result = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
        if "latencies" not in result:
            print(f"watcher failed: {res.stdout} {res.stderr}\n{daemon.log()[-2000:]}", file=sys.stderr)
            return 1
        ms = [x * 1000 for x in result["latencies"]]
        read = daemon.lines_read() - lines_before
        print(f"{len(ms)} bans under {args.rate:,.0f} lines/s of background traffic "
              f"({read:,} lines read in {elapsed:.1f} s, {read / elapsed:,.0f} lines/s; "
              f"{max(behind, 0)} lines unread at the end)")
        print(f"failure line appended -> element in the nft set: p50 {percentile(ms, 50):.2f} ms, "
              f"p90 {percentile(ms, 90):.2f} ms, p99 {percentile(ms, 99):.2f} ms, max {max(ms):.2f} ms, "
              f"mean {statistics.mean(ms):.2f} ms (targets: p50 5 ms, p99 20 ms)")
        return 0
    finally:
        if load is not None:
            load.stop.set()
            load.join(5)
        if daemon is not None:
            daemon.stop()
        link.reset_nft()
        link.close()
        tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
