"""Account-level decisions: outbound volume per user/uid, recipients, and password guessing
spread over many addresses (ban the attackers, spare the owner). Events in, bans out, fake clock."""

from __future__ import annotations

from mailban.core.jails import IgnoreList, Jail, JailSpec
from mailban.core.records import Event


def ev(t: float, kind: str, user: str | None = None, ip: str | None = None, uid: int | None = None,
       recipients: int | None = None, status: str | None = None) -> Event:
    return Event(time=t, kind=kind, filter="f", rule="r", user=user, ip=ip, uid=uid,
                 recipients=recipients, status=status, line=f"{kind} {user} [{ip}] at {t}")


def make(**kw: object) -> Jail:
    spec = JailSpec(name="acct", **kw)  # type: ignore[arg-type]
    return Jail(spec, IgnoreList(spec.ignoreip))


def test_user_jail_counts_messages_per_user_within_the_hour() -> None:
    j = make(kinds=frozenset({"submission"}), key="user", findtime=3600, maxretry=200, bantime=86400,
             actions=("notify",))
    # a newsletter at 150 an hour for three hours: never acted on
    for i in range(450):
        assert j.offer(ev(i * 24.0, "submission", user="news@example.test", ip="198.51.100.5"), i * 24.0) == []
    # a stolen account: 200 within 20 minutes
    bans = []
    for i in range(200):
        bans += j.offer(ev(i * 6.0, "submission", user="alice@example.test", ip=f"198.51.100.{i % 30 + 10}"), i * 6.0)
    (ban,) = bans
    assert (ban.key_type, ban.key, ban.count, ban.actions) == ("user", "alice@example.test", 200, ("notify",))
    assert len(ban.ips) == 30


def test_recipients_are_summed() -> None:
    j = make(kinds=frozenset({"queued"}), key="uid", count="recipients", findtime=3600, maxretry=500)
    assert j.offer(ev(0, "queued", uid=33, recipients=499), 0) == []
    assert j.offer(ev(1, "queued", uid=33, recipients=0), 1) == []   # weighs nothing
    (ban,) = j.offer(ev(2, "queued", uid=33, recipients=1), 2)
    assert (ban.key_type, ban.key, ban.count) == ("uid", "33", 500)
    # the window slides: after an hour the old recipients no longer count
    assert j.offer(ev(90000, "queued", uid=34, recipients=499), 90000) == []
    assert j.offer(ev(93601, "queued", uid=34, recipients=2), 93601) == []


def test_bounce_jail_selects_statuses() -> None:
    j = make(kinds=frozenset({"delivery"}), statuses=frozenset({"bounced", "deferred"}), key="user",
             findtime=3600, maxretry=3)
    for t in range(10):
        assert j.offer(ev(t, "delivery", user="bob", status="sent"), t) == []
    j.offer(ev(20, "delivery", user="bob", status="bounced"), 20)
    j.offer(ev(21, "delivery", user="bob", status="deferred"), 21)
    (ban,) = j.offer(ev(22, "delivery", user="bob", status="bounced"), 22)
    assert ban.key == "bob"


def guessing_jail() -> Jail:
    return make(kinds=frozenset({"auth-failure"}), key="user", findtime=600, maxretry=10, min_ips=5,
                ban_ips=True, bantime=3600, actions=("notify",), ip_actions=("nft",))


def test_distributed_guessing_bans_every_attacker_but_not_the_owner() -> None:
    j = guessing_jail()
    owner = "203.0.113.50"
    decisions = []
    t = 0.0
    for n in range(60):
        attacker = f"198.51.100.{n + 1}"
        for _ in range(2):
            t += 2
            decisions += j.offer(ev(t, "auth-failure", user="alice", ip=attacker), t)
        if n == 3:
            # the owner mistypes once, then logs in, in the middle of the attack
            decisions += j.offer(ev(t + 1, "auth-failure", user="alice", ip=owner), t + 1)
            decisions += j.offer(ev(t + 1.5, "login", user="alice", ip=owner), t + 1.5)
    user_bans = [b for b in decisions if b.key_type == "user"]
    ip_bans = {b.key for b in decisions if b.key_type == "ip"}
    assert [b.key for b in user_bans] == ["alice"]
    assert ip_bans == {f"198.51.100.{n + 1}" for n in range(60)}
    assert owner not in ip_bans
    assert all(b.actions == ("nft",) and b.cause == "user alice" for b in decisions if b.key_type == "ip")
    # the owner failing again later during the ban is still spared; a new attacker is not: its
    # first guess puts it on probation, its second bans it
    assert j.offer(ev(t + 10, "auth-failure", user="alice", ip=owner), t + 10) == []
    assert j.offer(ev(t + 11, "auth-failure", user="alice", ip="198.51.100.200"), t + 11) == []
    (late,) = j.offer(ev(t + 12, "auth-failure", user="alice", ip="198.51.100.200"), t + 12)
    assert late.key == "198.51.100.200" and late.until == user_bans[0].until
    assert j.tick(t + 10_000) == []  # the owner's grace passed: still never banned


def test_single_guess_addresses_are_banned_when_their_grace_ends_unless_they_log_in() -> None:
    j = guessing_jail()
    decisions = []
    for n in range(10):  # one guess from each of 10 addresses trips the account jail
        decisions += j.offer(ev(n, "auth-failure", user="alice", ip=f"198.51.100.{n + 1}"), n)
    assert [b.key_type for b in decisions] == ["user"]  # the addresses wait out their grace
    # the owner mistypes during the attack, then logs in within the grace
    j.offer(ev(20, "auth-failure", user="alice", ip="203.0.113.7"), 20)
    j.offer(ev(30, "login", user="alice", ip="203.0.113.7"), 30)
    assert j.tick(100) == []                     # grace (120 s) not over yet
    late = j.tick(200)
    assert {b.key for b in late} == {f"198.51.100.{n + 1}" for n in range(10)}
    assert all(b.time == 200 for b in late)
    assert j.tick(10_000) == []


def test_few_addresses_do_not_trip_the_account_jail() -> None:
    j = guessing_jail()
    for t in range(40):  # 40 failures, but from 4 addresses only: the per-IP jail's business
        assert j.offer(ev(t, "auth-failure", user="alice", ip=f"198.51.100.{t % 4 + 1}"), t) == []


def test_user_names_are_data_and_never_choose_the_address() -> None:
    j = guessing_jail()
    hostile = 'x" ; $(reboot) [6.6.6.6] rip=6.6.6.6\nrelay=[6.6.6.6]'
    decisions = []
    for n in range(10):
        decisions += j.offer(ev(n, "auth-failure", user=hostile, ip=f"198.51.100.{n + 1}"), n)
    decisions += j.tick(1000)
    keys = {b.key for b in decisions if b.key_type == "ip"}
    assert keys == {f"198.51.100.{n + 1}" for n in range(10)}
    assert [b.key for b in decisions if b.key_type == "user"] == [hostile]


def test_ignored_addresses_are_never_banned_by_an_account_decision() -> None:
    j = guessing_jail()
    decisions = []
    for n in range(10):
        decisions += j.offer(ev(n, "auth-failure", user="alice", ip="127.0.0.1" if n == 0 else f"198.51.100.{n}"), n)
    decisions += j.tick(1000)
    assert len(decisions) == 10 and "127.0.0.1" not in {b.key for b in decisions}
