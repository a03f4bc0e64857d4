"""The daemon on the journal, end to end: on a host without /var/log/mail.log the default
`journal = "auto"` reads the journal (real journal files, real journalctl), bans through real
nftables in a namespace, refuses forged entries, and resumes from its cursor after a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import journal_files as jf
from tests.netns import NEEDS_ROOT, Daemon, Link, wait_for, write_config

pytestmark = [*NEEDS_ROOT, pytest.mark.skipif(not jf.available(), reason="systemd-journal-remote is not installed")]


def test_daemon_reads_the_journal_when_no_log_file_exists(link: Link, tmp_path: Path) -> None:
    journal = tmp_path / "j" / "mail.journal"
    journal.parent.mkdir()
    jf.append(journal, [(time.time() - 5, jf.SMTPD, "connect from unknown[198.51.100.50]")])
    config = write_config(tmp_path / "cfg", [str(tmp_path / "no-such-mail.log")],
                          extra="")
    # A directory, as journald keeps it: journal-remote (like journald) starts a new file now and
    # then, and journalctl -D follows the directory across them.
    text = config.read_text().replace("journal = false\n", "").replace("[jail.auth]", f'journal_directory = "{journal.parent}"\n\n[jail.auth]')
    config.write_text(text)
    daemon = Daemon(link, config).start()
    try:
        assert "reading the systemd journal" in daemon.log() and "no-such-mail.log exists" in daemon.log()
        now = time.time()
        # forged entries (logger, a renamed binary) for one address, real ones for another
        jf.append(journal, [(now, jf.FORGER, jf.sasl_failure("198.51.100.66")) for _ in range(5)]
                  + [(now, jf.RENAMED, jf.sasl_failure("198.51.100.67")) for _ in range(5)])
        started = time.monotonic()
        jf.append(journal, [(now + 0.1 * i, jf.SMTPD, jf.sasl_failure("198.51.100.7")) for i in range(3)])
        took = wait_for(lambda: "198.51.100.7" in link.nft_elements(), timeout=10, what="journal ban")
        print(f"journal append -> kernel set: {took * 1000:.0f} ms (after {time.monotonic() - started:.2f}s)")
        elements = link.nft_elements()
        assert "198.51.100.66" not in elements and "198.51.100.67" not in elements
        (src,) = daemon.status()["sources"]
        assert src["path"] == "journal" and src["forged"] == 10
        # restart: the cursor was saved; old entries are not counted again, new ones are
        assert daemon.stop() == 0
        jf.append(journal, [(time.time(), jf.SMTPD, jf.sasl_failure("198.51.100.8")) for _ in range(2)])
        daemon = Daemon(link, config).start()
        jf.append(journal, [(time.time(), jf.SMTPD, jf.sasl_failure("198.51.100.8"))])
        wait_for(lambda: "198.51.100.8" in link.nft_elements(), timeout=10, what="ban after restart")
        wait_for(lambda: daemon.status()["sources"][0]["lines"] == 3, timeout=5, what="three new lines")
    finally:
        daemon.stop()
