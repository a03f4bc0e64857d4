"""Decisions smarter than a fixed threshold, fed events and a fake clock: escalation for repeat
offenders, a long window for slow attackers in bounded memory, whole IPv6 prefixes, weighted
scores, and observe mode."""

from __future__ import annotations

import ipaddress

from mailban.core.jails import IgnoreList, Jail, JailSpec
from mailban.core.records import Event
from mailban.core.windows import BucketWindow

HOUR, DAY = 3600.0, 86400.0


def ev(t: float, ip: str = "198.51.100.7", kind: str = "auth-failure", filt: str = "postfix", rule: str = "r") -> Event:
    return Event(time=t, kind=kind, filter=filt, rule=rule, ip=ip, line=f"{rule} [{ip}] at {t}")


def make(**kw: object) -> Jail:
    base: dict[str, object] = {"name": "j", "kinds": frozenset({"auth-failure", "protocol", "reject"}),
                               "findtime": 600.0, "maxretry": 5, "bantime": HOUR}
    base.update(kw)
    spec = JailSpec(**base)  # type: ignore[arg-type]
    return Jail(spec, IgnoreList(spec.ignoreip))


def fail(j: Jail, ip: str, times: list[float]) -> list:
    out = []
    for t in times:
        out += j.offer(ev(t, ip), t)
    return out


def test_repeat_offenders_get_longer_bans_up_to_the_maximum() -> None:
    j = make(bantime_factor=2.0, bantime_max=5 * HOUR, repeat_window=7 * DAY)
    lengths = []
    t = 0.0
    for _ in range(5):
        (ban,) = fail(j, "198.51.100.7", [t + i for i in range(5)])
        lengths.append((ban.until - ban.time, ban.repeat))
        t = ban.until + 10  # comes back after each ban
    assert lengths == [(HOUR, 0), (2 * HOUR, 1), (4 * HOUR, 2), (5 * HOUR, 3), (5 * HOUR, 4)]
    # a week later the history has expired: back to the base ban time
    (ban,) = fail(j, "198.51.100.7", [t + 8 * DAY + i for i in range(5)])
    assert ban.until - ban.time == HOUR and ban.repeat == 0


def test_history_fed_from_the_database_escalates_after_a_restart() -> None:
    j = make()
    j.note_offense("198.51.100.7", -2 * HOUR)  # what the daemon loads from its history at start
    (ban,) = fail(j, "198.51.100.7", [0, 1, 2, 3, 4])
    assert ban.until - ban.time == 2 * HOUR and ban.repeat == 1


def test_a_pacing_attacker_is_caught_by_the_long_window_in_bounded_memory() -> None:
    short = make()
    slow = make(findtime=DAY, maxretry=30, bantime=DAY, resolution=HOUR)
    decided = []
    for n in range(4 * 24):  # 4 failures an hour, never 5 within 10 minutes
        t = n * 900.0
        assert short.offer(ev(t), t) == []
        decided += slow.offer(ev(t), t)
    (ban,) = decided
    assert ban.count == 30 and ban.time == 29 * 900.0
    # a day of events is at most 25 counters, whatever the rate
    slow2 = make(findtime=DAY, maxretry=10**6, resolution=HOUR)
    for n in range(100_000):
        slow2.offer(ev(n * 1.0, "198.51.100.8"), n * 1.0)
    window = slow2.windows["198.51.100.8"]
    assert isinstance(window, BucketWindow) and len(window.buckets) <= 25


def test_a_64_spray_is_banned_as_one_prefix_and_folds_what_follows() -> None:
    j = make(prefix6=64, prefix_min_ips=3)
    decisions = []
    for n in range(1, 21):
        decisions += j.offer(ev(float(n), f"2001:db8:1:2::{n:x}"), float(n))
    assert [(b.key_type, b.key) for b in decisions] == [("net", "2001:db8:1:2::/64")]
    assert decisions[0].count == 5 and len(decisions[0].ips) == 5
    # one address failing alone is still banned alone, in another /64
    (single,) = fail(j, "2001:db8:9:9::1", [30, 31, 32, 33, 34])
    assert single.key_type == "ip"


def test_ignore_lists_win_over_prefixes() -> None:
    j = make(prefix6=64, ignoreip=(ipaddress.ip_network("2001:db8:1:2::5/128"),))
    decisions = []
    for n in range(1, 21):
        decisions += j.offer(ev(float(n), f"2001:db8:1:2::{n + 10:x}"), float(n))
    assert all(b.key_type == "ip" for b in decisions) and decisions == []  # one failure each
    assert j.banned_nets == {}


def test_weighted_scores() -> None:
    j = make(count="score", weights=(("postscreen.pregreet", 3), ("protocol", 2)))
    assert j.offer(ev(0, kind="protocol", filt="postscreen", rule="pregreet"), 0) == []
    (ban,) = j.offer(ev(1, kind="protocol", filt="postscreen", rule="pregreet"), 1)
    assert ban.count == 6
    k = make(count="score", weights=(("protocol", 2),))
    for t in range(4):
        assert k.offer(ev(t, "198.51.100.9"), t) == []  # auth failures: one point each
    (ban,) = k.offer(ev(5, "198.51.100.9", kind="protocol"), 5)
    assert ban.count == 6


def test_observe_mode_decides_and_records_but_names_no_action() -> None:
    j = make(mode="observe")
    (ban,) = fail(j, "198.51.100.7", [0, 1, 2, 3, 4])
    assert ban.observe and ban.actions == ()
    assert fail(j, "198.51.100.7", [5, 6]) == []  # not reported again while the decision lasts
