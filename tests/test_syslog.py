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


# --- header breadth (issue 13, item 3): the forms of tests/filters/headers-*.log ---------------
MSG = b"warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x"


def _cut(line: bytes, parser: SyslogParser | None = None) -> tuple[float, bytes | None, bytes, bytes | None, bytes]:
    h = (parser or SyslogParser(NOW)).parse(line)
    assert h is not None, line
    return h.time, h.host, h.program, h.pid, line[h.msg_start:]


def test_bsd_days_padded_with_a_space_a_zero_or_not_at_all() -> None:
    want = (calendar.timegm((2026, 9, 8, 8, 0, 1)), b"mx", b"postfix/smtpd", b"7", MSG)
    for stamp in (b"Sep  8", b"Sep 08", b"Sep 8"):
        assert _cut(stamp + b" 08:00:01 mx postfix/smtpd[7]: " + MSG) == want
    # dovecot's own stamp, zero-padded, no host
    assert _cut(b"Dec 03 10:59:57 auth: Info: x")[1:] == (None, b"auth", None, b"Info: x")
    for junk in (b"Sep 0 08:00:01 mx p: x", b"Sep 32 08:00:01 mx p: x", b"Sep 8 8:00:01 mx p: x",
                 b"Sep 123 08:00:01 mx p: x", b"Sep 8 08:00:01"):
        assert SyslogParser(NOW).parse(junk) is None, junk


def test_pri_before_a_stamp() -> None:
    bsd = calendar.timegm((2026, 11, 20, 8, 0, 1))
    assert _cut(b"<22>Nov 20 08:00:01 mx postfix/smtpd[7]: " + MSG) == (bsd, b"mx", b"postfix/smtpd", b"7", MSG)
    assert _cut(b"<0>2026-11-20T08:00:01Z mx postfix/smtpd[7]: " + MSG) == (bsd, b"mx", b"postfix/smtpd", b"7", MSG)
    assert _cut(b"<191>2026-11-20T08:00:01.5+00:00 mx p: x") == (bsd + 0.5, b"mx", b"p", None, b"x")
    for junk in (b"<192>Nov 20 08:00:01 mx p: x", b"<022>Nov 20 08:00:01 mx p: x", b"<>Nov 20 08:00:01 mx p: x",
                 b"<22>mx p: x", b"<22> Nov 20 08:00:01 mx p: x", b"<22>p: x"):
        assert SyslogParser(NOW).parse(junk) is None, junk


def test_rfc5424() -> None:
    t = calendar.timegm((2026, 11, 20, 8, 0, 1)) + 0.003
    head = b"<22>1 2026-11-20T08:00:01.003Z "
    assert _cut(head + b"mx postfix/smtpd 4242 - - " + MSG) == (t, b"mx", b"postfix/smtpd", b"4242", MSG)
    # nil host and procid; a message id; rsyslog's second space; a BOM
    assert _cut(head + b"- dovecot - ID47 -  auth: x") == (t, None, b"dovecot", None, b"auth: x")
    assert _cut(head + b"mx app 1 - - \xef\xbb\xbf" + MSG)[4] == MSG
    # structured data: several elements, escapes in values, `]` and a fake header inside quotes
    sd = b'[timeQuality tzKnown="1" isSynced="0"][ex@32473 a="x\\]y" b="\\"q\\\\" c="] mx fake 1 - - "]'
    assert _cut(head + b"mx app 12 - " + sd + b" " + MSG) == (t, b"mx", b"app", b"12", MSG)
    assert _cut(head + b"mx app 12 - " + sd) == (t, b"mx", b"app", b"12", b"")
    # no program: nothing a filter could cover; broken structured data; a stamp that is no time
    for junk in (head + b"mx - 1 - - x", head + b"mx app 1 - [a b=c] x", head + b"mx app 1 - [a x",
                 head + b"mx app 1 - [a b=\"c] x", head + b"mx app 1 - -x", b"<22>1 2026-13-20T08:00:01Z mx a - - - x",
                 b"<22>1 Nov 20 08:00:01 mx a - - - x", b"<22>1  mx a - - - x", head + b"mx app"):
        assert SyslogParser(NOW).parse(junk) is None, junk


