"""Close a banned address's live TCP connections on this host, as `ss -K` does: netlink sock_diag.

Inputs: the banned addresses or networks, and the local ports whose connections count (the mail
services; empty means every port). Output: how many sockets the kernel destroyed. Nothing else.

How (linux/inet_diag.h, net/ipv4/inet_diag.c): one NETLINK_SOCK_DIAG socket; a
SOCK_DIAG_BY_FAMILY dump (struct inet_diag_req_v2) per address family, asking only for the live
states and carrying a small bytecode filter (INET_DIAG_REQ_BYTECODE) so that the kernel itself
skips every socket whose local port is not a mail port or whose peer is not banned: with
thousands of open connections the dump then returns the handful that matter instead of all of
them (bench/sockcut.py measures both ways). Each socket returned is checked again here (the
filter is an optimisation, never the only guard), then a SOCK_DESTROY request naming its exact
4-tuple and cookie (so a socket that closed and was reused meanwhile is not hit) makes the kernel
abort it: the server's process sees ECONNABORTED, the peer gets a RST.

Why both families: a server listening on `::` (dual-stack) holds its IPv4 clients in AF_INET6
sockets with a v4-mapped peer (::ffff:198.51.100.2), which only the AF_INET6 dump lists. The
kernel's address condition with family AF_INET matches those mapped peers too, and the check
here maps them back (ipaddress's `ipv4_mapped`).

Needs: CAP_NET_ADMIN (else EPERM) and a kernel built with CONFIG_INET_DIAG_DESTROY (else
EOPNOTSUPP); both come back as SockDiagError with the reason. Must never: touch a socket whose
local port is outside `ports` or whose peer is outside `targets`, or a listening socket.
Security note: the targets are ip_network objects built by the caller from keys that `ipaddress`
accepted; no text from a log reaches this module. No subprocess, no shell.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Collection, Iterable, Iterator, Sequence, Union

IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

NETLINK_SOCK_DIAG = 4          # linux/netlink.h (not in Python's socket module)
SOCK_DIAG_BY_FAMILY = 20       # linux/sock_diag.h
SOCK_DESTROY = 21
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
INET_DIAG_REQ_BYTECODE = 1     # the request's only attribute we send

# Bytecode operations (enum in linux/inet_diag.h). S = this host's end, D = the peer's.
BC_NOP, BC_JMP, BC_S_GE, BC_S_LE, BC_D_GE, BC_D_LE, BC_AUTO, BC_S_COND, BC_D_COND = range(9)
BC_S_EQ = 11

# TCP states (include/net/tcp_states.h). Cut: every state where a peer still has a use of the
# connection or the socket still holds memory waiting on the peer. Never LISTEN (the service
# itself), nor TIME_WAIT/CLOSE (nothing left to cut), nor SYN_SENT (our own outgoing connects).
TCP_ESTABLISHED, TCP_SYN_RECV, TCP_FIN_WAIT1, TCP_FIN_WAIT2 = 1, 3, 4, 5
TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING = 8, 9, 11
LIVE_STATES = (TCP_ESTABLISHED, TCP_SYN_RECV, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_CLOSE_WAIT,
               TCP_LAST_ACK, TCP_CLOSING)
STATE_MASK = sum(1 << s for s in LIVE_STATES)

_NLMSGHDR = struct.Struct("=IHHII")              # len, type, flags, seq, pid
_REQ_HEAD = struct.Struct("=BBBxI")              # family, protocol, ext, pad, states
_SOCKID_LEN = 48                                 # be16 sport, be16 dport, 16+16 addr, if, cookie[2]
_MSG = struct.Struct("=BBBB48sIIIII")            # struct inet_diag_msg (72 bytes)
_OP = struct.Struct("=BBH")                      # struct inet_diag_bc_op: code, yes, no
_HOSTCOND = struct.Struct("=BBxxi")              # struct inet_diag_hostcond without addr[]
# Above this many targets the address test moves out of the kernel filter (it is linear in the
# targets for every socket) into the set/network test here, which the dump's port filter keeps
# to few sockets anyway.
KERNEL_ADDR_LIMIT = 128


class SockDiagError(OSError):
    """The kernel refused: no CAP_NET_ADMIN (EPERM), no CONFIG_INET_DIAG_DESTROY (EOPNOTSUPP),
    or a malformed request (EINVAL). errno is the kernel's."""


@dataclass(frozen=True, slots=True)
class Conn:
    """One TCP socket of this host, as the dump gave it."""

    family: int
    state: int
    local: str
    local_port: int
    peer: str
    peer_port: int
    sockid: bytes = field(repr=False)  # the raw inet_diag_sockid (ports, addresses, if, cookie)

    def __str__(self) -> str:
        return f"{self.peer}:{self.peer_port} -> :{self.local_port}"


