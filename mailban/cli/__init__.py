"""The command line: `mailban run|test|replay|check|status|ban|unban|explain|...` (main.py), how
the daemon's answers are shown (render.py), shell completion (completion.py)."""

from .main import main

__all__ = ["main"]
