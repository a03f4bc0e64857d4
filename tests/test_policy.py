"""The policy service without postfix: the parser, the answer logic (pure, with a fake clock),
and the server over a real unix socket (slow clients, floods, bounded connections)."""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from mailban.core.jails import IgnoreList, JailSpec
from mailban.core.records import Ban
from mailban.policy.answer import DEFERRED, DISABLED, DUNNO, HELD, INLINE_ANSWERS, Decisions, Inline, decide, inline_jail
from mailban.policy.protocol import MAX_REQUEST, ProtocolError, RequestBuffer, parse
from mailban.policy.child import PolicyProcess
from mailban.policy.server import PolicyServer, parse_listen

TYPES = {"sasl-disable": "sasl-disable", "queue-hold": "queue-hold", "defer": "defer", "nft": "nft"}


def req(state: str = "RCPT", user: str = "", sender: str = "a@example.test", client: str = "198.51.100.7",
        instance: str = "1.2.3", **extra: str) -> bytes:
    attrs = {"request": "smtpd_access_policy", "protocol_state": state, "protocol_name": "ESMTP",
             "sasl_username": user, "sender": sender, "client_address": client, "instance": instance,
             "recipient": "r@remote.test", **extra}
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def ban(key_type: str, key: str, *actions: str, until: float = 2000.0) -> Ban:
    return Ban(jail="j", key_type=key_type, key=key, time=0.0, until=until, count=1, findtime=60.0, actions=actions)


def one(data: bytes):
    out = RequestBuffer().feed(data)
    assert len(out) == 1
    return out[0]


# ---- protocol ---------------------------------------------------------------------------------
def test_parse_reads_the_attributes_mailban_uses() -> None:
    r = one(req(user="alice@example.test", client="::ffff:192.0.2.9"))
    assert (r.state, r.user, r.sender, r.client, r.instance) == ("RCPT", "alice@example.test", "a@example.test",
                                                                 "192.0.2.9", b"1.2.3")


def test_missing_and_empty_attributes_are_none() -> None:
    r = one(b"request=smtpd_access_policy\nsasl_username=\n\n")
    assert (r.state, r.user, r.sender, r.client) == ("", None, None, None)


def test_first_value_wins_and_names_must_start_a_line() -> None:
    r = one(b"request=smtpd_access_policy\nxsasl_username=evil\nsasl_username=bob\nsasl_username=eve\n\n")
    assert r.user == "bob"


def test_a_bad_client_address_is_no_address() -> None:
    assert one(req(client="999.1.1.1")).client is None
    assert one(req(client="unknown")).client is None


def test_requests_split_across_writes_and_joined_in_one() -> None:
    buf = RequestBuffer()
    data = req(user="a") + req(user="b") + req(user="c")
    out = []
    for i in range(0, len(data), 7):
        out += buf.feed(data[i:i + 7])
    assert [r.user for r in out] == ["a", "b", "c"] and not buf.partial


@pytest.mark.parametrize("data", [b"hello\n\n", b"\n\n", b"request=other\n\n", b"sender=x\n\n"])
def test_not_a_policy_request_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        RequestBuffer().feed(data)


def test_a_request_too_long_is_refused_even_unfinished() -> None:
    buf = RequestBuffer()
    with pytest.raises(ProtocolError):
        buf.feed(b"request=smtpd_access_policy\nsender=" + b"x" * MAX_REQUEST)


def test_invalid_utf8_is_replaced_not_raised() -> None:
    r = parse(b"request=smtpd_access_policy\nsasl_username=\xff\xfe\x80\nsender=\xc3")
    assert r.user == "\ufffd\ufffd\ufffd" and r.sender == "\ufffd"


