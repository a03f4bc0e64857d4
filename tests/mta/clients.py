"""Misbehaving SMTP/IMAP/POP3 clients for the real-MTA tests, each bound to a chosen source address.

Every function takes the server's host/port and the local (source) address to connect from, so
that each provoked category shows up in the log under its own 127.0.0.x. No shell is involved:
swaks is run with an argv list, everything else speaks the protocol over a plain socket.
Runnable as a script (`python -m tests.mta.clients --batch JSON`) so that the
sendmail tests can run the same clients inside a network namespace.
"""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import socket
import subprocess
import sys
import time


def connect(host: str, port: int, src: str, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout, source_address=(src, 0))


def read_reply(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read one (possibly multi-line) SMTP reply; b'' if the server closed."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, socket.timeout):
            return buf
        if not chunk:
            return buf
        buf += chunk
        lines = buf.split(b"\r\n")
        complete = [ln for ln in lines[:-1]]
        if complete and len(complete[-1]) >= 4 and complete[-1][3:4] == b" ":
            return buf


def converse(host: str, port: int, src: str, steps: list[bytes | str], greet: bool = True,
             timeout: float = 10.0) -> list[bytes]:
    """Connect, optionally wait for the greeting, then send each step and read a reply to it."""
    replies = []
    with connect(host, port, src, timeout) as s:
        if greet:
            replies.append(read_reply(s, timeout))
        for step in steps:
            if isinstance(step, str):  # from the JSON batch
                step = step.encode("latin-1")
            try:
                s.sendall(step)
            except OSError:
                break
            reply = read_reply(s, timeout)
            replies.append(reply)
            if not reply:
                break
    return replies


def swaks(host: str, port: int, src: str, *args: str) -> subprocess.CompletedProcess:
    argv = ["swaks", "--server", host, "--port", str(port), "--local-interface", src,
            "--timeout", "15", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def smtp_auth(host: str, port: int, src: str, mech: str, user: str, password: str,
              helo: str = "client.example.test", tries: int = 1) -> bytes:
    """EHLO, AUTH PLAIN or LOGIN with the given credentials (`tries` times in the session), QUIT.
    Returns the last AUTH answer."""
    with connect(host, port, src) as s:
        read_reply(s)
        s.sendall(f"EHLO {helo}\r\n".encode())
        read_reply(s)
        for _ in range(tries):
            answer = _auth_once(s, mech, user, password)
        s.sendall(b"QUIT\r\n")
        read_reply(s)
    return answer


def _auth_once(s: socket.socket, mech: str, user: str, password: str) -> bytes:
    """One AUTH PLAIN (initial response) or AUTH LOGIN exchange; the server's answer."""
    if mech == "PLAIN":
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
        s.sendall(b"AUTH PLAIN " + token + b"\r\n")
        return read_reply(s)
    s.sendall(b"AUTH LOGIN\r\n")
    read_reply(s)
    s.sendall(base64.b64encode(user.encode()) + b"\r\n")
    read_reply(s)
    s.sendall(base64.b64encode(password.encode()) + b"\r\n")
    return read_reply(s)


def rcpts(host: str, port: int, src: str, sender: str, recipients: list[str],
          helo: str = "client.example.test") -> list[bytes]:
    steps = [f"EHLO {helo}\r\n".encode(), f"MAIL FROM:<{sender}>\r\n".encode()]
    steps += [f"RCPT TO:<{r}>\r\n".encode() for r in recipients]
    steps.append(b"QUIT\r\n")
    return converse(host, port, src, steps)


def connects(host: str, port: int, src: str, count: int) -> list[bytes]:
    """Open `count` sessions one after another, each QUIT at once (anvil connection rate)."""
    out = []
    for _ in range(count):
        out.extend(converse(host, port, src, [b"QUIT\r\n"]))
    return out


def pregreet(host: str, port: int, src: str, data: bytes | str = b"EHLO pregreet.example.test\r\n",
             wait: float = 0.0) -> list[bytes]:
    """Talk before the server's greeting, then read what comes."""
    if isinstance(data, str):
        data = data.encode("latin-1")
    with connect(host, port, src) as s:
        s.sendall(data)
        if wait:
            time.sleep(wait)
        out = [read_reply(s)]
        try:
            s.sendall(b"QUIT\r\n")
            out.append(read_reply(s, 5))
        except OSError:
            pass
        return out


def ehlo_flood(host: str, port: int, src: str, count: int = 5) -> bytes:
    """Repeat EHLO in one write (sendmail counts it as an attack), read a little, hang up:
    sendmail then sleeps before each answer, which the test need not wait for."""
    with connect(host, port, src) as s:
        read_reply(s)
        s.sendall(b"EHLO flood.example.test\r\n" * count)
        time.sleep(0.5)
        s.settimeout(0.5)
        try:
            return s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return b""


def second_connection(host: str, port: int, src: str) -> bytes:
    """Hold one session open and open a second one (concurrency limits); returns its answer."""
    with connect(host, port, src) as first:
        read_reply(first)
        with connect(host, port, src) as second:
            return read_reply(second)


def hangup(host: str, port: int, src: str, after: float = 0.1) -> None:
    with connect(host, port, src):
        time.sleep(after)


def imap_login(host: str, port: int, src: str, user: str, password: str) -> bool:
    # imaplib has no source address: connect the socket ourselves
    class IMAP(imaplib.IMAP4):
        def _create_socket(self, timeout=None):
            return connect(host, port, src)
    m = IMAP(host, port)
    try:
        m.login(user, password)
        ok = True
    except imaplib.IMAP4.error:
        ok = False
    try:
        m.logout()
    except Exception:
        pass
    return ok


def pop3_login(host: str, port: int, src: str, user: str, password: str) -> bool:
    class POP3(poplib.POP3):
        def _create_socket(self, timeout):
            return connect(host, port, src)
    p = POP3(host, port)
    try:
        p.user(user)
        p.pass_(password)
        ok = True
    except poplib.error_proto:
        ok = False
    try:
        p.quit()
    except Exception:
        pass
    return ok


def imap_raw_login(host: str, port: int, src: str, user: str, password: str) -> list[bytes]:
    """LOGIN with quoted strings sent as-is (imaplib would refuse some hostile names)."""
    def tagged(s: socket.socket, tag: bytes) -> bytes:
        buf = b""
        while not any(line.startswith(tag + b" ") for line in buf.split(b"\r\n")):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf
    with connect(host, port, src) as s:
        out = [s.recv(4096)]
        s.sendall(b'a LOGIN "' + user.encode() + b'" "' + password.encode() + b'"\r\n')
        out.append(tagged(s, b"a"))
        s.sendall(b"b LOGOUT\r\n")
        out.append(tagged(s, b"b"))
    return out


def _printable(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, subprocess.CompletedProcess):
        return {"returncode": value.returncode, "stdout": value.stdout[-2000:]}
    return value


if __name__ == "__main__":
    # python -m tests.mta.clients --batch '[[FUNC, HOST, PORT, SRC, ARGS...], ...]'
    # prints a JSON list with one result per call
    if sys.argv[1] != "--batch":
        sys.exit(__doc__)
    results = []
    for call in json.loads(sys.argv[2]):
        func = globals()[call[0]]
        results.append(_printable(func(*call[1:])))
    print(json.dumps(results))
