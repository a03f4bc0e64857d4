"""The package's layout stays what docs/architecture.md shows: the pipeline's core, its shells
(daemon/, cli/, offline/) and plugins (sources/, actions/, policy/), and no module over
~400 lines without the reason written at its top (a `Size:` paragraph in its docstring)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mailban"
LIMIT = 400


def test_large_modules_say_why_they_are_large() -> None:
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") <= LIMIT:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "\nSize: " not in "\n" + doc:
            unexplained.append(f"{path.relative_to(PACKAGE)} ({text.count(chr(10))} lines)")
    assert unexplained == []


def test_the_shells_are_folders() -> None:
    for folder in ("core", "sources", "actions", "daemon", "cli", "offline", "policy"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    # what used to sit at the top level, now in the folders above
    for gone in ("daemon.py", "daemon_commands.py", "daemon_cluster.py", "cli.py", "offline.py", "scan.py",
                 "report.py", "render.py"):
        assert not (PACKAGE / gone).exists(), gone


def test_every_relative_import_names_a_module_that_exists() -> None:
    """Imports inside functions (kept lazy for start-up time) are only resolved when they run:
    check every `from .x import y` against the tree, so that a moved module cannot leave one
    dangling until an admin runs that command."""
    import importlib.util

    dangling = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1]  # the package a module (or an __init__) imports relative to
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            for name in names:
                try:
                    found = importlib.util.find_spec(name) is not None
                except ModuleNotFoundError:
                    found = False
                if not found and node.module is None:
                    continue  # `from . import x` where x is an attribute, not a module
                if not found:
                    dangling.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {name}")
    assert dangling == []
