"""Fuzzed policy requests against a running policy server over its unix socket: whatever a
client sends (missing attributes, huge values, invalid UTF-8, thousands of attributes, partial
requests, bytes cut anywhere), it gets an answer or a closed connection, never a stall; and the
server goes on answering a well-behaved client afterwards."""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mailban.core.jails import IgnoreList, JailSpec
from mailban.policy.answer import Inline, inline_jail
from mailban.policy.protocol import MAX_REQUEST, RequestBuffer
from mailban.policy.server import PolicyServer

NAMES = [b"request", b"protocol_state", b"sasl_username", b"sender", b"client_address", b"instance",
         b"recipient", b"size", b"ccert_subject"]
GOOD = b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=ok@x\nclient_address=192.0.2.1\n\n"

value = st.one_of(st.binary(max_size=64).map(lambda b: b.replace(b"\n", b"")),
                  st.sampled_from([b"smtpd_access_policy", b"RCPT", b"END-OF-MESSAGE", b"::ffff:1.2.3.4", b"1.2.3.4",
                                   b"\xff\xfe", b"", b"0"]),
                  st.integers(0, 3 * MAX_REQUEST).map(lambda n: b"v" * n))
attribute = st.tuples(st.one_of(st.sampled_from(NAMES), st.binary(max_size=12).map(lambda b: b.replace(b"\n", b""))),
                      value).map(lambda kv: kv[0] + b"=" + kv[1])
request = st.lists(attribute, max_size=40).map(lambda attrs: b"\n".join(attrs) + b"\n\n")
many = st.integers(1000, 6000).map(lambda n: b"request=smtpd_access_policy\n" + b"x=y\n" * n + b"\n")
payload = st.lists(st.one_of(request, many, st.binary(max_size=300)), min_size=1, max_size=4).map(b"".join)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    spec = JailSpec(name="out", kinds=frozenset(), key="user", maxretry=3, findtime=60, bantime=60, inline=True)
    srv = PolicyServer(f"unix:{tmp_path_factory.mktemp('policy-fuzz')}/p.sock", Inline([inline_jail(spec, IgnoreList(()))]),
                       request_timeout=0.5)
    srv.start()
    yield srv
    srv.stop()


def talk(srv: PolicyServer, data: bytes, cuts: list[int]) -> None:
    """Send `data` in pieces; then read until the answers stop, or the server closes."""
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(3.0)
    c.connect(str(srv.address))
    try:
        last = 0
        for cut in sorted(set(min(x, len(data)) for x in cuts)) + [len(data)]:
            try:
                c.sendall(data[last:cut])
            except (BrokenPipeError, ConnectionResetError):
                return  # closed by the server: allowed
            last = cut
        complete = data.count(b"\n\n")
        got = b""
        started = time.monotonic()
        while got.count(b"\n\n") < complete:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:
                return
            if not chunk:
                return  # closed: allowed
            got += chunk
            assert time.monotonic() - started < 3.0, "stalled"
        assert all(a.startswith(b"action=") for a in got.split(b"\n\n")[:-1])
    except socket.timeout:
        # An unfinished request may wait, but only until request_timeout closes it.
        assert not data.endswith(b"\n\n") or RequestBuffer_is_partial(data), "no answer and no close"
    finally:
        c.close()


def RequestBuffer_is_partial(data: bytes) -> bool:
    buf = RequestBuffer()
    try:
        buf.feed(data)
    except Exception:
        return False
    return buf.partial


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=payload, cuts=st.lists(st.integers(0, 4 * MAX_REQUEST), max_size=4))
def test_fuzzed_requests_get_an_answer_or_a_close(server: PolicyServer, data: bytes, cuts: list[int]) -> None:
    talk(server, data, cuts)
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(3.0)
    c.connect(str(server.address))
    c.sendall(GOOD)
    assert c.recv(100).startswith(b"action=")
    c.close()


def test_a_silent_partial_request_is_closed_after_the_timeout(server: PolicyServer) -> None:
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(5.0)
    c.connect(str(server.address))
    c.sendall(b"request=smtpd_access_policy\nsasl_username=\xff")
    started = time.monotonic()
    assert c.recv(10) == b""
    assert time.monotonic() - started < 2.5  # request_timeout 0.5 s plus the once-a-second sweep


def test_a_client_that_never_reads_is_dropped(server: PolicyServer) -> None:
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(5.0)
    c.connect(str(server.address))
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        for _ in range(20000):
            c.sendall(GOOD * 50)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    else:
        pytest.fail("the server kept answering a client that reads nothing")
