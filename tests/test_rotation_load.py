"""Rotation under load (short version of bench/rotation.py): nothing lost, nothing twice, RSS flat.

The daemon follows a log in a network namespace with real nftables while a writer appends
10,000 lines/s for 20 s and rotates it every 5 s (rename and copytruncate alternately). The
daemon's persisted line counter must equal the lines written, exactly the planned addresses must
be banned (kernel = database), and its resident memory must stay flat once warmed up.
Needs root; skipped otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.bench_modules import load

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables)"),
]


def test_rotation_every_5s_at_10000_lines_per_second(tmp_path: Path) -> None:
    crash = load("crash")
    figures = crash.scenario(tmp_path, kills=0, seconds=20, rate=10_000, rotate=5, banned=300, near=300,
                             seed=7, say=lambda s: None, rss_every=2.0)
    rss = figures.pop("rss")
    print(f"\n{figures}\nrss (s, MB, lines): {rss}")
    assert not figures["failed"], figures
    assert figures["written"] == figures["read"] == 200_000
    assert figures["rotations"][:3] == ["rename", "copytruncate", "rename"]
    warm = [mb for t, mb, _lines in rss if t >= 6]
    assert warm and max(warm) - min(warm) < 15, rss
