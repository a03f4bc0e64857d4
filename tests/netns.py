"""Helpers for the end-to-end tests: two network namespaces, a TCP server, the daemon.

`Link` creates a server and a client namespace joined by a veth pair (addresses from
198.51.100.0/24 and fd42:6d62::/64; never 192.0.2.0/24, which the host owns) and deletes them
again. `Daemon` runs `mailban run` inside the server namespace on a config written by
`write_config`. Everything started here is stopped by `close()`/`stop()`, which the tests call
from `finally` blocks and fixtures, so a failing test leaves no process and no namespace behind.
Names carry the pid and a counter, so concurrent runs do not collide. No shell is ever used.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mailban.control import request

SERVER4, CLIENT4, OTHER4 = "198.51.100.1", "198.51.100.2", "198.51.100.3"
SERVER6, CLIENT6 = "fd42:6d62::1", "fd42:6d62::2"
PORT = 2525
_counter = itertools.count()

# A tiny TCP service: greets every client with "220 hello <peer>" and closes.
SERVER_CODE = r"""
import socket, sys, threading
def serve(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(sys.argv[3])))
    s.listen(64)
    def loop():
        while True:
            c, peer = s.accept()
            try:
                c.sendall(b"220 hello " + peer[0].encode() + b"\r\n")
            finally:
                c.close()
    threading.Thread(target=loop, daemon=True).start()
serve(socket.AF_INET, sys.argv[1])
serve(socket.AF_INET6, sys.argv[2])
print("ready", flush=True)
sys.stdin.read()
"""

# One connection attempt: prints "OK <greeting>" or "FAIL <exception>".
CLIENT_CODE = r"""
import socket, sys
src, dst, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
try:
    with socket.create_connection((dst, port), timeout=timeout, source_address=(src, 0)) as s:
        print("OK", s.recv(100).decode().strip())
except OSError as exc:
    print("FAIL", type(exc).__name__, exc)
