"""kill -9 under load with rotations (short version of bench/crash.py): nothing lost or doubled.

The daemon follows a log in a network namespace with real nftables while a writer appends 3,000
lines/s for 12 s with a rotation every 3 s (rename and copytruncate alternately); it is killed
with SIGKILL 3 times at random moments and restarted at once. Afterwards the persisted line counter
equals the lines written, exactly the addresses with 3 failures are banned (once each, with 3
distinct lines), none with 2 is, and the kernel sets equal the database. Before the windows were
committed with the positions, the same run lost most bans (23 of 150 banned).
Needs root; skipped otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .bench_modules import load

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables)"),
]

def test_kill_9_three_times_under_load_with_rotations(tmp_path: Path) -> None:
    crash = load("crash")
    figures = crash.scenario(tmp_path, kills=3, seconds=12, rate=3000, rotate=3, banned=150, near=150,
                             seed=int.from_bytes(os.urandom(2), "big"), say=lambda s: print("\n" + s))
    assert not figures["failed"], figures
    assert figures["written"] == figures["read"] == 36_000
    assert figures["bans"] == figures["kernel"] == 150
    assert figures["starts"] == 4
