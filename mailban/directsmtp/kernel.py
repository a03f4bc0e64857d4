"""The kernel side of direct-SMTP counting: chains and sets in mailban's nft table.

Inputs: the ports, the excluded uids, the allowed destination networks and the policy (count
only, or refuse every non-MTA uid as well); uids to block with a timeout. Outputs: kernel state,
and the counters read back as {(uid, destination, port): connections}.

What it owns, next to the ban sets of actions/nft.py (docs/direct-smtp.md shows it whole):

    table inet mailban {
        set dsmtp_uid    { type uid; flags dynamic,timeout; timeout 1d; counter; }  # polled every second
        set dsmtp_count4 { type uid . ipv4_addr . inet_service; flags dynamic,timeout; timeout 1d; counter; }
        set dsmtp_count6 { type uid . ipv6_addr . inet_service; ... }
        set dsmtp_mta    { type uid; }                          # never counted nor blocked
        set dsmtp_allow4 { type ipv4_addr; flags interval; }    # destinations never counted
        set dsmtp_allow6 { type ipv6_addr; flags interval; }
        set dsmtp_block  { type uid; flags timeout; }           # the direct-smtp-block action's
        chain direct_smtp {
            type filter hook output priority -10; policy accept;
            tcp dport { 25, 465, 587 } tcp flags syn / syn,ack oif != "lo" jump direct_smtp_new
        }
        chain direct_smtp_new {
            meta skuid @dsmtp_mta return
            ip daddr @dsmtp_allow4 return
            ip6 daddr @dsmtp_allow6 return
            update @dsmtp_uid { meta skuid }
            meta nfproto ipv4 update @dsmtp_count4 { meta skuid . ip daddr . tcp dport }
            meta nfproto ipv6 update @dsmtp_count6 { meta skuid . ip6 daddr . tcp dport }
            meta skuid @dsmtp_block reject with tcp reset
            [reject with tcp reset]                              # block_direct_smtp = "all-but-mta"
        }
    }

Why a set keyed by uid alone next to the (uid, destination, port) sets: reading a set costs
in proportion to its elements (libnftables lists and prints each one: 0.4 ms for a few uids,
320 ms for 10,000 destinations), and listing one set does not read the others. The daemon
polls the uid set every second, whatever the number of destinations, and reads the destination
sets only when a uid's count grew, no more often than their cost allows (source.py).

Why a SYN without ACK rather than `ct state new`: it needs no conntrack, and each connect()
sends one (a retransmitted SYN counts again: a connection that is refused at once, by a reset,
is never retransmitted). Why counting comes before the block rules: a blocked uid that keeps
trying is still reported. `update` refreshes an element's timeout, so a uid that keeps
connecting keeps its counter; one idle for a day is dropped by the kernel.

ensure() is one transaction and idempotent: `add` of an existing set keeps its elements (the
counters survive a restart of mailban, and a reload), the exclusion and allow sets are flushed
and refilled, both chains flushed and their rules re-added, so they never appear twice and
there is no instant without them. The block set's elements belong to the action and are never
touched here. Nothing outside these names is touched.
Security note: only integers (uids, ports, timeouts) and networks that `ipaddress` accepted are
written into the commands; nothing read from a log or a process ever reaches them.
"""

from __future__ import annotations

import ipaddress
import pwd
from typing import Any, Iterable

UIDS, COUNT4, COUNT6 = "dsmtp_uid", "dsmtp_count4", "dsmtp_count6"
MTA, ALLOW4, ALLOW6, BLOCK = "dsmtp_mta", "dsmtp_allow4", "dsmtp_allow6", "dsmtp_block"
CHAIN, NEW = "direct_smtp", "direct_smtp_new"
PORTS = (25, 465, 587)
# The MTAs' own users (postfix; Exim on Debian and elsewhere; sendmail's smmta) and root.
MTA_USERS = ("postfix", "Debian-exim", "exim", "smmta", "root")
# Elements the kernel keeps per counting set (a full set counts no new pair: docs).
SET_SIZE = 65535
IDLE_TIMEOUT = 86400  # a (uid, destination, port) idle for a day is dropped by the kernel

Counters = dict[tuple[int, str, int], int]


class NftError(RuntimeError):
    """libnftables refused a command; the message is nft's own."""


