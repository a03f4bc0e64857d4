"""Fleet mode costs: events/s per node with and without shared counting, and propagation latency.

    python bench/cluster.py                               # 100,000 events per node, 2 nodes, 30 rounds
    python bench/cluster.py --events 20000 --nodes 3 --rounds 10

Root needed: it builds the topology of tests/fleet.py (redis-server in its own network namespace,
one namespace and one daemon per node, each with its own nft table) and removes it at the end.
1. Throughput: every node's log gets `--events` SASL failure lines at once (distinct addresses
   from 100.64.0.0/10, two failures each: every line is an event counted by the shared jail, none
   reaches maxretry), all nodes at the same time. Measured per node: time until the daemon has
   read every line (detection) and, with the cluster, until Redis has counted every event
   (`status` cluster.events_shared). Run once without `[cluster]` (the same `shared = true` jail),
   once with it.
2. Propagation latency, `--rounds` times each:
   - manual: `ban` on node 1 (control socket) -> the element in node 2's kernel set;
   - shared: node 1 has maxretry-1 failures of an address counted in Redis, node 2's log gets the
     last one -> the element in node 1's kernel set (node 2 counts, decides, publishes; node 1
     reads the stream and applies).
   A watcher process inside the node's namespace polls the set through libnftables and stamps
   CLOCK_MONOTONIC (shared by all processes), so the figure excludes process start-ups.
Prints the figures; nothing is asserted (tests/test_cluster.py checks behaviour).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tests.fleet import Fleet  # noqa: E402
from tests.netns import append, failure_line, wait_for  # noqa: E402

# Runs inside a node's namespace: for each address read on stdin, poll the set until it holds
# the address, then print the monotonic time it was seen.
WATCH = r"""
import json, sys, time
from nftables import Nftables
nft = Nftables()
nft.set_json_output(True)
print("ready", flush=True)
for line in sys.stdin:
    ip = line.strip()
    while True:
        rc, out, err = nft.cmd("list set inet mailban banned4")
        if rc == 0 and ip in out:
            print(time.monotonic(), flush=True)
            break
        time.sleep(0.0005)
"""


def addresses(node: int, n: int) -> list[str]:
    base = (100 << 24) | (64 << 16) | (node << 18)  # 100.64.0.0/10, a block per node
    return [".".join(str((base + i) >> s & 255) for s in (24, 16, 8, 0)) for i in range(1, n + 1)]


def throughput(tmp: Path, nodes: int, events: int, cluster: bool) -> list[dict[str, float]]:
    fleet = Fleet(tmp, nodes, cluster=cluster, heartbeat=5)
    try:
        fleet.up()
        if cluster:
            wait_for(lambda: all(fleet.cluster(i)["connected"] for i in range(nodes)), timeout=10, what="connected")
        payloads = []
        for i in range(nodes):
            ips = addresses(i, events // 2)
            payloads.append(b"".join(failure_line(ip) * 2 for ip in ips))
        started = time.monotonic()
        for log, data in zip(fleet.logs, payloads):
            append(log, data)
        read: dict[int, float] = {}
        shared: dict[int, float] = {}
        while len(read) < nodes or (cluster and len(shared) < nodes):
            for i, d in enumerate(fleet.daemons):
                st = d.status()
                if i not in read and sum(s["lines"] for s in st["sources"]) >= events:
                    read[i] = time.monotonic() - started
                if cluster and i not in shared and st["cluster"]["events_shared"] >= events:
                    shared[i] = time.monotonic() - started
            if time.monotonic() - started > 600:
                raise SystemExit("timed out")
            time.sleep(0.02)
        return [{"read": read[i], "shared": shared.get(i, read[i])} for i in range(nodes)]
    finally:
        fleet.close()


def watcher(fleet: Fleet, node: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", fleet.nodes[node].srv, sys.executable, "-c", WATCH],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def seen(proc: subprocess.Popen[str], ip: str) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(ip + "\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def latency(tmp: Path, rounds: int) -> dict[str, list[float]]:
    fleet = Fleet(tmp, 2, cluster=True, maxretry=3)
    watchers: list[subprocess.Popen[str]] = []
    try:
        fleet.up()
        d1, d2 = fleet.daemons
        wait_for(lambda: all(fleet.cluster(i)["connected"] for i in range(2)), timeout=10, what="connected")
        watchers = [watcher(fleet, 0), watcher(fleet, 1)]
        manual, shared = [], []
        for k in range(rounds):
            ip = f"203.0.113.{k + 1}"
            started = time.monotonic()
            answer = d1.call({"cmd": "ban", "key": ip, "for": "1h"})
            assert answer["ok"], answer
            manual.append(seen(watchers[1], ip) - started)
            ip = f"203.0.113.{k + 101}"
            before = fleet.cluster(0)["events_shared"]
            append(fleet.logs[0], failure_line(ip) * 2)
            wait_for(lambda: fleet.cluster(0)["events_shared"] >= before + 2, what="counted in Redis")
            started = time.monotonic()
            append(fleet.logs[1], failure_line(ip))
            shared.append(seen(watchers[0], ip) - started)
        return {"manual": manual, "shared": shared}
    finally:
        for w in watchers:
            w.kill()
            w.wait(5)
        fleet.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="failure lines per node")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-bench-cluster-") as tmp:
        runs = {}
        for cluster in (False, True):
            work = Path(tmp) / ("with" if cluster else "without")
            work.mkdir()
            runs[cluster] = throughput(work, args.nodes, args.events, cluster)
        print(f"throughput: {args.events:,} events per node, {args.nodes} nodes at once")
        for cluster, label in ((False, "without [cluster]"), (True, "with [cluster]   ")):
            per = runs[cluster]
            read = [args.events / r["read"] for r in per]
            line = f"  {label}: detection {min(read):,.0f}-{max(read):,.0f} events/s per node"
            if cluster:
                done = [args.events / r["shared"] for r in per]
                line += f"; counted in Redis {min(done):,.0f}-{max(done):,.0f} events/s per node"
            print(line)
        work = Path(tmp) / "latency"
        work.mkdir()
        lat = latency(work, args.rounds)
        for name, label in (("manual", "manual ban on node 1 -> nft element on node 2"),
                            ("shared", "last failure on node 2 -> fleet decision -> nft element on node 1")):
            ms = sorted(x * 1000 for x in lat[name])
            p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
            print(f"latency, {label}: median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, "
                  f"max {ms[-1]:.1f} ms ({len(ms)} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
