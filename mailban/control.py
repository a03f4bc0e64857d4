"""The control socket: a Unix stream socket speaking one JSON object per line each way.

Inputs: requests `{"cmd": NAME, ...}` from `mailban status|list|ban|unban|reload`. Outputs: one
JSON response `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
The socket is created with mode 0600 (its owner only) by default. With `control_group` set, it is
0660 and owned by that group. Whatever the file's mode, every request is checked against the
peer's credentials (SO_PEERCRED): root, the daemon's own user and members of `control_group` are
served; anyone else is refused. Requests that change something (ban, unban, reload, purge-held)
are logged with the peer's uid and pid, so an admin can tell who unbanned whom at 3 a.m.
Security note: requests carry admin-chosen text; addresses are validated before use and nothing
reaches a shell.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import selectors
import socket
import struct
from typing import Any, Callable

log = logging.getLogger("mailban.control")


class ConfigRefused(ValueError):
    """A command refused because the configuration was (reload): the CLI exits with 2."""
MAX_REQUEST = 64 * 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]


def allowed_uids_check(group: str | None) -> Callable[[int], bool]:
    """Who may use the socket: root, this process's user, and members of `group`."""
    me = os.geteuid()
    gid = grp.getgrnam(group).gr_gid if group else None

    def allowed(uid: int) -> bool:
        if uid in (0, me):
            return True
        if gid is None or uid < 0:
            return False
        try:
            user = pwd.getpwuid(uid)
        except KeyError:
            return False
        return gid in os.getgrouplist(user.pw_name, user.pw_gid)

    return allowed


class ControlServer:
    def __init__(self, path: str, mode: int, handlers: dict[str, Handler], group: str | None = None) -> None:
        self.path = path
        self.handlers = handlers
        self.allowed = allowed_uids_check(group)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Create the socket file with no permissions at all, then open it up to `mode`: there is
        # no window in which another user could connect.
        old = os.umask(0o777)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        if group:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
            mode |= 0o060
        os.chmod(path, mode)
        self.sock.listen(16)
        self.sock.setblocking(False)
        self._buffers: dict[socket.socket, bytearray] = {}

    def register(self, selector: selectors.BaseSelector) -> None:
        selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._buffers[conn] = bytearray()
        selector.register(conn, selectors.EVENT_READ, lambda sel, c=conn: self._read(sel, c))

    def _read(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        buf = self._buffers[conn]
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf += chunk
        if b"\n" not in buf and chunk and len(buf) < MAX_REQUEST:
            return
        selector.unregister(conn)
        del self._buffers[conn]
        try:
            response = self._handle(bytes(buf).split(b"\n", 1)[0], conn)
            conn.setblocking(True)
            conn.settimeout(5)
            conn.sendall(json.dumps(response).encode() + b"\n")
        except OSError as exc:
            log.warning("control: could not answer a client: %s", exc)
        finally:
            conn.close()

    def _handle(self, raw: bytes, conn: socket.socket) -> dict[str, Any]:
        pid, uid, _gid = _peer(conn)
        if not self.allowed(uid):
            log.warning("control: refused uid %s (pid %s): not root, not mailban's user, not in control_group", uid, pid)
            return {"ok": False, "error": "permission denied: ask root, or a member of mailban's control_group"}
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        cmd = request.get("cmd")
        handler = self.handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}; known: {', '.join(sorted(self.handlers))}"}
        if cmd not in ("status", "list", "explain"):
            log.info("control: %s requested by uid %s (pid %s): %s", cmd, uid, pid,
                     json.dumps({k: v for k, v in request.items() if k not in ("cmd", "_peer")}))
        request["_peer"] = {"uid": uid, "pid": pid}  # who asked, for the history
        try:
            return {"ok": True, **handler(request)}
        except ConfigRefused as exc:
            return {"ok": False, "error": str(exc), "config_refused": True}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in a handler must not take the daemon down
            log.exception("control: %s failed", cmd)
            return {"ok": False, "error": f"internal error: {exc}"}

    def close(self) -> None:
        for conn in list(self._buffers):
            conn.close()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", raw)
    except OSError:
        return (-1, -1, -1)


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon and return its answer (raises OSError if unreachable)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks))
