"""The one place where mailban runs other programs: argv lists, never a shell.

Inputs: an argv list (program and arguments as separate strings), optional bytes for stdin, a
timeout. Output: the program's stdout, or an ActionError naming the program and what it said.
Security note: log text (user names, addresses) may appear in argv elements and stdin, never in a
command line that a shell would parse. Elements with NUL bytes are refused; callers refuse
values starting with "-" where the program would read them as options.
Must never: use shell=True, inherit the daemon's stdin, or wait forever (every call has a timeout).
"""

from __future__ import annotations

import os
import subprocess
from typing import Sequence

DEFAULT_TIMEOUT = 30.0


class ActionError(RuntimeError):
    """A program an action ran failed, hung, or could not be started."""


def run(argv: Sequence[str], stdin: bytes | None = None, timeout: float = DEFAULT_TIMEOUT,
        ok_codes: tuple[int, ...] = (0,)) -> bytes:
    args = [str(a) for a in argv]
    if not args or any("\0" in a for a in args):
        raise ActionError(f"refusing to run {args!r}: empty or containing a NUL byte")
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
    try:
        proc = subprocess.run(args, input=stdin if stdin is not None else b"", capture_output=True,
                              timeout=timeout, env=env, check=False, close_fds=True)
    except FileNotFoundError:
        raise ActionError(f"{args[0]}: program not found") from None
    except subprocess.TimeoutExpired:
        raise ActionError(f"{args[0]}: no answer within {timeout:g}s (killed)") from None
    except OSError as exc:
        raise ActionError(f"{args[0]}: cannot run: {exc.strerror}") from None
    if proc.returncode not in ok_codes:
        said = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()
        raise ActionError(f"{args[0]} exited with {proc.returncode}: {said[-1] if said else 'no message'}")
    return proc.stdout


def safe_token(value: str, what: str) -> str:
    """A user name, uid or address that may be written into a map file line or an argv element.

    Map files are line- and whitespace-separated, postmap reads '"' as the start of a quoted
    string (an unbalanced one makes it ignore the line) and '\\' as an escape, passwd-files split
    on ':', '#' starts a comment, and a leading "-" would be an option: such values cannot be
    written safely, so they are refused (the decision is still recorded). Shell syntax such as
    ';' or '$(...)' is not refused: it means nothing to these files, and no shell ever reads them.
    """
    if not value or value[0] == "-" or any(c.isspace() or ord(c) < 32 or c in ':#"\\\x7f' for c in value):
        raise ActionError(f"cannot act on {what} {value!r} safely (whitespace, control characters, "
                          "':', '#', '\"' or '\\', or a leading '-'); the decision is recorded, act by hand")
    return value


def write_atomically(path: str, text: str, mode: int = 0o640) -> None:
    """Replace `path` with `text` so that readers see the old or the new file, never half."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.mailban-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        st = os.stat(path)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
    except FileNotFoundError:
        pass
    os.replace(tmp, path)
