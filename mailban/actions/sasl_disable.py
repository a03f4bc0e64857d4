"""The `sasl-disable` action: stop a compromised SASL account from sending, reversibly.

Config (actions.d/sasl-disable.toml): dovecot_deny_file, postfix_map, map_type, reject_text,
postmap, postfix_reload, kick, doveconf, timeout (seconds a program may run before it is killed
and the action marked failing; default 30). Handles `user` bans only.
do: add the user to a dovecot deny passdb file (dovecot re-reads it when its mtime changes: the
next AUTH fails, through dovecot and through postfix's SASL), kick the user's open IMAP/POP
sessions (`doveadm kick`), and add `USER REJECT text` to a postfix `check_sasl_access` map
(postmap + reload), so that an already authenticated session cannot send either.
undo: remove the user from both files. start: rewrite both files from the database's active bans
(a crash between a ban and its write cannot leave a user disabled forever, nor enabled), and,
when `doveconf` is set, check with `doveconf -n` that dovecot reads the deny file as a deny
passdb: if not, the warning (log and status) gives the passdb block in the syntax of the
dovecot version found there (2.3: `args = FILE`; 2.4 refuses that and wants a named block with
`passwd_file_path = FILE`, see `dovecot_snippet`). The deny file and `doveadm kick USER` are
the same on both versions.
Security note: user names come from logs. They are written into the files only when
executor.safe_token accepts them (no whitespace, control characters, ':', '#', '"' or '\\', no
leading '-'); a refused name is recorded, logged and shown in `health()` (status) until its ban
ends -- not retried, since it can never be written;
every program runs from an argv list. `doveadm kick` reads its argument as a mask (`*` and `?`
are wildcards, an address or network kicks by client address): a name that would be read as
such a mask is never passed to it (the deny file still blocks that account's next login).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

from ..core.records import Ban
from .base import ActionBase, ActionContext, check_options
from .executor import ActionError, run, safe_token, write_atomically

log = logging.getLogger("mailban.action.sasl-disable")
MAX_REFUSED_SHOWN = 20

_OPTIONS: dict[str, Any] = {
    "dovecot_deny_file": str, "postfix_map": str, "map_type": str, "reject_text": str,
    "postmap": list, "postfix_reload": list, "kick": list, "doveconf": list, "timeout": (int, float),
    "exim_list": str, "exim_dir": str, "exim": list,
}


def dovecot_snippet(version: str, path: str) -> str:
    """The deny passdb block for this dovecot version (checked against the real 2.3.19 and
    2.4.1: 2.4 refuses `args =` in a passdb and names its blocks)."""
    try:
        major_minor = tuple(int(x) for x in version.split("-")[0].split(".")[:2])
    except ValueError:
        major_minor = (2, 4)
    if major_minor >= (2, 4):
        return (f"passdb mailban-deny {{\n  driver = passwd-file\n  passwd_file_path = {path}\n"
                f"  deny = yes\n}}\n")
    return f"passdb {{\n  driver = passwd-file\n  args = {path}\n  deny = yes\n}}\n"


def parse_doveconf(text: str) -> tuple[str, list[str]]:
    """(dovecot's version, the files of its deny passwd-file passdbs) from `doveconf -n`, whose
    first line is `# VERSION (build): CONFIG FILE` on both 2.3 and 2.4."""
    lines = text.splitlines()
    first = lines[0].split() if lines else []
    version = first[1] if len(first) > 1 and first[0] == "#" else ""
    paths: list[str] = []
    block: dict[str, str] | None = None
    for line in lines:
        stripped = line.strip()
        if line.startswith("passdb") and stripped.endswith("{"):
            name = stripped[len("passdb"):-1].strip()
            block = {"driver": name} if name else {}  # 2.4: the driver defaults to the block's name
        elif block is not None and line.startswith("}"):
            if block.get("deny") == "yes" and block.get("driver") == "passwd-file":
                # 2.4: passwd_file_path; 2.3: the last word of args (options such as scheme= first)
                path = block.get("passwd_file_path") or (block.get("args", "").split() or [""])[-1]
                if path:
                    paths.append(path)
            block = None
        elif block is not None and " = " in stripped and line.startswith("  ") and not line.startswith("   "):
            key, _, value = stripped.partition(" = ")
            block[key] = value
    return version, paths


def _unchanged(path: str, text: str) -> bool:
    """The map already holds `text` and postmap built it (its database lies beside it)."""
    try:
        with open(path, encoding="utf-8") as fh:
            same = fh.read() == text
    except (OSError, UnicodeDecodeError):
        return False
    return same and any(os.path.exists(f"{path}.{ext}") for ext in ("db", "cdb", "lmdb"))


class SaslDisableAction(ActionBase):
    def __init__(self, name: str, options: dict[str, Any], context: ActionContext | None = None) -> None:
        self.validate(options)
        self.name = name
        self.deny_file = options.get("dovecot_deny_file", "/etc/dovecot/mailban-deny")
        self.postfix_map = options.get("postfix_map", "/etc/postfix/mailban_sasl_access")
        self.map_type = options.get("map_type", "hash")
        self.reject_text = options.get("reject_text", "account disabled by mailban, contact support")
        self.postmap = list(options.get("postmap", ["postmap"]))
        self.reload = options.get("postfix_reload", ["postfix", "reload"])
        self.kick = options.get("kick", ["doveadm", "kick"])
        # `doveconf` argv (e.g. ["doveconf"]): check at start that dovecot reads the deny file;
        # empty: no check (the shipped actions.d/sasl-disable.toml sets it)
        self.doveconf = list(options.get("doveconf", []))
        self.config_warning: str | None = None
        # What failed in the last change although the files were written (postfix reload, kick):
        # a ban's result says so, and status until a later change works in full.
        self.last_problems: list[str] = []
        # Seconds a program may take before it is killed and the action marked failing (the
        # daemon's loop waits for it: a hanging postmap must not stall detection for long).
        self.timeout = float(options.get("timeout", 30))
        self.users: set[str] = set()
        self.warning: str | None = None
        self.refused: dict[str, None] = {}  # unsafe names of active bans, oldest first
        # exim: the list its MAIL ACL (and, optionally, its authenticators) refuse ("": no exim
        # side), and the argv that reads its configuration for the check (docs/exim.md)
        # Not set: the list under /var/lib/mailban/exim when this host's MTA is Exim (mta_detect).
        self.exim_list, self.mta_detected = options.get("exim_list", ""), None
        if "exim_list" not in options and "exim_dir" not in options:
            from ..mta_detect import detected
            from .exim import LISTS_DIR

            found = detected()
            if found.mta == "exim":
                self.exim_list = f"{LISTS_DIR}/disabled-users"
                self.mta_detected = f"detected exim: {found.evidence}"
        # and the dsearch directory (one file per account) its MAIL ACL reads at each message,
        # which reaches sessions that authenticated before the ban: a list file does not (an
        # Exim process keeps the file it first read open). Default: the list's path + ".d".
        self.exim_dir = options.get("exim_dir", self.exim_list + ".d" if self.exim_list else "")
        self.exim = list(options.get("exim", ["exim"]))
        self.exim_warning: str | None = None

    @staticmethod
    def validate(options: dict[str, Any]) -> None:
        check_options(options, _OPTIONS)
        for key in ("dovecot_deny_file", "postfix_map", "exim_list", "exim_dir"):
            value = options.get(key, "/x")
            if value and not value.startswith("/"):
                raise ValueError(f"`{key}` must be an absolute path (or \"\" to leave it out)")
        if not 0 < options.get("timeout", 30) <= 600:
            raise ValueError("`timeout` must be between 0 and 600 seconds")
        if any(c in options.get("reject_text", "") for c in "\r\n"):
            raise ValueError("`reject_text` must be one line")

    # ---- the action --------------------------------------------------------------------------
    def start(self, active: list[Ban]) -> None:
        self.users = {b.key for b in active if b.key_type == "user" and self._safe(b.key)}
        self.last_problems = self._write()
        self.check_dovecot()
        self.check_config()

    def check_dovecot(self) -> str | None:
        """Does dovecot read the deny file as a deny passdb? Sets (and returns) the warning with
        the block to add, in the syntax of the version `doveconf` reports; None when it does
        (or when there is nothing to check: no `doveconf`, no deny file, dovecot not running)."""
        self.config_warning = None
        if not self.doveconf or not self.deny_file:
            return None
        try:
            out = run([*self.doveconf, "-n"], timeout=min(10, self.timeout))
        except ActionError as exc:
            log.info("not checking dovecot's deny passdb: %s", exc)
            return None
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        version, paths = parse_doveconf(text)
        # a chrooted dovecot names the file from inside its root: /srv/root/etc/x is /etc/x there
        if any(p == self.deny_file or self.deny_file.endswith(p) for p in paths if p.startswith("/")):
            return None
        shown = next((p for p in paths if self.deny_file.endswith(os.path.basename(p))), self.deny_file)
        snippet = dovecot_snippet(version, shown)
        log.warning("dovecot %s does not read %s as a deny passdb, so a disabled account can still log "
                    "in: add this before its other passdbs (docs/outbound.md):\n%s", version or "?",
                    self.deny_file, snippet)
        self.config_warning = (f"dovecot {version or '?'} does not read {self.deny_file} as a deny passdb "
                               f"(add: {' '.join(snippet.split())})")
        return self.config_warning

    def ban(self, bans: list[Ban]) -> list[str]:
        """Disable the accounts; returns what did not work although the accounts are disabled
        (a failed postfix reload or doveadm kick), for the daemon to report with the result."""
        new = {b.key for b in bans if b.key_type == "user"}
        unsafe = [u for u in new if not self._safe(u)]
        new -= set(unsafe)
        for user in sorted(unsafe):
            self.refused[user] = None
            if len(self.refused) > MAX_REFUSED_SHOWN:
                del self.refused[next(iter(self.refused))]
        problems: list[str] = []
        if new - self.users:
            self.users |= new
            problems += self._write()
        problems += [p for p in map(self._kick, sorted(new)) if p]
        self.last_problems = problems
        return problems

    def unban(self, bans: list[Ban]) -> None:
        gone = {b.key for b in bans if b.key_type == "user"}
        for user in gone:
            self.refused.pop(user, None)
        if gone & self.users:
            self.users -= gone
            self.last_problems = self._write()

    def unban_all(self) -> bool:
        self.users.clear()
        self.refused.clear()
        self.last_problems = self._write()
        return True

    def stop(self) -> None:
        """Disabled accounts stay disabled while mailban is down: the files are left as they are."""

    def check_config(self) -> list[str]:
        """exim: whether its configuration reads the disabled-users directory (the MAIL ACL;
        the list file is optional: an authenticator's condition), or the list without one."""
        if not self.exim_list and not self.exim_dir:
            return []
        from .exim import config_warning

        wanted = {"disabled-users.d": self.exim_dir} if self.exim_dir else {"disabled-users": self.exim_list}
        self.exim_warning = config_warning(self.exim, wanted, min(10, self.timeout))
        return [self.exim_warning] if self.exim_warning else []

    def health(self) -> str | None:
        problems = [w for w in (self.config_warning, self.exim_warning, self.warning, *self.last_problems) if w]
        if self.refused:
            problems.append(f"not disabled (unsafe names, recorded only; act by hand): {list(self.refused)!r}")
        return "; ".join(problems) or None

    # ---- files and programs ------------------------------------------------------------------
    @staticmethod
    def _safe(user: str) -> bool:
        try:
            safe_token(user, "user")
            return True
        except ActionError as exc:
            log.error("%s", exc)
            return False

    def _sides(self) -> tuple[bool, bool]:
        """Which sides can be written: an MTA that is not installed (no /etc/dovecot, no
        /etc/postfix) is skipped and reported, rather than failing every ban."""
        dovecot = bool(self.deny_file) and os.path.isdir(os.path.dirname(self.deny_file))
        postfix = bool(self.postfix_map) and os.path.isdir(os.path.dirname(self.postfix_map))
        missing = [p for p, ok in ((self.deny_file, dovecot), (self.postfix_map, postfix)) if p and not ok]
        self.warning = f"not installed, skipped: {', '.join(missing)}" if missing else None
        if not dovecot and not postfix and not self.exim_list and not self.exim_dir:
            raise ActionError(f"neither {self.deny_file!r} nor {self.postfix_map!r} can be written "
                              "(is dovecot or postfix installed?)")
        return dovecot, postfix

    def _write(self) -> list[str]:
        """Write both files; what did not work although they are written (the postfix reload)."""
        users = sorted(self.users)
        dovecot, postfix = self._sides()
        if self.exim_list:
            from .exim import write_list

            write_list(self.exim_list, users, "sasl-disable, accounts refused")
        if self.exim_dir:
            from .exim import write_dir

            write_dir(self.exim_dir, users)
        if dovecot:
            write_atomically(self.deny_file, "".join(f"{u}\n" for u in users))
        if postfix:
            text = "# maintained by mailban (sasl-disable): do not edit, use `mailban unban --user`\n"
            text += "".join(f"{u} REJECT {self.reject_text}\n" for u in users)
            if _unchanged(self.postfix_map, text):
                return []  # nothing to rebuild or reload (a start with the same accounts disabled)
            write_atomically(self.postfix_map, text)
            run([*self.postmap, f"{self.map_type}:{self.postfix_map}"], timeout=self.timeout)
            try:
                run(self.reload, timeout=self.timeout)
            except ActionError as exc:
                # The map itself is in place: postfix daemons notice a changed map by themselves
                # (and a postfix that is not running reads it when it starts). The reload only
                # makes it immediate, so its failure is reported, not retried.
                problem = f"postfix reload failed (the map still applies within a minute): {exc}"
                log.warning("%s", problem)
                return [problem]
        return []

    @staticmethod
    def _is_mask(user: str) -> bool:
        """Would `doveadm kick` read this name as a mask that matches other users' sessions?"""
        if "*" in user or "?" in user:
            return True
        try:
            ipaddress.ip_network(user, strict=False)
            return True
        except ValueError:
            return False

    def _kick(self, user: str) -> str | None:
        """Kick the user's open sessions; what went wrong, or None."""
        if not self.kick:
            return None
        if self._is_mask(user):
            log.warning("not kicking %r: doveadm kick would read it as a mask matching other users' "
                        "sessions (the deny file still blocks its next login)", user)
            return None
        try:
            run([*self.kick, user], timeout=min(10, self.timeout))
        except ActionError as exc:
            # dovecot down or no session: the deny file already blocks every new login.
            if "not running" in str(exc) or "exited with 68" in str(exc):
                return None
            problem = f"doveadm kick {user!r} failed (its open sessions may go on): {exc}"
            log.warning("%s", problem)
            return problem
        return None