# ---- bytecode (the kernel's inet_diag_bc_audit rules) ------------------------------------------
# A program is bytes; the kernel runs it per socket from offset 0: an op whose test holds moves
# `yes` bytes on, else `no` bytes. Landing exactly on the end accepts, on end+4 rejects. The
# kernel audits that walking the `yes` jumps covers the program and that each `no` lands on an
# op of that walk, or on end+4. A single test has yes = its length and no = its length + 4;
# `_and` and `_or` combine two programs the way iproute2's ss does, so the audit holds.

def _port_eq(port: int) -> bytes:
    """Local port == port: the op and a second op whose `no` field carries the port."""
    return _OP.pack(BC_S_EQ, 8, 12) + _OP.pack(0, 0, port)


def _peer_in(net: IpNetwork) -> bytes:
    """Peer address inside `net` (any port). An AF_INET condition also matches v4-mapped peers
    of AF_INET6 sockets (inet_diag_bc_run)."""
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    cond = _HOSTCOND.pack(family, net.prefixlen, -1) + net.network_address.packed
    size = _OP.size + len(cond)
    return _OP.pack(BC_D_COND, size, size + 4) + cond


def _walk(prog: bytes) -> Iterator[int]:
    """Offsets of the ops on the `yes` walk (the ones the audit checks)."""
    at = 0
    while at < len(prog):
        yield at
        step = _OP.unpack_from(prog, at)[1]
        if step < 4:
            raise ValueError("bytecode op with a yes jump under 4")
        at += step


def _and(a: bytes, b: bytes) -> bytes:
    """a then b: a's rejects (jumps to a's end + 4) are moved to the end of both + 4."""
    out = bytearray(a)
    for at in _walk(a):
        code, yes, no = _OP.unpack_from(out, at)
        if code != BC_NOP and no == len(a) - at + 4:
            _OP.pack_into(out, at, code, yes, no + len(b))
    return bytes(out) + b


def _or(a: bytes, b: bytes) -> bytes:
    """a, else b: a accepting falls on a JMP that skips b (to the end: accept); a rejecting
    lands after the JMP, on b."""
    return a + _OP.pack(BC_JMP, 4, len(b) + 4) + b


def _any(progs: Sequence[bytes]) -> bytes:
    out = progs[-1]
    for prog in reversed(progs[:-1]):
        out = _or(prog, out)
    return out


def bytecode(targets: Sequence[IpNetwork], ports: Collection[int]) -> bytes:
    """The filter: local port in `ports` (none: any) and peer in `targets` (none: any)."""
    parts = []
    if ports:
        parts.append(_any([_port_eq(p) for p in sorted(set(ports))]))
    if targets:
        parts.append(_any([_peer_in(n) for n in targets]))
    if not parts:
        return b""
    return parts[0] if len(parts) == 1 else _and(parts[0], parts[1])


# ---- messages --------------------------------------------------------------------------------
def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def dump_request(family: int, seq: int, states: int = STATE_MASK, filt: bytes = b"") -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump of the TCP sockets of `family` in `states`, with a filter."""
    body = _REQ_HEAD.pack(family, socket.IPPROTO_TCP, 0, states) + b"\0" * _SOCKID_LEN
    if filt:
        body += _attr(INET_DIAG_REQ_BYTECODE, filt)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def destroy_request(conn: Conn, seq: int) -> bytes:
    """SOCK_DESTROY of exactly this socket (its sockid, cookie included), with an ack asked for."""
    body = _REQ_HEAD.pack(conn.family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + conn.sockid
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def _addr(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)


def parse_conn(payload: bytes) -> Conn:
    """One struct inet_diag_msg (attributes after it are ignored)."""
    family, state, _timer, _retrans, sockid, *_rest = _MSG.unpack_from(payload)
    sport, dport = struct.unpack_from(">HH", sockid)
    return Conn(family, state, _addr(family, sockid[4:20]), sport, _addr(family, sockid[20:36]), dport, sockid)


def parse_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload) of each netlink message in one datagram."""
    at = 0
    while at + _NLMSGHDR.size <= len(data):
        size, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, at)
        if size < _NLMSGHDR.size or at + size > len(data):
            raise SockDiagError(errno.EBADMSG, "truncated netlink message")
        yield kind, seq, data[at + _NLMSGHDR.size:at + size]
        at += (size + 3) & ~3


def _error(payload: bytes) -> int:
    """The errno of an NLMSG_ERROR (0: an ack)."""
    return -struct.unpack_from("=i", payload)[0]


# ---- matching --------------------------------------------------------------------------------
def peer_matches(peer: str, targets: Sequence[IpNetwork]) -> bool:
    """Is `peer` (a v4-mapped IPv6 address counts as its IPv4 one) inside one of `targets`?"""
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(peer)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in targets)


