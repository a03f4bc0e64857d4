"""Fleet mode over TLS with a password: a real redis-server listening with TLS only.

Setup (tests/fleet.py, made per module, removed at the end; certificates and keys only in the
module's tmp dir): openssl makes a throwaway CA, a Redis server certificate it signs (naming
198.51.100.1 only) and a second, unrelated CA. redis-server runs with `--port 0 --tls-port`
and `--requirepass`, on 198.51.100.1 and on an alias address its certificate does not name.
Five daemons, each in its own namespace:
- n1, n2: `url = "rediss://:PASSWORD@198.51.100.1:6390/0"`, `tls_ca` = the CA: failures split
  across them give one ban, applied on both;
- n3: a wrong password; n4: `tls_ca` = the unrelated CA; n5: the right CA and password, but the
  alias address in the URL (the certificate does not name it). Each must refuse to use Redis (n4
  and n5 before the password is sent: the TLS handshake fails), show the fault in
  `mailban status`, log it once, keep banning on its own counts, and never join the fleet.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from mailban import config
from mailban.core.errors import ConfigError
from tests.fleet import ALIAS_IP, PASSWORD, REDIS_IP, REDIS_PORT, Fleet, fail, make_certs, running
from tests.netns import wait_for

ATTACKER = "198.51.100.90"
LOCAL = {2: "198.51.100.93", 3: "198.51.100.94", 4: "198.51.100.95"}  # node index -> its local attacker
WRONG_PASSWORD = "not-the-fleet-secret"
root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("redis-server") or not shutil.which("openssl"),
    reason="needs root (network namespaces, nftables), redis-server and openssl")


def test_tls_ca_needs_a_tls_url(tmp_path: Path) -> None:
    """`tls_ca` with a plain redis:// URL would silently send everything, password included, in
    clear text: refused at load, with its position."""
    path = tmp_path / "mailban.toml"
    path.write_text('[mailban]\nlogs = ["/x/mail.log"]\n\n[cluster]\nurl = "redis://r.example.test:6379/0"\n'
                    'tls_ca = "/etc/mailban/redis-ca.pem"\n')
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert err.value.line == 6 and "rediss://" in str(err.value), str(err.value)
    path.write_text(path.read_text().replace("redis://", "rediss://"))
    assert config.load(str(path)).cluster.tls_ca == "/etc/mailban/redis-ca.pem"  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-tls")
    certs = make_certs(tmp / "pki")
    f = Fleet(tmp, size=5, tls=certs, tables={
        3: {"url": f"rediss://:{WRONG_PASSWORD}@{REDIS_IP}:{REDIS_PORT}/0"},
        4: {"tls_ca": str(certs.other_ca)},
        5: {"url": f"rediss://:{PASSWORD}@{ALIAS_IP}:{REDIS_PORT}/0"},
    })
    yield from running(f)


@pytest.mark.root
@root
def test_split_failures_over_tls_ban_once_on_both(fleet: Fleet) -> None:
    wait_for(lambda: all(fleet.cluster(i)["connected"] for i in (0, 1)), timeout=10, what="n1 and n2 connected")
    fail(fleet.logs[0], ATTACKER, 3)  # 3 + 3: each node below maxretry (6) on its own
    wait_for(lambda: fleet.daemons[0].lines_read() >= 3, what="node 1 read its lines")
    time.sleep(0.2)  # let the count reach Redis: nobody may ban before the sixth
    assert not any(fleet.banned(ATTACKER))
    fail(fleet.logs[1], ATTACKER, 3)
    started = time.monotonic()
    wait_for(lambda: fleet.banned(ATTACKER)[:2] == [True, True], timeout=5, what="the ban on n1 and n2")
    print(f"\nsplit failures over TLS -> ban on both nodes in {(time.monotonic() - started) * 1000:.0f} ms")
    causes = []
    for i in (0, 1):
        bans = fleet.listed(i, ATTACKER)
        assert len(bans) == 1, bans
        causes.append(bans[0]["cause"])
    assert sorted(c.split(":")[0].split(" ")[0] for c in causes) == ["fleet", "node"], causes
    st = fleet.cluster(0)
    assert st["url"] == f"rediss://:***@{REDIS_IP}:{REDIS_PORT}/0" and st["error"] is None
    # The misconfigured nodes never got in: no heartbeat of theirs in Redis.
    assert {n["node"] for n in st["nodes"]} == {"n1", "n2"}, st["nodes"]
    res = fleet.daemons[0].cli("status")
    assert "cluster: node n1" in res.stdout and "connected" in res.stdout and PASSWORD not in res.stdout, res.stdout


@pytest.mark.root
@root
def test_wrong_password_or_ca_or_name_refused_and_local_bans_go_on(fleet: Fleet) -> None:
    expected = {2: "invalid username-password pair",  # n3: the password
                3: "CERTIFICATE_VERIFY_FAILED",  # n4: the server's chain does not lead to its tls_ca
                4: "IP address mismatch"}  # n5: the certificate does not name the alias address
    wait_for(lambda: all(fleet.cluster(i)["error"] for i in expected), timeout=10, what="the faults seen")
    for i, words in expected.items():
        st = fleet.cluster(i)
        assert not st["connected"] and words in st["error"], (i, st["error"])
        assert st["nodes"] == [] and st["stream"]["length"] == 0, st  # nothing read from that Redis
        res = fleet.daemons[i].cli("status")
        assert "DOWN since" in res.stdout and words in res.stdout, res.stdout
    # The fleet's ban did not reach them: they do not use that Redis.
    assert fleet.banned(ATTACKER) == [True, True, False, False, False]
    for i, ip in LOCAL.items():
        fail(fleet.logs[i], ip, 6)  # enough on its own: each acts alone
    wait_for(lambda: all(fleet.banned(ip)[i] for i, ip in LOCAL.items()), timeout=5, what="the local bans")
    for i, ip in LOCAL.items():
        assert fleet.banned(ip) == [j == i for j in range(5)], (i, fleet.banned(ip))
        assert fleet.cluster(i)["outbox"] == 1  # kept to publish if the configuration is fixed
        log = fleet.daemons[i].log()
        assert log.count("unreachable") == 1, log  # the fault is logged once
        assert PASSWORD not in log and WRONG_PASSWORD not in log, log
