"""What keeps the policy service's answers from waiting on its own process: its CPU priority
against the daemon's log reading, and the cycle collector run in the loop's idle gaps.

Why: postfix's smtpd waits for every answer (RCPT by RCPT), while the daemon's log reading can
lag by a few milliseconds harmlessly. On a busy host the service's process competes for the
cores with the daemon parsing a log flood and with postfix itself. `policy_nice` can put it a
few steps above the daemon's own log reading; it is 0 by default because the runs measured no
gain from -5 once the load generator ran in a session of its own, as postfix does (docs/policy.md).
And the collector: every few thousand requests a gen0 collection (0.3-0.5 ms here, longest
pauses 2-3 ms with gen1) held back the requests that arrived meanwhile; run between requests it
holds back none, except those that arrive during it.

Inputs: the `policy_nice` setting (steps, relative to the daemon's nice value); the loop's
calls when nothing is readable (`IdleCollector.idle`), or when no idle gap came for LATE_GEN0
allocations (`overdue`). Outputs: the child's nice value, its collections.
Must never: raise (an unprivileged daemon keeps its priority, said once in the log), use a
real-time policy (SCHED_FIFO on a Python loop that a bug could spin would starve the host), or
let memory grow without bound because the loop is never idle (it collects between turns past
LATE_GEN0 allocations, and the collector's own threshold stays, HARD_GEN0, for a loop stuck in
one turn).
Note: nice orders the processes of one session (the daemon and its child); with the kernel's
autogroups, processes of other sessions (postfix's, an admin's shell) share the CPU by group.
"""

from __future__ import annotations

import gc
import os

SOFT_GEN0 = 700  # CPython's own gen0 threshold: what the idle gaps collect at
SOFT_GEN1, SOFT_GEN2 = 10, 10  # likewise: a gen1 every 10 gen0 collections, a full one every 10 gen1
# A loop with no idle gap for this many allocations collects anyway, between two turns (a gen0
# pause about twice the usual, instead of two): what a saturated loop pays.
LATE_GEN0 = 2 * SOFT_GEN0
# The collector's own threshold while the loop collects in its gaps, which only a loop stuck in
# one turn reaches (then it collects as it always did, in the middle of that turn).
HARD_GEN0 = 20 * SOFT_GEN0


def renice(steps: int) -> str:
    """Raise (negative `steps`) or lower this thread's CPU priority by `steps` nice values from
    what it inherited (threads started after inherit it); "" when done, else why not (an
    unprivileged daemon cannot raise it: no root or CAP_SYS_NICE)."""
    if not steps:
        return ""
    try:
        # PRIO_PROCESS with 0: on Linux the calling thread (nice is per thread), so called before
        # the child starts its link thread
        now = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, max(-20, min(19, now + steps)))
    except OSError as exc:
        return f"cannot change its nice value by {steps}: {exc.strerror or exc}"
    return ""


class IdleCollector:
    """The cycle collector, run when the loop has nothing to read: `install()` after gc.freeze()
    raises gen0's threshold to HARD_GEN0; `idle()` then collects the generation CPython would
    have at its usual thresholds (SOFT_*), at most one collection per call."""

    def __init__(self) -> None:
        self.installed = False
        self.collections = [0, 0, 0]  # collections run from idle(), per generation

    def install(self) -> None:
        _, t1, t2 = gc.get_threshold()
        gc.set_threshold(HARD_GEN0, t1, t2)
        self.installed = True

    def due(self) -> bool:
        """A collection would have run by now at CPython's usual threshold."""
        return self.installed and gc.get_count()[0] >= SOFT_GEN0

    def overdue(self) -> bool:
        """No idle gap came for LATE_GEN0 allocations: collect between turns anyway."""
        return self.installed and gc.get_count()[0] >= LATE_GEN0

    def idle(self) -> None:
        """The loop has nothing to read: the collection due, if one is."""
        count0, count1, count2 = gc.get_count()
        if not self.installed or count0 < SOFT_GEN0:
            return
        # (CPython's rule also waits for a full collection until a quarter of the long-lived
        # objects are new; after gc.freeze() the long-lived heap is small, so every tenth gen1)
        generation = 2 if count2 >= SOFT_GEN2 else 1 if count1 >= SOFT_GEN1 else 0
        gc.collect(generation)
        self.collections[generation] += 1
