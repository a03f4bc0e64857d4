"""The addresses mailban must never ban, whatever the logs say: the host's own addresses, and
the networks postfix trusts (`mynetworks`: its own relays and clients).

Inputs: `ip -j addr` and `postconf -h mynetworks` (argv lists through the executor; either may be
missing). Output: a list of ip_network objects added to every jail's ignore list at start and
on reload. A failure to read them is logged and leaves the configured ignoreip in force.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
from typing import Any

from .actions.executor import ActionError, run

log = logging.getLogger("mailban")


def host_addresses() -> list[Any]:
    if shutil.which("ip") is None:
        return []
    try:
        data = json.loads(run(["ip", "-j", "addr", "show"], timeout=5))
    except (ActionError, ValueError) as exc:
        log.warning("cannot list this host's addresses (they are not protected from bans): %s", exc)
        return []
    found = []
    for link in data if isinstance(data, list) else []:
        for info in link.get("addr_info", []):
            try:
                found.append(ipaddress.ip_network(info["local"]))
            except (KeyError, ValueError):
                continue
    return found


def postfix_mynetworks(postconf: str = "postconf") -> list[Any]:
    if shutil.which(postconf) is None:
        return []
    try:
        text = run([postconf, "-h", "mynetworks"], timeout=10).decode("utf-8", "replace")
    except ActionError:
        return []
    nets = []
    for token in text.replace(",", " ").split():
        token = token.replace("[", "").replace("]", "")
        try:
            nets.append(ipaddress.ip_network(token, strict=False))
        except ValueError:
            continue  # a lookup table (hash:/etc/...) or a host name: not followed
    return nets


def never_ban(include_mynetworks: bool = True) -> list[Any]:
    nets = host_addresses()
    if include_mynetworks:
        nets += postfix_mynetworks()
    return nets


def labelled(include_mynetworks: bool = True) -> list[tuple[Any, str]]:
    """never_ban()'s networks, each with why it is protected (for refusals an admin reads)."""
    out = [(net, "one of this host's own addresses") for net in host_addresses()]
    if include_mynetworks:
        out += [(net, "in postfix's mynetworks") for net in postfix_mynetworks()]
    return out
