"""Issue 17's acceptance: an attacker with an open IMAP session, banned mid-session, has that
session closed within a second of the ban; other addresses' sessions stay open.

Real parts: dovecot 2.3 (tests/mta/postfix_dovecot.py) in the server namespace of a veth pair
(tests/netns.py, so that the clients' addresses are not the host's own, which mailban never
bans), `mailban run` in that namespace with the nft action on the IMAP port, and raw IMAP
sessions from the client namespace. The attacker guesses passwords on ONE session, which
dovecot's auth logs line by line (`passwd-file(alice@example.test,198.51.100.2): Password
mismatch`, auth_verbose); the third guess bans the address, and the ban cuts the session it
was guessing on. Without the cut that session would stay open (the nft rule only drops its
packets: the server's end waits out its retransmissions, the attacker just sees a stall).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.mta import in_netns
from tests.mta.postfix_dovecot import PostfixDovecot
from tests.netns import CLIENT4, OTHER4, SERVER4, Daemon, Link, write_config

pytestmark = [pytest.mark.mta, pytest.mark.root]


def _skip_unless_ready() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, nft, dovecot")
    for tool in ("dovecot", "postfix", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run tests/mta/install.sh)")


def _tagged(sock: socket.socket, tag: bytes, command: bytes, timeout: float = 5.0) -> bytes:
    """Send `tag command`, read up to the tagged reply (b'' when the server closed)."""
    sock.sendall(tag + b" " + command + b"\r\n")
    sock.settimeout(timeout)
    buf = b""
    while not any(line.startswith(tag + b" ") for line in buf.split(b"\r\n")):
        chunk = sock.recv(4096)
        if not chunk:
            return b""
        buf += chunk
    return buf


def _session(port: int, src: str) -> socket.socket:
    sock = socket.create_connection((SERVER4, port), timeout=5, source_address=(src, 0))
    assert sock.recv(4096).startswith(b"* OK"), "no IMAP greeting"
    return sock


def _reset_at(sock: socket.socket, timeout: float) -> float | None:
    """Wall time at which the session was reset (a cut: the kernel aborts the server's socket
    and sends RST), None if it was not within `timeout`. An orderly close by dovecot itself
    (its BYE and a FIN) is no cut, and fails the test."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                raise AssertionError("dovecot closed the session itself (FIN), it was not cut")
    except ConnectionResetError:
        return time.time()
    except TimeoutError:
        return None


def test_ban_mid_session_closes_the_attackers_imap_session_only(link: Link, tmp_path: Path) -> None:
    _skip_unless_ready()
    with in_netns(link.srv):
        mta = PostfixDovecot(listen=f"127.0.0.1, {SERVER4}")
        mta.__enter__()
    daemon = None
    try:
        config = write_config(tmp_path / "etc", [str(mta.dovecot_log)], maxretry=3)
        (config.parent / "actions.d" / "nft.toml").write_text(
            f'[action]\ntype = "nft"\nports = [{mta.imap_port}]\ncut_connections = true\n')
        daemon = Daemon(link, config).start()
        with in_netns(link.cli):
            other = _session(mta.imap_port, OTHER4)
            assert b"a OK" in _tagged(other, b"a", b"LOGIN alice@example.test S3cret-alice")
            attacker = _session(mta.imap_port, CLIENT4)
            # Guess on one session until the ban cuts it (each guess is two auth-failure lines
            # here: the deny passdb's `unknown user` and the password mismatch).
            closed = None
            for n in range(5):
                try:
                    reply = _tagged(attacker, b"g%d" % n, b"LOGIN alice@example.test guess%d" % n)
                except ConnectionResetError:
                    closed = time.time()
                    break
                assert b"NO" in reply, reply
                closed = _reset_at(attacker, timeout=0.3)
                if closed:
                    break
            assert closed is not None, "the attacker's session is still open:\n" + daemon.log()
            # the other address's session is untouched and usable
            assert b"n OK" in _tagged(other, b"n", b"NOOP")
            assert b"s OK" in _tagged(other, b"s", b"SELECT INBOX")
            other.close()
        explained = json.loads(daemon.cli("explain", CLIENT4, "--json").stdout)
        history = explained["history"]
        banned = next(r for r in history if r["what"] == "ban")
        cut = next(r for r in history if r["what"] == "action" and r["action"] == "nft")
        assert cut["result"] == "ok" and cut["note"] == "cut 1 live connection", cut
        after = closed - banned["time"]
        print(f"attacker's IMAP session closed {after * 1000:.0f} ms after the ban (decision time)")
        assert after < 1.0
        assert "cut 1 live connection" in daemon.cli("explain", CLIENT4).stdout
        assert link.nft_elements().keys() == {CLIENT4}
    finally:
        if daemon is not None:
            daemon.stop()
        mta.cleanup(keep_logs_in=tmp_path)
