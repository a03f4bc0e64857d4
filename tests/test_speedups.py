"""The C module `mailban.core._speedups` decides exactly as the Python it stands in for.

Three functions, three oracles: `parse_header` against `SyslogParser.parse_py`, `tally` against
`scan.tally_lines`' Python loop, `merge` against `Correlator.address_of` (through
`scan.PendingCounter`, with MAILBAN_NO_SPEEDUPS=1 for the Python side). Inputs: the shipped
filters' sample logs, the benchmark generator's mixed log, lines built from header pieces at the
edges the parser cares about (host of 255/256 bytes, tag of 96/97, pid forms, stamps), hostile
bytes, and random pending-event sequences with small record caps and lifetimes, so that
eviction and retry dropping happen all the time.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mailban import config
from mailban.offline import scan
from mailban.core.filters import TallySet, holds
from mailban.core.literals import literal_index
from mailban.core.syslog import SyslogParser
from mailban.localtime import local_to_epoch
from mailban.speedups import speedups

from .bench_modules import genlog

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "tests" / "filters").glob("*.log")) + sorted(Path("/work/shared/samples").glob("*.log"))
NOW = 1_795_000_000.0  # 2026-11-18: fixed, so that year inference is the same on both sides

C = speedups()
needs_c = pytest.mark.skipif(C is None, reason="MAILBAN_NO_SPEEDUPS=1: the C module is switched off")


def test_the_c_module_is_built() -> None:
    # Installing mailban compiles it (hatch_build.py); without it mailban still works, at half
    # the speed, and this test is what notices a build machine without gcc or Python headers.
    import os

    if os.environ.get("MAILBAN_NO_SPEEDUPS") == "1":
        pytest.skip("switched off on purpose")
    assert C is not None, "mailban.core._speedups was not built: install gcc and the Python headers"


# --- parse_header -------------------------------------------------------------------------------

def _both(lines: list[bytes]) -> None:
    fast, slow = SyslogParser(NOW, fast=C), SyslogParser(NOW)
    for line in lines:
        a, b = fast.parse(line), slow.parse_py(line)
        assert a == b, line
        assert type(a) is type(b), line
    assert fast.last == slow.last  # what the next line without a time would get


def _sample_lines() -> list[bytes]:
    lines: list[bytes] = []
    for path in SAMPLES:
        lines += path.read_bytes().split(b"\n")
    return lines


@needs_c
def test_parse_header_on_real_and_generated_lines() -> None:
    lines = _sample_lines()
    lines += [line.encode() for line in genlog().generate(3000, seed=3, fmt="bsd")]
    lines += [line.encode() for line in genlog().generate(1000, seed=3, fmt="rfc3339")]
    _both(lines)


STAMPS = [b"Nov 20 08:00:01", b"Feb 29 10:00:00", b"Feb 30 10:00:00", b"Nov  2 08:00:01",
          b"Nov 20 24:00:00", b"nov 20 08:00:01", b"2026-11-20T08:00:01.5+01:00", b"Xyz 20 08:00:01",
          # the rarer forms parse_py reads (syslog.py's docstring), and no stamp at all
          b"Sep 8 08:00:01", b"Sep 08 08:00:01", b"<22>Nov 20 08:00:01", b"<22>2026-11-20T08:00:01Z",
          b"Nov 20 08:00:01 <mail.info>", b"Nov 2 08:00:01 <2.6>", b"@400000006b114bd328de0364",
          b"@400000006b114bd328de0364 Dec 03 09:00:00", b"2019-10-15 08:08:52.5", b"2019-10-15 08:08:52",
          b"<22>1 2026-11-20T08:00:01Z", b"<22>1 -", b""]
HOSTS = [b"mx1", b"a" * 255, b"a" * 256, b"", b"h:x", b"h\x00st", b"h\xff"]
TAGS = [b"postfix/smtpd", b"t" * 95, b"t" * 96, b"t" * 97, b"auth-worker", b"p[x", b"p]", b"p(q", b""]
PIDS = [b"[123]", b"[]", b"[12a]", b"(77)", b"", b"[123", b"[99999999999999999999]"]
SEPS = [b": ", b":", b" ", b": \xff\x00", b"::", b"]: "]
# RFC 3339 stamps at the edges of parse_py/_iso_time: fractions of every length, a comma, a dot
# without digits, Z and z, no zone, a stamp that ends past byte 40, invalid dates and times.
RFC_STAMPS = [b"2026-11-20T08:00:01", b"2026-11-20T08:00:01Z", b"2026-11-20T08:00:01z",
              b"2026-11-20T08:00:01.5+01:00", b"2026-11-20T08:00:01,25-05:30",
              b"2026-11-20T08:00:01.+00:00", b"2026-11-20T08:00:01.123456789012345678+00:00",
              b"2026-11-20T08:00:01.000001", b"2026-02-30T08:00:01+00:00", b"2026-11-20T25:00:01+00:00",
              b"2026-11-20 08:00:01", b"2026-11-20T08:00:01.12x+00:00", b"20261120T080001Z",
              b"2026-11-20T08:00:01.9999999999999999999+00:00", b"2026-11-20T08:00:01+00:00",
              b"2026-11-20T08:00:01+0000", b"2026-11-20T08:00:01.25-0000", b"2026-11-20 08:00:01.5Z"]


@needs_c
@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(STAMPS), st.sampled_from([b" ", b"  ", b"\t"]), st.sampled_from(HOSTS),
       st.sampled_from(TAGS), st.sampled_from(PIDS), st.sampled_from(SEPS), st.binary(max_size=40))
def test_parse_header_at_the_edges(stamp: bytes, gap: bytes, host: bytes, tag: bytes, pid: bytes,
                                   sep: bytes, rest: bytes) -> None:
    line = stamp + gap + host + b" " + tag + pid + sep + rest
    # Twice: first with the stamp not cached (the Python side decides), then cached (C cuts).
    _both([line, line, line[:20], line[:16], host + b" " + tag + sep + rest])


@needs_c
@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(RFC_STAMPS), st.sampled_from([b" ", b"  "]), st.sampled_from(HOSTS),
       st.sampled_from(TAGS), st.sampled_from(PIDS), st.sampled_from(SEPS), st.binary(max_size=20))
def test_parse_header_on_rfc3339_stamps(stamp: bytes, gap: bytes, host: bytes, tag: bytes, pid: bytes,
                                        sep: bytes, rest: bytes) -> None:
    line = stamp + gap + host + b" " + tag + pid + sep + rest
    _both([line, line, stamp + rest, line[:19] + b" " + line[19:]])


@needs_c
@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_parse_header_on_any_bytes(data: bytes) -> None:
    _both([data, b"Nov 20 08:00:01 " + data, b"Nov 20 08:00:01 mx " + data])


# Exim's own log (mainlog, rejectlog): the stamp, then a zone, `[pid] `, a message id of either
# form, or none of them (dovecot's log_timestamp, a template), at the edges of the C cut.
EXIM_STAMPS = [b"2026-11-20 08:00:01", b"2026-11-20 08:00:01.123", b"2026-02-30 08:00:01",
               b"2026-11-20 25:00:01", b"2026 11-20 08:00:01", b"2026-11-20 08:00:0x", b"2026-11-2008:00:01"]
EXIM_AFTER = [b"[123] ", b"[1234567890] ", b"[12345678901] ", b"[] ", b"[12a] ", b"[123]", b"[123]x",
              b"+0100 ", b"-0530 [77] ", b"+01 ", b"1rKx2p-0004Ab-1F ", b"1tAbCd-000000012Ab-1FGh ",
              b"1rKx2p-0004Ab-1F", b"1rKx2p-0004Ab-1FG ", b"1rKx2p_0004Ab-1F ", b"1tAbCd-000000012Ab-1FG ",
              b"mx exim[3]: ", b"auth: ", b"H=[1.2.3.4] ", b"", b" "]


@needs_c
@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(EXIM_STAMPS), st.sampled_from(EXIM_AFTER), st.binary(max_size=20)),
                min_size=1, max_size=8))
def test_parse_header_on_exim_stamps(parts: list[tuple[bytes, bytes, bytes]]) -> None:
    # In order, twice over: the first line of a second goes to Python (which caches its
    # stamp), the next ones are cut in C; `last` is compared at the end.
    lines = [stamp + b" " + after + rest for stamp, after, rest in parts]
    _both(lines + lines)


@needs_c
def test_parse_header_on_exim_logs() -> None:
    _both([line.encode() for line in genlog().generate(5000, seed=4, fmt="bsd", mta="exim")])


# Lines with and without a time in any order: a line without one gets the time of the last line
# that had one (`last`, which C stores on the parser for the lines it cuts itself), or `now` once
# the daemon has moved it.
TIMED = [b"Nov 20 08:00:01 mx postfix/smtpd[1]: x", b"Nov 20 08:00:01 mx postfix/smtpd[1]: y",
         b"Nov 20 08:00:02 auth: Info: x", b"2026-11-20T08:00:03.5Z mx p[2]: x", b"2026-11-20T08:00:03.75Z mx p: x",
         b"Sep 8 08:00:01 mx p: x", b"<22>1 2026-11-20T08:00:04Z mx app 3 - - x", b"<22>1 - mx app 3 - - x",
         b"@400000006b114bd328de0364 auth: x", b"Nov 20 08:00:05 no header", b"Nov 20 08:00:06 mx p[1]: ",
         b"auth: Info: x", b"auth-worker(3): x", b"garbage", b"2019-10-15 08:08:52 auth: x", b""]


@needs_c
@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(TIMED), max_size=12), st.booleans())
def test_parse_header_times_lines_without_a_stamp_alike(lines: list[bytes], follow: bool) -> None:
    fast, slow = SyslogParser(NOW, fast=C), SyslogParser(NOW)
    if follow:
        fast.set_now(NOW + 5)
        slow.set_now(NOW + 5)
    got = [(fast.parse(line), slow.parse_py(line)) for line in lines]
    assert [a for a, _ in got] == [b for _, b in got]
    assert follow or fast.last == slow.last  # following, `last` is not used (nor kept by C)


@needs_c
def test_match_lines_carries_the_last_time_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """replay's walk (offline.file_events): C reads a batch (1 MB) at a time, Python a line; a
    line without a time, first in a batch, still gets the time of the last line before it."""
    from mailban.core.filters import FilterSet
    from mailban.offline import ReadCount, file_events

    log = tmp_path / "dovecot.log"
    rng = random.Random(4)
    lines = [rng.choice(TIMED[:9] + [b"auth: passwd-file(a@example.test,192.0.2.9): unknown user"] * 4) + b" " * 200
             for _ in range(20_000)]
    log.write_bytes(b"\n".join(lines) + b"\n")
    got = []
    for pure in (False, True):
        with _python_only(monkeypatch, pure):
            parser = SyslogParser(NOW, local_to_epoch, speedups())
            got.append([(t, n, h) for t, n, _l, h, _e in file_events(str(log), parser, FilterSet(_filters()),
                                                                      ReadCount(), True, None)])
    assert got[0] == got[1]
    assert len(got[0]) > 15_000 and len({t for t, _n, _h in got[0]}) > 5


# --- tally ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _python_only(monkeypatch: pytest.MonkeyPatch, pure: bool) -> Iterator[None]:
    """MAILBAN_NO_SPEEDUPS=1 inside the block when `pure`: the Python side of a comparison."""
    with monkeypatch.context() as m:
        if pure:
            m.setenv("MAILBAN_NO_SPEEDUPS", "1")
        yield


_loaded: list = []  # type: ignore[type-arg]


def _filters() -> list:  # type: ignore[type-arg]
    if not _loaded:
        _loaded.extend(config.load_filters(ROOT))
    return _loaded


def _tally(lines: list[bytes], monkeypatch: pytest.MonkeyPatch, pure: bool) -> object:
    with _python_only(monkeypatch, pure):
        return scan.tally_lines(iter(lines), TallySet(_filters()), NOW)


HOSTILE = [
    b"", b"\x00" * 30, b"Nov 20 08:00:01 mx postfix/smtpd[1]: " + b"A" * 300_000,
    b"Nov 20 08:00:01 mx postfix/smtpd[1]: warning: unknown[not.an.ip]: SASL LOGIN authentication failed: x",
    b"Nov 20 08:00:01 mx postfix/smtpd[1]: warning: unknown[999.1.1.1]: SASL LOGIN authentication failed: x",
    b"Nov 20 08:00:01 mx postfix/qmgr[2]: ABCDE12345: from=<a@b>, size=1, nrcpt=3 (queue active)",
    b"Nov 20 08:00:01 mx postfix/qmgr[2]: ABCDE12345: from=<a@b>, size=1, nrcpt=3 (queue active)",
    b"Nov 20 08:00:01 mx postfix/qmgr[2]: ABCDE12345: removed",
    b"Nov 20 08:00:01 mx postfix/smtpd[1]: \xff\xfe client=x[192.0.2.1]",
    b"Nov 20 08:00:01 mx postfix(9): ABCDE12345: removed",
    b"Nov 20 08:00:01 mx dovecot: imap-login: Login: user=<\xff>, method=PLAIN, rip=192.0.2.9, lip=192.0.2.1",
    b"2026-11-20T08:00:01.123456+00:00 mx postfix/qmgr[2]: BCDEF12345: removed",
]
# rsyslog folds, real and malformed: the C loops hand them to syslog.unfold as FilterSet.match does
_SASL = b"warning: unknown[192.0.2.45]: SASL LOGIN authentication failed: x"
HOSTILE += [b"Nov 20 08:00:01 mx postfix/smtpd[1]: " + fold for fold in (
    b"message repeated 18 times: [ " + _SASL + b"]", b"message repeated 2 times: [" + _SASL + b"]",
    b"message repeated 999999999 times: [ " + _SASL + b"]", b"message repeated 0 times: [ " + _SASL + b"]",
    b"message repeated 3 times: [ " + _SASL, b"message repeated 3 times: []", b"message repeated 3 times: [ ]",
    b"message repeated 3 times: [ message repeated 4 times: [ " + _SASL + b"]]",
    b"message repeated  times: [ " + _SASL + b"]", b"message repeated 3 times: [ \xff" + _SASL + b"]",
    b"message repeated 3 times: [ " + _SASL + b"]" * 3, b"message repeated ")]
HOSTILE += [stamp + b" mx postfix/qmgr[2]: ABCDE12345: removed" for stamp in RFC_STAMPS]
# the rarer header forms (tests/filters/headers-*.log), lines without a time among them
_AUTH = b"auth: passwd-file(alice@example.test,192.0.2.46): Password mismatch"
HOSTILE += [b"Sep 8 08:00:02 " + _AUTH, _AUTH, b"imap-login: " + _AUTH, b"@400000006b114bd328de0364 " + _AUTH,
            b"<22>1 2026-11-20T08:00:01.003Z mx postfix/smtpd 4242 - [a b=\"\\]\"] \xef\xbb\xbf" + _SASL,
            b"<22>1 - - dovecot - - -  " + _AUTH, b"2019-10-15 08:08:52.123456 " + _AUTH,
            b"Nov 20 08:00:01 <mail.info> mx postfix/smtpd[1]: " + _SASL, b"<22>Nov 20 08:00:01 mx postfix/smtpd[1]: " + _SASL,
            b"@400000006b114bd328de0364 Dec 03 09:00:00 " + _AUTH, b"<22>1 - mx postfix/smtpd 1 - -", b"auth:" + b" " * 300]
HOSTILE += [stamp + b" mx postfix/smtpd[1]: warning: unknown[192.0.2.44]: SASL LOGIN authentication failed: x"
            for stamp in RFC_STAMPS]


@needs_c
def test_tally_equals_the_python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _sample_lines() + HOSTILE
    lines += [line.encode() for line in genlog().generate(20_000, seed=11, fmt="bsd")]
    lines += [line.encode() for line in genlog().generate(3_000, seed=12, fmt="rfc3339")]
    lines += [line.encode() for line in genlog().generate(5_000, seed=13, fmt="bsd", mta="exim")]
    fast = _tally(lines, monkeypatch, pure=False)
    slow = _tally(lines, monkeypatch, pure=True)
    assert fast == slow
    assert fast[2] > 10_000  # type: ignore[index]  # lines with an event: the test tested something


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(RFC_STAMPS), st.binary(max_size=30), st.sampled_from([b" ", b"", b"  "]),
       st.sampled_from([b"mx postfix/qmgr[2]: ABCDE12345: removed", b"", b"mx x"]))
def test_tally_on_rfc3339_stamps(monkeypatch: pytest.MonkeyPatch, stamp: bytes, noise: bytes, gap: bytes,
                                 rest: bytes) -> None:
    lines = [stamp + gap + rest, stamp + noise + gap + rest, stamp[:19] + noise + b" " + rest, stamp + gap + rest]
    assert _tally(lines, monkeypatch, pure=False) == _tally(lines, monkeypatch, pure=True)


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(HOSTILE + _sample_lines()[:200]) | st.binary(max_size=120), max_size=40))
def test_tally_on_shuffled_and_random_lines(monkeypatch: pytest.MonkeyPatch, lines: list[bytes]) -> None:
    assert _tally(lines, monkeypatch, pure=False) == _tally(lines, monkeypatch, pure=True)


# --- merge ------------------------------------------------------------------------------------

KINDS = [("postfix-queue", "client", "submission"), ("postfix-queue", "queued", "queued"),
         ("postfix-queue", "delivery", "delivery"), ("postfix-queue", "removed", "removed"),
         ("sendmail-queue", "from", "queued")]


def _pending(rng: random.Random, n: int) -> list[tuple]:  # type: ignore[type-arg]
    out = []
    when = NOW
    for lineno in range(1, n + 1):
        when += rng.choice([0, 0, 1, 5, 600, -3])
        key = rng.choice(KINDS)
        ip = rng.choice([None, None, "192.0.2.1", "192.0.2.2", "2001:db8::1"])
        host = rng.choice([b"mx1", b"mx2", None])
        qid = f"Q{rng.randrange(40):05d}"
        out.append((float(when), key, ip, host, qid, lineno, rng.randrange(2)))
    return out


@needs_c
@pytest.mark.parametrize("seed", range(12))
def test_merge_equals_correlator(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = random.Random(seed)
    ranges = [_pending(rng, rng.randrange(0, 400)) for _ in range(4)]
    ttl, cap = rng.choice([(900.0, 15), (5 * 86400.0, 8), (60.0, 1000), (5 * 86400.0, 200_000)])
    results = []
    for pure in (False, True):
        with _python_only(monkeypatch, pure):
            per_rule: dict = {}  # type: ignore[type-arg]
            per_ip: dict = {}  # type: ignore[type-arg]
            first: dict = {}  # type: ignore[type-arg]
            counter = scan.PendingCounter(per_rule, per_ip, first, ttl=ttl, max_messages=cap)
            offset = 0
            for fileno, pending in enumerate(ranges):
                counter.add(list(pending), fileno % 2, offset)
                offset += len(pending)
            results.append((per_rule, per_ip, first, counter.correlator.dropped))
    assert results[0] == results[1]
    assert results[0][0], "nothing was counted"


@needs_c
def test_summary_is_the_same_with_and_without_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from mailban.offline import run_test

    log = tmp_path / "mixed.log"
    log.write_text("".join(line + "\n" for line in genlog().generate(30_000, seed=5, fmt="bsd")))
    outs = []
    for pure in (False, True):
        with _python_only(monkeypatch, pure):
            out = io.StringIO()
            assert run_test([str(log)], _filters(), False, out, jobs=1) == 0
            outs.append("".join(line for line in out.getvalue().splitlines(True) if not line.startswith("Time:")))
    assert outs[0] == outs[1]
    assert "Top addresses" in outs[0]


def test_the_switch_turns_the_c_module_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBAN_NO_SPEEDUPS", "1")
    assert speedups() is None
    parser = SyslogParser(NOW, local_to_epoch, speedups())
    assert parser.parse == parser.parse_py


# --- match_lines, correlate, seen (replay) ----------------------------------------------------

def _replay_json(paths: list[str], monkeypatch: pytest.MonkeyPatch, pure: bool) -> tuple[str, str]:
    import io

    from mailban.offline import run_replay

    with _python_only(monkeypatch, pure):
        out = io.StringIO()
        assert run_replay(paths, config.load(None), True, out) == 0
        text = io.StringIO()
        assert run_replay(paths, config.load(None), False, text) == 0
        return out.getvalue(), "".join(line for line in text.getvalue().splitlines(True) if "lines/s" not in line)


@needs_c
def test_replay_is_the_same_with_and_without_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "mixed.log"
    lines = list(genlog().generate(40_000, seed=9, fmt="bsd"))
    lines += genlog().generate(10_000, seed=9, fmt="bsd", mta="exim")  # Exim's own stamps, cut in C
    log.write_text("".join(line + "\n" for line in lines))
    fast = _replay_json([str(log)], monkeypatch, pure=False)
    assert fast == _replay_json([str(log)], monkeypatch, pure=True)
    assert fast[0].count("\n") > 10  # decisions were made


@needs_c
def test_replay_of_several_logs_and_hostile_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"\n".join(line.encode() for line in genlog().generate(8_000, seed=21, fmt="bsd"))
                  + b"\n" + b"\n".join(HOSTILE) + b"\n" + b"\n".join(_sample_lines()))
    b.write_bytes(b"\n".join(line.encode() for line in genlog().generate(8_000, seed=22, fmt="rfc3339")))
    paths = [str(a), str(b)]
    assert _replay_json(paths, monkeypatch, pure=False) == _replay_json(paths, monkeypatch, pure=True)


def _events_of(lines: list[bytes]) -> list[tuple]:  # type: ignore[type-arg]
    from mailban.core.filters import FilterSet

    parser, fset = SyslogParser(NOW), FilterSet(_filters())
    out = []
    for n, line in enumerate(lines, 1):
        header = parser.parse_py(line)
        if header is not None:
            events = fset.match(line, header, "log", n)
            if events:
                out.append((header, events))
    return out


@needs_c
@pytest.mark.parametrize("seed", range(6))
def test_correlate_equals_the_correlator(seed: int) -> None:
    from mailban.core.correlate import Correlator, Message
    from mailban.core.records import Event

    rng = random.Random(seed)
    items = _events_of(_sample_lines() + [line.encode() for line in genlog().generate(4_000, seed=seed, fmt="bsd")])
    rng.shuffle(items)  # out of order: records missing, retries, sessions of other processes
    ttl, cap = rng.choice([(600.0, 20), (5 * 86400.0, 200_000), (60.0, 3)])
    fast, slow = Correlator(ttl, cap), Correlator(ttl, cap)
    for header, events in items:
        got = C.correlate(fast, list(events), header, Message, Event)
        want = [e for e in (slow.process(e, header) for e in events) if e is not None]
        assert got == want
        assert all(type(e) is Event for e in got)
    assert [(k, vars_of(m)) for k, m in fast.messages.items()] == [(k, vars_of(m)) for k, m in slow.messages.items()]
    assert fast.sessions == slow.sessions and fast.dropped == slow.dropped


def vars_of(m: object) -> tuple:  # type: ignore[type-arg]
    return tuple(getattr(m, name) for name in m.__slots__)  # type: ignore[attr-defined]


@needs_c
def test_seen_equals_the_python_loop() -> None:
    events = [e for _, evs in _events_of(_sample_lines()) for e in evs]
    fields = ((4, set()), (5, set()), (6, set()))
    C.seen(events, fields, 10**9)
    for index, store in fields:
        assert store == {str(e[index]) for e in events if e[index] is not None}
    capped = ((4, set()),)
    C.seen(events, capped, 3)
    assert len(capped[0][1]) == 3


@needs_c
@pytest.mark.parametrize("queued_ip", [None, "192.0.2.7", "198.51.100.9"])
def test_correlate_joins_a_sendmail_session_only_from_its_own_address(queued_ip: str | None) -> None:
    from mailban.core.correlate import Correlator, Message
    from mailban.core.records import Event
    from mailban.core.syslog import Header

    header = Header(NOW, b"mx", b"sm-mta", b"4242", 20)
    auth = Event(NOW, "submission", "sendmail", "auth", ip="192.0.2.7", user="alice")
    queued = Event(NOW + 1, "queued", "sendmail-queue", "from", ip=queued_ip, sender="a@example.test",
                   queue_id="4AB12CD34", recipients=2)
    fast, slow = Correlator(), Correlator()
    for events in ([auth], [queued]):
        got = C.correlate(fast, list(events), header, Message, Event)
        want = [e for e in (slow.process(e, header) for e in events) if e is not None]
        assert got == want
    assert got[0].user == ("alice" if queued_ip == "192.0.2.7" else None)


# --- literals_in: which rules' literals a line holds, in one pass -------------------------------

def _python_bits(literals: list[bytes | tuple[bytes, ...]], line: bytes) -> int:
    return sum(1 << r for r, lit in enumerate(literals) if lit and holds(lit, line))


_LITERAL = st.binary(min_size=2, max_size=9).map(lambda b: bytes(97 + c % 3 for c in b))


@needs_c
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.just(b""), _LITERAL),
                min_size=1, max_size=64),
       st.binary(max_size=120).map(lambda b: bytes(97 + c % 4 for c in b)))
def test_literals_in_finds_what_in_finds(literals: list[bytes], line: bytes) -> None:
    # Three letters in the literals and four in the line: overlaps, repeats, literals at the very
    # start and end, lines shorter than the shortest literal, and shared prefixes are the norm.
    index = literal_index(literals)
    if index is None:
        assert not any(literals)
        return
    rules = tuple((lit,) for lit in literals)
    assert C.literals_found(index, rules, line) == _python_bits(literals, line)
    for lit in literals:  # and each literal planted at each end
        if lit:
            for planted in (lit + line, line + lit):
                assert C.literals_found(index, rules, planted) == _python_bits(literals, planted)


@needs_c
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.just(b""), _LITERAL, st.lists(_LITERAL, min_size=2, max_size=4).map(tuple)),
                min_size=1, max_size=64),
       st.binary(max_size=120).map(lambda b: bytes(97 + c % 4 for c in b)))
def test_literals_in_finds_any_of_a_rules_literals(literals: list[bytes | tuple[bytes, ...]], line: bytes) -> None:
    # Rules with several literals (`literal = ["a", "b"]`: any of them), mixed with plain ones.
    index = literal_index(literals)
    if index is None:
        assert not any(literals)
        return
    rules = tuple((lit,) for lit in literals)
    assert C.literals_found(index, rules, line) == _python_bits(literals, line)
    for lit in literals:
        for text in (lit,) if isinstance(lit, bytes) else lit:
            if text:
                for planted in (text + line, line + text):
                    assert C.literals_found(index, rules, planted) == _python_bits(literals, planted)


def test_literal_index_leaves_short_literals_to_the_plain_check() -> None:
    assert literal_index([b""]) is None
    assert literal_index([b"reject: ", b"x"]) is None  # a one-byte literal: one by one
    assert literal_index([b"reject: ", b""]) is not None


@needs_c
def test_literals_in_agrees_with_in_on_the_shipped_filters_and_the_bench_log() -> None:
    lines = [line.encode() for line in genlog().generate(20_000, seed=3, fmt="bsd")] + _sample_lines() + HOSTILE
    checked = 0
    for f in _filters():
        literals = [r.pattern.literal for r in f.rules][:64]
        index = literal_index(literals)
        assert index is not None, f.name
        rules = tuple((lit,) for lit in literals)
        for line in lines:
            assert C.literals_found(index, rules, line) == _python_bits(literals, line), (f.name, line)
            checked += 1
    assert checked > 100_000


# --- `last message repeated N times` (syslog.REPEATS) -----------------------------------------

REPEAT_LINES = [
    b"Dec  3 09:00:02 mx1 postfix/smtpd[3011]: warning: unknown[192.0.2.41]: SASL LOGIN authentication failed: x",
    b"Dec  3 09:00:03 mx1 postfix/smtpd[3011]: connect from unknown[198.51.100.9]",
    b"Dec  3 09:00:04 mx1 dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<a@example.test>,"
    b" method=PLAIN, rip=198.51.100.23, lip=192.0.2.1, session=<k3Jd8bZhAAAAAAAA>",
    b"Dec  3 09:00:05 mx1 last message repeated 3 times",
    b"Dec  3 09:00:06 mx1 syslogd: last message repeated 12 times",
    b"Dec  3 09:00:07 mx1 postfix/smtpd[3011]: last message repeated 2 times",
    b"Dec  3 09:00:08 mx1 --- last message repeated 1 time ---",
]


@needs_c
def test_repeat_lines_expand_alike_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """C and Python expand a repeat line into its previous line's events alike, also where a 1 MB
    batch ends between the two (the parser keeps the previous line between batches)."""
    from mailban.core.filters import FilterSet
    from mailban.offline import ReadCount, file_events

    log = tmp_path / "mail.log"
    rng = random.Random(5)
    failure, repeat = REPEAT_LINES[0], REPEAT_LINES[3]
    # the first 1 MB batch ends with the failure, and the next one starts with its repeat
    head = b"Dec  3 09:00:01 mx1 postfix/smtpd[1]: "
    fill = (1 << 20) - 5 - (len(failure) + 1)
    pads = [head + b"p" * 900] * (fill // 1000 - 1)
    used = sum(len(p) + 1 for p in pads)
    pads.append(head + b"q" * (fill - used - len(head) - 1))
    lines = pads + [failure, repeat] + [rng.choice(REPEAT_LINES) for _ in range(20_000)]
    data = b"\n".join(lines) + b"\n"
    assert data.index(repeat) == (1 << 20) - 5
    log.write_bytes(data)
    got = []
    for pure in (False, True):
        with _python_only(monkeypatch, pure):
            parser = SyslogParser(NOW, local_to_epoch, speedups())
            got.append([(n, [(e.rule, e.ip, e.count, e.time, e.line) for e in events])
                        for _t, n, _l, _h, events in file_events(str(log), parser, FilterSet(_filters()),
                                                                 ReadCount(), False, None)])
    assert got[0] == got[1]
    counts = {count for _n, events in got[0] for _r, _ip, count, _t, _l in events}
    assert {1, 2, 3, 12} <= counts
    # an expanded event shows the repeat line as logged, at its own time
    assert all("repeated" in line for _n, events in got[0] for _r, _ip, count, _t, line in events if count > 1)


def test_the_c_module_takes_the_event_layout_from_the_record() -> None:
    """Event positions come from records.Event._fields (configure), not from numbers in C: a
    record without a field the module needs is refused, and mailban then runs Python only."""
    from mailban.core.records import Event

    module = speedups()
    if module is None:
        pytest.skip("no C module")
    with pytest.raises(ValueError, match="no field queue_id"):
        module.configure(tuple(f for f in Event._fields if f != "queue_id"))
    module.configure(Event._fields)  # the record as it is: accepted (the refusal changed nothing)
    assert speedups() is module


@needs_c
def test_the_loops_convert_exim_seconds_as_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new second of Exim's stamp is converted in C in the loops (_speedups.exim_time): the
    same time, and the same refusal of a stamp that is no date (then parse_py decides), as
    SyslogParser._iso_time's fromisoformat and _to_epoch, on the edges of the calendar."""
    from mailban.core.filters import FilterSet
    from mailban.offline import ReadCount, file_events

    stamps = [b"2024-02-29 10:00:00", b"2026-02-29 10:00:00", b"2100-02-29 10:00:00", b"2000-02-29 10:00:00",
              b"2026-04-31 10:00:00", b"2026-04-30 23:59:59", b"2026-13-01 10:00:00", b"2026-00-10 10:00:00",
              b"2026-12-32 10:00:00", b"2026-12-00 10:00:00", b"2026-12-31 24:00:00", b"2026-12-31 23:60:00",
              b"2026-12-31 23:59:60", b"9999-12-31 23:59:59", b"1970-01-01 00:00:00", b"2026-03-29 02:30:00",
              b"2026-10-25 02:30:00", b"2026-11-20 08:00:01"]
    lines = [stamp + rest for stamp in stamps for rest in (
        b" [12] 1rKx2p-0004Ab-1F => a@b.test R=r T=t", b" 1rKx2p-0004Ab-1F Completed", b" [12] x",
        b" +0100 [12] 1rKx2p-0004Ab-1F Completed")]
    log = tmp_path / "mainlog"
    log.write_bytes(b"\n".join(lines + lines[::-1]) + b"\n")
    monkeypatch.setenv("TZ", "Europe/Berlin")  # a zone with DST: 02:30 on those days is a gap and a fold
    time.tzset()
    try:
        got = []
        for pure in (False, True):
            with _python_only(monkeypatch, pure):
                parser = SyslogParser(NOW, local_to_epoch, speedups())
                got.append([(t, n, h, e) for t, n, _l, h, e in file_events(str(log), parser, FilterSet(_filters()),
                                                                           ReadCount(), True, None)])
                if not pure:
                    assert b"2024-02-29 10:00:00" in parser._iso_cache  # cached as parse_py caches it
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert got[0] == got[1]
    assert len(got[0]) >= 60  # the stamps that are no date give no header (parse_py)


