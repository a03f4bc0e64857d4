"""mailban: a ban daemon for mail hosts.

Mail logs (postfix, dovecot, sendmail) go in; typed events come out of the filters, jails count
them per key within a find-time window, and actions (nftables sets first) carry the decisions
out. See docs/ and ../shared/DESIGN.md for the architecture.
"""

__version__ = "0.1.0"


def _inotify_stand_in() -> None:
    """Debian has no python3-inotify-simple: where that library is missing, the few calls
    mailban makes come from mailban/inotify_fallback.py, registered under its name."""
    import importlib.util
    import sys

    if "inotify_simple" not in sys.modules and importlib.util.find_spec("inotify_simple") is None:
        from . import inotify_fallback

        sys.modules["inotify_simple"] = inotify_fallback


_inotify_stand_in()
