"""Jails fed events and an explicit clock: counting, windows, ignores, re-bans."""

from __future__ import annotations

import ipaddress
import time

from mailban.core.jails import IgnoreList, Jail, JailSpec
from mailban.core.records import Event


def ev(t: float, ip: str = "192.0.2.1", kind: str = "auth-failure", filt: str = "postfix", rule: str = "r") -> Event:
    return Event(time=t, kind=kind, filter=filt, rule=rule, ip=ip, line=f"line at {t}")


def jail(**kw: object) -> Jail:
    spec = JailSpec(name="j", kinds=frozenset({"auth-failure", "reject"}), findtime=600, maxretry=3, bantime=3600, **kw)  # type: ignore[arg-type]
    return Jail(spec, IgnoreList(spec.ignoreip))


def test_bans_at_maxretry_within_findtime() -> None:
    j = jail()
    assert j.offer(ev(0), 0) == []
    assert j.offer(ev(100), 100) == []
    (ban,) = j.offer(ev(200), 200)
    assert ban is not None
    assert (ban.key, ban.count, ban.until, ban.findtime) == ("192.0.2.1", 3, 3800, 600)
    assert ban.lines == ("line at 0", "line at 100", "line at 200")


def test_events_outside_the_window_do_not_count() -> None:
    j = jail()
    j.offer(ev(0), 0)
    j.offer(ev(150), 150)
    assert j.offer(ev(700), 700) == []  # the event at 0 fell out of the 600 s window
    assert j.offer(ev(701), 701) != []


def test_no_second_ban_while_banned_then_counts_again_after_expiry() -> None:
    j = jail()
    for t in (0, 1, 2):
        j.offer(ev(t), t)
    for t in (3, 4, 5, 6):
        assert j.offer(ev(t), t) == []
    later = 3602 + 10
    assert j.offer(ev(later), later) == []
    assert j.offer(ev(later + 1), later + 1) == []
    assert j.offer(ev(later + 2), later + 2) != []


def test_selection_by_kind_filter_rule_and_exclude() -> None:
    j = jail(exclude=frozenset({"dovecot-passdb", "sendmail.no-mail-command"}))
    for t in range(5):
        assert j.offer(ev(t, kind="submission"), t) == []
        assert j.offer(ev(t, filt="dovecot-passdb"), t) == []
        assert j.offer(ev(t, filt="sendmail", rule="no-mail-command"), t) == []
    assert j.windows == {}


def test_ignoreip_and_loopback_are_never_counted() -> None:
    j = jail(ignoreip=(ipaddress.ip_network("198.51.100.0/24"),))
    for t in range(10):
        assert j.offer(ev(t, ip="198.51.100.9"), t) == []
        assert j.offer(ev(t, ip="127.0.0.5"), t) == []
        assert j.offer(ev(t, ip="::1"), t) == []
    assert j.windows == {}


def test_key_cap_evicts_the_least_recent_key() -> None:
    j = jail(max_keys=100)
    for i in range(1000):
        j.offer(ev(i, ip=f"10.0.{i // 256}.{i % 256}"), i)
    assert len(j.windows) == 100
    # the attacker among the spray is still caught
    for t in range(2):
        assert j.offer(ev(2000 + t, ip="203.0.113.66"), 2000 + t) == []
    (ban,) = j.offer(ev(2002, ip="203.0.113.66"), 2002)
    assert ban.key == "203.0.113.66"


def test_forget_restarts_counting() -> None:
    j = jail()
    for t in (0, 1):
        j.offer(ev(t), t)
    j.forget("192.0.2.1")
    assert j.offer(ev(2), 2) == []


def test_the_daemon_does_not_count_lines_older_than_the_find_time_when_read() -> None:
    """A restored backup appended to a followed log must not ban for what happened days ago;
    replay (now=None) keeps log time and counts them."""
    from mailban import config
    from mailban.core.syslog import utc_to_epoch

    now = 1795600000.0  # 2026-11-25 07:06:40 UTC
    def line(t: float) -> bytes:
        stamp = time.strftime("%b %d %H:%M:%S", time.gmtime(t))
        return f"{stamp} mx postfix/smtpd[1]: warning: unknown[198.51.100.9]: SASL LOGIN authentication failed: x".encode()

    old = [line(now - 2 * 86400 + s) for s in range(8)]
    daemon = config.load(None).pipeline(now, utc_to_epoch)
    assert [b for ln in old for b in daemon.feed(ln, now)[1]] == []
    assert daemon.stale == {"mail-abuse": 8, "slow-guess": 8}  # older than a day too; no user: not account-guess
    replay = config.load(None).pipeline(now, utc_to_epoch)
    assert [b.key for ln in old for b in replay.feed(ln)[1]] == ["198.51.100.9"]
    fresh = [line(now - 60 + s) for s in range(5)]
    assert [b.key for ln in fresh for b in daemon.feed(ln, now)[1]] == ["198.51.100.9"]


def test_durations_are_printed_as_admins_write_them() -> None:
    from mailban.core.durations import format_duration, parse_duration

    cases = {600: "10m", 3600: "1h", 5400: "1h30m", 6283: "1h44m43s", 86400: "1d", 604800: "1w", 30: "30s"}
    for seconds, text in cases.items():
        assert format_duration(seconds) == text
        assert parse_duration(text) == seconds