"""


# The marks of every test that needs root (namespaces, nftables).
NEEDS_ROOT = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables)"),
]


def run(argv: list[str], check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


class Link:
    """A server and a client namespace joined by a veth pair."""

    def __init__(self) -> None:
        tag = f"{os.getpid()}-{next(_counter)}"
        self.srv = f"mbs-{tag}"
        self.cli = f"mbc-{tag}"
        short = f"{os.getpid() % 100000}{next(_counter)}"
        self.veth_srv, self.veth_cli = f"mbs{short}", f"mbc{short}"
        self.server: subprocess.Popen[str] | None = None
        self.created: list[str] = []

    def up(self) -> Link:
        for ns in (self.srv, self.cli):
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
        run(["ip", "link", "add", self.veth_srv, "netns", self.srv, "type", "veth",
             "peer", "name", self.veth_cli, "netns", self.cli])
        for ns, dev, addrs in (
            (self.srv, self.veth_srv, [f"{SERVER4}/24", f"{SERVER6}/64"]),
            (self.cli, self.veth_cli, [f"{CLIENT4}/24", f"{OTHER4}/24", f"{CLIENT6}/64"]),
        ):
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                run(["ip", "-n", ns, "addr", "add", addr, "dev", dev, *extra])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        return self

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def start_server(self) -> None:
        self.server = subprocess.Popen(
            self.exec_argv(self.srv, [sys.executable, "-c", SERVER_CODE, SERVER4, SERVER6, str(PORT)]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.server.stdout is not None
        assert self.server.stdout.readline().strip() == "ready"

    def connect(self, src: str, timeout: float = 1.0) -> tuple[bool, str, float]:
        """Connect from `src` (a client address) to the server; (ok, output, seconds)."""
        dst = SERVER6 if ":" in src else SERVER4
        started = time.monotonic()
        out = run(self.exec_argv(self.cli, [sys.executable, "-c", CLIENT_CODE, src, dst, str(PORT),
                                            str(timeout)])).stdout.strip()
        return out.startswith("OK"), out, time.monotonic() - started

    def nft_elements(self, table: str = "mailban") -> dict[str, int | None]:
        """address (addr/len for a prefix) -> seconds left, from the sets in the server namespace."""
        found: dict[str, int | None] = {}
        for name in ("banned4", "banned6", "banned4net", "banned6net"):
            res = run(self.exec_argv(self.srv, ["nft", "-j", "list", "set", "inet", table, name]), check=False)
            if res.returncode != 0:
                continue
            for item in json.loads(res.stdout)["nftables"]:
                for elem in (item.get("set") or {}).get("elem", []) or []:
                    if isinstance(elem, dict):
                        val = elem["elem"]["val"]
                        if isinstance(val, dict) and "prefix" in val:
                            val = f"{val['prefix']['addr']}/{val['prefix']['len']}"
                        found[str(val)] = elem["elem"].get("expires")
                    else:
                        found[str(elem)] = None
        return found

    def reset_nft(self) -> None:
        run(self.exec_argv(self.srv, ["nft", "delete", "table", "inet", "mailban"]), check=False)

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait(5)
        for ns in self.created:
            run(["ip", "netns", "del", ns], check=False)
        self.created.clear()


def write_config(
    directory: Path,
    logs: list[str],
    *,
    bantime: str = "1h",
    findtime: str = "10m",
    maxretry: int = 3,
    read_from: str = "end",
    extra: str = "",
    ignoreip: tuple[str, ...] = (),
    settings: str = "",
) -> Path:
    """A config dir: mailban.toml (one jail, keyed by ip) and an admin actions.d/nft.toml;
    `settings`: more [mailban] lines, `extra`: more lines after the jail (its keys, then tables)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "actions.d").mkdir(exist_ok=True)
    (directory / "actions.d" / "nft.toml").write_text('[action]\ntype = "nft"\nports = [2525]\n')
    path = directory / "mailban.toml"
    path.write_text(
        "[mailban]\n"
        "shipped_jails = false\n"  # only the jail below
        f"logs = {json.dumps(logs)}\n"
        f'state_dir = "{directory / "state"}"\n'
        f'socket = "{directory / "mailban.sock"}"\n'
        f'read_from = "{read_from}"\n'
        "journal = false\n"
        f"ignoreip = {json.dumps(list(ignoreip))}\n"
        + settings
        + "\n[jail.auth]\n"
        'kinds = ["auth-failure"]\n'
        f'findtime = "{findtime}"\n'
        f"maxretry = {maxretry}\n"
        f'bantime = "{bantime}"\n'
        'actions = ["nft"]\n'
        + extra
    )
    return path


def failure_line(ip: str, when: float | None = None, user: str = "alice@example.test") -> bytes:
    """A postfix SASL failure line, stamped with local time `when` (default: now)."""
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(time.time() if when is None else when))
    return (f"{stamp} mail postfix/smtpd[4242]: warning: unknown[{ip}]: SASL PLAIN authentication "
            f"failed: (reason unavailable), sasl_username={user}\n").encode()


def append(path: Path | str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def wait_for(predicate: Any, timeout: float = 5.0, every: float = 0.02, what: str = "condition") -> float:
    """Poll until predicate() is true; return the seconds it took (AssertionError on timeout)."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Daemon:
    """`mailban run` in a namespace, with its output in a file next to the config."""

    def __init__(self, link: Link, config: Path) -> None:
        self.link = link
        self.config = config
        self.socket = str(config.parent / "mailban.sock")
        self.output = config.parent / "daemon.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                self.link.exec_argv(self.link.srv, [sys.executable, "-m", "mailban", "run",
                                                    "--config", str(self.config)]),
                stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if request(self.socket, {"cmd": "status"}, timeout=2).get("ok"):
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise AssertionError(f"the daemon did not answer in time:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.output.read_text(errors="replace")
        except OSError:
            return ""

    def call(self, payload: dict[str, Any]) -> dict[str, Any]:
        return request(self.socket, payload)

    def status(self) -> dict[str, Any]:
        answer = self.call({"cmd": "status"})
        assert answer["ok"], answer
        return answer

    def lines_read(self) -> int:
        return sum(s["lines"] for s in self.status()["sources"])

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = run([sys.executable, "-m", "mailban", *args, "--config", str(self.config)], check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"mailban {' '.join(args)} -> {res.returncode}: {res.stderr}")
        return res

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM and wait; the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is not None:
            return proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return None
