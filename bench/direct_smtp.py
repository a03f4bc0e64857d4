"""Direct-SMTP counting: polled set counters (what mailban does) against nflog, measured (root).

    python bench/direct_smtp.py [--elements 10,1000,10000,50000] [--uids 20] [--conns 2000]

Runs in a network namespace of its own (`directsmtp-bench-PID`) with a veth pair routing
203.0.113.0/24: a non-blocking connect() there sends one SYN through the output hook (and
nowhere further), so no server is needed. Prints:
1. by the number of (uid, destination, port) elements in the destination set: the cost of the
   poll the daemon does once a second (libnftables `list set` of the uid set, parsed, and the
   check that the chain is there), and of one read of the destination sets (done only when a
   uid's count grew, at most once per 20 times its cost);
2. the latency from connect() to the event with polling at the daemon's cadence (source polls
   once a second, the loop turns every 0.5 s at most);
3. nflog (`log group N`, NFULNL_CFG_F_UID) read over a raw netlink socket in Python: the cost per
   connection (receive + parse uid, destination, port), the latency connect() -> message, and
   what is lost when nobody reads (the daemon stopped) and when a burst overflows the socket's
   buffer;
4. the same burst counted by the set: nothing lost.
Deletes the namespace at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NS = f"directsmtp-bench-{os.getpid()}"
NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_QTHRESH, NFULA_CFG_FLAGS = 1, 2, 5, 6
NFULA_PAYLOAD, NFULA_UID = 9, 11
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_UID = 1
GROUP = 7


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def enter() -> None:
    """Move this (single-threaded) process into a new namespace for good (libc setns: Python
    3.11 has no os.setns); the programs it starts inherit it."""
    import ctypes

    sh("ip", "netns", "add", NS)
    fd = os.open(f"/run/netns/{NS}", os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "dsmtp0", "type", "veth", "peer", "name", "dsmtp1")  # no dummy module here
    sh("ip", "link", "set", "dsmtp1", "up")
    sh("ip", "link", "set", "dsmtp0", "up")
    sh("ip", "addr", "add", "203.0.113.1/24", "dev", "dsmtp0")


def syn(dst: str = "203.0.113.9", port: int = 25, uid: int = 65534) -> None:
    """One SYN from a socket owned by `uid` (nobody: root is excluded from counting); the
    socket's owner is the effective uid when it is made."""
    os.seteuid(uid)
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    finally:
        os.seteuid(0)
    s.setblocking(False)
    try:
        s.connect((dst, port))
    except BlockingIOError:
        pass
    s.close()


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:8.2f} ms"


