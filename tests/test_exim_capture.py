"""Real Exim 4.96 and 4.98, provoked by tests/mta/exim_breadth.py's clients with `log_selector =
+all` and reverse DNS names (IPv4 only, to stay fast: one Exim start per version, about 10 s):
every category gives its event with the client's address, and no event names the forged 6.6.6.6
or a remote server the delivery side talked to. The committed captures of every run, IPv6 and
syslog are tests/filters/exim49?-captured-*.log (tests/test_filter_samples.py)."""

from __future__ import annotations

import collections
import os
import shutil
import time
from typing import Iterator

import pytest

from tests.filter_samples import NOW, all_filters
from tests.mta import exim as mta
from tests.mta import exim_breadth as breadth
from mailban.core.syslog import SyslogParser

pytestmark = [pytest.mark.mta, pytest.mark.root]

# client number -> the rule its attack must give (tests/mta/exim_breadth.py lists what each does)
EXPECTED = {
    10: "auth-failed", 11: "auth-failed", 12: "auth-failed", 14: "relay-denied", 15: "no-helo",
    16: "too-many-messages", 17: "too-many-recipients", 18: "too-many-recipients", 19: "data-timeout",
    20: "data-timeout", 21: "helo-verify", 22: "helo-verify", 23: "acl-rejected", 24: "acl-rejected",
    25: "host-rejected", 26: "tls-failed", 27: "tls-failed", 29: "timeout", 30: "timeout",
    32: "too-many-nonmail", 33: "too-many-errors", 34: "helo-invalid", 35: "lost-connection-smtp",
    36: "lost-connection-smtp", 37: "auth-failed", 38: "too-many-connections", 40: "syntax-error",
    41: "sync-greeting", 44: "relay-denied", 45: "relay-denied", 47: "relay-denied",
    # from the audit against Exim's own test suite: the message id before the line in a message
    43: "tls-failed", 56: "sync-pipelining", 57: "lost-connection-smtp", 58: "data-timeout",
    59: "lost-after-dot", 60: "vrfy-failed", 61: "data-rejected",
    # resets (` (error: Connection reset by peer)`) and TLS ended before or during the handshake
    # or without close_notify (GnuTLS here: `(gnutls_handshake): ...`, `(recv): ...`)
    62: "lost-connection", 63: "lost-connection-smtp", 64: "tls-failed", 65: "tls-failed",
    66: "tls-failed", 67: "tls-failed", 68: "tls-failed",
    # commands holding a quoted local part that forge nothing (Exim's ` H=` the line's only one)
    69: "syntax-error", 70: "sync-pipelining",
}
# the connect ACL's deny on the tls_on_connect port: 4.97+ writes `dropped by 'connect' ACL`
CONNECT_TLS = {"bookworm": "acl-rejected", "trixie": "connect-dropped"}
# legitimate clients, and hostile text on lines that are no attack: no reject, AUTH or protocol
# event (the .13 submission and .39 message give exim-queue events)
INNOCENT = {13, 39, 46}


@pytest.fixture(scope="module", params=list(mta.SUITES))
def captured(request) -> Iterator[tuple[str, list[str]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, overlays, chroot")
    for tool in ("ip", "rsyslogd", "mount", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run tests/mta/install.sh)")
    suite = request.param
    with breadth.running(suite, "all") as exim:
        with exim.inside():
            breadth.traffic("127.0.0.1", 4, exim.work)
        # the deliveries to the fake remote servers run after the clients are done
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and exim.mainlog.read_text().count("remote mail server") < 2:
            time.sleep(0.1)
        lines = exim.mainlog.read_text(errors="replace").splitlines()
    yield suite, lines


def events_by_client(lines: list[str]) -> tuple[dict[int, collections.Counter], list[str]]:
    fset, parser = all_filters(), SyslogParser(NOW)
    by_client: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    wrong = []
    for line in lines:
        raw = line.encode()
        header = parser.parse(raw)
        for e in (fset.match_logged(parser, raw, header) if header else []):
            if e.ip is None:
                continue
            if not e.ip.startswith("127.0.0.") or "remote mail server" in line:
                wrong.append(f"{e.filter}.{e.rule} ip={e.ip}: {line}")
                continue
            by_client[int(e.ip.rsplit(".", 1)[1])][f"{e.filter}.{e.rule}"] += 1
    return by_client, wrong


def test_every_category_gives_its_event_with_the_clients_address(captured: tuple[str, list[str]]) -> None:
    suite, lines = captured
    by_client, wrong = events_by_client(lines)
    assert wrong == []
    expected = {**EXPECTED, 28: CONNECT_TLS[suite]}
    missing = {n: rule for n, rule in expected.items() if by_client[n][f"exim.{rule}"] == 0}
    assert missing == {}, f"{suite}: no event for {missing}; got {dict(by_client)}"
    print(f"\n[exim {suite}] {sum(sum(c.values()) for c in by_client.values())} events from "
          f"{len(lines)} lines, {len(expected)} categories found")


def test_innocent_lines_give_no_attack_event(captured: tuple[str, list[str]]) -> None:
    suite, lines = captured
    by_client, _ = events_by_client(lines)
    for n in INNOCENT:
        attack = {rule: c for rule, c in by_client[n].items() if not rule.startswith("exim-queue.")}
        assert attack == {}, (suite, n, attack)
