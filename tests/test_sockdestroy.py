"""Cutting a banned address's live connections (mailban/sockdestroy.py, the nft action's cut).

Pure tests first: the netlink messages and the filter bytecode are built and parsed with no
socket (the bytecode is also checked against the kernel's audit rules, written out below). Then
real kernel sockets in a network namespace each test creates (`sockcut-<pid>-<n>`): IPv4, IPv6,
v4-mapped peers of a dual-stack listener, prefixes, exempt addresses, ports outside the cut; and
the nft action with a real nft table in that namespace. The real IMAP test (dovecot) is in
tests/test_sockcut_imap.py.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import logging
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Iterator

import pytest

from mailban import sockdestroy as sd
from mailban.actions.nft_action import NftAction
from mailban.core.records import Ban
from tests.mta import in_netns

net = ipaddress.ip_network
_count = itertools.count()


# ---- pure: messages ----------------------------------------------------------------------------
def test_dump_request_layout() -> None:
    filt = sd.bytecode([net("198.51.100.2/32")], [143])
    msg = sd.dump_request(socket.AF_INET6, 7, filt=filt)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq, pid) == (len(msg), sd.SOCK_DIAG_BY_FAMILY, 0x301, 7, 0)
    family, proto, ext, pad, states = struct.unpack_from("=BBBBI", msg, 16)
    assert (family, proto, ext, pad) == (socket.AF_INET6, socket.IPPROTO_TCP, 0, 0)
    assert states == sd.STATE_MASK and not states & (1 << 10) and not states & (1 << 6)  # no LISTEN, TIME_WAIT
    assert msg[24:72] == b"\0" * 48  # a dump names no socket
    alen, atype = struct.unpack_from("=HH", msg, 72)
    assert (alen, atype) == (4 + len(filt), sd.INET_DIAG_REQ_BYTECODE) and msg[76:] == filt
    assert len(sd.dump_request(socket.AF_INET, 1)) == 16 + 56  # no filter: no attribute


def _message(family: int, state: int, local: str, lport: int, peer: str, pport: int, cookie: int) -> bytes:
    size = 4 if family == socket.AF_INET else 16
    pad = b"\0" * (16 - size)
    sockid = (struct.pack(">HH", lport, pport) + socket.inet_pton(family, local) + pad
              + socket.inet_pton(family, peer) + pad + struct.pack("=IQ", 0, cookie))
    return struct.pack("=BBBB", family, state, 0, 0) + sockid + struct.pack("=IIIII", 0, 0, 0, 0, 4242)


def test_parse_conn_and_destroy_names_the_same_socket() -> None:
    payload = _message(socket.AF_INET6, 1, "::ffff:127.0.0.1", 143, "::ffff:198.51.100.2", 50123, 99)
    conn = sd.parse_conn(payload + b"\x08\x00\x01\x00\x00\x00\x00\x00")  # an attribute after: ignored
    assert (conn.family, conn.state, conn.local, conn.local_port, conn.peer, conn.peer_port) == (
        socket.AF_INET6, 1, "::ffff:127.0.0.1", 143, "::ffff:198.51.100.2", 50123)
    assert sd.peer_matches(conn.peer, [net("198.51.100.0/24")])  # v4-mapped counts as IPv4
    assert not sd.peer_matches(conn.peer, [net("fd00::/8")])
    msg = sd.destroy_request(conn, 5)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq) == (72, sd.SOCK_DESTROY, 0x5, 5)
    assert msg[24:] == payload[4:52]  # the exact sockid, cookie included
    v4 = sd.parse_conn(_message(socket.AF_INET, 8, "192.0.2.1", 993, "203.0.113.9", 40000, 1))
    assert (v4.local, v4.peer, v4.state, str(v4)) == ("192.0.2.1", "203.0.113.9", 8, "203.0.113.9:40000 -> :993")


def test_parse_messages_splits_and_refuses_truncation() -> None:
    one = struct.pack("=IHHII", 20, 2, 0, 3, 0) + struct.pack("=i", -errno.EPERM)
    done = struct.pack("=IHHII", 16, 3, 2, 3, 0)
    got = list(sd.parse_messages(one + done))
    assert [(k, s) for k, s, _ in got] == [(2, 3), (3, 3)] and sd._error(got[0][2]) == errno.EPERM
    with pytest.raises(sd.SockDiagError):
        list(sd.parse_messages(struct.pack("=IHHII", 400, 2, 0, 1, 0)))


# ---- pure: bytecode, checked against the kernel's rules ------------------------------------------
def _audit(prog: bytes) -> None:
    """net/ipv4/inet_diag.c inet_diag_bc_audit, in words: walking the `yes` jumps covers the
    program exactly; every `no` lands on an op of that walk or on end + 4; ops have their size."""
    on_walk, at = set(), 0
    while at < len(prog):
        on_walk.add(at)
        code, yes, no = struct.unpack_from("=BBH", prog, at)
        if code == sd.BC_D_COND:
            size = 4 + 8 + (4 if prog[at + 4] == socket.AF_INET else 16)
        else:
            size = {sd.BC_S_EQ: 8, sd.BC_JMP: 4}[code]
        assert yes >= size and yes % 4 == 0 and no % 4 == 0
        assert no >= size or code == sd.BC_JMP
        at += yes
    assert at == len(prog)
    at = 0
    while at < len(prog):
        _, yes, no = struct.unpack_from("=BBH", prog, at)
        assert at + no in on_walk or at + no in (len(prog), len(prog) + 4), (at, no)
        at += yes


def _run(prog: bytes, lport: int, peer: str) -> bool:
    """net/ipv4/inet_diag.c inet_diag_bc_run for the ops we emit (v4-mapped rule included)."""
    addr = ipaddress.ip_address(peer)
    at = 0
    while 0 <= at < len(prog):
        code, yes, no = struct.unpack_from("=BBH", prog, at)
        if code == sd.BC_S_EQ:
            ok = lport == struct.unpack_from("=BBH", prog, at + 4)[2]
        elif code == sd.BC_JMP:
            ok = False
        else:
            family, plen = prog[at + 4], prog[at + 5]
            raw = prog[at + 12:at + 12 + (4 if family == socket.AF_INET else 16)]
            cond = ipaddress.ip_network((ipaddress.ip_address(raw), plen))
            mapped = addr.ipv4_mapped if addr.version == 6 else None
            ok = addr in cond if addr.version == cond.version else bool(mapped and mapped in cond)
        at += yes if ok else no
    return at == len(prog)


@pytest.mark.parametrize("ports", [[], [143], [25, 143, 993, 4190]])
@pytest.mark.parametrize("targets", [[], ["198.51.100.2"], ["198.51.100.0/24", "fd42:6d62::/64", "203.0.113.7"]])
def test_bytecode_passes_audit_and_matches_what_python_matches(ports: list[int], targets: list[str]) -> None:
    nets = [net(t) for t in targets]
    prog = sd.bytecode(nets, ports)
    if not ports and not nets:
        assert prog == b""
        return
    _audit(prog)
    for lport in (25, 143, 993, 2525, 4190):
        for peer in ("198.51.100.2", "::ffff:198.51.100.2", "198.51.101.2", "fd42:6d62::9", "fd42:6d63::9",
                     "203.0.113.7", "::ffff:203.0.113.8"):
            want = (not ports or lport in ports) and (not nets or sd.peer_matches(peer, nets))
            assert _run(prog, lport, peer) == want, (lport, peer)


# ---- real sockets in a namespace -------------------------------------------------------------------
A4, B4 = "127.0.0.2", "127.0.0.3"                        # attacker, other (lo holds 127/8)
A6, B6, C6 = "fd42:6d62::2", "fd42:6d62::3", "fd42:6d62:0:1::3"
CUT_PORT, OTHER_PORT = 1143, 1144


@pytest.fixture()
def ns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    name = f"sockcut-{os.getpid()}-{next(_count)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        for a in (A6, B6, C6):
            subprocess.run(["ip", "-n", name, "addr", "add", f"{a}/128", "dev", "lo", "nodad"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


class Sessions:
    """Listeners (dual-stack on CUT_PORT, IPv4 on OTHER_PORT) and client connections, opened
    inside the namespace; `alive(name)` says whether a client's connection still works."""

    def __init__(self) -> None:
        self.listeners = []
        self.clients: dict[str, tuple[socket.socket, socket.socket]] = {}
        dual = socket.socket(socket.AF_INET6)
        dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        dual.bind(("::", CUT_PORT))
        v4 = socket.socket()
        v4.bind(("127.0.0.1", OTHER_PORT))
        for s in (dual, v4):
            s.listen(4096)
            self.listeners.append(s)
        self.by_port = {CUT_PORT: dual, OTHER_PORT: v4}

    def open(self, name: str, src: str, port: int = CUT_PORT) -> None:
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        c = socket.socket(family)
        c.bind((src, 0))
        c.connect(("::1" if ":" in src else "127.0.0.1", port))
        self.clients[name] = (c, self.by_port[port].accept()[0])

    def alive(self, name: str) -> bool:
        c, server_side = self.clients[name]
        try:
            c.sendall(b"ping\r\n")
            server_side.settimeout(1)
            got = server_side.recv(10)
            server_side.sendall(got)
            c.settimeout(1)
            return c.recv(10) == b"ping\r\n"
        except OSError:
            return False

    def reset(self, name: str) -> bool:
        """Did the client see its connection end (RST or EOF) within a second? A connection
        that a ban's nft rule only drops (not cut) times out here instead."""
        c = self.clients[name][0]
        c.settimeout(1)
        try:
            return c.recv(10) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        for pair in self.clients.values():
            for s in pair:
                s.close()
        for s in self.listeners:
            s.close()