# ---- 1, 2, 4: the set ----------------------------------------------------------------------
def poll_cost(kernel: object, counts: list[int], nuids: int) -> None:
    from mailban.directsmtp.kernel import COUNT4, UIDS

    print(f"1. by elements in the destination set ({nuids} uids): the per-second poll (uid set + check),")
    print("   and a read")
    print("   of the destination sets (only when a uid grew, at most 1/20 of the time)")
    print(f"   {'elements':>9} {'poll median':>12} {'poll best':>11} {'dest median':>12} {'dest best':>11}")
    t = f"inet {kernel.table}"  # type: ignore[attr-defined]
    done = 0
    for n in counts:
        batch = []
        for i in range(done, n):
            batch.append(f"{1000 + i % nuids} . 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255} . 25 counter packets 3 bytes 180")
            if len(batch) == 2000:
                kernel._cmd(f"add element {t} {COUNT4} {{ {', '.join(batch)} }}")  # type: ignore[attr-defined]
                batch = []
        if batch:
            kernel._cmd(f"add element {t} {COUNT4} {{ {', '.join(batch)} }}")  # type: ignore[attr-defined]
        # the uid set holds the same uids (what the kernel makes alongside)
        uids = ", ".join(f"{1000 + i} counter packets 3 bytes 180" for i in range(min(n, nuids)))
        kernel._cmd(f"add element {t} {UIDS} {{ {uids} }}")  # type: ignore[attr-defined]
        done = n
        times, polls = [], []
        for _ in range(15 if n <= 10000 else 5):
            started = time.perf_counter()
            got = kernel.counters()  # type: ignore[attr-defined]
            times.append(time.perf_counter() - started)
            started = time.perf_counter()
            kernel.uid_counters()  # type: ignore[attr-defined]
            kernel.check()  # type: ignore[attr-defined]
            polls.append(time.perf_counter() - started)
        assert len(got) >= n
        print(f"   {n:>9} {fmt(statistics.median(polls)):>12} {fmt(min(polls)):>11} "
              f"{fmt(statistics.median(times)):>12} {fmt(min(times)):>11}")
    kernel._cmd(f"flush set {t} {COUNT4}")  # type: ignore[attr-defined]
    kernel._cmd(f"flush set {t} {UIDS}")  # type: ignore[attr-defined]
    print("   the per-second poll by uids that made direct SMTP in the last day (no destinations):")
    for n in (10, 100, 1000):
        kernel._cmd(f"flush set {t} {UIDS}")  # type: ignore[attr-defined]
        uids = ", ".join(f"{1000 + i} counter packets 3 bytes 180" for i in range(n))
        kernel._cmd(f"add element {t} {UIDS} {{ {uids} }}")  # type: ignore[attr-defined]
        polls = []
        for _ in range(15):
            started = time.perf_counter()
            kernel.uid_counters()  # type: ignore[attr-defined]
            kernel.check()  # type: ignore[attr-defined]
            polls.append(time.perf_counter() - started)
        print(f"   {n:>9} uids {fmt(statistics.median(polls)):>12} {fmt(min(polls)):>11}")
    kernel._cmd(f"flush set {t} {UIDS}")  # type: ignore[attr-defined]


def poll_latency(kernel: object, samples: int) -> None:
    import random

    from mailban.directsmtp.source import DirectSmtpSource

    class S:
        direct_smtp_ports = (25, 465, 587)
        direct_smtp_mta_users = ("root",)
        direct_smtp_allow = ()
        block_direct_smtp = "per-uid"

    src = DirectSmtpSource(S(), {"counters": [], "uids": []}, kernel=kernel)
    lat = []
    rng = random.Random(1)
    for _ in range(samples):
        time.sleep(rng.uniform(0, 1.0))
        sent = time.monotonic()
        syn()
        while not src.read_events():
            time.sleep(0.5)  # the daemon's loop turns at least every 0.5 s
        lat.append(time.monotonic() - sent)
    lat.sort()
    print(f"2. connect() -> direct-smtp event, polled: p50 {fmt(statistics.median(lat))}, "
          f"max {fmt(lat[-1])} ({samples} connections at random times)")


# ---- 3: nflog ------------------------------------------------------------------------------
def nlmsg(msg_type: int, flags: int, payload: bytes, seq: int) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), msg_type, flags, seq, 0) + payload


def nla(attr: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), attr) + data
    return raw + b"\0" * (-len(raw) % 4)


def nflog_open(rcvbuf: int) -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((0, 0))
    cfg = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    head = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(GROUP))
    for seq, attrs in enumerate((
        nla(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND)),
        nla(NFULA_CFG_MODE, struct.pack(">IBB", 64, NFULNL_COPY_PACKET, 0)),
        nla(NFULA_CFG_FLAGS, struct.pack(">H", NFULNL_CFG_F_UID)),
        # one message per packet, at once (the default batches them for up to a second)
        nla(NFULA_CFG_QTHRESH, struct.pack(">I", 1)),
    ), 1):
        s.send(nlmsg(cfg, NLM_F_REQUEST | NLM_F_ACK, head + attrs, seq))
        ack = s.recv(4096)
        err = struct.unpack_from("=i", ack, 16)[0]
        if err:
            raise OSError(-err, f"nflog config {seq}: {os.strerror(-err)}")
    return s


