"""mailban as a Postfix policy delegation service (postfix's SMTPD_POLICY_README protocol).

protocol.py: bytes in, requests out (no I/O); answer.py: the answer as a pure function of the
request, the decisions mailban acts on and the inline jails; server.py: the socket loop, in a
thread of its own, that fails open. docs/policy.md says how postfix is configured.
"""