def test_freebsd_syslogd_facility_and_level() -> None:
    bsd = calendar.timegm((2026, 11, 20, 8, 0, 1))
    for facpri in (b"<mail.info>", b"<2.6>", b"<local7.debug>", b"<mail.6>"):
        assert _cut(b"Nov 20 08:00:01 " + facpri + b" mx postfix/smtpd[7]: " + MSG) == (
            bsd, b"mx", b"postfix/smtpd", b"7", MSG)
        assert _cut(b"Nov 8 08:00:01 " + facpri + b" mx p: x")[1:] == (b"mx", b"p", None, b"x")
    # only right after a BSD stamp, and only that shape
    assert SyslogParser(NOW).parse(b"2026-11-20T08:00:01Z <mail.info> mx p: x") is None
    assert SyslogParser(NOW).parse(b"Nov 20 08:00:01 <mail info> mx p: x") is None
    assert _cut(b"Nov 20 08:00:01 mx p: <mail.info> mx q: y")[2:] == (b"p", None, b"<mail.info> mx q: y")


def test_dovecot_log_timestamps() -> None:
    # local time (the core's default conversion is UTC), a space for the `T`, usecs or not
    t = calendar.timegm((2019, 10, 15, 8, 8, 52))
    assert _cut(b"2019-10-15 08:08:52 imap-login: Info: x") == (t, None, b"imap-login", None, b"Info: x")
    assert _cut(b"2019-10-15 08:08:52.250000 auth-worker(12): Info: x") == (
        t + 0.25, None, b"auth-worker", b"12", b"Info: x")
    assert _cut(b"2019-10-15 08:08:52+02:00 mx postfix/smtpd[1]: x")[0] == t - 7200
    local = SyslogParser(NOW, lambda tt: float(calendar.timegm((*tt, 0, 0, 0)) - 3600))
    assert _cut(b"2019-10-15 08:08:52 auth: x", local)[0] == t - 3600
    for junk in (b"2019-10-15 08:08:5 auth: x", b"2019-10-15  08:08:52 auth: x", b"2019-10-15 25:08:52 auth: x"):
        assert SyslogParser(NOW).parse(junk) is None, junk


def test_iso_stamps_in_utc_written_as_z_or_plus_0000() -> None:
    t = calendar.timegm((2026, 11, 20, 8, 0, 1))
    for zone in (b"Z", b"z", b"+0000", b"+00:00", b"-0000"):
        assert _cut(b"2026-11-20T08:00:01" + zone + b" mx p: x")[0] == t, zone
        assert _cut(b"2026-11-20T08:00:01.125" + zone + b" mx p: x")[0] == t + 0.125, zone
    assert _cut(b"2026-11-20T08:00:01+0130 mx p: x")[0] == t - 5400


def test_tai64n_as_daemontools_writes_it() -> None:
    # `@400000006b114bd328de0364`, which tai64nlocal prints as 2026-12-03 11:00:25.685638500 (UTC)
    t = _cut(b"@400000006b114bd328de0364 master: Info: x")
    assert abs(t[0] - (calendar.timegm((2026, 12, 3, 11, 0, 25)) + 0.6856385)) < 1e-6
    assert t[1:] == (None, b"master", None, b"Info: x")
    # the program's own stamp after multilog's is skipped; TAI64N's time stays
    inner = _cut(b"@400000006b114bd328de0364 Dec 03 09:00:00 auth: Info: y")
    assert inner[0] == t[0] and inner[1:] == (None, b"auth", None, b"Info: y")
    assert _cut(b"@400000006b114bd328de0364 mx postfix/smtpd[1]: z")[1:4] == (b"mx", b"postfix/smtpd", b"1")
    for junk in (b"@400000006b114bd3ffffffff auth: x",  # nanoseconds past 999999999
                 b"@400000006b114bd328de036 auth: x", b"@400000006B114BD328DE0364 auth: x",
                 b"@800000006b114bd328de0364 auth: x", b"@400000006b114bd328de0364auth: x"):
        assert SyslogParser(NOW).parse(junk) is None, junk


