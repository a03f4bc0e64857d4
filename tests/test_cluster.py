"""Fleet mode: the `[cluster]` table, and three daemons sharing one real redis-server.

Topology (tests/fleet.py; made per module, removed at the end): namespace `mbr-*` holds
redis-server (Debian's, with a password) on a bridge at 198.51.100.1; namespaces `mbn<i>-*` hold
one daemon each, at 198.51.100.1<i>, joined to the bridge by a veth pair, each with its own nft
table. The daemons follow their own log files; the tests watch each namespace's kernel sets.
The tests run in order on the same fleet (each one starts from what the previous one left):
split failures -> one ban everywhere; unban on one node -> lifted everywhere; Redis SIGKILLed and
restarted empty -> what was decided meanwhile reaches every node, once; a stopped node catches up.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from mailban import config
from mailban.core.errors import ConfigError
from tests.fleet import Fleet, fail, running
from tests.netns import wait_for

ATTACKER, LOCAL_ONLY, MANUAL, LIFTED, LATE = (f"198.51.100.{n}" for n in (77, 78, 79, 80, 81))
root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("redis-server"),
                          reason="needs root (network namespaces, nftables) and redis-server")


# ---- the [cluster] table -------------------------------------------------------------------------
def _load(tmp_path: Path, table: str) -> config.Config:
    path = tmp_path / "mailban.toml"
    path.write_text('[mailban]\nlogs = ["/x/mail.log"]\n\n[jail.a]\nkinds = ["auth-failure"]\nshared = true\n\n'
                    + table)
    return config.load(str(path))


def test_cluster_table_is_read(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[cluster]\nurl = "rediss://:pw@redis.example.test:6380/2"\nnode = "mx1"\n'
                          'timeout = "3s"\nprefix = "{mb}"\n')
    assert cfg.cluster is not None
    assert (cfg.cluster.url, cfg.cluster.node, cfg.cluster.timeout, cfg.cluster.prefix) == (
        "rediss://:pw@redis.example.test:6380/2", "mx1", 3.0, "{mb}")
    assert cfg.jails[0].shared
    assert _load(tmp_path, "").cluster is None


@pytest.mark.parametrize("table, line, words", [
    ('[cluster]\nnode = "mx1"\n', 8, "needs a `url`"),
    ('[cluster]\nurl = "http://x"\n', 9, "redis://"),
    ('[cluster]\nurl = "redis://x"\nnode = "a b"\n', 10, "plain name"),
    ('[cluster]\nurl = "redis://x"\ncolour = 1\n', 10, "unknown cluster setting"),
    ('[cluster]\nurl = "redis://x"\ntimeout = "soon"\n', 10, "duration"),
])
def test_bad_cluster_table_is_refused_with_position(tmp_path: Path, table: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, table)
    assert err.value.line == line and words in str(err.value), str(err.value)


def test_password_is_redacted() -> None:
    from mailban.cluster import redacted

    assert redacted("rediss://:s3cret@r.example:6380/0") == "rediss://:***@r.example:6380/0"
    assert redacted("redis://user:s3cret@r.example/0") == "redis://user:***@r.example/0"
    assert redacted("redis://r.example/0") == "redis://r.example/0"


# ---- the fleet -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    yield from running(f)


@pytest.mark.root
@root
def test_failures_split_across_nodes_ban_once_everywhere(fleet: Fleet) -> None:
    wait_for(lambda: all(fleet.cluster(i)["connected"] for i in range(3)), timeout=10, what="connected")
    for i, log in enumerate(fleet.logs):
        fail(log, ATTACKER, 2)  # 2 + 2 + 2: every node below maxretry (6) on its own
        wait_for(lambda: fleet.daemons[i].lines_read() >= 2, what=f"node {i + 1} read its lines")
        if i < 2:
            time.sleep(0.2)  # let the count reach Redis: no node may ban before the sixth
            assert fleet.banned(ATTACKER) == [False] * 3
    started = time.monotonic()
    wait_for(lambda: all(fleet.banned(ATTACKER)), timeout=5, what="the ban on every node")
    print(f"\nsplit failures -> ban on all 3 nodes in {(time.monotonic() - started) * 1000:.0f} ms")
    bans = [fleet.listed(i, ATTACKER) for i in range(3)]
    assert all(len(b) == 1 for b in bans), bans
    causes = [b[0]["cause"] for b in bans]
    origin = [c.startswith("fleet: 6") for c in causes]
    assert origin.count(True) == 1, causes  # one decision, made where the sixth failure landed
    assert all(c.startswith("node n") for c, o in zip(causes, origin) if not o), causes
    assert all(len(b[0]["lines"]) == 6 for b in bans)
    st = fleet.cluster(0)
    assert {n["node"] for n in st["nodes"]} == {"n1", "n2", "n3"}
    assert {b["key"] for b in st["shared_bans"]} == {ATTACKER}
    res = fleet.daemons[0].cli("status")
    assert "cluster: node n1" in res.stdout and "nodes seen: 3" in res.stdout, res.stdout


@pytest.mark.root
@root
def test_unban_on_one_node_lifts_everywhere(fleet: Fleet) -> None:
    assert all(fleet.banned(ATTACKER))
    fleet.daemons[1].cli("unban", ATTACKER)
    wait_for(lambda: not any(fleet.banned(ATTACKER)), timeout=5, what="the unban everywhere")
    assert all(fleet.listed(i, ATTACKER) == [] for i in range(3))


@pytest.mark.root
@root
def test_redis_killed_and_restarted_loses_nothing(fleet: Fleet) -> None:
    n1, n2, n3 = fleet.daemons
    n2.cli("ban", LIFTED, "--for", "1h")
    wait_for(lambda: all(fleet.banned(LIFTED)), timeout=5, what="a ban to lift later")
    fleet.kill_redis()
    wait_for(lambda: all(fleet.cluster(i)["error"] for i in range(3)), timeout=10, what="the fault seen")
    assert "unreachable" in n1.log()
    fail(fleet.logs[0], LOCAL_ONLY, 6)  # node 1 sees enough alone: it acts alone
    wait_for(lambda: fleet.banned(LOCAL_ONLY)[0], timeout=5, what="a local ban without Redis")
    n3.cli("ban", MANUAL, "--for", "1h")
    n1.cli("unban", LIFTED)
    assert fleet.banned(LOCAL_ONLY) == [True, False, False]
    assert fleet.banned(MANUAL) == [False, False, True]
    assert fleet.banned(LIFTED) == [False, True, True]
    assert fleet.cluster(0)["outbox"] == 2
    assert n1.log().count("unreachable") == 1  # the fault is logged once
    fleet.start_redis()  # empty: no persistence
    started = time.monotonic()
    wait_for(lambda: all(fleet.banned(LOCAL_ONLY)) and all(fleet.banned(MANUAL)) and not any(fleet.banned(LIFTED)),
             timeout=15, what="the decisions made while Redis was away, everywhere")
    print(f"\nresynchronised {time.monotonic() - started:.2f} s after Redis came back")
    wait_for(lambda: not any(fleet.cluster(i)["error"] for i in range(3)), timeout=5, what="the fault cleared")
    time.sleep(1.5)  # republished decisions must not be applied twice
    for i in range(3):
        assert len(fleet.listed(i, LOCAL_ONLY)) == 1 and len(fleet.listed(i, MANUAL)) == 1
        assert fleet.listed(i, LIFTED) == []
    history = n2.call({"cmd": "explain", "key": MANUAL})["history"]
    assert [h["what"] for h in history].count("ban") == 1, history
    history = n2.call({"cmd": "explain", "key": LIFTED})["history"]
    assert {"what": "remote-unban", "node": "n1"}.items() <= history[-1].items() or any(
        h["what"] == "remote-unban" and h["node"] == "n1" for h in history), history
    assert fleet.cluster(0)["outbox"] == 0


@pytest.mark.root
@root
def test_stopped_node_catches_up_on_start(fleet: Fleet) -> None:
    n1, _n2, n3 = fleet.daemons
    n3.stop()
    fleet.nodes[2].reset_nft()  # and its kernel table is gone: start rebuilds it, the stream adds the rest
    n1.cli("ban", LATE, "--for", "1h")
    wait_for(lambda: fleet.banned(LATE)[:2] == [True, True], timeout=5, what="the ban on the running nodes")
    n3.start()
    wait_for(lambda: fleet.banned(LATE)[2], timeout=5, what="node 3 caught up")
    assert fleet.banned(LOCAL_ONLY)[2] and fleet.banned(MANUAL)[2]
    assert fleet.listed(2, LATE)[0]["cause"] == "node n1"
    st = json.loads(n1.cli("status", "--json").stdout)["cluster"]
    assert {n["node"] for n in st["nodes"]} == {"n1", "n2", "n3"}
    wait_for(lambda: all(n["lag"] == 0 for n in fleet.cluster(0)["nodes"]), timeout=5, what="no lag")


@pytest.mark.root
@root
def test_bench_runs(tmp_path: Path) -> None:
    """bench/cluster.py keeps working (tiny sizes; the figures are in bench/README.md)."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parent.parent / "bench" / "cluster.py"
    res = subprocess.run([sys.executable, str(bench), "--events", "2000", "--nodes", "1", "--rounds", "2"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "with [cluster]" in res.stdout and "latency" in res.stdout, res.stdout
