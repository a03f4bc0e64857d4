"""Safety valves, with a real daemon and real nftables: this host's own addresses are never
banned whatever the logs say, and a storm of decisions is capped per jail and minute."""

from __future__ import annotations

import time
from pathlib import Path


from tests.netns import NEEDS_ROOT, Daemon, Link, append, failure_line, wait_for, write_config

pytestmark = NEEDS_ROOT


def test_own_addresses_are_never_banned_and_storms_are_capped(link: Link, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    config = write_config(tmp_path / "cfg", [str(log)], maxretry=1,
                          extra="")
    config.write_text(config.read_text().replace("journal = false\n", "journal = false\nmax_bans_per_minute = 5\n"))
    daemon = Daemon(link, config).start()
    try:
        assert "never banned: this host's addresses" in daemon.log()
        # the server namespace's own address fails: never banned
        append(log, failure_line("198.51.100.1") * 3)
        # a storm: 20 addresses with maxretry 1
        append(log, b"".join(failure_line(f"198.51.100.{n}") for n in range(100, 120)))
        wait_for(lambda: daemon.lines_read() == 23, what="all lines read")
        wait_for(lambda: len(link.nft_elements()) == 5, what="5 bans")
        time.sleep(0.3)
        elements = link.nft_elements()
        assert len(elements) == 5 and "198.51.100.1" not in elements
        (jail,) = daemon.status()["jails"]
        assert jail["suppressed"] == 15
        assert "SAFETY VALVE" in daemon.cli("status").stdout
    finally:
        daemon.stop()
