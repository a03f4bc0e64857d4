"""A fleet of mailban nodes sharing one real redis-server, each in its own network namespace.

Topology: namespace `mbr-*` holds redis-server (Debian's, with a password, no persistence) on a
bridge at 198.51.100.1; namespaces `mbn<i>-*` hold one daemon each, at 198.51.100.1<i>, joined to
the bridge by a veth pair, each with its own nft table. Node i follows its own log file
(`fleet.logs[i]`) with one jail `auth` (tests/netns.write_config) marked `shared`.
Used by tests/test_cluster.py and bench/cluster.py. `close()` stops every daemon and the Redis
and deletes every namespace, so callers run it from `finally`. No shell is ever used.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.netns import Daemon, Link, run, wait_for, write_config

REDIS_IP = "198.51.100.1"
# A fresh namespace has no listener at all: any port is free there.
REDIS_PORT = 6390
PASSWORD = "fleet-secret"


class Node(Link):
    """One node's namespace (Link's helpers for the nft sets work on `srv`)."""

    def __init__(self, ns: str) -> None:  # no veth pair of Link's own
        self.srv, self.cli, self.server, self.created = ns, "", None, []


class Fleet:
    def __init__(self, tmp: Path, size: int = 3, *, cluster: bool = True, maxretry: int = 6,
                 heartbeat: float = 1) -> None:
        tag = f"{os.getpid() % 100000}"
        self.tmp = tmp
        self.redis_ns = f"mbr-{tag}"
        self.nodes = [Node(f"mbn{i}-{tag}") for i in range(1, size + 1)]
        self.cluster_on, self.maxretry, self.heartbeat = cluster, maxretry, heartbeat
        self.namespaces: list[str] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.daemons: list[Daemon] = []
        self.logs: list[Path] = []

    def up(self) -> Fleet:
        for ns in [self.redis_ns] + [n.srv for n in self.nodes]:
            run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        r = self.redis_ns
        run(["ip", "-n", r, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", r, "addr", "add", f"{REDIS_IP}/24", "dev", "br0"])
        run(["ip", "-n", r, "link", "set", "br0", "up"])
        for i, node in enumerate(self.nodes, start=1):
            run(["ip", "link", "add", f"mbr{i}", "netns", r, "type", "veth", "peer", "name", "eth0", "netns", node.srv])
            run(["ip", "-n", r, "link", "set", f"mbr{i}", "master", "br0", "up"])
            run(["ip", "-n", node.srv, "addr", "add", f"198.51.100.1{i}/24", "dev", "eth0"])
            run(["ip", "-n", node.srv, "link", "set", "eth0", "up"])
        self.start_redis()
        for i, node in enumerate(self.nodes, start=1):
            self.logs.append(self.tmp / f"n{i}" / "mail.log")
            self.logs[-1].parent.mkdir(parents=True)
            self.logs[-1].write_bytes(b"")
            extra = "shared = true\n"
            if self.cluster_on:
                secret = self.tmp / f"n{i}" / "redis.password"
                secret.write_text(PASSWORD + "\n")
                extra += (f'\n[cluster]\nurl = "redis://{REDIS_IP}:{REDIS_PORT}/0"\n'
                          f'node = "n{i}"\nheartbeat = {self.heartbeat}\ntimeout = 1\n')
                # One node reads the password from a file, the others from the table.
                extra += f'password_file = "{secret}"\n' if i == 1 else f'password = "{PASSWORD}"\n'
            cfg = write_config(self.tmp / f"n{i}" / "etc", [str(self.logs[-1])], maxretry=self.maxretry, extra=extra)
            self.daemons.append(Daemon(node, cfg))
        for d in self.daemons:
            d.start()
        return self

    def start_redis(self) -> None:
        logfile = self.tmp / "redis.out"
        with open(logfile, "ab") as out:
            # No persistence at all: a restart comes back empty, the hardest case for "loses nothing".
            self.redis = subprocess.Popen(
                ["ip", "netns", "exec", self.redis_ns, "redis-server", "--bind", REDIS_IP, "--port", str(REDIS_PORT),
                 "--save", "", "--appendonly", "no", "--requirepass", PASSWORD, "--dir", str(self.tmp)],
                stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: b"Ready to accept connections" in logfile.read_bytes().rsplit(b"Server initialized", 1)[-1],
                 timeout=10, what="redis-server")

    def kill_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.kill()  # SIGKILL: `ip netns exec` exec'd redis-server itself
            self.redis.wait(5)
        self.redis = None

    def close(self) -> None:
        for d in self.daemons:
            d.stop()
        self.kill_redis()
        for ns in self.namespaces:
            run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()

    def banned(self, ip: str) -> list[bool]:
        return [ip in n.nft_elements() for n in self.nodes]

    def listed(self, i: int, ip: str) -> list[dict[str, Any]]:
        return [b for b in json.loads(self.daemons[i].cli("list", "--json").stdout) if b["key"] == ip]

    def cluster(self, i: int) -> dict[str, Any]:
        return self.daemons[i].status()["cluster"]