# ---- the answer -------------------------------------------------------------------------------
def test_decisions_map_actions_to_answers() -> None:
    d = Decisions.from_bans([ban("user", "dis@x", "sasl-disable"), ban("user", "held@x", "queue-hold"),
                             ban("ip", "198.51.100.9", "defer"), ban("net", "2001:db8:1::/64", "defer"),
                             ban("sender", "spam@x", "defer"), ban("user", "old@x", "sasl-disable", until=5.0),
                             ban("ip", "198.51.100.10", "nft")], TYPES, now=10.0)
    none = Inline()
    assert decide(one(req(user="dis@x")), d, none, 10, True)[0] == DISABLED
    assert decide(one(req(user="held@x")), d, none, 10, True)[0] == HELD
    assert decide(one(req(client="198.51.100.9")), d, none, 10, True)[0] == DEFERRED
    assert decide(one(req(client="2001:db8:1::77")), d, none, 10, True)[0] == DEFERRED
    assert decide(one(req(client="2001:db8:2::77")), d, none, 10, True)[0] == DUNNO
    assert decide(one(req(sender="spam@x")), d, none, 10, True)[0] == DEFERRED
    assert decide(one(req(user="old@x")), d, none, 10, True)[0] == DUNNO  # expired
    assert decide(one(req(client="198.51.100.10")), d, none, 10, True)[0] == DUNNO  # nft is not ours to answer
    # the answers name no internals
    for text in (DISABLED, HELD, DEFERRED, *INLINE_ANSWERS.values()):
        assert b"mailban" not in text.lower() and text.endswith(b"\n\n") and text.count(b"\n") == 2


def messages_jail(**kw) -> Inline:
    spec = JailSpec(name="out", kinds=frozenset(), key="user", maxretry=20, findtime=3600, bantime=600,
                    actions=("notify",), inline=True, bantime_factor=1, **kw)
    return Inline([inline_jail(spec, IgnoreList(()))])


def send_message(inline: Inline, n_rcpt: int, now: float, instance: str, user: str = "u@x") -> list[bytes]:
    out = []
    for i in range(n_rcpt):
        reply, bans = decide(one(req(user=user, instance=instance)), Decisions(), inline, now, i == 0)
        out.append(reply)
    return out


def test_inline_counts_messages_once_and_defers_the_21st() -> None:
    inline = messages_jail()
    bans: list[Ban] = []
    for n in range(19):
        replies = send_message(inline, 3, 1000 + n, f"m{n}")
        assert replies == [DUNNO] * 3
    reply, bans = decide(one(req(user="u@x", instance="m19")), Decisions(), inline, 1019, True)
    assert reply == DUNNO  # the 20th passes and starts the ban
    assert send_message(inline, 1, 1020, "m20") == [INLINE_ANSWERS["defer"]]  # the 21st
    assert [(b.jail, b.key_type, b.key, b.count, b.actions) for b in bans] == [("out", "user", "u@x", 20, ("notify",))]
    assert "sasl_username=u@x" in bans[0].lines[-1]
    # every later request of the key, until the ban ends; others are untouched
    assert send_message(inline, 1, 1100, "m21") == [INLINE_ANSWERS["defer"]]
    assert send_message(inline, 1, 1100, "x1", user="other@x") == [DUNNO]
    assert send_message(inline, 1, 1019 + 601, "m22") == [DUNNO]  # ban over, counting afresh


def test_inline_window_slides_with_the_clock() -> None:
    inline = messages_jail()
    for n in range(40):  # one message every 200 s: never 20 within an hour
        assert send_message(inline, 1, 200.0 * n, f"m{n}") == [DUNNO]


def test_inline_recipients_and_answer_kinds() -> None:
    spec = JailSpec(name="rc", kinds=frozenset(), key="ip", count="recipients", maxretry=5, findtime=60, bantime=60,
                    inline=True, inline_answer="hold", prefix6=0)
    inline = Inline([inline_jail(spec, IgnoreList(()))])
    replies = [decide(one(req(client="198.51.100.3")), Decisions(), inline, 5.0, False)[0] for _ in range(6)]
    assert replies == [DUNNO] * 5 + [INLINE_ANSWERS["hold"]]


