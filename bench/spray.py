"""Memory under a spray: a million distinct addresses failing once each, one real attacker.

    python bench/spray.py                                   # 1,000,000 addresses, shipped config
    python bench/spray.py --addresses 50000 --max-keys 5000 # what tests/test_spray.py runs

Feeds the daemon's pipeline in-process (`Config.pipeline` of the shipped default configuration,
the daemon's `Pipeline.feed` with wall time as `now`) with one failure line per address: half
IPv4, half IPv6 (each in a /64 of its own, so the prefix windows fill too), a third each SASL
guesses (with a user name of their own: the spray must not be one account under attack, which
account-guess would rightly ban), relay rejects and postscreen pregreets. Log time advances
evenly over `--span` seconds (default 8 minutes, inside mail-abuse's 10-minute find time, so
every spray entry is still live when the table is full). Hidden in it, one attacker address
fails `--attacker-failures` times (SASL), spread through it (see attacker_positions: gaps
of N/(failures+1) spray addresses, far more than max_keys after its second failure).

Prints the peak RSS (getrusage), the entries every per-key structure holds at the end, and
whether the attacker was banned. `max_keys` can be lowered for all jails with --max-keys.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import resource
import sys
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailban import config as mconfig  # noqa: E402
from mailban.core.pipeline import Pipeline  # noqa: E402
from mailban.localtime import local_to_epoch  # noqa: E402

ATTACKER = "203.0.113.77"
_V4_BASE = int(ipaddress.IPv4Address("11.0.0.0"))
_V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))


def spray_address(i: int) -> str:
    """The i-th spray address: distinct for every i, even i IPv4 (11.0.0.0/8 on), odd i IPv6
    (2001:db8::/32, one /64 each)."""
    if i % 2 == 0:
        return str(ipaddress.IPv4Address(_V4_BASE + (i // 2) * 7))
    return str(ipaddress.IPv6Address(_V6_BASE + ((i // 2) << 64) + 0x5eed))


def _stamp(t: float) -> str:
    return time.strftime("%b %e %H:%M:%S", time.localtime(t))


def spray_line(i: int, ip: str, t: float) -> bytes:
    stamp = _stamp(t)
    which = i % 3
    if which == 0:
        msg = (f"postfix/smtpd[{1000 + i % 5000}]: warning: unknown[{ip}]: SASL LOGIN authentication "
               f"failed: (reason unavailable), sasl_username=user{i}@example.test")
    elif which == 1:
        msg = (f"postfix/smtpd[{1000 + i % 5000}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 454 4.7.1 "
               f"<x{i}@elsewhere.example>: Relay access denied; from=<spam@bulk.example> "
               f"to=<x{i}@elsewhere.example> proto=ESMTP helo=<bot{i}.example>")
    else:
        shown = f"[{ip}]" if ":" in ip else ip
        msg = (f"postfix/postscreen[{1000 + i % 5000}]: PREGREET 28 after 0 from {shown}:{40000 + i % 20000}: "
               f"EHLO pregreet.example.test\\r\\n")
    return f"{stamp} mail {msg}\n".encode()


def attacker_line(k: int, t: float) -> bytes:
    return (f"{_stamp(t)} mail postfix/smtpd[777]: warning: unknown[{ATTACKER}]: SASL PLAIN authentication "
            f"failed: (reason unavailable), sasl_username=guess{k}@example.test\n").encode()


def attacker_positions(addresses: int, failures: int, max_keys: int) -> list[int]:
    """Where the attacker's failures go: spread evenly over the spray (failure k at
    (k+1)*N/(failures+1)), except that the second comes at most max_keys/2 spray addresses
    after the first. Until an address fails twice nothing tells it from the spray: its first
    failure is one among max_keys single failures, and the jail can keep only max_keys."""
    even = [(k + 1) * addresses // (failures + 1) for k in range(failures)]
    if failures < 2 or even[1] - even[0] <= max_keys // 2:
        return even
    second = even[0] + max_keys // 2
    rest = failures - 2
    return [even[0], second] + [second + (k + 1) * (even[-1] - second) // rest for k in range(rest)]


def lines(addresses: int, positions: list[int], start: float, span: float) -> Iterator[tuple[bytes, float]]:
    positions = {p: k for k, p in enumerate(positions)}  # type: ignore[assignment]
    step = span / max(addresses, 1)
    for i in range(addresses):
        t = start + i * step
        k = positions.get(i)
        if k is not None:
            yield attacker_line(k, t), t
        yield spray_line(i, spray_address(i), t), t


def pipeline(max_keys: int | None, now: float) -> Pipeline:
    cfg = mconfig.load(str(mconfig.SHIPPED_DEFAULT))
    if max_keys is not None:
        import dataclasses
        cfg = dataclasses.replace(cfg, jails=tuple(dataclasses.replace(j, max_keys=max_keys) for j in cfg.jails))
    return cfg.pipeline(now, local_to_epoch)


def structure_sizes(pipe: Pipeline) -> dict[str, int]:
    """Entries held per per-key structure, per jail (what must stay bounded)."""
    sizes: dict[str, int] = {}
    for jail in pipe.jails:
        name = jail.spec.name
        for attr in ("windows", "nets", "offenses", "banned", "banned_ips", "banned_nets", "logins",
                     "probation", "follower_fails", "ban_started"):
            sizes[f"{name}.{attr}"] = len(getattr(jail, attr))
    sizes["correlator.messages"] = len(pipe.correlator.messages)
    sizes["correlator.sessions"] = len(pipe.correlator.sessions)
    return sizes


def run(addresses: int, failures: int = 5, max_keys: int | None = None, span: float = 480.0) -> dict[str, Any]:
    now = time.time()
    start = now - span - 60
    pipe = pipeline(max_keys, now)
    cap = min(j.spec.max_keys for j in pipe.jails)
    positions = attacker_positions(addresses, failures, cap)
    feed = pipe.feed
    banned: list[Any] = []
    peak_entries = 0
    n = 0
    started = time.perf_counter()
    for line, _t in lines(addresses, positions, start, span):
        n += 1
        _events, bans = feed(line, now, "spray.log", n)
        if bans:
            banned.extend(bans)
        if n % 10_000 == 0:
            peak_entries = max(peak_entries, sum(structure_sizes(pipe).values()))
    elapsed = time.perf_counter() - started
    sizes = structure_sizes(pipe)
    gc.collect()
    return {
        "lines": n,
        "seconds": elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sizes": sizes,
        "peak_entries": max(peak_entries, sum(sizes.values())),
        "bans": banned,
        "attacker_banned": [b for b in banned if b.key == ATTACKER],
        "max_keys": {j.spec.name: j.spec.max_keys for j in pipe.jails},
        "positions": positions,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addresses", type=int, default=1_000_000)
    ap.add_argument("--attacker-failures", type=int, default=5)
    ap.add_argument("--max-keys", type=int, default=None, help="override every jail's max_keys")
    ap.add_argument("--span", type=float, default=480.0, help="log seconds the spray takes")
    args = ap.parse_args()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r = run(args.addresses, args.attacker_failures, args.max_keys, args.span)
    print(f"spray: {args.addresses:,} distinct addresses, {r['lines']:,} lines in {r['seconds']:.1f} s "
          f"({r['lines'] / r['seconds']:,.0f} lines/s); max_keys {r['max_keys']}")
    print(f"peak RSS: {r['peak_rss_mb']:.0f} MB (after imports and config: {base:.0f} MB; target 300 MB)")
    print("entries at the end:")
    for name, size in r["sizes"].items():
        if size:
            print(f"  {size:>9,}  {name}")
    print(f"attacker's failures after spray addresses {r['positions']}")
    print(f"bans: {len(r['bans'])}; attacker {ATTACKER}: "
          + (", ".join(f"{b.jail} ({b.count} in {b.findtime:g}s)" for b in r["attacker_banned"]) or "NOT BANNED"))
    return 0 if r["attacker_banned"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
