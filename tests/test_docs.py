"""Every example in the docs is run: TOML blocks marked `# file: PATH` are written into a
configuration directory per document and loaded (filters and actions validated too), `# file:`
log blocks become files, and `# command: mailban ...` blocks are run there and their JSON output
compared with the block (the keys the block shows). The man pages render without warnings."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailban import config
from mailban.actions import registry

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(doc: Path) -> list[tuple[str, str, str]]:
    """(language, first-line marker, body) of each fenced block that has a marker."""
    found = []
    for lang, body in BLOCK.findall(doc.read_text()):
        first, _, rest = body.partition("\n")
        m = re.match(r"# (file|command): (.+)$", first)
        if m:
            found.append((m.group(1), m.group(2).strip(), rest if m.group(1) == "command" else body))
    return found


DOCUMENTS = sorted(p for p in DOCS.glob("*.md") if blocks(p))


@pytest.mark.parametrize("doc", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_examples_in_doc(doc: Path, tmp_path: Path) -> None:
    found = blocks(doc)
    files = [(target, body) for kind, target, body in found if kind == "file"]
    for target, body in files:
        path = tmp_path / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    main = tmp_path / "mailban.toml"
    if not main.exists():  # drop-ins and filters apply on top of the shipped default
        shutil.copy(config.SHIPPED_DEFAULT, main)
    cfg = config.load(str(main))
    for target, _body in files:
        if target.startswith("actions.d/"):
            registry.validate(cfg.actions[Path(target).stem])
        if target.startswith("filters.d/"):
            assert Path(target).stem in {f.name for f in cfg.filters}
    for kind, command, expected in found:
        if kind != "command":
            continue
        argv = shlex.split(command)
        assert argv[0] == "mailban"
        proc = subprocess.run([sys.executable, "-m", "mailban", *argv[1:], "--config", str(main)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        got = [json.loads(line) for line in proc.stdout.splitlines()]
        want = [json.loads(line) for line in expected.splitlines() if line.strip()]
        assert [{k: g.get(k) for k in w} for g, w in zip(got, want)] == want and len(got) == len(want)


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("page", ["mailban.1", "mailban.toml.5"])
def test_man_pages_render_cleanly(page: str) -> None:
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(DOCS / "man" / page)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_every_command_is_in_the_man_page() -> None:
    from mailban.cli.main import COMMANDS

    page = (DOCS / "man" / "mailban.1").read_text()
    missing = [c for c in COMMANDS if f"mailban {c}".replace("-", "\\-") not in page and f"B {c}".replace("-", "\\-") not in page]
    assert missing == []


def test_every_option_of_every_command_is_in_the_man_page() -> None:
    """`replay --report`, `--html`, `check --config`, `ban --force`...: the page a 3 a.m. admin
    reads must name every option the commands take."""
    import argparse

    from mailban.cli.main import build_parser

    page = (DOCS / "man" / "mailban.1").read_text().replace("\\-", "-")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = sorted({f"{name} {opt}" for name, p in sub.choices.items() for action in p._actions
                      for opt in action.option_strings if opt.startswith("--") and opt != "--help"
                      and opt not in page})
    assert missing == []


def test_the_configuration_reference_documents_exactly_the_jail_fields() -> None:
    """docs/configuration.md's `[jail.NAME]` table and mailban/jail_fields.py (which validates
    the settings and which `check --json` shows) name the same settings."""
    from mailban.jail_fields import JAIL_FIELDS

    text = (DOCS / "configuration.md").read_text()
    section = text[text.index("## `[jail.NAME]`"):text.index("## How counting works")]
    documented = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first_cell = row.split(" | ")[0]
            documented |= {name for name in re.findall(r"`([a-z_0-9]+)", first_cell)}
    assert documented == set(JAIL_FIELDS), (
        f"undocumented: {sorted(set(JAIL_FIELDS) - documented)}; not a setting: {sorted(documented - set(JAIL_FIELDS))}")


def test_check_json_shows_every_jail_field() -> None:
    from mailban.jail_fields import JAIL_FIELDS

    out = subprocess.run([sys.executable, "-m", "mailban", "check", "--json", "--config", str(config.SHIPPED_DEFAULT)],
                         capture_output=True, text=True, check=True).stdout
    checked = json.loads(out)
    for jail in checked["jails"]:
        assert set(JAIL_FIELDS) <= set(jail), jail["name"]
    from mailban.settings_fields import SETTINGS_FIELDS

    assert set(checked["settings"]) == set(SETTINGS_FIELDS)


def test_the_configuration_reference_documents_exactly_the_settings() -> None:
    """docs/configuration.md's `[mailban]` table, mailban/settings_fields.py (which validates the
    settings) and config.Settings name the same settings."""
    import dataclasses

    from mailban.settings_fields import SETTINGS_FIELDS

    text = (DOCS / "configuration.md").read_text()
    section = text[text.index("## `[mailban]`"):text.index("### Log line formats")]
    documented = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            documented |= set(re.findall(r"`([a-z_0-9]+)`", row.split(" | ")[0]))
    assert documented == set(SETTINGS_FIELDS), (
        f"undocumented: {sorted(set(SETTINGS_FIELDS) - documented)}; "
        f"not a setting: {sorted(documented - set(SETTINGS_FIELDS))}")
    attributes = {f.name for f in dataclasses.fields(config.Settings)}
    assert set(SETTINGS_FIELDS) <= attributes, sorted(set(SETTINGS_FIELDS) - attributes)
