"""The one error type a configuration, filter or action file is refused with."""

from __future__ import annotations


class ConfigError(Exception):
    """A refused file: where (file, 1-based line and column) and a sentence saying what is wrong."""

    def __init__(self, path: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{column}: {message}")
        self.path = path
        self.line = line
        self.column = column
        self.message = message
