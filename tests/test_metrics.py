"""Prometheus metrics from a real daemon (in its own network namespace, so its loopback port
is its own): lines read, events per kind and filter, decisions, active bans, action results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from tests.netns import NEEDS_ROOT, Daemon, Link, append, failure_line, wait_for, write_config

pytestmark = NEEDS_ROOT


def scrape(link: Link) -> dict[str, float]:
    code = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9234/metrics', timeout=5).read().decode())"
    out = subprocess.run(link.exec_argv(link.srv, [sys.executable, "-c", code]), capture_output=True,
                         text=True, timeout=20, check=True).stdout
    values = {}
    for line in out.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_count_what_the_daemon_does(link: Link, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    daemon = Daemon(link, write_config(tmp_path / "cfg", [str(log)])).start()
    try:
        for _ in range(3):
            append(log, failure_line("198.51.100.41"))
        append(log, b"Nov 25 10:00:00 mail postfix/smtpd[1]: connect from unknown[198.51.100.9]\n")
        wait_for(lambda: "198.51.100.41" in link.nft_elements(), what="ban")
        wait_for(lambda: scrape(link).get('mailban_active_bans{jail="auth"}') == 1.0, timeout=5, what="gauge")
        m = scrape(link)
        assert m[f'mailban_lines_read_total{{source="{log}"}}'] == 4
        assert m['mailban_events_total{filter="postfix",kind="auth-failure"}'] == 3
        assert m['mailban_decisions_total{jail="auth",key_type="ip"}'] == 1
        assert m['mailban_action_up{action="nft"}'] == 1
        assert m['mailban_action_seconds_count{action="nft"}'] >= 1
        assert m[f'mailban_tail_lag_bytes{{source="{log}"}}'] == 0
    finally:
        daemon.stop()