def nflog_parse(data: bytes) -> list[tuple[int, str, int]]:
    """(uid, destination, port) of each packet message in one recv()."""
    out = []
    off = 0
    while off + 16 <= len(data):
        length, msg_type = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if msg_type == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            pos, end = off + 20, off + length
            uid, payload = None, b""
            while pos + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, pos)
                atype &= 0x7FFF
                if alen < 4:
                    break
                if atype == NFULA_UID:
                    uid = struct.unpack_from(">I", data, pos + 4)[0]
                elif atype == NFULA_PAYLOAD:
                    payload = data[pos + 4:pos + alen]
                pos += (alen + 3) & ~3
            if uid is not None and len(payload) >= 24 and payload[0] >> 4 == 4:
                ihl = (payload[0] & 15) * 4
                dst = socket.inet_ntoa(payload[16:20])
                port = struct.unpack_from(">H", payload, ihl + 2)[0]
                out.append((uid, dst, port))
        off += (length + 3) & ~3
    return out


def nflog_bench(conns: int) -> None:
    sh("nft", "add", "table", "inet", "dsmtpbench")
    sh("nft", "add", "chain", "inet", "dsmtpbench", "out", "{ type filter hook output priority 0; }")
    sh("nft", "add", "rule", "inet", "dsmtpbench", "out", "tcp", "dport", "25", "tcp", "flags", "&", "(syn|ack)",
       "==", "syn", "log", "group", str(GROUP))
    s = nflog_open(1 << 20)
    # latency: one SYN, then block in recv
    lat = []
    for _ in range(200):
        sent = time.monotonic()
        syn()
        got = nflog_parse(s.recv(65536))
        lat.append(time.monotonic() - sent)
        assert got and got[0][2] == 25
    # cost per connection: a burst, then read and parse it all
    for _ in range(conns):
        syn()
    started = time.perf_counter()
    seen = 0
    s.setblocking(False)
    while True:
        try:
            seen += len(nflog_parse(s.recv(65536)))
        except BlockingIOError:
            break
    per = (time.perf_counter() - started) / max(seen, 1)
    print(f"3. nflog: connect() -> message p50 {fmt(statistics.median(lat))}, max {fmt(max(lat))}; "
          f"read + parse {fmt(per)} per connection ({seen} of a burst of {conns})")
    # what is lost: nobody reading (the daemon stopped: the group unbound), and a small buffer
    s.close()
    for _ in range(100):
        syn()
    s = nflog_open(1 << 20)
    s.setblocking(False)
    after = 0
    try:
        after = len(nflog_parse(s.recv(65536)))
    except BlockingIOError:
        pass
    print(f"   100 connections while no reader was bound: {after} received afterwards (all lost)")
    s.close()
    s = nflog_open(4096)
    s.setblocking(False)
    for _ in range(conns):
        syn()
    got, overflow = 0, False
    while True:
        try:
            got += len(nflog_parse(s.recv(65536)))
        except BlockingIOError:
            break
        except OSError as exc:  # ENOBUFS: the kernel dropped messages
            overflow = overflow or exc.errno == 105
    print(f"   a burst of {conns} into a 4 KiB socket buffer read afterwards: {got} received"
          f"{' (ENOBUFS: the rest dropped)' if overflow else ''}")
    s.close()
    sh("nft", "delete", "table", "inet", "dsmtpbench")


def set_burst(kernel: object, conns: int) -> None:
    before = sum(kernel.counters().values())  # type: ignore[attr-defined]
    for _ in range(conns):
        syn()
    got = sum(kernel.counters().values()) - before  # type: ignore[attr-defined]
    print(f"4. the same burst of {conns}, counted by the set and read once afterwards: {got}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", default="10,1000,10000,50000")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--uids", type=int, default=20, help="uids the destinations of step 1 belong to")
    ap.add_argument("--samples", type=int, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (a network namespace, nftables)")
        return 1
    try:
        enter()
        from mailban.directsmtp.kernel import DirectSmtpKernel

        kernel = DirectSmtpKernel(table="dsmtpbench_set")
        kernel.ensure(mta_uids=[0])
        poll_cost(kernel, [int(n) for n in args.elements.split(",")], args.uids)
        poll_latency(kernel, args.samples)
        nflog_bench(args.conns)
        set_burst(kernel, args.conns)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
