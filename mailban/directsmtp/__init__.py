"""Direct outbound SMTP per local uid, seen by the kernel (issue 18; docs/direct-smtp.md).

A hacked web application often speaks SMTP to remote MX hosts itself, bypassing the local MTA,
its logs and its limits. mailban sees it with an nftables output chain that counts new TCP
connections to remote ports 25/465/587 per sending socket's owner (`meta skuid`), leaving out
the MTA's own users and an allow list of destinations.

Modules, each with one job:
- kernel.py: the chains and sets in mailban's table (counting, exclusions, per-uid blocks, the
  optional blanket rule), read and written through libnftables;
- procs.py: which processes (pid, command line, working directory) hold a uid's SMTP sockets now;
- source.py: the `direct-smtp` source: polls the counters, turns what grew into `direct-smtp`
  events (key `uid`) for the jails, and keeps the counters it has seen as its position, so that
  connections made while mailban was stopped are counted at the next start.
The per-uid block is the `direct-smtp-block` action (mailban/actions/direct_smtp_block.py).
"""
