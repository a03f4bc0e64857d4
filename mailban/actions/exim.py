"""What the Exim side of queue-hold, sasl-disable and defer share: the list files that Exim's
ACLs read, the spool header (-H) files that tell whose a queued message is, and the check that
Exim's configuration reads mailban's files.

Exim has no maps to rebuild: its ACLs look keys up in plain files at each use (`lsearch` for
names and uids, `net-iplsearch` for client addresses), so a ban is a file written atomically,
and Exim sees it at the next SMTP command that consults it -- once it has closed the old one:
a process that looked into a list file keeps it open, and its answers cached, until its next
search_tidyup (in an SMTP session: when the next message's DATA starts). So a session that
authenticated before a ban would get the cached answer at its next MAIL. What must reach
sessions already open (a disabled account's next MAIL) is a dsearch directory, one empty file
per key, looked up with `cache=no_rd` (write_dir). Every list lives in one directory
(default /var/lib/mailban/exim), world-readable: Exim's receiving processes run as its own user.
The ACL lines each list needs are in docs/exim.md, and ACL_LINES below (shown by `mailban check`).

Spool files (`<spool>/input/[X/]ID-H`, Exim 4.x): line 2 is `login uid gid` of the process
that submitted the message, line 3 `<sender>`; then `-name value` lines, among them
`-auth_id USER` (`--auth_id` when the value is tainted, 4.94+), `-frozen TIME` and the ACL
variables (`-aclm _mailban 4` followed by `held` on the next line: the mark mailban's ACL lines
set on messages they freeze, so that unban thaws those and not what an admin froze).
Security note: keys are log text; they are written into list files only when
executor.safe_token accepts them (no whitespace, ':', '#', '"', '\\', control characters, no
leading '-': lsearch would read those as separators, comments or quoting), and queue ids only
when they have Exim's message-id form. Nothing reaches a shell.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from typing import Any

from .executor import ActionError, run, safe_token, write_atomically

log = logging.getLogger("mailban.action.exim")
LISTS_DIR = "/var/lib/mailban/exim"
# classic 1rKx2p-0004Ab-1F and the longer one of Exim 4.97+ (1rKx2p-00000000Ab1-0001)
MSGID = re.compile(r"^[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4})$")
MARK = "held"  # the value of acl_m_mailban that mailban's ACL lines set on what they freeze
HEADER = "# maintained by mailban ({what}): do not edit, use `mailban unban`\n"

# list file name -> the ACL lines that read it (docs/exim.md explains where they go)
ACL_LINES = {
    "held-users": (
        "acl_smtp_mail, first:\n"
        "  warn    authenticated = *\n"
        "          condition = ${lookup{$authenticated_id}lsearch{PATH}{yes}{no}}\n"
        "          control = freeze/no_tell\n"
        "          set acl_m_mailban = held"),
    "held-senders": (
        "acl_smtp_mail, first, and acl_not_smtp:\n"
        "  warn    senders = lsearch;PATH\n"
        "          control = freeze/no_tell\n"
        "          set acl_m_mailban = held"),
    "held-uids": (
        "acl_not_smtp (main section: acl_not_smtp = acl_mailban_not_smtp):\n"
        "  warn    condition = ${lookup{$originator_uid}lsearch{PATH}{yes}{no}}\n"
        "          control = freeze/no_tell\n"
        "          set acl_m_mailban = held"),
    "disabled-users": (
        "each plaintext authenticator (optional: refuses AUTH itself):\n"
        "  server_condition = ${if and {{!eq{${lookup{$auth2}lsearch{PATH}{yes}{no}}}{yes}} {EXISTING CONDITION}}}"),
    "disabled-users.d": (
        "acl_smtp_mail, first:\n"
        "  deny    authenticated = *\n"
        "          condition = ${if match{$authenticated_id}{/}{no}"
        "{${lookup{$authenticated_id}dsearch,filter=file,cache=no_rd{PATH}{yes}{no}}}}\n"
        "          message = account disabled by mailban, contact support"),
    "deferred-hosts": (
        "acl_smtp_connect (or first in acl_smtp_mail):\n"
        "  defer   hosts = net-iplsearch;PATH\n"
        "          message = Service temporarily limited, please try again later"),
    "deferred-senders": (
        "acl_smtp_mail:\n"
        "  defer   senders = lsearch;PATH\n"
        "          message = Service temporarily limited, please try again later"),
}


def safe(key: str, what: str) -> bool:
    try:
        safe_token(key, what)
        return True
    except ActionError as exc:
        log.error("%s", exc)
        return False


def write_list(path: str, keys: list[str], what: str, quote: bool = False) -> None:
    """One key a line, atomically (Exim sees the old or the new file). `quote`: write each key
    in double quotes (iplsearch: an IPv6 address's colons would end an unquoted key)."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    text = HEADER.format(what=what) + "".join(f'"{k}"\n' if quote else f"{k}\n" for k in sorted(keys))
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return
    except (OSError, UnicodeDecodeError):
        pass
    write_atomically(path, text, mode=0o644)


def dir_entry_ok(key: str) -> bool:
    """Whether a key can be a file of a dsearch directory: a name, not a path (dsearch defers on
    a key with a slash; the ACL line asks Exim to skip such keys), nor `.`/`..`."""
    return "/" not in key and key not in (".", "..") and len(key.encode()) <= 255


def write_dir(path: str, keys: list[str]) -> None:
    """One empty file per key in `path` (created if missing), and no other file: what Exim's
    `dsearch,filter=file,cache=no_rd` lookup reads. Unlike a list file, which an SMTP session
    keeps open once it looked into it (so it does not see the file that replaced it before its
    next DATA), dsearch stats `path/key` at each use: a key added here is seen by the next MAIL of a session that
    is already open. Each file appears or goes in one step (create, unlink)."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    wanted = {k for k in keys if dir_entry_ok(k)}
    for k in sorted(set(keys) - wanted):
        log.error("cannot write %r into %s (a slash, `.`/`..`, or longer than a file name): "
                  "only the list file names it", k, path)
    present = set(os.listdir(path))
    for name in sorted(present - wanted):
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:
            pass
    for name in sorted(wanted - present):
        fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        os.close(fd)


def spool_dir(exim: list[str], configured: str | None, timeout: float) -> str:
    """The spool directory: the configured one, else what `exim -bP -n spool_directory` says."""
    if configured:
        return configured
    out = run([*exim, "-bP", "-n", "spool_directory"], timeout=timeout).decode("utf-8", "replace").strip()
    if not out.startswith("/"):
        raise ActionError(f"exim -bP spool_directory said {out!r}")
    return out


def read_header(path: str) -> dict[str, Any] | None:
    """What a -H file says about its message: uid, sender, user (auth_id), frozen, ours."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(65536)
    except OSError:
        return None  # delivered and removed in the meantime
    lines = raw.decode("utf-8", "replace").split("\n")
    if len(lines) < 4:
        return None
    login = lines[1].split()
    sender = lines[2]
    item: dict[str, Any] = {
        "uid": int(login[1]) if len(login) == 3 and login[1].isdigit() else None,
        "sender": sender[1:-1] if sender.startswith("<") and sender.endswith(">") else None,
        "user": None, "frozen": False, "ours": False,
    }
    i = 4
    while i < len(lines) and lines[i].startswith("-"):  # the recipients follow these lines
        name, _, value = lines[i].lstrip("-").partition(" ")
        i += 1
        if name == "auth_id":
            item["user"] = value
        elif name == "frozen":
            item["frozen"] = True
        elif name in ("aclc", "aclm"):
            # `-aclm NAME LENGTH` then the value, LENGTH bytes, on the lines after it
            var, _, length = value.rpartition(" ")
            size = int(length) if length.isdigit() else 0
            if var == "_mailban":
                item["ours"] = lines[i] == MARK if i < len(lines) else False
            while size > 0 and i < len(lines):
                size -= len(lines[i].encode()) + 1
                i += 1
    return item


def scan_spool(spool: str) -> dict[str, dict[str, Any]]:
    """message id -> read_header(), every message in the spool (split_spool_directory too)."""
    found: dict[str, dict[str, Any]] = {}
    base = os.path.join(spool, "input")
    for path in glob.glob(os.path.join(base, "*-H")) + glob.glob(os.path.join(base, "?", "*-H")):
        qid = os.path.basename(path)[:-2]
        if not MSGID.match(qid):
            continue
        item = read_header(path)
        if item is not None:
            item["queue_id"] = qid
            item["queue_name"] = "hold" if item["frozen"] else "deferred"
            found[qid] = item
    return found


def config_warning(exim: list[str], paths: dict[str, str], timeout: float) -> str | None:
    """What Exim's configuration lacks: the list files (name -> path) it never names, with the
    ACL lines to add; None when it reads them all or when it cannot be read (reported as such
    in the log only: Exim may not be installed where mailban checks). A path is found when the
    configuration names it or, for an Exim in a chroot, a path that ends mailban's."""
    if not exim:
        return None
    try:
        text = run([*exim, "-bP", "config"], timeout=timeout).decode("utf-8", "replace")
    except ActionError as exc:
        log.info("cannot read Exim's configuration to check the list files: %s", exc)
        return None
    named = set(re.findall(r"/[^\s{};\"']+", text))
    missing = [name for name, path in paths.items()
               if path and not any(p.endswith("/" + os.path.basename(path)) and path.endswith(p) for p in named)]
    if not missing:
        return None
    lines = "; ".join(" ".join(ACL_LINES[n].replace("PATH", paths[n]).split()) for n in missing)
    return f"Exim's configuration does not read {', '.join(paths[n] for n in missing)} (docs/exim.md; add: {lines})"