def uids_of(names: Iterable[str]) -> tuple[list[int], list[str]]:
    """The uids of these user names (or numbers), and the names this host does not know (a
    missing MTA user is skipped, not an error: Exim's user is Debian-exim on Debian only)."""
    found: list[int] = []
    missing: list[str] = []
    for name in names:
        if name.isdigit():
            found.append(int(name))
            continue
        try:
            found.append(pwd.getpwnam(name).pw_uid)
        except KeyError:
            missing.append(name)
    return sorted(set(found)), missing


class DirectSmtpKernel:
    def __init__(self, table: str = "mailban", priority: int = -10) -> None:
        from nftables import Nftables

        self.nft = Nftables()
        self.nft.set_json_output(True)
        self.table = table
        self.priority = priority

    # ---- plumbing -----------------------------------------------------------------------------
    def _cmd(self, text: str) -> str:
        rc, output, error = self.nft.cmd(text)
        if rc != 0:
            raise NftError((error or "").strip() or f"libnftables returned {rc}")
        return str(output or "")

    def _t(self) -> str:
        return f"inet {self.table}"

    # ---- set-up -------------------------------------------------------------------------------
    def block_set_commands(self) -> list[str]:
        t = self._t()
        return [f"add table {t}", f"add set {t} {BLOCK} {{ type uid; flags timeout; }}"]

    def ensure(self, ports: Iterable[int] = PORTS, mta_uids: Iterable[int] = (),
               allow: Iterable[Any] = (), block_all: bool = False) -> None:
        """Create or refresh the counting chains and sets (see the module's header)."""
        t = self._t()
        ports = sorted({int(p) for p in ports})
        nets = [ipaddress.ip_network(str(n), strict=False) for n in allow]
        v4 = [str(n) for n in nets if n.version == 4]
        v6 = [str(n) for n in nets if n.version == 6]
        uids = sorted({int(u) for u in mta_uids})
        counting = f"flags dynamic,timeout; timeout {IDLE_TIMEOUT}s; size {SET_SIZE}; counter;"
        cmds = [
            *self.block_set_commands(),
            f"add set {t} {UIDS} {{ type uid; {counting} }}",
            f"add set {t} {COUNT4} {{ type uid . ipv4_addr . inet_service; {counting} }}",
            f"add set {t} {COUNT6} {{ type uid . ipv6_addr . inet_service; {counting} }}",
            f"add set {t} {MTA} {{ type uid; }}",
            f"add set {t} {ALLOW4} {{ type ipv4_addr; flags interval; }}",
            f"add set {t} {ALLOW6} {{ type ipv6_addr; flags interval; }}",
            f"flush set {t} {MTA}", f"flush set {t} {ALLOW4}", f"flush set {t} {ALLOW6}",
        ]
        if uids:
            cmds.append(f"add element {t} {MTA} {{ {', '.join(map(str, uids))} }}")
        if v4:
            cmds.append(f"add element {t} {ALLOW4} {{ {', '.join(v4)} }}")
        if v6:
            cmds.append(f"add element {t} {ALLOW6} {{ {', '.join(v6)} }}")
        cmds += [
            f"add chain {t} {NEW}",
            f"add chain {t} {CHAIN} {{ type filter hook output priority {int(self.priority)}; policy accept; }}",
            f"flush chain {t} {CHAIN}", f"flush chain {t} {NEW}",
            f"add rule {t} {CHAIN} tcp dport {{ {', '.join(map(str, ports))} }} tcp flags & (syn | ack) == syn "
            f'oif != "lo" jump {NEW}',
            f"add rule {t} {NEW} meta skuid @{MTA} return",
            f"add rule {t} {NEW} ip daddr @{ALLOW4} return",
            f"add rule {t} {NEW} ip6 daddr @{ALLOW6} return",
            f"add rule {t} {NEW} update @{UIDS} {{ meta skuid }}",
            f"add rule {t} {NEW} meta nfproto ipv4 update @{COUNT4} {{ meta skuid . ip daddr . tcp dport }}",
            f"add rule {t} {NEW} meta nfproto ipv6 update @{COUNT6} {{ meta skuid . ip6 daddr . tcp dport }}",
            f"add rule {t} {NEW} meta skuid @{BLOCK} reject with tcp reset",
        ]
        if block_all:
            cmds.append(f"add rule {t} {NEW} reject with tcp reset")
        self._cmd("\n".join(cmds))

    def remove(self) -> None:
        """Take the counting chains out (direct_smtp = false after a reload); the counters and
        the block set stay until the table goes, so turning it on again resumes counting."""
        t = self._t()
        for chain in (CHAIN, NEW):
            try:
                self._cmd(f"delete chain {t} {chain}")
            except NftError:
                pass  # not there: nothing to remove

    def check(self) -> None:
        """Raise NftError when the counting chains are gone (deleted behind our back; a missing
        uid set makes uid_counters() raise). Cheap whatever the sets hold: `list chain` would
        read the elements of every set its rules name (155 ms with 10,000 destinations),
        `list chains` reads no rules (0.1 ms)."""
        import json

        t = self._t()
        out = json.loads(self._cmd("list chains inet") or "{}")
        names = {(c.get("table"), c.get("name")) for item in out.get("nftables", [])
                 for c in [item.get("chain")] if isinstance(c, dict)}
        if (self.table, CHAIN) not in names or (self.table, NEW) not in names:
            raise NftError(f"No such file or directory: chain {t} {CHAIN}")

    # ---- counters -----------------------------------------------------------------------------
    def uid_counters(self) -> dict[int, int]:
        """uid -> connections counted, from the uid set: what is polled every second (its cost
        depends on the uids that connected in the last day, not on their destinations)."""
        found: dict[int, int] = {}
        for val, elem in self._elements(UIDS):
            uid = _uid(val)
            packets = (elem.get("counter") or {}).get("packets")
            if uid is not None and isinstance(packets, int):
                found[uid] = packets
        return found

    def counters(self) -> Counters:
        """(uid, destination, port) -> connections counted, from both counting sets."""
        found: Counters = {}
        for name in (COUNT4, COUNT6):
            for val, elem in self._elements(name):
                concat = val.get("concat") if isinstance(val, dict) else None
                if not isinstance(concat, list) or len(concat) != 3:
                    continue
                uid = _uid(concat[0])
                packets = ((elem.get("counter") or {}).get("packets")) if isinstance(elem, dict) else None
                if uid is None or not isinstance(packets, int):
                    continue
                try:
                    dst = str(ipaddress.ip_address(str(concat[1])))
                    port = int(concat[2])
                except ValueError:
                    continue
                found[(uid, dst, port)] = packets
        return found

    def _elements(self, set_name: str) -> list[tuple[Any, dict[str, Any]]]:
        import json

        out = json.loads(self._cmd(f"list set {self._t()} {set_name}") or "{}")
        elems: list[tuple[Any, dict[str, Any]]] = []
        for item in out.get("nftables", []):
            for elem in (item.get("set") or {}).get("elem", []) or []:
                if isinstance(elem, dict) and "elem" in elem:
                    elems.append((elem["elem"].get("val"), elem["elem"]))
                else:
                    elems.append((elem, {}))
        return elems

    # ---- per-uid blocks (the direct-smtp-block action) -----------------------------------------
    def block(self, uids: list[tuple[int, int]], replace_all: bool = False) -> None:
        """Block these (uid, seconds) pairs: add-or-replace, so the timeout given wins;
        `replace_all` first empties the set (restore at start), all in one transaction."""
        t = self._t()
        cmds = self.block_set_commands()
        if replace_all:
            cmds.append(f"flush set {t} {BLOCK}")
        if uids:
            plain = ", ".join(str(int(u)) for u, _ in uids)
            timed = ", ".join(f"{int(u)} timeout {max(1, int(s))}s" for u, s in uids)
            if not replace_all:
                cmds += [f"add element {t} {BLOCK} {{ {plain} }}", f"delete element {t} {BLOCK} {{ {plain} }}"]
            cmds.append(f"add element {t} {BLOCK} {{ {timed} }}")
        self._cmd("\n".join(cmds))

    def unblock(self, uids: list[int]) -> None:
        """Lift these uids' blocks; uids not blocked are fine (idempotent)."""
        present = set(self.blocked())
        gone = sorted({int(u) for u in uids} & present)
        if gone:
            self._cmd(f"delete element {self._t()} {BLOCK} {{ {', '.join(map(str, gone))} }}")

    def blocked(self) -> dict[int, int | None]:
        """uid -> seconds left, of the block set (empty when it does not exist)."""
        try:
            elems = self._elements(BLOCK)
        except NftError:
            return {}
        found: dict[int, int | None] = {}
        for val, elem in elems:
            uid = _uid(val)
            if uid is not None:
                found[uid] = elem.get("expires")
        return found

    def check_block_set(self) -> None:
        self._cmd(f"list set {self._t()} {BLOCK}")


def _uid(value: Any) -> int | None:
    """A uid as libnftables prints it: a number (or, if it ever resolves it, a user name)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            return None
    return None
