"""nftables through libnftables' JSON API, in-process: one table, two timeout sets, one rule.

Inputs: element lists (address, timeout in seconds) and addresses to remove. Outputs: kernel state.
Every call is one libnftables transaction (a JSON batch): either all of it applies or none.

The ruleset mailban owns (see docs/nftables.md):

    table inet mailban {
        set banned4 { type ipv4_addr; flags timeout; }
        set banned6 { type ipv6_addr; flags timeout; }
        chain input {
            type filter hook input priority -10; policy accept;
            ip saddr @banned4 [tcp dport { ports }] drop
            ip6 saddr @banned6 [tcp dport { ports }] drop
        }
    }

`ensure()` creates it idempotently: `add table/set/chain` are no-ops when they exist, and the chain
is flushed and its two rules re-added in the same transaction, so they never appear twice and there
is no instant without them. Nothing outside this table is ever touched.
Security note: only addresses that `ipaddress` accepted reach this module (Ban checks them).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Iterable


class NftError(RuntimeError):
    """libnftables refused a command; the message is nft's own."""


class NftBackend:
    def __init__(
        self,
        table: str = "mailban",
        set4: str = "banned4",
        set6: str = "banned6",
        set4net: str = "banned4net",
        set6net: str = "banned6net",
        chain: str = "input",
        priority: int = -10,
        verdict: str = "drop",
        ports: list[int] | None = None,
    ) -> None:
        from nftables import Nftables

        self.nft = Nftables()
        self.nft.set_json_output(True)
        self.nft.set_handle_output(False)
        self.table = table
        self.set4 = set4
        self.set6 = set6
        self.set4net = set4net
        self.set6net = set6net
        self.chain = chain
        self.priority = priority
        self.verdict = verdict
        self.ports = list(ports or [])

    # ---- plumbing -----------------------------------------------------------------------------
    def _run(self, commands: list[dict[str, Any]]) -> Any:
        rc, output, error = self.nft.json_cmd({"nftables": commands})
        if rc != 0:
            raise NftError((error or "").strip() or f"libnftables returned {rc}")
        return output

    def _tbl(self, **extra: Any) -> dict[str, Any]:
        return {"family": "inet", "table": self.table, **extra}

    def _set_for(self, key: str) -> str:
        """The set for an address, or (`addr/len`, a prefix ban) for a network."""
        if "/" in key:
            return self.set4net if ipaddress.ip_network(key).version == 4 else self.set6net
        # Keys are canonical addresses (Ban checked them): only IPv6 has colons. Cheaper than
        # ipaddress (~2 us), which restore() would call once per ban.
        return self.set6 if ":" in key else self.set4

    @staticmethod
    def _val(key: str) -> Any:
        if "/" in key:
            addr, _, bits = key.partition("/")
            return {"prefix": {"addr": addr, "len": int(bits)}}
        return key

    @staticmethod
    def _key(val: Any) -> str:
        if isinstance(val, dict) and "prefix" in val:
            return f"{val['prefix']['addr']}/{val['prefix']['len']}"
        return str(val)

    def _rule(self, proto: str, set_name: str) -> dict[str, Any]:
        expr: list[dict[str, Any]] = [
            {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "saddr"}},
                       "right": f"@{set_name}"}},
        ]
        if self.ports:
            right: Any = self.ports[0] if len(self.ports) == 1 else {"set": sorted(self.ports)}
            expr.append({"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                                   "right": right}})
        if self.verdict == "reject":
            expr.append({"reject": {"type": "tcp reset"}} if self.ports else {"reject": None})
        else:
            expr.append({"drop": None})
        return {"add": {"rule": self._tbl(chain=self.chain, expr=expr)}}

    def _setup(self) -> list[dict[str, Any]]:
        return [
            {"add": {"table": {"family": "inet", "name": self.table}}},
            {"add": {"set": self._tbl(name=self.set4, type="ipv4_addr", flags=["timeout"])}},
            {"add": {"set": self._tbl(name=self.set6, type="ipv6_addr", flags=["timeout"])}},
            # Prefix bans (a whole IPv6 /64): interval sets, so that one element covers a range.
            {"add": {"set": self._tbl(name=self.set4net, type="ipv4_addr", flags=["interval", "timeout"])}},
            {"add": {"set": self._tbl(name=self.set6net, type="ipv6_addr", flags=["interval", "timeout"])}},
            {"add": {"chain": self._tbl(name=self.chain, type="filter", hook="input",
                                        prio=self.priority, policy="accept")}},
            {"flush": {"chain": self._tbl(name=self.chain)}},
            self._rule("ip", self.set4),
            self._rule("ip6", self.set6),
            self._rule("ip", self.set4net),
            self._rule("ip6", self.set6net),
        ]

    def _elements(self, set_name: str, elems: list[Any]) -> dict[str, Any]:
        return self._tbl(name=set_name, elem=elems)

    def _add_commands(self, elements: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
        """Add-or-replace: `add` makes sure the element exists, `delete` + `add` sets the given
        timeout, all inside one transaction. The timeout replaces the element's current one,
        longer or shorter: callers pass the longest ban they hold on each address."""
        by_set: dict[str, list[tuple[str, int]]] = {}
        for ip, timeout in elements:
            by_set.setdefault(self._set_for(ip), []).append((ip, int(timeout)))
        commands: list[dict[str, Any]] = []
        for set_name, items in by_set.items():
            plain = [self._val(ip) for ip, _ in items]
            commands.append({"add": {"element": self._elements(set_name, plain)}})
            commands.append({"delete": {"element": self._elements(set_name, plain)}})
            commands.append({"add": {"element": self._elements(
                set_name, [{"elem": {"val": self._val(ip), "timeout": t}} for ip, t in items])}})
        return commands

    # ---- the operations the action uses ------------------------------------------------------
    def ensure(self) -> None:
        self._run(self._setup())

    def restore(self, elements: list[tuple[str, float]]) -> None:
        """Make the kernel sets equal to `elements`, in one transaction (ruleset included)."""
        commands = self._setup()
        for set_name in (self.set4, self.set6, self.set4net, self.set6net):
            commands.append({"flush": {"set": self._tbl(name=set_name)}})
        if elements:
            by_set: dict[str, list[Any]] = {}
            for ip, timeout in elements:
                by_set.setdefault(self._set_for(ip), []).append({"elem": {"val": self._val(ip), "timeout": int(timeout)}})
            for set_name, elems in by_set.items():
                commands.append({"add": {"element": self._elements(set_name, elems)}})
        self._run(commands)

    def add(self, elements: list[tuple[str, float]]) -> None:
        """Add or refresh elements. A table deleted behind our back (`nft flush ruleset`) makes
        this raise: recreating it here would bring back only these elements, so the daemon's
        retry calls `restore()` with every active ban instead (kernel = database again)."""
        self._run(self._add_commands(elements))

    def remove(self, ips: list[str]) -> None:
        """Delete elements; addresses that are not in the sets are fine (idempotent)."""
        present = set(self.list())
        by_set: dict[str, list[str]] = {}
        for ip in ips:
            if ip in present:
                by_set.setdefault(self._set_for(ip), []).append(self._val(ip))
        if by_set:
            self._run([{"delete": {"element": self._elements(s, v)}} for s, v in by_set.items()])

    def check(self) -> None:
        """Raise NftError when the table, a set or the chain is gone (deleted behind our back)."""
        for name in (self.set4, self.set6):
            self._run([{"list": {"set": self._tbl(name=name)}}])
        self._run([{"list": {"chain": self._tbl(name=self.chain)}}])

    def list(self) -> list[str]:
        """Addresses currently in the sets (an empty list when the table does not exist)."""
        return list(self.elements())

    def elements(self) -> dict[str, int | None]:
        """address (or addr/len for a prefix) -> seconds until the kernel expires it."""
        found: dict[str, int | None] = {}
        for set_name in (self.set4, self.set6, self.set4net, self.set6net):
            try:
                output = self._run([{"list": {"set": self._tbl(name=set_name)}}])
            except NftError:
                continue
            data = json.loads(output) if isinstance(output, str) and output else (output or {})
            for item in data.get("nftables", []):
                for elem in (item.get("set") or {}).get("elem", []) or []:
                    if isinstance(elem, dict) and "elem" in elem:
                        found[self._key(elem["elem"]["val"])] = elem["elem"].get("expires")
                    else:
                        found[self._key(elem)] = None
        return found
