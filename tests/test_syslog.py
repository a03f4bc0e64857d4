from __future__ import annotations

import calendar

from hypothesis import given, settings, strategies as st

from mailban.core.syslog import SyslogParser

NOW = calendar.timegm((2026, 11, 23, 12, 0, 0))


def test_bsd_line() -> None:
    p = SyslogParser(NOW)
    line = b"Nov 20 08:00:01 mx1 postfix/smtpd[123]: connect from unknown[192.0.2.1]"
    h = p.parse(line)
    assert h is not None
    assert h.time == calendar.timegm((2026, 11, 20, 8, 0, 1))
    assert (h.host, h.program, h.pid) == (b"mx1", b"postfix/smtpd", b"123")
    assert line[h.msg_start:] == b"connect from unknown[192.0.2.1]"


def test_bsd_year_never_in_the_future() -> None:
    p = SyslogParser(NOW)
    h = p.parse(b"Dec 31 23:59:59 mx1 postfix/smtpd[1]: x")
    assert h is not None and h.time == calendar.timegm((2025, 12, 31, 23, 59, 59))
    # a single-digit day is padded with a space
    h = p.parse(b"Nov  2 01:02:03 mx1 sm-mta[9]: y")
    assert h is not None and h.time == calendar.timegm((2026, 11, 2, 1, 2, 3))


def test_rfc3339_with_fraction_and_zone() -> None:
    p = SyslogParser(NOW)
    h = p.parse(b"2026-11-20T08:00:01.123456+01:00 mx1 postfix/smtpd[5]: hello")
    assert h is not None
    assert abs(h.time - (calendar.timegm((2026, 11, 20, 7, 0, 1)) + 0.123456)) < 1e-6
    h = p.parse(b"2026-11-20T08:00:01Z mx1 dovecot: imap-login: x")
    assert h is not None and h.time == calendar.timegm((2026, 11, 20, 8, 0, 1)) and h.program == b"dovecot"


def test_dovecot_log_path_format_has_no_host() -> None:
    p = SyslogParser(NOW)
    line = b"Nov 22 11:04:27 auth-worker(991): Info: passwd-file(a,192.0.2.1): Password mismatch"
    h = p.parse(line)
    assert h is not None and h.host is None and h.program == b"auth-worker" and h.pid == b"991"
    assert line[h.msg_start:].startswith(b"Info: passwd-file")


def test_garbage_is_refused_quietly() -> None:
    p = SyslogParser(NOW)
    for junk in (b"", b"hello", b"\x00" * 50, b"\xff\xfe" * 40, b"Nov 99 99:99:99 h p: x",
                 b"Feb 30 10:00:00 h p[1]: x" * 1, b"2026-13-45T99:00:00Z h p: x",
                 b"Nov 20 08:00:01 " + b"x" * 100_000, b"Nov 20 08:00:01 host no colon message"):
        assert p.parse(junk) is None, junk[:40]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises(data: bytes) -> None:
    p = SyslogParser(NOW)
    p.parse(data)
    p.parse(b"Nov 20 08:00:01 " + data)
    p.parse(b"2026-11-20T08:00:01Z " + data)


# --- rsyslog's repeat folding ------------------------------------------------------------------
FOLD_HEAD = b"Dec  3 10:32:34 vm postfix/smtpd[17169]: "
SASL = b"warning: unknown[127.0.0.170]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"


def _unfold(message: bytes) -> tuple[bytes, int] | None:
    from mailban.core.syslog import unfold

    line = FOLD_HEAD + message
    header = SyslogParser(NOW).parse(line)
    assert header is not None and header.msg_start == len(FOLD_HEAD)
    return unfold(line, header.msg_start)


def test_unfold_gives_the_line_rsyslog_held_back_and_its_copies() -> None:
    assert _unfold(b"message repeated 18 times: [ " + SASL + b"]") == (FOLD_HEAD + SASL, 18)
    # the message's own brackets stay; only rsyslog's closing one goes
    assert _unfold(b"message repeated 2 times: [ a [x] b]]") == (FOLD_HEAD + b"a [x] b]", 2)
    # a message cut at 800 bytes still ends with rsyslog's bracket
    assert _unfold(b"message repeated 3 times: [ " + b"x" * 800 + b"]") == (FOLD_HEAD + b"x" * 800, 3)


def test_unfold_refuses_what_rsyslog_does_not_write() -> None:
    for message in (SASL, b"message repeated 0 times: [ " + SASL + b"]",
                    b"message repeated 3 times: [ " + SASL,  # no closing bracket
                    b"message repeated x times: [ " + SASL + b"]",
                    b"message repeated 1234567890 times: [ " + SASL + b"]",  # more than 9 digits
                    b"warning: message repeated 3 times: [ " + SASL + b"]"):  # not at the start
        assert _unfold(message) is None, message


def test_a_fold_counts_its_copies_in_the_jail() -> None:
    """The first copy plus `message repeated 18 times` is 19 failures: the default jail
    (maxretry 5) bans at the fold, which explain shows as logged."""
    from mailban import config
    from mailban.core.syslog import utc_to_epoch

    pipe = config.load(None).pipeline(NOW, utc_to_epoch)
    sasl = SASL.replace(b"127.0.0.170", b"198.51.100.7")  # loopback is never banned
    assert pipe.feed(FOLD_HEAD + sasl)[1] == []
    events, bans = pipe.feed(FOLD_HEAD + b"message repeated 18 times: [ " + sasl + b"]")
    assert [(e.ip, e.count) for e in events] == [("198.51.100.7", 18)]
    assert [(b.key, b.count) for b in bans] == [("198.51.100.7", 19)]
    assert bans[0].lines[-1].startswith("Dec  3 10:32:34 vm postfix/smtpd[17169]: message repeated 18 times: [ ")
