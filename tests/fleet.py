"""A fleet of mailban nodes sharing one real redis-server, each in its own network namespace.

Topology: namespace `mbr-*` holds redis-server (Debian's, with a password, no persistence) on a
bridge at 198.51.100.1; namespaces `mbn<i>-*` hold one daemon each, at 198.51.100.1<i>, joined to
the bridge by a veth pair, each with its own nft table. Node i follows its own log file
(`fleet.logs[i]`) with one jail `auth` (tests/netns.write_config) marked `shared`.
With `tls=make_certs(dir)` Redis listens with TLS only (no plain port), on 198.51.100.1 and on
ALIAS_IP (an address its certificate does not name), and the nodes connect with
`rediss://:PASSWORD@198.51.100.1:6390/0` and `tls_ca`; `tables` overrides keys of node i's
[cluster] table (1-based) to make a node misconfigured.
Used by tests/test_cluster.py, tests/test_cluster_tls.py and bench/cluster.py. `close()` stops
every daemon and the Redis and deletes every namespace, so callers run it from `finally`.
No shell is ever used.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tests.netns import Daemon, Link, append, failure_line, run, wait_for, write_config

REDIS_IP = "198.51.100.1"
# A fresh namespace has no listener at all: any port is free there.
REDIS_PORT = 6390
PASSWORD = "fleet-secret"
ALIAS_IP = "198.51.100.2"  # TLS mode: Redis listens here too, but its certificate does not name it


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed the server's certificate
    cert: Path  # the server's certificate (subjectAltName: REDIS_IP only) and key
    key: Path
    other_ca: Path  # a CA that signed nothing the server has


def make_certs(directory: Path) -> Certs:
    """Throwaway CAs and a Redis server certificate in `directory` (openssl, P-256, one day)."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
    for name in ("ca", "other-ca"):
        run(["openssl", "req", "-x509", *ec, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.crt"),
             "-subj", f"/CN=mailban test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req", "-x509", *ec, "-keyout", str(d / "redis.key"), "-out", str(d / "redis.crt"),
         "-subj", "/CN=redis.fleet.test", "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
         "-addext", f"subjectAltName=IP:{REDIS_IP}", "-addext", "basicConstraints=critical,CA:FALSE",
         "-addext", "keyUsage=critical,digitalSignature", "-addext", "extendedKeyUsage=serverAuth"])
    return Certs(d / "ca.crt", d / "redis.crt", d / "redis.key", d / "other-ca.crt")


class Node(Link):
    """One node's namespace (Link's helpers for the nft sets work on `srv`)."""

    def __init__(self, ns: str) -> None:  # no veth pair of Link's own
        self.srv, self.cli, self.server, self.created = ns, "", None, []


class Fleet:
    def __init__(self, tmp: Path, size: int = 3, *, cluster: bool = True, maxretry: int = 6,
                 heartbeat: float = 1, tls: Certs | None = None,
                 tables: dict[int, dict[str, Any]] | None = None, inline: int = 0) -> None:
        tag = f"{os.getpid() % 100000}"
        self.tmp = tmp
        self.redis_ns = f"mbr-{tag}"
        self.nodes = [Node(f"mbn{i}-{tag}") for i in range(1, size + 1)]
        self.cluster_on, self.maxretry, self.heartbeat = cluster, maxretry, heartbeat
        self.tls, self.tables = tls, tables or {}
        # inline > 0: each node also runs the policy service (a unix socket in its directory,
        # `policy_socket(i)`) with a shared inline jail `out` per sasl_username, maxretry = inline
        self.inline = inline
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
        if self.tls:
            run(["ip", "-n", r, "addr", "add", f"{ALIAS_IP}/24", "dev", "br0"])
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
            settings = ""
            if self.inline:
                settings = f'policy_listen = "unix:{self.policy_socket(i - 1)}"\n'
                extra += (f'\n[jail.out]\ninline = true\nkey = "user"\nshared = true\nmaxretry = {self.inline}\n'
                          'findtime = "1h"\nbantime = "1h"\nactions = []\n')
            if self.cluster_on:
                table: dict[str, Any] = {"node": f"n{i}", "heartbeat": self.heartbeat, "timeout": 1}
                if self.tls:
                    table.update(url=f"rediss://:{PASSWORD}@{REDIS_IP}:{REDIS_PORT}/0", tls_ca=str(self.tls.ca))
                elif i == 1:  # one node reads the password from a file, the others from the table
                    secret = self.tmp / f"n{i}" / "redis.password"
                    secret.write_text(PASSWORD + "\n")
                    table.update(url=f"redis://{REDIS_IP}:{REDIS_PORT}/0", password_file=str(secret))
                else:
                    table.update(url=f"redis://{REDIS_IP}:{REDIS_PORT}/0", password=PASSWORD)
                table.update(self.tables.get(i, {}))
                extra += "\n[cluster]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
            cfg = write_config(self.tmp / f"n{i}" / "etc", [str(self.logs[-1])], maxretry=self.maxretry, extra=extra,
                               settings=settings)
            self.daemons.append(Daemon(node, cfg))
        for d in self.daemons:
            d.start()
        return self

    def start_redis(self) -> None:
        logfile = self.tmp / "redis.out"
        if self.tls:  # TLS only: no plain port at all; clients are not asked for certificates
            listen = ["--bind", REDIS_IP, ALIAS_IP, "--port", "0", "--tls-port", str(REDIS_PORT),
                      "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                      "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"]
        else:
            listen = ["--bind", REDIS_IP, "--port", str(REDIS_PORT)]
        with open(logfile, "ab") as out:
            # No persistence at all: a restart comes back empty, the hardest case for "loses nothing".
            self.redis = subprocess.Popen(
                ["ip", "netns", "exec", self.redis_ns, "redis-server", *listen,
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

    def policy_socket(self, i: int) -> Path:
        """Node i's (0-based) policy socket: a path, reachable from any network namespace."""
        return self.tmp / f"n{i + 1}" / "policy.sock"

    def banned(self, ip: str) -> list[bool]:
        return [ip in n.nft_elements() for n in self.nodes]

    def listed(self, i: int, ip: str) -> list[dict[str, Any]]:
        return [b for b in json.loads(self.daemons[i].cli("list", "--json").stdout) if b["key"] == ip]

    def cluster(self, i: int) -> dict[str, Any]:
        return self.daemons[i].status()["cluster"]


def running(fleet: Fleet) -> Iterator[Fleet]:
    """Bring a fleet up for a fixture; on failure print every daemon's log; always tear it down."""
    try:
        yield fleet.up()
    except Exception:
        for d in fleet.daemons:
            print(d.log())
        raise
    finally:
        fleet.close()


def fail(log: Path, ip: str, times: int) -> None:
    """`times` SASL failures of `ip` appended to a node's log."""
    append(log, b"".join(failure_line(ip) for _ in range(times)))
