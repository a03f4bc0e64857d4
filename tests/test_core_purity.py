"""mailban.core performs no I/O and reads no clock: its imports say so."""

from __future__ import annotations

import ast
from pathlib import Path

import mailban.core

FORBIDDEN = {"asyncio", "socket", "subprocess", "threading", "sqlite3", "time", "os", "select",
             "selectors", "signal", "shutil", "nftables", "inotify_simple"}


def test_core_imports_nothing_that_does_io() -> None:
    core = Path(mailban.core.__file__).parent
    offenders = []
    for path in core.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level > 0 and node.module is None:
                continue
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