@pytest.fixture()
def sessions(ns: str) -> Iterator[Sessions]:
    with in_netns(ns):
        s = Sessions()
        s.open("a4", A4)
        s.open("a4-other-port", A4, OTHER_PORT)
        s.open("b4", B4)
        s.open("a6", A6)
        s.open("b6", B6)
        s.open("c6", C6)
        try:
            yield s
        finally:
            s.close()


def test_cut_v4_mapped_peer_only_on_cut_ports(sessions: Sessions) -> None:
    with sd.SockDiag() as diag:
        found = diag.find([net(A4)], [CUT_PORT])
        assert [(c.family, c.peer, c.local_port) for c in found] == [(socket.AF_INET6, f"::ffff:{A4}", CUT_PORT)]
        assert diag.find([net(A4)], [CUT_PORT], kernel_filter=False) == found
        assert len(diag.cut([net(A4)], [CUT_PORT])) == 1
    assert not sessions.alive("a4")
    assert all(sessions.alive(n) for n in ("a4-other-port", "b4", "a6", "b6", "c6"))


def test_cut_ipv6_prefix_and_every_port(sessions: Sessions) -> None:
    cut = sd.cut_connections([net("fd42:6d62::/64")], [])  # no ports: every port
    assert {(c.peer, c.local_port) for c in cut} == {(A6, CUT_PORT), (B6, CUT_PORT)}
    assert not sessions.alive("a6") and not sessions.alive("b6")
    assert all(sessions.alive(n) for n in ("a4", "a4-other-port", "b4", "c6"))


