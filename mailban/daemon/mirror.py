"""The daemon's mirror of the policy service's inline jails, brought up to date only when read.

Why: following every change batch the service sends (5,000 windows a second in bench/policy.py)
cost the daemon 0.45-0.78 us of CPU per log line, +14.8% per line while the service answered
20,000 requests a second, for a mirror that only status, explain, `ban --jail`, an unban, a
reload and the fork of a new service process read. The batches are committed to the database as
they came, undecoded (daemon/writer.py); here they wait (`behind`) until something reads the
mirror (`inline`, `jails`, `jail()`), which applies them in order first. A complete snapshot
(windowsync.SNAPSHOT, then every window whole: server.py) makes what came before it useless: the
mirror's windows are dropped and only the batches from the marker on are kept, so what waits here
is about one fold period's worth (FOLD_EVERY, FOLD_BYTES), and a read after that decodes only it.

Inputs: the child's change batches (bytes), in the order it sent them (`take`); `snapshot_done()`
when the child ended the snapshot it began. Outputs: the inline jails, level with every batch
taken, for whoever reads them; the windows whose change did not follow on from the mirror (never
seen: the link keeps the order), for `on_resend` (the child sends them whole).
Must never: hand out jails that are behind what was taken, or drop a batch it has not applied
unless a complete snapshot that began after it covers it.
"""

from __future__ import annotations

import time
from typing import Callable

from .. import checkpoint
from ..core.jails import Jail
from ..policy import windowsync
from ..policy.answer import Inline

# Past this many bytes waiting (no snapshot came: the child keeps dying, or does not answer),
# the batches are applied anyway, so that memory stays bounded.
MAX_BEHIND = 48 << 20


class Mirror:
    def __init__(self, inline: Inline | None = None, clock: Callable[[], float] = time.time,
                 on_resend: Callable[[list[windowsync.Key]], None] | None = None) -> None:
        self._inline = inline if inline is not None else Inline()
        self.clock = clock
        self.on_resend = on_resend
        self.behind: list[bytes] = []  # taken, not applied yet, in order
        self.behind_bytes = 0
        self._mark: int | None = None  # where in `behind` the snapshot being received began
        self.applied = 0  # batches applied: how often a read paid (tests, bench/policy.py)

    def take(self, blobs: list[bytes]) -> None:
        """Batches as the child sent them: kept, not decoded."""
        for blob in blobs:
            if len(blob) == len(windowsync.SNAPSHOT) and blob == windowsync.SNAPSHOT:
                self._mark = len(self.behind)
            self.behind.append(blob)
            self.behind_bytes += len(blob)
        if self.behind_bytes > MAX_BEHIND:
            self.catch_up()

    def snapshot_done(self) -> None:
        """The snapshot that began at the last marker ended: every window the child has came whole
        after it, before any change of its own, so the batches before it say nothing more."""
        if self._mark is None:  # applied meanwhile (a read): the mirror is level already
            return
        for jail in self._inline.jails:
            jail.windows.clear()
            jail.nets.clear()
        del self.behind[:self._mark]
        self.behind_bytes = sum(len(b) for b in self.behind)
        self._mark = None

    def catch_up(self) -> None:
        """Apply every batch waiting, in order."""
        if not self.behind:
            return
        blobs, self.behind, self.behind_bytes, self._mark = self.behind, [], 0, None
        self.applied += len(blobs)
        resend = windowsync.apply(self._inline.jails, blobs, self.clock(), note=False)
        if resend and self.on_resend is not None:
            self.on_resend(resend)

    @property
    def inline(self) -> Inline:
        """The inline jails, level with every batch taken."""
        self.catch_up()
        return self._inline

    @property
    def jails(self) -> list[Jail]:
        return self.inline.jails

    def own_changes(self) -> list[tuple[Jail, str, str]]:
        """The windows the daemon itself changed in the mirror (a ban noted, an unban: the jails
        note them), taken, to be saved whole in line with the child's batches; applies what
        waits first only when there are any (so that they are saved as they are after it)."""
        if not any(jail.touched for jail in self._inline.jails):
            return []
        return checkpoint.take_touched(self.inline.jails)

    def names(self) -> list[str]:
        """The inline jails' names (nothing to apply for that)."""
        return self._inline.names()

    def jail(self, name: str) -> Jail | None:
        return self.inline.jail(name)
