"""Queue-id correlation: later lines of a message count against the account that submitted it,
however the lines of many messages interleave, with bounded memory."""

from __future__ import annotations

import pytest

import random

from mailban.core.correlate import Correlator
from mailban.core.records import Event
from mailban.core.syslog import Header


def hdr(program: bytes = b"postfix/qmgr", pid: bytes = b"1", host: bytes = b"mail") -> Header:
    return Header(0.0, host, program, pid, 0)


def ev(t: float, kind: str, qid: str, **kw: object) -> Event:
    return Event(time=t, kind=kind, filter="f", rule="r", queue_id=qid, **kw)  # type: ignore[arg-type]


def test_interleaved_messages_are_joined_to_their_submitter() -> None:
    rng = random.Random(7)
    c = Correlator()
    script = []
    for n in range(3000):
        qid = f"Q{n:05X}AB"
        user = f"user{n % 300}@example.test"
        script.append([
            (ev(n, "submission", qid, user=user, ip=f"198.51.100.{n % 200 + 1}"), hdr(b"postfix/smtpd")),
            (ev(n, "queued", qid, sender=user, recipients=n % 5 + 1), hdr()),
            (ev(n, "delivery", qid, status="sent"), hdr(b"postfix/smtp")),
            (ev(n, "removed", qid), hdr()),
        ])
    out = []
    # interleave: always take the next line of a random message still in flight
    while script:
        i = rng.randrange(len(script))
        event, header = script[i].pop(0)
        if not script[i]:
            script.pop(i)
        joined = c.process(event, header)
        if joined is not None:
            out.append(joined)
    for e in out:
        n = int(e.queue_id[1:6], 16)
        assert e.user == f"user{n % 300}@example.test", e
        assert e.ip == f"198.51.100.{n % 200 + 1}"
    assert len(c) == 0  # every message left the queue


def test_a_retried_message_counts_its_recipients_once() -> None:
    c = Correlator()
    c.process(ev(0, "submission", "AAAAA1", user="alice"), hdr(b"postfix/smtpd"))
    first = c.process(ev(1, "queued", "AAAAA1", recipients=50), hdr())
    again = c.process(ev(301, "queued", "AAAAA1", recipients=50), hdr())
    deferred = c.process(ev(302, "delivery", "AAAAA1", status="deferred"), hdr(b"postfix/smtp"))
    assert first is not None and first.user == "alice" and first.recipients == 50
    assert again is None
    assert deferred is not None and deferred.user == "alice"


def test_pickup_uid_reaches_the_delivery_lines() -> None:
    c = Correlator()
    c.process(ev(0, "submission", "BBBBB2", uid=33, sender="www-data"), hdr(b"postfix/pickup"))
    q = c.process(ev(0, "queued", "BBBBB2", sender="www-data@mail.example.test", recipients=3), hdr())
    d = c.process(ev(1, "delivery", "BBBBB2", status="bounced"), hdr(b"postfix/smtp"))
    assert q is not None and q.uid == 33 and q.sender == "www-data@mail.example.test"
    assert d is not None and d.uid == 33 and d.status == "bounced"


def test_sendmail_session_auth_reaches_the_message() -> None:
    c = Correlator()
    c.process(Event(time=0, kind="submission", filter="sendmail", rule="auth-login", user="alice",
                    ip="198.51.100.7"), hdr(b"sm-mta", b"23574"))
    q = c.process(ev(0, "queued", "6AMBC1sf023574", ip="198.51.100.7", recipients=2), hdr(b"sm-mta", b"23574"))
    other = c.process(ev(0, "queued", "6AMBC1sf023999", ip="198.51.100.8", recipients=2), hdr(b"sm-mta", b"23999"))
    d = c.process(ev(1, "delivery", "6AMBC1sf023574", status="deferred"), hdr(b"sm-mta", b"23576"))
    assert q is not None and q.user == "alice"
    assert other is not None and other.user is None
    assert d is not None and d.user == "alice" and d.ip == "198.51.100.7"


