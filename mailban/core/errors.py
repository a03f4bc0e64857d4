"""The one error type a configuration, filter or action file is refused with."""

from __future__ import annotations


class ConfigError(Exception):
    """A refused file: where (file, 1-based line and column) and a sentence saying what is wrong.

    One refusal may hold several errors (`errors`, in file order, this one first): an admin fixes
    a file in one go rather than one complaint per `mailban check`."""

    def __init__(self, path: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{column}: {message}")
        self.path = path
        self.line = line
        self.column = column
        self.message = message
        self.errors: list[ConfigError] = [self]

    @staticmethod
    def of(errors: list[ConfigError]) -> ConfigError:
        """One refusal for all of `errors` (not empty): the first, carrying the others."""
        flat = sorted((e for error in errors for e in error.errors), key=lambda e: (e.path, e.line, e.column))
        first = flat[0]
        first.errors = flat
        if len(flat) > 1:
            first.args = ("\n".join(f"{e.path}:{e.line}:{e.column}: {e.message}" for e in flat),)
        return first
