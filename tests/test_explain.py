"""`mailban explain`: every decision on a key with its jail, counts, window, lines, the actions'
results, who lifted it, and how to undo -- from a real daemon with real nftables."""

from __future__ import annotations

import json
from pathlib import Path


from tests.netns import NEEDS_ROOT, Daemon, Link, append, failure_line, wait_for, write_config

pytestmark = NEEDS_ROOT


def test_explain_tells_the_whole_story(link: Link, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    daemon = Daemon(link, write_config(tmp_path / "cfg", [str(log)])).start()
    try:
        for _ in range(3):
            append(log, failure_line("198.51.100.40", user='x" $(id) [6.6.6.6]'))
        wait_for(lambda: "198.51.100.40" in link.nft_elements(), what="ban")
        ex = json.loads(daemon.cli("explain", "198.51.100.40", "--json").stdout)
        ban, action = ex["history"][:2]
        assert (ban["what"], ban["jail"], ban["count"], ban["findtime"]) == ("ban", "auth", 3, 600)
        assert len(ban["lines"]) == 3 and "198.51.100.40" in ban["lines"][0]
        assert (action["what"], action["action"], action["result"]) == ("action", "nft", "ok")
        assert ex["active"] and ex["active"][0]["jail"] == "auth"
        text = daemon.cli("explain", "198.51.100.40").stdout
        assert "jail auth decided: 3 events within 10m" in text
        assert "Undo: mailban unban 198.51.100.40" in text
        daemon.cli("unban", "198.51.100.40")
        ex = json.loads(daemon.cli("explain", "198.51.100.40", "--json").stdout)
        assert ex["active"] == []
        unban = [row for row in ex["history"] if row["what"] == "unban"]
        assert unban and unban[0]["by_uid"] == 0
        assert "not banned now" in daemon.cli("explain", "198.51.100.40").stdout
        # a key mailban never saw
        assert "no record" in daemon.cli("explain", "--user", "nobody@example.test").stdout
    finally:
        daemon.stop()
