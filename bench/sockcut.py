"""Cutting a banned address's connections among thousands (mailban/sockdestroy.py), three ways.

    python bench/sockcut.py                      # 8,000 other connections, 20 cuts per way
    python bench/sockcut.py --connections 2000 --rounds 5

Root: creates two network namespaces joined by a veth pair (`sockcut-bench-srv`/`-cli`,
removed at the end): a listener on the server side, `--connections` connections to it from
eight client addresses, so the server's namespace holds them as a mail host would (the clients'
ends live in the other namespace). Each round then opens one connection from the "attacker"
address and times cutting it:

- kernel: sockdestroy's way, the dump carries the port/peer bytecode, the kernel returns the
  attacker's socket only;
- python: the same dump without bytecode (every live socket crosses into Python and is tested
  there: `find(kernel_filter=False)`);
- ss -K: `ss -K -tn dst ADDR sport = :PORT` run as a program (argv, no shell), as an action
  could do instead of talking netlink itself.

Prints the median and the worst of each, in milliseconds, and checks every cut really reset
the attacker (its recv raises ECONNRESET).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailban import sockdestroy as sd  # noqa: E402
from tests.mta import in_netns  # noqa: E402

SRV, CLI = "sockcut-bench-srv", "sockcut-bench-cli"
SERVER = "198.51.100.1"
CLIENTS = [f"198.51.100.{n}" for n in range(10, 18)]
ATTACKER = "198.51.100.66"
PORT = 143


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def setup() -> None:
    for ns in (SRV, CLI):
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "link", "add", "sockcutb0", "netns", SRV, "type", "veth", "peer", "name", "sockcutb1", "netns", CLI])
    run(["ip", "-n", SRV, "addr", "add", f"{SERVER}/24", "dev", "sockcutb0"])
    for addr in CLIENTS + [ATTACKER]:
        run(["ip", "-n", CLI, "addr", "add", f"{addr}/24", "dev", "sockcutb1"])
    run(["ip", "-n", SRV, "link", "set", "sockcutb0", "up"])
    run(["ip", "-n", CLI, "link", "set", "sockcutb1", "up"])


def teardown() -> None:
    for ns in (SRV, CLI):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def connect(listener: socket.socket, src: str) -> tuple[socket.socket, socket.socket]:
    with in_netns(CLI):
        c = socket.socket()
        c.bind((src, 0))
        c.connect((SERVER, PORT))
    return c, listener.accept()[0]


def cut_kernel() -> int:
    with in_netns(SRV):
        return len(sd.cut_connections([ipaddress.ip_network(ATTACKER)], [PORT]))


def cut_python() -> int:
    with in_netns(SRV), sd.SockDiag() as diag:
        found = diag.find([ipaddress.ip_network(ATTACKER)], [PORT], kernel_filter=False)
        return diag.destroy(found)


def cut_ss() -> int:
    out = subprocess.run(["ip", "netns", "exec", SRV, "ss", "-K", "-Htn", "dst", ATTACKER, "sport", "=", f":{PORT}"],
                         check=True, capture_output=True, text=True).stdout
    return len(out.splitlines())


def cut_ss_setns() -> int:
    """ss started from a thread already in the namespace (no `ip netns exec` in between)."""
    with in_netns(SRV):
        out = subprocess.run(["ss", "-K", "-Htn", "dst", ATTACKER, "sport", "=", f":{PORT}"],
                             check=True, capture_output=True, text=True).stdout
    return len(out.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, CAP_NET_ADMIN)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2 * args.connections + 1000)), hard))
    teardown()
    setup()
    held = []
    try:
        with in_netns(SRV):
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((SERVER, PORT))
            listener.listen(4096)
        started = time.perf_counter()
        for n in range(args.connections):
            held.append(connect(listener, CLIENTS[n % len(CLIENTS)]))
        print(f"{args.connections} connections open in {time.perf_counter() - started:.1f} s "
              f"(server namespace: {args.connections} established sockets + the listener)")
        for name, way in (("kernel filter", cut_kernel), ("python filter", cut_python),
                          ("ss -K (ip netns exec)", cut_ss), ("ss -K (setns'd thread)", cut_ss_setns)):
            times = []
            for _ in range(args.rounds):
                client, server_end = connect(listener, ATTACKER)
                t0 = time.perf_counter()
                cut = way()
                times.append((time.perf_counter() - t0) * 1000)
                client.settimeout(2)
                try:
                    client.recv(1)
                    raise SystemExit(f"{name}: the attacker was not reset")
                except ConnectionResetError:
                    pass
                assert cut == 1, (name, cut)
                client.close()
                server_end.close()
            print(f"{name:24s} median {statistics.median(times):7.2f} ms   worst {max(times):7.2f} ms")
    finally:
        for pair in held:
            for s in pair:
                s.close()
        teardown()


if __name__ == "__main__":
    main()