def test_memory_stays_bounded_when_later_lines_never_come() -> None:
    c = Correlator(ttl=3600, max_messages=1000)
    for n in range(50_000):
        c.process(ev(n * 0.01, "submission", f"C{n:08X}", user="u"), hdr(b"postfix/smtpd"))
    assert len(c) <= 1000
    # and entries older than the ttl go even below the cap
    c2 = Correlator(ttl=60, max_messages=1000)
    for n in range(500):
        c2.process(ev(n, "submission", f"D{n:08X}", user="u"), hdr(b"postfix/smtpd"))
    assert len(c2) <= 61


def test_address_of_keeps_and_joins_as_process_does() -> None:
    """`mailban test`'s summary correlates through address_of(): on a random interleaving with
    retries, lines without a submitter, qid reuse, hosts and a cap that evicts, it must keep the
    same events with the same addresses as process()."""
    rng = random.Random(11)
    full, slim = Correlator(max_messages=50), Correlator(max_messages=50)
    kinds = ["submission", "queued", "queued", "delivery", "removed"]
    for n in range(20000):
        kind = rng.choice(kinds)
        qid = f"Q{rng.randrange(120):03d}"
        ip = rng.choice([None, None, f"203.0.113.{rng.randrange(1, 50)}"])
        host = rng.choice([b"mx1", b"mx2"])
        t = n * 30 + rng.random() * 3e5  # some out of order, spanning more than the ttl
        joined = full.process(ev(t, kind, qid, ip=ip), hdr(host=host))
        assert slim.address_of(kind, qid, ip, host, t) == (joined is not None, joined.ip if joined else ip)
    assert list(slim.messages) == list(full.messages)


# --- failures held until their session names the address (sendmail's cut `relay=%.100s`) -------
def _pipeline(fast: bool):  # type: ignore[no-untyped-def]
    from mailban.core.filters import FilterSet
    from mailban.core.pipeline import Pipeline
    from mailban.core.syslog import SyslogParser
    from mailban.speedups import speedups
    from tests.filter_samples import NOW, all_filters

    c = speedups() if fast else None
    return Pipeline(SyslogParser(NOW, fast=c), FilterSet(list(all_filters().filters)), [], fast=c)


SM = b"Dec  3 09:44:30 vm sm-mta[21997]: "
CUT = (b"6B39iUVH021997: AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: "
       b"Password verification failed, user=alice, relay=" + b"m" * 60 + b".nnnnnnnnnnnnnnnnnnnnnn.example.net [127")
END = b"6B39iUVH021997: " + b"m" * 60 + b".nnnnnnnnnnnnnnnnnnnnnn.example.net [198.51.100.61] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA-v4"


def test_a_cut_failure_gets_the_address_its_session_names_later() -> None:
    for fast in (False, True):
        pipe = _pipeline(fast)
        assert pipe.events(SM + CUT) == pipe.events(SM + CUT) == []  # held, twice
        out = pipe.events(SM + END)
        assert [(e.rule, e.ip, e.user) for e in out] == [
            ("no-mail-command", "198.51.100.61", None),
            ("auth-failed-cut", "198.51.100.61", "alice"), ("auth-failed-cut", "198.51.100.61", "alice")]
        assert out[1].line.startswith("Dec  3 09:44:30 vm sm-mta[21997]: 6B39iUVH021997: AUTH failure")
        assert pipe.correlator.held == {} and pipe.correlator.released == []


def test_unknown_users_get_the_address_of_their_envelope_line() -> None:
    """sendmail names a RCPT to an unknown local user by queue id only; the envelope's `from=`
    line, written when the transaction ends, names the client (real lines, sendmail 8.17)."""
    rcpt = [b"6AMBCeTu023991: <nouser%d@mx.example.test>... User unknown" % n for n in range(3)]
    env = (b"6AMBCeTu023991: from=<spam@spammer.example>, size=0, class=0, nrcpts=0, proto=ESMTP, "
           b"daemon=MTA-v4, relay=[198.51.100.35]")
    for fast in (False, True):
        pipe = _pipeline(fast)
        assert [e for r in rcpt for e in pipe.events(SM + r)] == []
        out = pipe.events(SM + env)
        assert [(e.rule, e.ip) for e in out] == [("queued", "198.51.100.35")] + [("user-unknown", "198.51.100.35")] * 3
        assert pipe.correlator.held == {} and pipe.correlator.released == []
        # another envelope's line releases nothing
        pipe.events(SM + rcpt[0])
        assert [e.rule for e in pipe.events(SM + env.replace(b"6AMBCeTu023991", b"6AMBCeTu023992"))] == ["queued"]


