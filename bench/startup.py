"""Start-up figures: restoring 100,000 bans from SQLite into nftables, and `mailban status`.

    python bench/startup.py [--bans 100000] [--runs 5]      (root: creates a network namespace)

1. Restore: a fresh state database gets N still-valid bans (90% IPv4, 10% IPv6); then, inside a
   network namespace created for the run (`ip netns add`), the time to read them back
   (State.active) and to load them into the kernel sets in one batch (the nft action's
   NftBackend.restore, one libnftables transaction) is measured, and the sets are counted.
2. Status: `mailban run` on a tiny config in the same namespace, then the wall time of
   `mailban status` (a new process each time, as an admin types it), best and median of --runs,
   and the import time of the modules it loads (`python -X importtime`).
The namespace and the daemon are removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
NS = f"mbbench{os.getpid()}"


def inner_restore(state_dir: str, n: int) -> None:
    """Runs inside the namespace: fill the database, then time load + restore."""
    from mailban.actions.nft import NftBackend
    from mailban.core.records import Ban
    from mailban.state import State

    rng = random.Random(1)
    now = time.time()
    bans = []
    for i in range(n):
        if i % 10 == 9:
            ip = str(ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(64)))
        else:
            ip = str(ipaddress.IPv4Address(0x0B000000 + i))
        bans.append(Ban(jail="mail-abuse", key_type="ip", key=ip, time=now, until=now + 3600 + i % 600,
                        count=5, findtime=600.0, actions=("nft",), lines=("x",)))
    state = State(state_dir)
    state.commit(bans)
    state.close()

    t0 = time.perf_counter()
    state = State(state_dir)
    active = state.active(time.time())
    t1 = time.perf_counter()
    backend = NftBackend()
    backend.restore([(b.key, b.until - now) for b in active if b.key_type == "ip"])
    t2 = time.perf_counter()
    out = subprocess.run(["nft", "-j", "list", "table", "inet", "mailban"], capture_output=True, check=True).stdout
    data = json.loads(out)
    count = sum(len(item["set"].get("elem", [])) for item in data["nftables"] if "set" in item)
    print(json.dumps({"bans": len(active), "in_kernel": count, "load_s": t1 - t0, "nft_restore_s": t2 - t1,
                      "total_s": t2 - t0}))


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bans", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--inner", metavar="STATE_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner_restore(args.inner, args.bans)
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespace, nftables)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="mailban-startup-"))
    run(["ip", "netns", "add", NS])
    daemon = None
    try:
        nsexec = ["ip", "netns", "exec", NS]
        out = run(nsexec + [PY, __file__, "--bans", str(args.bans), "--inner", str(tmp / "restore")],
                  capture_output=True).stdout
        restore = json.loads(out)
        print(f"restore: {restore['bans']:,} bans read from SQLite in {restore['load_s']:.3f} s, "
              f"loaded into nftables in one batch in {restore['nft_restore_s']:.3f} s "
              f"(total {restore['total_s']:.3f} s); {restore['in_kernel']:,} elements in the kernel sets")

        conf = tmp / "conf"
        (conf / "actions.d").mkdir(parents=True)
        (conf / "actions.d" / "nft.toml").write_text('[action]\ntype = "nft"\nports = [25]\n')
        (tmp / "mail.log").write_text("")
        (conf / "mailban.toml").write_text(
            "[mailban]\n"
            "shipped_jails = false\n"
            f'logs = ["{tmp / "mail.log"}"]\n'
            f'state_dir = "{tmp / "state"}"\n'
            f'socket = "{tmp / "mailban.sock"}"\n'
            "journal = false\n"
            "\n[jail.auth]\nkinds = [\"auth-failure\"]\nmaxretry = 3\nactions = [\"nft\"]\n"
        )
        daemon = subprocess.Popen(nsexec + [PY, "-m", "mailban", "run", "--config", str(conf / "mailban.toml")],
                                  stdout=open(tmp / "daemon.out", "wb"), stderr=subprocess.STDOUT)
        status = [PY, "-m", "mailban", "status", "--socket", str(tmp / "mailban.sock"),
                  "--config", str(conf / "mailban.toml")]
        deadline = time.monotonic() + 20
        while subprocess.run(status, capture_output=True).returncode != 0:
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("the daemon did not come up:\n" + (tmp / "daemon.out").read_text())
            time.sleep(0.1)
        walls = []
        for _ in range(args.runs):
            t = time.perf_counter()
            run(status, capture_output=True)
            walls.append(time.perf_counter() - t)
        print(f"mailban status: best {min(walls) * 1000:.0f} ms, median {statistics.median(walls) * 1000:.0f} ms "
              f"wall over {args.runs} runs (python -m mailban status, a new process each time)")
        bare = []
        for _ in range(args.runs):
            t = time.perf_counter()
            run([PY, "-c", "pass"])
            bare.append(time.perf_counter() - t)
        print(f"  of which the interpreter itself (python -c pass): best {min(bare) * 1000:.0f} ms")
        imp = subprocess.run([PY, "-X", "importtime", "-c", "import mailban.cli, mailban.control, mailban.cli.render"],
                             capture_output=True, text=True).stderr.splitlines()
        rows = []
        for line in imp:
            parts = line.split("|")
            if len(parts) == 3 and parts[1].strip().isdigit():
                rows.append((int(parts[1]), parts[2].rstrip()))
        rows.sort(reverse=True)
        print("  largest cumulative imports (us): " + ", ".join(f"{name.strip()} {us}" for us, name in rows[:6]))
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        subprocess.run(["ip", "netns", "del", NS], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
