"""A tiny authoritative DNS server for the real-MTA tests: A, AAAA and PTR answers from a dict.

Exim takes a client's reverse name only after a forward lookup of that name in the DNS gives the
client's address back (src/host.c host_name_lookup: host_find_bydns, never /etc/hosts), so a
test that wants `H=name (helo) [ip]` in Exim's lines needs a DNS server. This one answers UDP
queries on the socket it is given (bind it inside the test's network namespace, where the
chroot's resolv.conf points): names it knows get their records, every other name NXDOMAIN.
Standard library only; one thread; a malformed query is dropped.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading

A, PTR, AAAA = 1, 12, 28


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer.lower()


class DnsStub:
    """Serve `names` (host name -> its addresses) forward and, for `ptr` (address -> name),
    reverse. A PTR may name a host whose forward records lack the address (the mismatch case)."""

    def __init__(self, sock: socket.socket, names: dict[str, list[str]], ptr: dict[str, str]) -> None:
        self.sock = sock
        self.forward = {n.lower().rstrip("."): addrs for n, addrs in names.items()}
        self.reverse = {reverse_name(ip): name for ip, name in ptr.items()}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.queries: list[tuple[str, int]] = []

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self.answer(data)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                return

    def answer(self, query: bytes) -> bytes:
        qid, _flags, qdcount = struct.unpack("!HHH", query[:6])
        if qdcount != 1:
            raise IndexError("one question only")
        labels, pos = [], 12
        while query[pos]:
            n = query[pos]
            labels.append(query[pos + 1:pos + 1 + n].decode("ascii"))
            pos += 1 + n
        qtype, _qclass = struct.unpack("!HH", query[pos + 1:pos + 5])
        question = query[12:pos + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        records: list[bytes] = []
        known = name in self.forward or name in self.reverse
        if qtype == PTR and name in self.reverse:
            rdata = b"".join(bytes([len(p)]) + p.encode() for p in self.reverse[name].split(".")) + b"\0"
            records.append(self._rr(PTR, rdata))
        for addr in self.forward.get(name, []):
            ip = ipaddress.ip_address(addr)
            if (qtype, ip.version) in ((A, 4), (AAAA, 6)):
                records.append(self._rr(qtype, ip.packed))
        rcode = 0 if known else 3  # NXDOMAIN for names it does not know
        flags = 0x8400 | rcode     # a response, authoritative
        return struct.pack("!HHHHHH", qid, flags, 1, len(records), 0, 0) + question + b"".join(records)

    @staticmethod
    def _rr(qtype: int, rdata: bytes) -> bytes:
        # the owner is the question's name (a pointer to offset 12), class IN, TTL 60
        return struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata
