"""The plugin interfaces: every registered action kind is an ActionBase with the Action interface
and its capabilities declared; every registered source kind builds a Source; the daemon calls
those interfaces instead of asking an action what it has. No sockets, no root."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailban import sources
from mailban.actions import registry
from mailban.actions.base import Action, ActionBase, ActionContext
from mailban.config import Settings
from mailban.core.records import Ban
from mailban.sources.journal import JournalSource
from mailban.sources.tail import FileTail

ROOT = Path(__file__).resolve().parent.parent
# The options an action kind needs at the least (the others take none).
MINIMAL: dict[str, dict[str, Any]] = {"exec": {"ban": ["/bin/true", "{key}"]}}
CAPABILITIES = ("one_timeout_per_key", "self_expiring", "undoable", "holds_mail")


@pytest.mark.parametrize("kind", sorted(registry.TYPES))
def test_every_action_kind_has_the_declared_interface(kind: str, tmp_path: Path) -> None:
    cls = registry.load(kind)
    assert issubclass(cls, ActionBase)
    for flag in CAPABILITIES:
        assert isinstance(getattr(cls, flag), bool), flag
    cls.validate(MINIMAL.get(kind, {}))
    with pytest.raises(ValueError, match="`no_such_option`"):
        cls.validate({**MINIMAL.get(kind, {}), "no_such_option": "x"})
    try:
        action = cls(kind, MINIMAL.get(kind, {}), ActionContext(state_dir=str(tmp_path)))
    except ImportError as exc:  # nft without libnftables' Python binding
        pytest.skip(f"{kind} needs {exc}")
    assert isinstance(action, Action)
    assert action.name == kind
    # The capabilities only queue-hold has: answered by every action, without a probe.
    assert action.held_for("user", "alice") == []
    assert action.purge("user", "alice") == 0


def test_the_defaults_of_a_minimal_action() -> None:
    class Minimal(ActionBase):
        def ban(self, bans: list[Ban]) -> list[str]:
            return []

    action = Minimal("minimal", {})
    assert isinstance(action, Action)
    assert (action.one_timeout_per_key, action.self_expiring, action.undoable, action.holds_mail) == \
        (False, False, True, False)
    assert action.unban_all() is False  # the daemon undoes each ban with unban() instead
    assert action.health() is None and action.check() is None and action.tick(0.0) is None
    assert action.held_for("ip", "192.0.2.1") == [] and action.purge("ip", "192.0.2.1") == 0
    with pytest.raises(ValueError, match="`x` is not an option"):
        Minimal.validate({"x": 1})
    with pytest.raises(NotImplementedError):
        ActionBase("bare", {}).ban([])


def test_the_daemon_does_not_probe_actions() -> None:
    """Capabilities are declared in ActionBase: no getattr/hasattr on an action anywhere."""
    for path in sorted((ROOT / "mailban" / "daemon").glob("*.py")):
        text = path.read_text()
        assert not re.search(r"(getattr|hasattr)\([^)]*impl", text), path.name


def test_source_kinds_are_registered_and_importable() -> None:
    assert set(sources.KINDS) == {"file", "journal"}
    for kind in sources.KINDS:
        assert callable(sources.factory(kind))
    with pytest.raises(KeyError):
        sources.factory("no-such-kind")


def test_file_source_from_the_registry(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"one\ntwo\npart")
    settings = Settings(logs=(str(log),), journal=False)
    assert sources.wanted(settings) == [("file", str(log))]
    src = sources.create("file", str(log), settings, None, from_end=False)
    assert isinstance(src, FileTail) and isinstance(src, sources.Source)
    assert src.watch_dir == str(tmp_path) and src.fileno() == -1
    assert src.read_lines(10) == [b"one", b"two"]
    assert src.status() == {"exists": True}
    assert src.backlog() == len(b"part")
    saved = src.position.to_dict()
    src.close()
    with log.open("ab") as fh:
        fh.write(b"\nthree\n")
    again = sources.create("file", str(log), settings, saved, from_end=True)
    assert again.read_lines(10) == [b"part", b"three"]
    again.close()


def test_journal_source_has_the_interface() -> None:
    src = JournalSource(journalctl="/nonexistent/journalctl")
    try:
        assert isinstance(src, sources.Source)
        assert src.path == "journal" and src.watch_dir is None and src.fileno() == -1
        assert src.read_lines(10) == [] and src.backlog() is None
        status = src.status()
        assert status["exists"] is False and "cannot run journalctl" in status["error"]
        assert src.position.to_dict() == {"cursor": None}
    finally:
        src.close()


def test_which_sources_the_settings_ask_for(tmp_path: Path) -> None:
    present, missing = tmp_path / "mail.log", tmp_path / "gone.log"
    present.write_text("")
    base = Settings(logs=(str(missing),))
    assert sources.wanted(replace(base, journal=True)) == [("journal", "journal")]
    assert sources.wanted(replace(base, journal=False)) == [("file", str(missing))]
    # auto: the files when one of them exists, else the journal when there is one to read
    assert sources.wanted(replace(base, logs=(str(present), str(missing)))) == \
        [("file", str(present)), ("file", str(missing))]
    assert sources.wanted(replace(base, journal_files=(str(tmp_path / "x.journal"),))) == [("journal", "journal")]