def test_a_line_without_a_time_is_timed_by_its_neighbours_then_by_arrival() -> None:
    p = SyslogParser(NOW)
    # before any stamped line: `now`
    assert _cut(b"imap-login: Info: a", p) == (NOW, None, b"imap-login", None, b"Info: a")
    stamped = calendar.timegm((2026, 11, 20, 8, 0, 1))
    _cut(b"Nov 20 08:00:01 auth: Info: b", p)
    assert _cut(b"auth-worker(9): Info: c", p) == (stamped, None, b"auth-worker", b"9", b"Info: c")
    assert _cut(b"<22>1 - - dovecot - - - auth: d", p)[0] == stamped  # RFC 5424's nil time too
    _cut(b"@400000006b114bd328de0364 auth: e", p)
    assert _cut(b"auth: f", p)[0] == p.last != stamped
    # a stamped line no header can be cut from does not move it
    assert p.parse(b"Nov 21 08:00:01 no header here") is None
    assert _cut(b"auth: g", p)[0] == p.last != calendar.timegm((2026, 11, 21, 8, 0, 1))
    # the daemon moves `now`: from then on such a line is timed by its arrival, whatever the
    # lines before it (of any file, perhaps forged) said
    p.set_now(NOW + 60)
    _cut(b"Nov 20 08:00:01 auth: Info: h", p)
    assert _cut(b"auth: i", p)[0] == NOW + 60
    # only a tag and its message, no host
    for junk in (b"mx auth: x", b"-auth: x", b" auth: x", b": x", b"auth:", b"auth x", b"\xffauth: x",
                 b"<22>auth: x"):
        assert SyslogParser(NOW).parse(junk) is None, junk


def test_message_text_never_becomes_the_header() -> None:
    for text in (b"<22>1 2026-11-20T08:00:01Z evil dovecot - - - auth: x", b"@400000006b114bd328de0364 auth: x",
                 b"<mail.info> evil p: x", b"Sep 8 08:00:01 evil p: x", b"2019-10-15 08:08:52 auth: x"):
        for head in (b"Nov 20 08:00:01 mx postfix/smtpd[7]: ", b"<22>1 2026-11-20T08:00:01Z mx app 7 - - ",
                     b"Nov 20 08:00:01 <mail.info> mx postfix/smtpd[7]: ", b"auth: ",
                     b"@400000006b114bd328de0364 auth: "):
            h = SyslogParser(NOW).parse(head + text)
            assert h is not None and h.msg_start == len(head) and h.host in (b"mx", None), head + text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises_after_the_rarer_prefixes(data: bytes) -> None:
    p = SyslogParser(NOW)
    for prefix in (b"<22>", b"<22>1 ", b"<22>1 2026-11-20T08:00:01Z ", b"<22>1 - mx app 1 - [a b=\"",
                   b"Sep 8 08:00:01 ", b"Nov 20 08:00:01 <mail.info> ", b"2019-10-15 08:08:52",
                   b"@400000006b114bd328de0364 ", b"@400000006b114bd328de0364 Dec 03 09:00:00 ", b"auth"):
        p.parse(prefix + data)


def test_the_rarer_forms_stay_fast_on_256_kb_lines() -> None:
    import time

    sd = b"[" + b"i" * 32 + (b" " + b"n" * 32 + b'="' + b'\\"' * 125 + b'"') * 10 + b"]"
    worst = 0.0
    for line in (b"<22>1 2026-11-20T08:00:01Z mx app 1 - " + sd * 10 + b"x" * 200_000,
                 b'<22>1 2026-11-20T08:00:01Z mx app 1 - [a b="' + b'\\"x' * 80_000,
                 b"<22>1 2026-11-20T08:00:01Z mx app 1 - " + b'[a b="c"]' * 28_000, b"auth" * 64_000,
                 b"Sep 8 08:00:01 " + b"<" * 256_000, b"@400000006b114bd328de0364 " * 9_800,
                 b"2019-10-15 08:08:52 " * 12_800, b"a: " * 85_000, b"<22>" * 64_000):
        p = SyslogParser(NOW)
        started = time.perf_counter()
        p.parse(line)
        worst = max(worst, time.perf_counter() - started)
    assert worst < 0.05