def test_inline_counts_only_at_rcpt_and_never_loopback() -> None:
    spec = JailSpec(name="rc", kinds=frozenset(), key="ip", maxretry=1, findtime=60, bantime=60, inline=True)
    inline = Inline([inline_jail(spec, IgnoreList(()))])
    assert decide(one(req(state="DATA")), Decisions(), inline, 5.0, True) == (DUNNO, [])
    assert decide(one(req(client="127.0.0.1")), Decisions(), inline, 5.0, True) == (DUNNO, [])
    assert decide(one(req(client="127.0.0.1")), Decisions(), inline, 5.0, True) == (DUNNO, [])


def test_observe_mode_decides_but_never_answers() -> None:
    inline = messages_jail(mode="observe")
    for n in range(25):
        reply, bans = decide(one(req(user="u@x", instance=f"m{n}")), Decisions(), inline, 10.0 + n, True)
        assert reply == DUNNO
        if n == 19:
            assert bans and bans[0].observe and not bans[0].actions


def test_unban_forgets_the_inline_key() -> None:
    inline = messages_jail()
    for n in range(21):
        send_message(inline, 1, 100.0 + n, f"m{n}")
    assert send_message(inline, 1, 130.0, "z") == [INLINE_ANSWERS["defer"]]
    inline.forget("user", "u@x")
    assert send_message(inline, 1, 131.0, "z2") == [DUNNO]


# ---- the server -------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path: Path):
    srv = PolicyServer(f"unix:{tmp_path}/policy.sock", messages_jail(), max_connections=4, request_timeout=0.3)
    srv.start()
    yield srv
    srv.stop()


def connect(srv: PolicyServer) -> socket.socket:
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(3)
    c.connect(str(srv.address))
    return c


def ask(c: socket.socket, data: bytes) -> bytes:
    c.sendall(data)
    got = b""
    while not got.endswith(b"\n\n"):
        chunk = c.recv(4096)
        if not chunk:
            return got
        got += chunk
    return got


