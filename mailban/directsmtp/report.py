"""`mailban direct-smtp`: the kernel's direct-SMTP counters and blocks, read without the daemon.

Inputs: the settings (ports, MTA users, policy). Outputs: the same summary the daemon's status
shows (source.uid_summary per uid), with the processes holding such sockets now. Reads only:
nothing is created, so on a host where counting was never turned on it says so.
"""

from __future__ import annotations

from typing import Any

from . import procs
from .kernel import DirectSmtpKernel, uids_of
from .source import uid_summary, where


def snapshot(settings: Any, kernel: Any = None, proc: str = "/proc") -> dict[str, Any]:
    kernel = kernel if kernel is not None else DirectSmtpKernel()
    kernel.check()  # raises (nft's words) when the chain does not exist
    ports = tuple(settings.direct_smtp_ports)
    excluded, missing = uids_of(settings.direct_smtp_mta_users)
    per_uid: dict[int, dict[str, int]] = {}
    for (uid, dst, port), n in kernel.counters().items():
        per_uid.setdefault(uid, {})[where(dst, port)] = n
    totals = kernel.uid_counters()
    return {
        "ports": list(ports), "excluded_uids": excluded, "missing_users": missing,
        "policy": settings.block_direct_smtp, "enabled": settings.direct_smtp,
        "blocked": {str(u): left for u, left in kernel.blocked().items()},
        "uids": {str(uid): uid_summary(uid, per_uid.get(uid, {}), procs.holders(uid, ports, proc), None, total)
                 for uid, total in sorted(totals.items())},
    }