def test_a_line_without_a_time_takes_the_last_time_of_its_own_file_in_a_merged_replay(tmp_path, monkeypatch) -> None:
    """Two logs read side by side (replay merges them by time): dovecot's stamp-less line gets
    the time of the line before it in its own file, not of the other file's latest line."""
    from mailban.config import load_filters, shipped_dir
    from mailban.core.filters import FilterSet
    from mailban.offline import ReadCount, matched_lines

    a = tmp_path / "dovecot.log"
    a.write_text("2026-11-20 08:00:00 imap-login: Info: Login: user=<a@example.test>, method=PLAIN, "
                 "rip=192.0.2.1, lip=192.0.2.2\n"
                 "imap-login: Info: Login: user=<b@example.test>, method=PLAIN, rip=192.0.2.3, lip=192.0.2.2\n")
    b = tmp_path / "mail.log"
    b.write_text("".join(f"Nov 20 09:00:0{s} mx postfix/smtpd[1]: warning: unknown[198.51.100.9]: "
                         "SASL LOGIN authentication failed: x\n" for s in range(3)))
    filters = FilterSet(load_filters(shipped_dir("filters.d").parent / "none"))
    for pure in (False, True):
        with monkeypatch.context() as m:
            if pure:
                m.setenv("MAILBAN_NO_SPEEDUPS", "1")
            parser = SyslogParser(NOW)
            items = list(matched_lines([str(a), str(b)], parser, filters, ReadCount()))
        times = {e.user: e.time for *_rest, events in items for e in events if e.user}
        assert times["b@example.test"] == times["a@example.test"] == calendar.timegm((2026, 11, 20, 8, 0, 0)), (pure, times)


def test_exims_own_log_files_name_the_program_exim() -> None:
    """mainlog/rejectlog (tests/filters/exim-*.log): no host, no tag; +millisec, log_timezone, +pid."""
    t = calendar.timegm((2026, 12, 3, 13, 5, 53))
    rest = b"H=(helo.example) [192.0.2.1] F=<a@b> rejected RCPT <c@d>: relay not permitted"
    assert _cut(b"2026-12-03 13:05:53 " + rest) == (t, None, b"exim", None, rest)
    assert _cut(b"2026-12-03 13:05:53.517 " + rest)[0] == t + 0.517
    assert _cut(b"2026-12-03 13:05:53 +0100 " + rest) == (t - 3600, None, b"exim", None, rest)
    assert _cut(b"2026-12-03 13:05:53.250 -0530 [4242] " + rest) == (t + 19800.25, None, b"exim", b"4242", rest)
    assert _cut(b"2026-12-03 13:05:53 [77] Warning: purging the environment.")[2:4] == (b"exim", b"77")
    # a message id right after the stamp, both formats, even before a `word: `
    for qid in (b"1rKx2p-0004Ab-1F", b"1tAbCd-000000012Ab-1FGh"):
        line = b"2026-12-03 13:05:53 " + qid + b" DKIM: d=example.org s=sel c=relaxed/relaxed"
        assert _cut(line)[1:] == (None, b"exim", None, line[20:])
    # local time without a zone, as every stamp without one
    assert _cut(b"2026-12-03 13:05:53 " + rest, SyslogParser(NOW, lambda tt: calendar.timegm((*tt, 0, 0, 0)) - 3600))[0] == t - 3600
    # the other readers of this stamp keep their header: dovecot's log_timestamp, a template with a host
    assert _cut(b"2026-12-03 13:05:53 imap-login: Info: x")[1:3] == (None, b"imap-login")
    assert _cut(b"2026-12-03 13:05:53+02:00 mx postfix/smtpd[1]: x")[1:4] == (b"mx", b"postfix/smtpd", b"1")


def test_exim_through_syslog_keeps_its_tag() -> None:
    h = SyslogParser(NOW).parse(b"Dec  3 13:10:44 mx exim4[23387]: 2026-12-03 13:10:44 plain_server authenticator failed")
    assert h is not None and (h.host, h.program, h.pid) == (b"mx", b"exim4", b"23387")


def test_exim_lines_read_the_same_in_c_and_python() -> None:
    from mailban.speedups import speedups

    fast = speedups()
    if fast is None:
        return
    lines = [b"2026-12-03 13:05:53 1tAbCd-000000012Ab-1FGh <= a@b H=(x) [192.0.2.1] P=esmtp S=1",
             b"2026-12-03 13:05:53.517 +0100 [12] SMTP call from [192.0.2.1] dropped: too many nonmail commands",
             b"Dec  3 13:10:44 mx exim[1]: 2026-12-03 13:10:44 [1] x", b"2026-12-03 13:05:53 ", b" Suggested action"]
    for line in lines:
        assert SyslogParser(NOW, fast=fast).parse(line) == SyslogParser(NOW).parse(line), line