def test_cut_spares_exempt_addresses(sessions: Sessions) -> None:
    cut = sd.cut_connections([net("127.0.0.0/29")], [CUT_PORT, OTHER_PORT], exempt=[net(B4)])
    assert sorted(c.peer for c in cut) == [A4, f"::ffff:{A4}"]
    assert not sessions.alive("a4") and not sessions.alive("a4-other-port")
    assert all(sessions.alive(n) for n in ("b4", "a6", "b6", "c6"))


def test_unavailable_says_nothing_is_missing_here(ns: str) -> None:
    with in_netns(ns):
        assert sd.unavailable() is None


def test_without_cap_net_admin_the_kernel_refuses_and_we_say_why(ns: str, sessions: Sessions) -> None:
    """Root without CAP_NET_ADMIN (setpriv drops it from the bounding set): the dump works, the
    destroy gets EPERM, unavailable() says so; the connection stays (nothing else happens)."""
    code = (
        "import ipaddress, errno\n"
        "from mailban import sockdestroy as sd\n"
        "print(sd.unavailable())\n"
        f"try:\n    sd.cut_connections([ipaddress.ip_network('{A4}')], [{CUT_PORT}])\n"
        "except sd.SockDiagError as e:\n    print('refused', errno.errorcode[e.errno])\n"
    )
    out = subprocess.run(["ip", "netns", "exec", ns, "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
                          sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["no CAP_NET_ADMIN (give the daemon this capability, or set cut_connections = false)",
                                "refused EPERM"]
    assert sessions.alive("a4")


# ---- the nft action: element first, then the cut -------------------------------------------------
def _ban(key: str, key_type: str = "ip") -> Ban:
    now = time.time()
    return Ban("auth", key_type, key, now, now + 600, 3, 600, ("nft",))


def _action(**extra: object) -> NftAction:
    return NftAction("nft", {"table": "sockcut", "ports": [CUT_PORT], **extra})


def test_nft_ban_cuts_and_notes_it(sessions: Sessions, ns: str) -> None:
    with in_netns(ns):
        action = _action()
        action.start([])
        assert action.health() is None
        started = time.monotonic()
        assert action.ban([_ban(A4), _ban("fd42:6d62::/64", "net")]) == []
        took = time.monotonic() - started
        assert action.backend.list() and set(action.backend.list()) == {A4, "fd42:6d62::/64"}
        assert action.ban_notes() == {A4: "cut 1 live connection", "fd42:6d62::/64": "cut 2 live connections"}
    assert took < 1.0
    assert all(sessions.reset(n) for n in ("a4", "a6", "b6"))
    assert sessions.alive("a4-other-port")  # not a port the ban covers: left alone
    assert sessions.alive("b4") and sessions.alive("c6")


def test_nft_cut_off_or_exempt_leaves_sessions(sessions: Sessions, ns: str) -> None:
    with in_netns(ns):
        off = _action(cut_connections=False)
        off.start([])
        assert off.ban([_ban(A4)]) == [] and off.ban_notes() == {}
        exempt = _action(cut_exempt=["fd42:6d62::3"])
        assert exempt.ban([_ban("fd42:6d62::/64", "net")]) == []
        assert exempt.ban_notes() == {"fd42:6d62::/64": "cut 1 live connection"}
        with sd.SockDiag() as diag:
            # not cut: still there (the rule drops their packets, so the server's end lingers)
            assert {c.peer for c in diag.find([net(A4), net(B6)], [CUT_PORT])} == {f"::ffff:{A4}", B6}
    assert sessions.reset("a6") and not sessions.reset("a4") and not sessions.reset("b6")


def test_nft_cut_failure_never_fails_the_ban_and_is_logged_once(
        sessions: Sessions, ns: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A kernel without CONFIG_INET_DIAG_DESTROY (this one has it: its refusal is stood in for)."""
    def refuse(*_a: object, **_k: object) -> list[sd.Conn]:
        raise sd.SockDiagError(errno.EOPNOTSUPP, "sock_diag destroy: Operation not supported")
    monkeypatch.setattr(sd, "cut_connections", refuse)
    caplog.set_level(logging.WARNING, "mailban.action.nft")
    with in_netns(ns):
        action = _action()
        action.start([])
        first = action.ban([_ban(A4)])
        second = action.ban([_ban(B4)])
        assert set(action.backend.list()) == {A4, B4}  # the bans are in place
    why = "the kernel cannot destroy sockets (built without CONFIG_INET_DIAG_DESTROY)"
    assert first == second == [f"live connections not cut: {why}"]
    assert action.health() == f"live connections are not cut: {why}"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        f"nft: cannot cut banned addresses' live connections: {why}; bans still block new ones"]


def test_nft_options_are_checked() -> None:
    for bad, word in (({"cut_connections": "yes"}, "cut_connections"), ({"cut_ports": [0]}, "cut_ports"),
                      ({"cut_exempt": ["not-an-ip"]}, "cut_exempt"), ({"cut_exempt": "10.0.0.0/8"}, "cut_exempt")):
        with pytest.raises(ValueError, match=f"`{word}`"):
            NftAction.validate(bad)
    NftAction.validate({"cut_connections": False, "cut_ports": [143, 993], "cut_exempt": ["10.0.0.0/8", "::1"]})
