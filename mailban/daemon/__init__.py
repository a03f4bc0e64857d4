"""The daemon: the shell around the pipeline (see loop.py for how its parts fit)."""

from .loop import Daemon

__all__ = ["Daemon"]
