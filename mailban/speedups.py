"""Whether mailban uses its C module, `mailban.core._speedups` (see its source for what it does).

Installing mailban compiles it where a C compiler and the Python headers are present
(hatch_build.py); without it, or with MAILBAN_NO_SPEEDUPS=1 in the environment, the same Python
code runs alone, slower and with the same results (tests/test_speedups.py compares the two).
The choice lives here, outside mailban.core, which reads no environment.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .core.records import Event

_configured = False


def speedups() -> Any:
    """The C module, or None where it is not built or switched off (read at each call, so that
    tests can compare both paths in one process)."""
    if os.environ.get("MAILBAN_NO_SPEEDUPS") == "1":
        return None
    global _configured
    try:
        from .core import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    if not _configured:
        # The C module reads and builds Events by position: it takes the positions from the
        # record's own definition, and is not used if the record lacks a field it needs.
        try:
            _speedups.configure(Event._fields)
        except (ValueError, TypeError) as exc:
            logging.getLogger("mailban").warning("the C module does not fit this Event (%s): Python only", exc)
            return None
        _configured = True
    return _speedups


def describe() -> str:
    """One line for `mailban check`: which code runs the hot loops."""
    if os.environ.get("MAILBAN_NO_SPEEDUPS") == "1":
        return "Python only (MAILBAN_NO_SPEEDUPS=1)"
    return "C (mailban.core._speedups)" if speedups() is not None else \
        "Python only (the C module was not built: install gcc and the Python headers, then reinstall)"