def test_parse_listen() -> None:
    assert parse_listen("inet:127.0.0.1:10040") == (socket.AF_INET, ("127.0.0.1", 10040))
    assert parse_listen("inet:[::1]:10040") == (socket.AF_INET6, ("::1", 10040))
    assert parse_listen("unix:/run/x") == (socket.AF_UNIX, "/run/x")
    for bad in ("unix:relative", "inet:1.2.3.4", "tcp:1:2", "inet:h:0"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_server_answers_decisions_and_hands_over_inline_bans(server: PolicyServer) -> None:
    server.decisions = Decisions.from_bans([ban("user", "dis@x", "sasl-disable", until=time.time() + 100)], TYPES, time.time())
    c = connect(server)
    assert ask(c, req(user="dis@x")) == DISABLED
    for n in range(20):
        assert ask(c, req(user="u@x", instance=f"m{n}")) == DUNNO
    assert ask(c, req(user="u@x", instance="m20")) == INLINE_ANSWERS["defer"]
    bans = server.take_bans()
    assert [(b.key_type, b.key) for b in bans] == [("user", "u@x")]
    done = []
    server.call(lambda inline: (inline.forget("user", "u@x"), done.append(1)))
    deadline = time.monotonic() + 2
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ask(c, req(user="u@x", instance="m21")) == DUNNO


def test_pipelined_requests_get_answers_in_order(server: PolicyServer) -> None:
    server.decisions = Decisions.from_bans([ban("user", "dis@x", "sasl-disable", until=time.time() + 100)], TYPES, time.time())
    c = connect(server)
    c.sendall(req(user="a", state="MAIL") + req(user="dis@x") + req(user="b", state="MAIL"))
    got = b""
    while got.count(b"\n\n") < 3:
        got += c.recv(4096)
    assert got == DUNNO + DISABLED + DUNNO


def test_bounded_connections_and_slow_clients(server: PolicyServer) -> None:
    conns = [connect(server) for _ in range(4)]
    for c in conns:
        assert ask(c, req(state="MAIL")) == DUNNO
    extra = connect(server)
    assert extra.recv(10) == b""  # closed at once: postfix applies its default action
    assert server.stats["refused"] == 1
    slow = conns[0]
    slow.sendall(b"request=smtpd_access_policy\nsender=a")  # and never finishes
    time.sleep(1.5)  # the sweep runs once a second (request_timeout 0.3 s)
    assert slow.recv(10) == b""
    assert ask(conns[1], req(state="MAIL")) == DUNNO  # the others are served meanwhile


def test_a_late_loop_answers_dunno_without_counting(tmp_path: Path) -> None:
    srv = PolicyServer(f"unix:{tmp_path}/p.sock", messages_jail(), deadline=-1.0)  # always late
    srv.start()
    try:
        server_c = connect(srv)
        for n in range(30):
            assert ask(server_c, req(user="u@x", instance=f"m{n}")) == DUNNO
        assert srv.stats["late"] == 30 and not srv.take_bans()
    finally:
        srv.stop()


# ---- the service's own process (mailban/policy/child.py) -----------------------------------------
def wait_readable(fd: int, timeout: float = 3.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_child_process_answers_takes_decisions_and_sends_inline_bans(tmp_path: Path) -> None:
    proc = PolicyProcess(PolicyServer(f"unix:{tmp_path}/p.sock"))
    proc.start(messages_jail(), Decisions())
    try:
        c = connect(proc.server)
        assert ask(c, req(user="dis@x")) == DUNNO
        assert proc.send("decisions", Decisions.from_bans([ban("user", "dis@x", "sasl-disable", until=time.time() + 100)],
                                                          TYPES, time.time()))
        deadline = time.monotonic() + 3  # the child's link thread takes it in a moment
        while ask(c, req(user="dis@x")) != DISABLED:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        for n in range(20):
            assert ask(c, req(user="u@x", instance=f"m{n}")) == DUNNO
        assert ask(c, req(user="u@x", instance="m20")) == INLINE_ANSWERS["defer"]
        assert wait_readable(proc.fileno())
        assert [(b.key_type, b.key, b.count) for b in proc.take_bans() or []] == [("user", "u@x", 20)]
        assert proc.send("forget", [("user", "u@x")])
        deadline = time.monotonic() + 3
        while ask(c, req(user="u@x", instance="m21")) != DUNNO:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.stop()
    assert not os.path.exists(f"{tmp_path}/p.sock")


def test_a_killed_child_is_noticed_and_a_new_one_answers_on_the_same_socket(tmp_path: Path) -> None:
    proc = PolicyProcess(PolicyServer(f"unix:{tmp_path}/p.sock"))
    lost = []
    proc.on_lost = lambda: lost.append(proc.pid)
    proc.start(messages_jail(), Decisions())
    try:
        first = proc.pid
        os.kill(first, signal.SIGKILL)
        assert wait_readable(proc.fileno())
        assert proc.take_bans() is None and not proc.alive and lost == [first]
        # postfix's connections wait in the backlog of the socket the daemon keeps open
        c = connect(proc.server)
        c.sendall(req(user="dis@x"))
        proc.start(messages_jail(), Decisions.from_bans([ban("user", "dis@x", "sasl-disable", until=time.time() + 100)],
                                                        TYPES, time.time()))
        assert proc.pid != first
        got = b""
        while not got.endswith(b"\n\n"):
            got += c.recv(4096)
        assert got == DISABLED
    finally:
        proc.stop()


def test_the_child_exits_when_the_daemon_closes_the_link(tmp_path: Path) -> None:
    proc = PolicyProcess(PolicyServer(f"unix:{tmp_path}/p.sock"))
    proc.start(messages_jail(), Decisions())
    pid = proc.pid
    started = time.monotonic()
    proc.stop()  # closes the link and waits; it kills only a child that did not leave
    assert time.monotonic() - started < 2
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_new_child_counts_on_from_the_windows_the_last_one_sent(tmp_path: Path) -> None:
    """The inline windows survive the service's process: the child sends its changed windows
    (here at once: `flush`, as the daemon asks before it stops; otherwise once a second), the
    daemon's mirror takes them (windowsync.apply), and the next child is forked with them."""
    from mailban import checkpoint
    from mailban.policy import windowsync

    mirror = messages_jail()
    checkpoint.track(mirror.jails)
    proc = PolicyProcess(PolicyServer(f"unix:{tmp_path}/p.sock"))
    proc.start(mirror, Decisions())
    try:
        c = connect(proc.server)
        for n in range(15):
            assert ask(c, req(user="u@x", instance=f"m{n}")) == DUNNO
        assert proc.flush() == [] and proc._flushed
        blobs, proc.windows = proc.windows, []
        assert [(name, which, key) for blob in blobs for name, which, key, _change in windowsync.loads(blob)] == \
            [("out", "key", "u@x")]
        assert windowsync.apply(mirror.jails, blobs, time.time()) == []
        assert mirror.jails[0].count_of("u@x", time.time()) == 15 and mirror.jails[0].touched == {("key", "u@x")}
        c.close()
        first = proc.pid
        os.kill(first, signal.SIGKILL)
        assert wait_readable(proc.fileno()) and proc.take_bans() is None
        proc.start(mirror, Decisions())  # the daemon forks the next one with its mirror
        assert proc.pid != first
        c = connect(proc.server)
        for n in range(15, 20):
            assert ask(c, req(user="u@x", instance=f"m{n}")) == DUNNO
        assert ask(c, req(user="u@x", instance="m20")) == INLINE_ANSWERS["defer"]
        assert wait_readable(proc.fileno())
        deadline = time.monotonic() + 3
        bans: list[Ban] = []
        while not (bans and proc.windows) and time.monotonic() < deadline:  # the ban, and its window's end
            wait_readable(proc.fileno(), 0.1)
            bans += proc.take_bans() or []
        assert [(b.key, b.count) for b in bans] == [("u@x", 20)]
        assert windowsync.apply(mirror.jails, proc.windows, time.time()) == []
        assert mirror.jails[0].count_of("u@x", time.time()) is None  # banned: its window is gone
    finally:
        proc.stop()


def test_changed_windows_reach_the_mirror_and_the_database(tmp_path: Path) -> None:
    """windowsync.pack -> windowsync.apply -> rows -> State.commit -> restore: the inline jail's
    window comes back whole in fresh jails (the next start of mailban)."""
    from mailban import checkpoint
    from mailban.policy import windowsync
    from mailban.state import State

    child, mirror = messages_jail(), messages_jail()
    checkpoint.track(child.jails)
    checkpoint.track(mirror.jails)
    for n in range(7):
        send_message(child, 2, 1000.0 + n, f"m{n}")
    blob = windowsync.pack(checkpoint.take_touched(child.jails))
    assert not child.jails[0].touched
    assert windowsync.apply(mirror.jails, [blob], 1010.0) == []
    touched: checkpoint.Touched = set()
    checkpoint.collect(mirror.jails, touched)
    upserts, dropped = checkpoint.rows(mirror.jails, touched)
    state = State(str(tmp_path))
    state.commit([], {}, upserts, dropped)
    fresh = messages_jail()
    assert checkpoint.restore(fresh.jails, state.windows(), 1010.0) == 1
    assert fresh.jails[0].count_of("u@x", 1010.0) == 7
    # a key banned since (noted in the mirror) gets no window back from a late send
    mirror.jails[0].note_ban("v@x", 5000.0, "user")
    whole = windowsync.loads(blob)[0][3]
    windowsync.apply(mirror.jails, [pickle.dumps([("out", "key", "v@x", whole)])], 1010.0)
    assert mirror.jails[0].count_of("v@x", 1010.0) is None
    state.close()