_WORDS = [b"Fail", b"REJECT", b"denied", b"Invalid", b"abort", b"refus", b"ILLEGAL", b"disallow", b"too many",
          b"Unknown User", b"user unknown", b"error", b"violation", b"timeout", b"timed out", b"not allowed",
          b"mismatch", b"no such", b"not found", b"blocked", b"attack", b"exceeded", b"penalty", b"fai", b"too",
          b"Start queue run: pid=4", b"no host name found", b" ", b"x", b"\xc3\xa9", b"e", b"n", b"t"]


@needs_c
@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=10).map(b"".join), st.integers(0, 1100))
def test_tally_finds_failure_words_as_python(text: bytes, pad: int) -> None:
    # the summary's hint (`mailban test --missed`): a line no rule matched that holds one of
    # scan.FAILURE_STEMS in its first 1,024 bytes, any case (C: one pass with the stems indexed
    # by their first byte)
    line = b"2026-11-20 08:00:01 [12] " + b"." * pad + text
    got = C.tally([line], 0, TallySet(_filters()).scan_context(SyslogParser(NOW)), {}, {}, {}, [], {},
                  scan.FAILURE_STEMS)
    _lines, _parsed, matched, missed, failing = got
    assert bool(failing) == (missed == 1 and scan.looks_like_failure(line[25:])), line