def test_a_held_failure_never_takes_another_session_or_host() -> None:
    for fast in (False, True):
        pipe = _pipeline(fast)
        pipe.events(SM + CUT)
        other_qid = END.replace(b"6B39iUVH021997", b"6B39iUVH021998")
        assert [e.rule for e in pipe.events(SM + other_qid)] == ["no-mail-command"]
        other_host = (SM + END).replace(b" vm ", b" mx2 ")
        assert [e.rule for e in pipe.events(other_host)] == ["no-mail-command"]
        assert len(pipe.correlator.held) == 1


def test_held_failures_are_bounded_in_time() -> None:
    c = Correlator()
    for n in range(5):
        assert c.process(ev(n * 1000.0, "auth-failure", f"Q{n}"), hdr(b"sm-mta")) is None
    assert sorted(c.held) == [(b"mail", "Q1"), (b"mail", "Q2"), (b"mail", "Q3"), (b"mail", "Q4")]
    # a failure with an address, or an event of another kind, is never held
    assert c.process(ev(5000.0, "auth-failure", "Q9", ip="192.0.2.1"), hdr(b"sm-mta")) is not None
    assert c.process(ev(5000.0, "delivery", "Q8"), hdr(b"sm-mta")) is not None


# --- Exim: arrivals joined to their deliveries by message id; U= login names resolved to uids ----
EXIM_LINES = [
    b"2026-12-03 14:12:23 [3109] 1xZ7Xr-0000o9-1s <= alice@example.test H=(client.example.test) [127.0.0.40] P=esmtpa A=plain_server:alice@example.test S=348",
    b"2026-12-03 14:12:23 [3126] 1xZ7Xv-000000000rr-1YL0 <= \"x U=root P=local\"@mx.example.test U=nobody P=local S=407 T=\"U=root\"",
    b"2026-12-03 14:12:23 [3110] 1xZ7Xr-0000o9-1s ** gone@mx.example.test R=gone: mailbox gone",
    b"2026-12-03 14:12:23 [3110] 1xZ7Xr-0000o9-1s == friend@remote.example.net R=smarthost T=remote_smtp defer (111): Connection refused",
    b"2026-12-03 14:12:23 [3137] 1xZ7Xv-000000000rr-1YL0 => alice <alice@mx.example.test> R=local_user T=devnull",
    b"2026-12-03 14:12:23 [3137] 1xZ7Xv-000000000rr-1YL0 Completed",
]


@pytest.mark.parametrize("fast", [False, True])
def test_exim_deliveries_count_against_the_account_and_the_uid(fast: bool) -> None:
    p = _pipeline(fast)
    p.uid_of = {"nobody": 65534}.get
    out = [e for raw in EXIM_LINES for e in p.events(raw)]
    by = [(e.rule, e.user, e.uid, e.ip, e.status) for e in out]
    assert by == [
        ("arrival-auth", "alice@example.test", None, "127.0.0.40", None),
        ("local", None, 65534, None, None),
        ("bounced", "alice@example.test", None, "127.0.0.40", "bounced"),
        ("deferred", "alice@example.test", None, "127.0.0.40", "deferred"),
        ("delivered", None, 65534, None, "sent"),
        ("completed", None, 65534, None, None),
    ]


def test_an_unresolved_login_is_neither_a_uid_nor_an_account() -> None:
    p = _pipeline(False)
    p.uid_of = {}.get
    (e,) = p.events(EXIM_LINES[1])
    assert e.user is None and e.uid is None and e.sender == '"x U=root P=local"@mx.example.test'
