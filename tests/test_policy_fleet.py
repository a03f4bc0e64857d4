"""Inline jails counted across a fleet: three real daemons (each in its own network namespace,
tests/fleet.py) sharing one real redis-server, each running the policy service with a shared
inline jail of 6 messages per sasl_username. Two messages through each node's service: no node
reaches 6 on its own, the fleet does, once; the decision reaches every node, whose service then
defers the account too. Requests are sent to each node's unix socket as postfix's smtpd sends
them (the protocol is postfix's; tests/test_policy_e2e.py runs it with a real postfix)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.fleet import Fleet, running
from tests.netns import wait_for

USER = "mallory@example.test"
root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("redis-server"),
                          reason="needs root (network namespaces, nftables) and redis-server")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from running(Fleet(tmp_path_factory.mktemp("policy-fleet"), inline=6))


def rcpt(path: Path, instance: str) -> bytes:
    request = (f"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
               f"client_address=203.0.113.9\nsasl_username={USER}\nsender={USER}\n"
               f"recipient=r@remote.example.net\ninstance={instance}\n\n").encode()
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(5)
        c.connect(str(path))
        c.sendall(request)
        got = b""
        while not got.endswith(b"\n\n"):
            chunk = c.recv(4096)
            if not chunk:
                break
            got += chunk
    return got


@pytest.mark.root
@root
def test_inline_counts_add_up_across_the_fleet(fleet: Fleet) -> None:
    wait_for(lambda: all(fleet.cluster(i)["connected"] for i in range(3)), timeout=10, what="connected")
    wait_for(lambda: all(fleet.policy_socket(i).exists() for i in range(3)), timeout=10, what="policy sockets")
    for i in range(3):
        for n in range(2):  # 2 + 2 + 2 messages: every node below 6 on its own
            assert rcpt(fleet.policy_socket(i), f"n{i}m{n}") == b"action=DUNNO\n\n"
        if i < 2:
            time.sleep(0.3)  # let the counts reach Redis: no node may decide before the sixth
            assert not any(fleet.listed(j, USER) for j in range(3))
    started = time.monotonic()
    try:
        wait_for(lambda: all(fleet.listed(j, USER) for j in range(3)), timeout=5, what="the ban on every node")
    except AssertionError:
        for j in range(3):
            print(fleet.cluster(j))
        raise
    print(f"\n2+2+2 inline messages -> the account banned on all 3 nodes in {(time.monotonic() - started) * 1000:.0f} ms")
    causes = [fleet.listed(j, USER)[0]["cause"] for j in range(3)]
    assert sum(c.startswith("fleet: 6") for c in causes) == 1, causes  # decided once, where the 6th landed
    assert all(b[0]["jail"] == "out" for b in (fleet.listed(j, USER) for j in range(3)))
    # every node's service now answers for it (node 1 did not decide it: noted from the fleet)
    for i in range(3):
        wait_for(lambda: rcpt(fleet.policy_socket(i), f"after{i}").startswith(b"action=DEFER"), timeout=5,
                 what=f"node {i + 1} defers the account")
