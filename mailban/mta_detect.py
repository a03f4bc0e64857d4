"""Which MTA receives this host's mail: what `mta = "auto"` (queue-hold, defer) and sasl-disable's
Exim side follow, and what `mailban check` reports.

Input: a filesystem root (default "/"; the tests pass Debian roots and built trees). Output: a
`Detected` (the MTA or None, and the evidence in words). Reads links and stats files only: never
runs a program, never raises.

Evidence, strongest first:
1. What `/usr/sbin/sendmail` resolves to, since that is the MTA local mail goes to: Debian's
   exim4 (`sendmail -> exim4`) and cPanel's exim, RHEL's alternatives (`/etc/alternatives/mta ->
   /usr/sbin/sendmail.postfix`, `sendmail.exim`, `sendmail.sendmail`), sendmail's own
   (`libexec/sendmail/`, `sm.bin/`, `sendmail-mta`). Debian's postfix installs a program of its
   own there, not a link, so it is found by 2.
2. Which MTAs are installed, each as its program and its configuration (a program alone may be
   left behind by a removed package, a configuration alone by a package removed but not purged):
   exim (`exim4` or `exim` in /usr/sbin, and /etc/exim4/, /etc/exim.conf or /etc/exim/exim.conf),
   postfix (`postconf` and /etc/postfix/main.cf), sendmail (`sendmail-mta` or
   /usr/libexec/sendmail/sendmail, and /etc/mail/sendmail.cf). Exactly one: that one. None or
   several: None, and the admin sets `mta` (which always wins over detection).
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

MTAS = ("exim", "postfix", "sendmail")
SENDMAIL = "usr/sbin/sendmail"
# MTA -> (its programs, its configurations), relative to the root
INSTALLED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "exim": (("usr/sbin/exim4", "usr/sbin/exim"), ("etc/exim4", "etc/exim.conf", "etc/exim/exim.conf")),
    "postfix": (("usr/sbin/postconf",), ("etc/postfix/main.cf",)),
    "sendmail": (("usr/sbin/sendmail-mta", "usr/libexec/sendmail/sendmail", "usr/lib/sm.bin/sendmail"),
                 ("etc/mail/sendmail.cf",)),
}


class Detected(NamedTuple):
    mta: str | None
    evidence: str


def _resolve(root: str, rel: str, hops: int = 10) -> list[str]:
    """The chain of paths `rel` links through, inside `root` (an absolute link target is taken
    from the root, not from this host); [] when `rel` does not exist."""
    chain = ["/" + rel]
    path = rel
    for _ in range(hops):
        full = os.path.join(root, path)
        try:
            target = os.readlink(full)
        except OSError:
            return chain if os.path.lexists(full) else []
        path = os.path.normpath(target.lstrip("/") if target.startswith("/")
                                else os.path.join(os.path.dirname(path), target))
        while path.startswith("../"):  # `..` above the root is the root, as for the kernel
            path = path[3:]
        chain.append("/" + path)
    return chain


def _named(path: str) -> str | None:
    """The MTA a program's path names, if any."""
    name = os.path.basename(path)
    if "exim" in name:
        return "exim"
    if "postfix" in name:
        return "postfix"
    if name in ("sendmail.sendmail", "sendmail-mta") or "/libexec/sendmail/" in path or "/sm.bin/" in path:
        return "sendmail"
    return None


def detect(root: str = "/") -> Detected:
    """Which MTA this host (or the tree at `root`) runs; see the module's docstring."""
    try:
        chain = _resolve(root, SENDMAIL)
        if len(chain) > 1:
            mta = _named(chain[-1])
            if mta is not None:
                return Detected(mta, f"{' -> '.join(chain)}")
        found = [mta for mta, (programs, configs) in INSTALLED.items()
                 if any(os.path.isfile(os.path.join(root, p)) for p in programs)
                 and any(os.path.exists(os.path.join(root, c)) for c in configs)]
    except (OSError, ValueError) as exc:  # a path we cannot read: no guess
        return Detected(None, f"cannot tell: {exc}")
    if len(found) == 1:
        programs, configs = INSTALLED[found[0]]
        shown = next(p for p in programs if os.path.isfile(os.path.join(root, p)))
        conf = next(c for c in configs if os.path.exists(os.path.join(root, c)))
        return Detected(found[0], f"/{shown} and /{conf} (the only MTA installed)")
    if found:
        return Detected(None, f"several MTAs installed ({', '.join(found)}): set `mta`")
    return Detected(None, "no MTA found (no exim, postfix or sendmail program with its configuration)")


@functools.lru_cache(maxsize=1)
def detected() -> Detected:
    """This host's answer, looked up once per process (the actions and `check` share it)."""
    return detect("/")


def choose(configured: str, allowed: tuple[str, ...], fallback: str = "postfix") -> tuple[str, str | None]:
    """The MTA an action works with: `configured` unless it is "auto", else the detected one when
    the action has a mode for it, else `fallback`. Also why, when it was detected (for check)."""
    if configured != "auto":
        return configured, None
    found = detected()
    if found.mta in allowed:
        return found.mta, f"detected {found.mta}: {found.evidence}"
    why = found.evidence if found.mta is None else f"detected {found.mta}, which this action has no mode for"
    return fallback, f"{why}; {fallback} assumed"


def following(actions: dict[str, tuple[str, dict[str, Any]]]) -> list[str]:
    """The actions (name -> (type, options)) that follow the detection: queue-hold and defer with
    `mta` "auto" or unset, sasl-disable with neither Exim list set."""
    names = []
    for name, (kind, options) in sorted(actions.items()):
        if kind in ("queue-hold", "defer") and options.get("mta", "auto") == "auto":
            names.append(name)
        elif kind == "sasl-disable" and "exim_list" not in options and "exim_dir" not in options:
            names.append(name)
    return names


def summary(actions: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """What `mailban check` shows: the detected MTA, why, and who follows it."""
    found = detected()
    return {"detected": found.mta, "evidence": found.evidence, "followed_by": following(actions)}
