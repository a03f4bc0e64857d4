"""Parse TOML text and locate keys in it, so that refusals name a line and a column.

Inputs: the text of a TOML file and its name. Output: a `TomlDoc` whose `data` is the parsed
document and whose `where(path)` gives the (line, column) of a key's value or a table header.
tomli reports syntax errors with a position but keeps no positions for valid documents, so the
locator re-scans the text for table headers and `key =` lines. It is only used on the error path.
Must never: read files (callers do), or raise anything but ConfigError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import tomli

from .errors import ConfigError

_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=\s*")

Path = tuple[Any, ...]


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+", text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


@dataclass
class TomlDoc:
    path: str
    text: str
    data: dict[str, Any]
    _index: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, keys: Path) -> tuple[int, int]:
        """(line, column) of the value at `keys`, else of the nearest enclosing table."""
        if not self._index:
            self._build_index()
        keys = tuple(keys)
        while keys:
            if keys in self._index:
                return self._index[keys]
            keys = keys[:-1]
        return (1, 1)

    def error(self, keys: Path, message: str) -> ConfigError:
        line, col = self.where(keys)
        return ConfigError(self.path, line, col, message)

    def _build_index(self) -> None:
        table: Path = ()
        arrays: dict[Path, int] = {}
        for lineno, line in enumerate(self.text.splitlines(), start=1):
            stripped = line.lstrip()
            if not stripped or stripped.startswith("#"):
                continue
            m = _HEADER.match(line)
            if m and not _KEY.match(line):
                name = _split_key(m.group(2))
                if m.group(1) == "[[":
                    arrays[name] = arrays.get(name, -1) + 1
                    table = name + (arrays[name],)
                else:
                    table = name
                self._index.setdefault(table, (lineno, line.index("[") + 1))
                continue
            m = _KEY.match(line)
            if m:
                keys = table + _split_key(m.group(1))
                self._index.setdefault(keys, (lineno, m.end() + 1))


def parse_toml(text: str, path: str) -> TomlDoc:
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        col = getattr(exc, "colno", None)
        msg = getattr(exc, "msg", str(exc))
        if line is None:
            m = _POS.search(str(exc))
            line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
            msg = _POS.sub("", str(exc)).strip()
        raise ConfigError(path, line, col or 1, _explained(text, line, msg)) from None
    return TomlDoc(path, text, data)


# `findtime = 10m`: a duration written as the admin says it, without the quotes TOML wants.
_BARE_DURATION = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=\s*(\d+(?:\.\d+)?\s*[A-Za-z]+)\s*(?:#.*)?$")


def _explained(text: str, line: int, msg: str) -> str:
    """tomli's message, or a sentence an admin acts on for the mistakes they make most."""
    lines = text.splitlines()
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    bare = _BARE_DURATION.match(source)
    if bare:
        key, value = bare.group(1), bare.group(2)
        return f"durations are strings in TOML: write {key} = \"{value}\" (with the quotes)"
    return f"TOML syntax error: {msg}"
