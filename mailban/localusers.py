"""Local login names to uids, for the pipeline's Pipeline.uid_of (outside the pure core).

Exim logs a local submission (sendmail(1), PHP mail()) with the login name of its caller,
`U=www-data`, where postfix's pickup logs `uid=33`: the uid jails count uids, and the queue-hold
actions act on them, so the name is resolved here with the password database (NSS: files, LDAP,
sssd), once per name. A name that does not resolve (a log read on another host, an account
removed since) gives no uid: the submission is then counted by no jail, rather than under a guess;
`mailban test --json` still shows it with its sender and line.

Must never: be imported by mailban.core (tests/test_core_purity.py).
"""

from __future__ import annotations

import pwd
from functools import lru_cache
from typing import Callable


@lru_cache(maxsize=4096)
def uid_of(name: str) -> int | None:
    """The uid of a local login name, or None (bounded cache: names come from log text)."""
    try:
        return pwd.getpwnam(name).pw_uid
    except (KeyError, ValueError):  # unknown, or a name with a NUL byte
        return None


def resolver(names: dict[str, int]) -> Callable[[str], int | None]:
    """uid_of, with the configuration's `local_uids` (name -> uid) looked at first."""
    if not names:
        return uid_of

    def resolve(name: str) -> int | None:
        uid = names.get(name)
        return uid if uid is not None else uid_of(name)

    return resolve
