"""Issue 7's behaviours through a real daemon and real nftables: a /64 spray lands in the kernel
as one prefix element, a repeat offender's next ban is longer after a restart, and a jail in
observe mode touches no nft set."""

from __future__ import annotations

import json
import time
from pathlib import Path


from tests.netns import NEEDS_ROOT, Daemon, Link, append, failure_line, wait_for, write_config

pytestmark = NEEDS_ROOT

OBSERVE = '''
[jail.watch]
kinds = ["reject"]
maxretry = 1
bantime = "1h"
mode = "observe"
actions = ["nft"]
'''


def reject_line(ip: str) -> bytes:
    stamp = time.strftime("%b %e %H:%M:%S")
    return (f"{stamp} mail postfix/smtpd[77]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 "
            f"<x@remote.example>: Relay access denied; from=<a@b.example> to=<x@remote.example> "
            f"proto=ESMTP helo=<h>\n").encode()


def test_prefix_repeat_and_observe(link: Link, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    config = write_config(tmp_path / "cfg", [str(log)], bantime="2s", extra=OBSERVE)
    daemon = Daemon(link, config).start()
    try:
        # a /64 spray, one failure per address: the whole prefix goes into the interval set
        append(log, b"".join(failure_line(f"2001:db8:5:6::{n:x}") for n in range(1, 8)))
        wait_for(lambda: "2001:db8:5:6::/64" in link.nft_elements(), what="prefix element")
        assert not any(k.startswith("2001:db8:5:6::") and "/" not in k for k in link.nft_elements())
        # observe mode: decided and listed, no kernel element
        append(log, reject_line("198.51.100.77"))
        wait_for(lambda: any(b["key"] == "198.51.100.77" for b in daemon.status()["bans"]), what="observed decision")
        (observed,) = [b for b in daemon.status()["bans"] if b["key"] == "198.51.100.77"]
        assert observed["observe"] and observed["actions"] == []
        time.sleep(0.3)
        assert "198.51.100.77" not in link.nft_elements()
        # a repeat offender: banned for 2 s, comes back after a restart: 4 s
        append(log, failure_line("198.51.100.60") * 3)
        wait_for(lambda: "198.51.100.60" in link.nft_elements(), what="first ban")
        first = json.loads(daemon.cli("list", "--json").stdout)
        (b1,) = [b for b in first if b["key"] == "198.51.100.60"]
        assert round(b1["until"] - b1["time"]) == 2 and b1["repeat"] == 0
        wait_for(lambda: "198.51.100.60" not in link.nft_elements(), timeout=6, what="expiry")
        assert daemon.stop() == 0
        daemon = Daemon(link, config).start()
        append(log, failure_line("198.51.100.60") * 3)
        wait_for(lambda: "198.51.100.60" in link.nft_elements(), what="second ban")
        (b2,) = [b for b in json.loads(daemon.cli("list", "--json").stdout) if b["key"] == "198.51.100.60"]
        assert round(b2["until"] - b2["time"]) == 4 and b2["repeat"] == 1
    finally:
        daemon.stop()
