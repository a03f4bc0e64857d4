"""mailban: a ban daemon for mail hosts.

Mail logs (postfix, dovecot, sendmail) go in; typed events come out of the filters, jails count
them per key within a find-time window, and actions (nftables sets first) carry the decisions
out. See docs/ and ../shared/DESIGN.md for the architecture.
"""

__version__ = "0.1.0"

