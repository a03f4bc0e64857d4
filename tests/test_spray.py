"""A spray of distinct addresses failing once each keeps every per-key structure bounded, and an
attacker among them is still banned (the short version of bench/spray.py; counts entries, not RSS).
"""

from __future__ import annotations

from .bench_modules import load


def test_spray_is_bounded_and_the_attacker_is_banned() -> None:
    spray = load("spray")
    max_keys = 5000
    r = spray.run(50_000, failures=5, max_keys=max_keys)
    assert r["lines"] == 50_005
    # every per-key structure of every jail, and the correlator, stays within the cap
    for name, size in r["sizes"].items():
        assert size <= max_keys, (name, size)
    assert r["peak_entries"] <= 5 * 2 * max_keys  # five jails, windows + prefix windows each
    assert r["sizes"]["mail-abuse.windows"] > max_keys // 2  # it did track the spray
    # the attacker's failures came far more than max_keys spray addresses apart after its second
    positions = r["positions"]
    assert positions[1] - positions[0] <= max_keys // 2
    assert all(b - a > max_keys for a, b in zip(positions[1:], positions[2:]))
    (ban,) = r["attacker_banned"]
    assert ban.jail == "mail-abuse" and ban.count == 5
    # nothing else was banned: one failure each is no attack
    assert [b.key for b in r["bans"]] == [spray.ATTACKER]


def test_plain_lru_would_have_lost_the_attacker() -> None:
    """Without the second chance for keys with two events (core.jails._evict_quietest) the spray
    would push the attacker out between its failures: shown by its window surviving eviction."""
    from mailban.core.jails import _evict_quietest
    from mailban.core.windows import RingWindow

    table = {}
    attacker = RingWindow(False)
    for t in (1.0, 2.0):
        attacker.add(t, 1, "x", None, 5, 0.0)
    table["attacker"] = attacker
    for i in range(1000):
        if len(table) >= 100:
            _evict_quietest(table, 0.0, 100)
        w = RingWindow(False)
        w.add(3.0 + i, 1, "y", None, 5, 0.0)
        table[f"spray{i}"] = w
    assert "attacker" in table and len(table) <= 100