# ---- the socket --------------------------------------------------------------------------------
class SockDiag:
    """One NETLINK_SOCK_DIAG socket; `find` and `destroy`, or `cut` for both."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        self.sock.bind((0, 0))
        self.seq = 0
        self.buf = bytearray(1 << 17)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SockDiag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, message: bytes) -> None:
        self.sock.send(message)

    def _recv(self) -> bytes:
        n = self.sock.recv_into(self.buf)
        return bytes(self.buf[:n])

    def dump(self, family: int, filt: bytes = b"", states: int = STATE_MASK) -> list[Conn]:
        """Every TCP socket of `family` in `states` that passes `filt`."""
        self.seq += 1
        self._send(dump_request(family, self.seq, states, filt))
        found: list[Conn] = []
        while True:
            for kind, seq, payload in parse_messages(self._recv()):
                if seq != self.seq:
                    continue
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    code = _error(payload)
                    raise SockDiagError(code, f"sock_diag dump: {os.strerror(code)}")
                if kind == SOCK_DIAG_BY_FAMILY:
                    found.append(parse_conn(payload))

    def find(self, targets: Sequence[IpNetwork], ports: Collection[int], kernel_filter: bool = True,
             exempt: Sequence[IpNetwork] = ()) -> list[Conn]:
        """The live TCP connections from `targets` (but not from `exempt`) to this host's `ports`
        (empty: any port). `kernel_filter=False` filters here only (for bench/sockcut.py)."""
        if not targets:
            return []
        v4 = [n for n in targets if n.version == 4]
        found: list[Conn] = []
        # v4 targets are looked for in both dumps (v4-mapped peers); v6 ones only in AF_INET6.
        for family, mine in ((socket.AF_INET, v4), (socket.AF_INET6, list(targets))):
            if not mine:
                continue
            filt = b""
            if kernel_filter:
                filt = bytecode(mine if len(mine) <= KERNEL_ADDR_LIMIT else [], ports)
            wanted = set(ports)
            found.extend(c for c in self.dump(family, filt)
                         if (not wanted or c.local_port in wanted) and c.state in LIVE_STATES
                         and peer_matches(c.peer, mine) and not (exempt and peer_matches(c.peer, exempt)))
        return found

    def destroy(self, conns: Iterable[Conn]) -> int:
        """Abort each socket; the number the kernel destroyed (one already gone is skipped).
        Raises SockDiagError on EPERM/EOPNOTSUPP (nothing will work) before going on."""
        done = 0
        for conn in conns:
            self.seq += 1
            self._send(destroy_request(conn, self.seq))
            code = self._ack(self.seq)
            if code == 0:
                done += 1
            elif code not in (errno.ENOENT, errno.ESTALE):  # closed, or replaced, meanwhile
                raise SockDiagError(code, f"sock_diag destroy: {os.strerror(code)}")
        return done

    def _ack(self, seq: int) -> int:
        while True:
            for kind, got, payload in parse_messages(self._recv()):
                if got == seq and kind == NLMSG_ERROR:
                    return _error(payload)

    def cut(self, targets: Sequence[IpNetwork], ports: Collection[int],
            exempt: Sequence[IpNetwork] = ()) -> list[Conn]:
        """Find and destroy; returns the connections that were cut."""
        conns = self.find(targets, ports, exempt=exempt)
        cut: list[Conn] = []
        for conn in conns:
            if self.destroy([conn]):
                cut.append(conn)
        return cut


def cut_connections(targets: Sequence[IpNetwork], ports: Collection[int],
                    exempt: Sequence[IpNetwork] = ()) -> list[Conn]:
    """One-shot: open a sock_diag socket, cut the connections from `targets` to `ports`."""
    with SockDiag() as diag:
        return diag.cut(targets, ports, exempt)


CAP_NET_ADMIN = 12


def unavailable() -> str | None:
    """Why cutting cannot work here, or None: checked once at start so that the admin reads it
    in the log before the first ban. The capability is read from /proc (the kernel checks it
    only after finding a socket); kernel support is asked with a SOCK_DESTROY of a socket that
    does not exist: ENOENT means the kernel would have looked, EOPNOTSUPP that it cannot."""
    try:
        with open("/proc/self/status") as status:
            caps = next((int(line.split()[1], 16) for line in status if line.startswith("CapEff:")), None)
    except OSError:
        caps = None
    if caps is not None and not caps & (1 << CAP_NET_ADMIN):
        return "no CAP_NET_ADMIN (give the daemon this capability, or set cut_connections = false)"
    nowhere = Conn(socket.AF_INET, TCP_ESTABLISHED, "0.0.0.0", 0, "0.0.0.0", 0, b"\0" * _SOCKID_LEN)
    try:
        with SockDiag() as diag:
            diag.seq += 1
            diag._send(destroy_request(nowhere, diag.seq))
            code = diag._ack(diag.seq)
    except OSError as exc:
        return f"no sock_diag netlink socket: {exc}"
    if code == errno.EOPNOTSUPP:
        return "the kernel cannot destroy sockets (built without CONFIG_INET_DIAG_DESTROY)"
    if code not in (0, errno.ENOENT):
        return f"sock_diag destroy: {os.strerror(code)}"
    return None
