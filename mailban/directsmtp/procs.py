"""Which processes hold a uid's SMTP sockets now: what an admin hunts by hand with
`netstat -n | grep :25`, `ps auxww` and `ls -l /proc/*/cwd`.

Inputs: a uid, the remote ports, a /proc root (tests pass their own tree). Outputs: `Holder`
records (pid, command line, working directory, the destinations its sockets go to).
How: /proc/net/tcp and tcp6 list every socket of this network namespace with its owner's uid
and inode; the sockets to a remote port of interest owned by the uid give a set of inodes; the
processes owned by that uid (the owner of /proc/PID) whose /proc/PID/fd links name one of those
inodes (`socket:[INODE]`) hold them. Only processes of that uid are opened: a host with
thousands of processes costs a stat() each, not a walk of every descriptor.
What it cannot see: a connection already closed when mailban looks (the sockets of a short
session are gone within a second; the counters still saw it; `fallback` then names the uid's
running processes as candidates), and a socket handed to a process of another uid.
Security note: command lines and directories are the attacker's text (a script names itself);
they are returned as data, capped, and shown escaped (notify.printable) or JSON-quoted; they
never reach a shell or a pattern.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

MAX_HOLDERS = 8
MAX_TEXT = 300
MAX_FDS = 4096  # descriptors looked at per process, at most


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    cmdline: str
    cwd: str
    destinations: tuple[str, ...]


def _addr(hexaddr: str) -> tuple[str, int] | None:
    """`0100A8C0:0019` (/proc/net/tcp's little-endian words) -> ("192.168.0.1", 25)."""
    host, _, port = hexaddr.partition(":")
    try:
        raw = bytes.fromhex(host)
        # Each 32-bit word is in host byte order (little-endian here).
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
        addr = ipaddress.ip_address(words)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return str(addr), int(port, 16)
    except ValueError:
        return None


def smtp_sockets(uid: int, ports: tuple[int, ...], proc: str = "/proc") -> dict[int, str]:
    """inode -> "destination:port" of the uid's TCP sockets to these remote ports."""
    found: dict[int, str] = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "net", name), encoding="ascii", errors="replace") as f:
                next(f, None)  # the column titles
                for row in f:
                    cols = row.split()
                    if len(cols) < 10 or not cols[7].isdigit() or int(cols[7]) != uid:
                        continue
                    remote = _addr(cols[2])
                    inode = int(cols[9]) if cols[9].isdigit() else 0
                    if remote is None or remote[1] not in ports or inode == 0:
                        continue
                    host, port = remote
                    found[inode] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        except OSError:
            continue
    return found


def _text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TEXT * 4)
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")[:MAX_TEXT]


def holders(uid: int, ports: tuple[int, ...], proc: str = "/proc", fallback: bool = False) -> list[Holder]:
    """The processes of `uid` that hold its sockets to these remote ports now (at most
    MAX_HOLDERS, lowest pid first). With `fallback`, when none does (the connections were
    closed before mailban looked), the uid's processes running now, with no destinations: a
    spam loop that opens short sessions lives on between them, and is one of these. They are
    candidates, not proof (the line says so)."""
    sockets = smtp_sockets(uid, ports, proc)
    if not sockets and not fallback:
        return []
    wanted = {f"socket:[{inode}]": dest for inode, dest in sockets.items()}
    found: list[Holder] = []
    running: list[int] = []
    try:
        pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    except OSError:
        return []
    for pid in pids:
        base = os.path.join(proc, str(pid))
        try:
            if os.stat(base).st_uid != uid:
                continue
            running.append(pid)
            fds = os.listdir(os.path.join(base, "fd")) if wanted else []
        except OSError:
            continue  # gone, or not ours to read
        dests: list[str] = []
        for fd in fds[:MAX_FDS]:
            try:
                target = os.readlink(os.path.join(base, "fd", fd))
            except OSError:
                continue
            if target in wanted and wanted[target] not in dests:
                dests.append(wanted[target])
        if not dests:
            continue
        found.append(_holder(base, pid, tuple(dests)))
        if len(found) >= MAX_HOLDERS:
            break
    if not found and fallback:
        found = [_holder(os.path.join(proc, str(pid)), pid, ()) for pid in running[:MAX_HOLDERS]]
    return found


def _holder(base: str, pid: int, dests: tuple[str, ...]) -> Holder:
    try:
        cwd = os.readlink(os.path.join(base, "cwd"))[:MAX_TEXT]
    except OSError:
        cwd = "?"  # gone, or not ours to read (no CAP_SYS_PTRACE: docs/direct-smtp.md)
    return Holder(pid, _text(os.path.join(base, "cmdline")), cwd, dests)
