"""Log injection, property-based: attacker text never moves the address an event carries.

For every shipped rule there is a template of the line its program really writes (formats from
tests/filters/*.log), with the client's real address at the MTA's own position and every field a
client or a local user chooses (HELO, user names, sender and recipient addresses, SASL reasons,
dovecot user=<...> and session, sendmail arg1/msgid, postscreen command text, DNS host names)
left as a slot. Hypothesis fills the slots with hostile text: forged addresses, `rip=`,
`relay=[...]`, `from host[ip]`, `unknown[ip]`, `, user=`, quotes, commas, brackets, angle
brackets, parentheses and arbitrary characters. The property: every event any shipped filter
produces for the line carries the real address, or no address; a forged one never appears.
Templates of lines that must produce no event (greylisting, disconnects) are in the set too, so
that a hostile field cannot make another rule match either.

Examples per template: MAILBAN_FUZZ_EXAMPLES (default 120; docs/security.md gives the figures of a
long run). A failing example is printed by hypothesis with the template's name.
"""

from __future__ import annotations

import os
import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mailban.core.syslog import SyslogParser
from tests.filter_samples import NOW, all_filters

EXAMPLES = int(os.environ.get("MAILBAN_FUZZ_EXAMPLES", "120"))
REAL4, REAL6 = "198.51.100.77", "fd42:6d62::77"
FORGED = ["6.6.6.6", "203.0.113.66", "2001:db8::666", "fd42:6d62::666", "::ffff:6.6.6.6", "66.6.6.6"]
FILTERS = all_filters()

# Fragments that look like the places where MTAs write the client.
_FRAGMENTS = [
    *FORGED,
    *(f"[{ip}]" for ip in FORGED), *(f"unknown[{ip}]" for ip in FORGED), *(f"rip={ip}" for ip in FORGED),
    *(f"relay=[{ip}]" for ip in FORGED), *(f"from host[{ip}]" for ip in FORGED),
    *(f"[IPv6:{ip}]" for ip in FORGED if ":" in ip), *(f"[{ip}]:25" for ip in FORGED),
    ", rip=6.6.6.6, lip=198.51.100.1", ", relay=[6.6.6.6]", ", relay=evil [6.6.6.6]", " [6.6.6.6]",
    "from unknown[6.6.6.6]: ", ", sasl_username=", ", user=", "user=<", ">, method=PLAIN", "), ",
    ",6.6.6.6", ",6.6.6.6,<s>", "): Password mismatch", "): unknown user", " (may be forged)",
    ", lip=", ": Relay access denied; ", "; from=<", "> to=<", " proto=ESMTP helo=<", "client=",
    "(auth failed, 1 attempts in 2 secs)", ": possible SMTP attack: command=AUTH, count=3",
    "(x) [6.6.6.6] F=<y> rejected RCPT <z>: relay not permitted", "H=(x) [6.6.6.6]:25 ", "\" H=[6.6.6.6] ",
    ": 535 Incorrect authentication data (set_id=", " rejected after DATA: ", "SMTP call from [6.6.6.6] dropped: ",
    "<", ">", ",", "\"", "'", "(", ")", "[", "]", ": ", " ", "=", "\\", "$", ";", "IPv6:", "\t", "\x00",
]
_ALPHABET = string.printable.replace("\n", "").replace("\r", "") + "é\x7f"
hostile = st.one_of(
    st.text(alphabet=_ALPHABET, max_size=40),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(alphabet=_ALPHABET, max_size=6)), max_size=8).map("".join),
)
# DNS names (postfix and sendmail print the reverse name, which the attacker's DNS chooses; both
# validate it as a host name, so no spaces or brackets), sometimes numeric-looking.
dns_name = st.one_of(
    st.just("unknown"),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True),
    st.sampled_from(["6.6.6.6", "6.6.6.6.example", "rip=6.6.6.6", "relay=6.6.6.6"]),
)

# name -> (program, message with {ip} for the real client and {a}..{e} for attacker text and
#          {h} for a DNS name, the rule it is expected to produce with harmless values or None)
TEMPLATES: dict[str, tuple[str, str, str | None]] = {
    "postfix.sasl-auth-failed": ("postfix/smtpd", "warning: {h}[{ip}]: SASL PLAIN authentication failed: {a}, sasl_username={b}", "postfix.sasl-auth-failed"),
    "postfix.sasl-auth-failed-noreason": ("postfix/submission/smtpd", "warning: {h}[{ip}]: SASL LOGIN authentication failed: {a}", "postfix.sasl-auth-failed"),
    "postfix.sasl-login": ("postfix/smtpd", "4F2A31C0D1: client={h}[{ip}], sasl_method=PLAIN, sasl_username={a}", "postfix.sasl-login"),
    "postfix.relay-denied": ("postfix/smtpd", "NOQUEUE: reject: RCPT from {h}[{ip}]: 554 5.7.1 <{a}>: Relay access denied; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix.relay-denied"),
    "postfix.user-unknown": ("postfix/smtpd", "NOQUEUE: reject: RCPT from {h}[{ip}]: 550 5.1.1 <{a}>: Recipient address rejected: User unknown in local recipient table; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix.user-unknown"),
    "postfix.helo-rejected": ("postfix/smtpd", "NOQUEUE: reject: EHLO from {h}[{ip}]: 504 5.5.2 <{a}>: Helo command rejected: need fully-qualified hostname; proto=ESMTP helo=<{a}>", "postfix.helo-rejected"),
    "postfix.unknown-hostname": ("postfix/smtpd", "NOQUEUE: reject: RCPT from unknown[{ip}]: 550 5.7.25 Client host rejected: cannot find your hostname, [{ip}]; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix.unknown-hostname"),
    "postfix.rbl": ("postfix/smtpd", "NOQUEUE: reject: RCPT from {h}[{ip}]: 554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.example.org; {d}; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix.rbl"),
    "postfix.sender-domain-not-found": ("postfix/smtpd", "NOQUEUE: reject: RCPT from {h}[{ip}]: 450 4.1.8 <{b}>: Sender address rejected: Domain not found; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix.sender-domain-not-found"),
    "postfix.reject-other": ("postfix/smtpd", "NOQUEUE: reject: RCPT from {h}[{ip}]: 554 5.7.1 <{a}>: Recipient address rejected: Access denied; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix.reject-other"),
    "postfix.rate-limit": ("postfix/smtpd", "warning: Connection rate limit exceeded: 31 from {h}[{ip}] for service smtp", "postfix.rate-limit"),
    "postfix.too-many-errors": ("postfix/smtpd", "too many errors after RCPT from {h}[{ip}]", "postfix.too-many-errors"),
    "postfix.improper-pipelining": ("postfix/smtpd", "improper command pipelining after CONNECT from {h}[{ip}]: {a}", "postfix.improper-pipelining"),
    "postfix.non-smtp-command": ("postfix/smtpd", "warning: non-SMTP command from {h}[{ip}]: {a}", "postfix.non-smtp-command"),
    "postfix.greylisted(none)": ("postfix/smtpd", "NOQUEUE: reject: RCPT from {h}[{ip}]: 450 4.2.0 <{a}>: Recipient address rejected: Greylisted {d}; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", None),
    "postfix.disconnect(none)": ("postfix/smtpd", "disconnect from {h}[{ip}] ehlo=1 auth=1 {d}", None),
    "postfix.lost(none)": ("postfix/smtpd", "lost connection after {a} from {h}[{ip}]", None),
    "postfix-queue.client": ("postfix/smtpd", "4F2A31C0D1: client={h}[{ip}]", "postfix-queue.client"),
    "postfix-queue.pickup": ("postfix/pickup", "4F2A31C0D1: uid=1001 from=<{a}>", "postfix-queue.pickup"),
    "postfix-queue.queued": ("postfix/qmgr", "4F2A31C0D1: from=<{a}>, size=301, nrcpt=2 (queue active)", "postfix-queue.queued"),
    "postfix-queue.delivery": ("postfix/smtp", "4F2A31C0D1: to=<{a}>, relay=mx.example.net[203.0.113.9]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 {d})", "postfix-queue.delivery"),
    "postfix-queue.expired": ("postfix/qmgr", "4F2A31C0D1: from=<{a}>, status=expired, returned to sender", "postfix-queue.expired"),
    "postscreen.pregreet": ("postfix/postscreen", "PREGREET 11 after 0.07 from [{ip}]:41234: {a}", "postscreen.pregreet"),
    "postscreen.pipelining": ("postfix/postscreen", "COMMAND PIPELINING from [{ip}]:41234 after EHLO: {a}", "postscreen.pipelining"),
    "postscreen.non-smtp-command": ("postfix/postscreen", "NON-SMTP COMMAND from [{ip}]:41234 after CONNECT: {a}", "postscreen.non-smtp-command"),
    "postscreen.bare-newline": ("postfix/postscreen", "BARE NEWLINE from [{ip}]:41234 after {a}", "postscreen.bare-newline"),
    "postscreen.hangup": ("postfix/postscreen", "HANGUP after 2.1 from [{ip}]:41234 in tests after SMTP handshake", "postscreen.hangup"),
    "postscreen.command-limit": ("postfix/postscreen", "COMMAND COUNT LIMIT from [{ip}]:41234 after RCPT", "postscreen.command-limit"),
    "postscreen.rbl": ("postfix/postscreen", "NOQUEUE: reject: RCPT from [{ip}]:41234: 550 5.7.1 Service unavailable; client [{ip}] blocked using zen.example.org; from=<{b}>, to=<{a}>, proto=ESMTP, helo=<{c}>", "postscreen.rbl"),
    "postscreen.reject": ("postfix/postscreen", "NOQUEUE: reject: RCPT from [{ip}]:41234: 450 4.3.2 Service currently unavailable; from=<{b}>, to=<{a}>, proto=ESMTP, helo=<{c}>", "postscreen.reject"),
    "dovecot.auth-failed": ("dovecot", "imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, TLS, session=<ixm4yRdhC99/AAAa>", "dovecot.auth-failed"),
    "dovecot.auth-failed-aborted": ("dovecot", "pop3-login: Info: Aborted login (auth failed, 2 attempts in 6 secs): user=<{a}>, rip={ip}, lip=198.51.100.1, session=<ixm4yRdhC99/AAAa>", "dovecot.auth-failed"),
    "dovecot.login": ("dovecot", "imap-login: Login: user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, mpid=4242, TLS, session=<ixm4yRdhC99/AAAa>", "dovecot.login"),
    "dovecot-passdb.password-mismatch": ("dovecot", "auth-worker(4242): Info: passwd-file({u},{ip}): Password mismatch", "dovecot-passdb.password-mismatch"),
    "dovecot-passdb.unknown-user": ("dovecot", "auth: Info: passwd-file({u},{ip},<{b}>): unknown user", "dovecot-passdb.unknown-user"),
    "dovecot-passdb.sql-mismatch": ("dovecot", "auth-worker(4242): sql({u},{ip},<{b}>): Password mismatch (given password: {c})", "dovecot-passdb.password-mismatch"),
    "sendmail.auth-failed": ("sm-mta", "6AMBBxgF023550: AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: {d}, user={a}, relay=[{ip}]", "sendmail.auth-failed"),
    "sendmail.auth-failed-host": ("sm-mta", "6AMBBxgF023550: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user={a}, relay={h} [{ip}] (may be forged)", "sendmail.auth-failed"),
    "sendmail.auth-login": ("sm-mta", "AUTH=server, relay=[{ip}], authid={a}, mech=PLAIN, bits=0", "sendmail.auth-login"),
    "sendmail.rate-limit": ("sm-mta", "ruleset=check_relay, arg1={h}, arg2={ip}, relay=[{ip}], reject=421 4.3.2 Connection rate limit exceeded.", "sendmail.rate-limit"),
    "sendmail.check-relay": ("sm-mta", "ruleset=check_relay, arg1=[{ip}], arg2={ip}, relay=[{ip}], reject=550 5.7.1 {d}", "sendmail.check-relay"),
    "sendmail.relaying-denied": ("sm-mta", "6AMBCBPc023785: ruleset=check_rcpt, arg1=<{a}>, relay={h} [{ip}], reject=550 5.7.1 <{a}>... Relaying denied. Proper authentication required.", "sendmail.relaying-denied"),
    "sendmail.check-rcpt": ("sm-mta", "6AMBCBPc023785: ruleset=check_rcpt, arg1=<{a}>, relay=[{ip}], reject=550 5.1.1 <{a}>... User unknown", "sendmail.check-rcpt"),
    "sendmail.check-mail": ("sm-mta", "6AMBCBPc023785: ruleset=check_mail, arg1=<{b}>, relay=[{ip}], reject=553 5.1.8 <{b}>... Domain of sender address {c} does not exist", "sendmail.check-mail"),
    "sendmail.greet-pause": ("sm-mta", "rejecting commands from {h} [{ip}] due to pre-greeting traffic after 0 seconds", "sendmail.greet-pause"),
    "sendmail.smtp-attack": ("sm-mta", "6AMBCBPc023785: {h} [{ip}]: possible SMTP attack: command=AUTH, count=3", "sendmail.smtp-attack"),
    "sendmail.rcpt-flood": ("sm-mta", "6AMBCBPc023785: {h} [{ip}] (may be forged): Possible SMTP RCPT flood, throttling.", "sendmail.rcpt-flood"),
    "sendmail.no-mail-command": ("sm-mta", "6AMBCBPc023785: [{ip}] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA-v4", "sendmail.no-mail-command"),
    "sendmail-queue.queued": ("sm-mta", "6APBLP2s018515: from=<{b}>, size=18, class=0, nrcpts=1, msgid=<{c}>, proto=ESMTP, daemon=MTA-v4, relay={h} [{ip}]", "sendmail-queue.queued"),
    "sendmail-queue.sent": ("sm-mta", "6APBLP2s018515: to=<{a}>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=30023, relay=mx.example.net. [203.0.113.9], dsn=2.0.0, stat=Sent ({d})", "sendmail-queue.sent"),
    "sendmail-queue.deferred": ("sm-mta", "6APBLP2s018515: to=<{a}>, ctladdr=<{b}> (1001/1001), delay=00:00:00, xdelay=00:00:00, mailer=esmtp, pri=30277, relay={h}., dsn=4.4.3, stat=Deferred: {d}", "sendmail-queue.deferred"),
    "sendmail-queue.bounced": ("sm-mta", "6APBLP2s018515: to=<{a}>, delay=00:00:00, mailer=local, pri=30023, dsn=5.1.1, reply=550 5.1.1 {d}, stat=User unknown", "sendmail-queue.bounced"),
    # dovecot 2.4 (tests/filters/dovecot24.log): the reason and count of every ending, passdb lines
    "dovecot.auth-failed-24-mech": ("dovecot", "imap-login: Info: Login aborted: Connection closed (tried to use unsupported auth mechanism, 4 attempts in 18 secs) (invalid_mech): user=<{a}>, method=FOO, rip={ip}, lip=198.51.100.1, secured, session=<nhNMbbdhFdd/AAEL>", "dovecot.auth-failed"),
    "dovecot.auth-failed-23-base64": ("dovecot", "pop3-login: Disconnected (sent invalid base64 in response): user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, session=<ixm4yRdhC99/AAAa>", "dovecot.auth-failed"),
    "dovecot.auth-unfinished": ("dovecot", "imap-login: Info: Login aborted: Connection closed (client didn't finish SASL auth, 4 attempts in 33 secs) (auth_waiting_client): user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, secured, session=<mU5wbrdh/Zl/AAEM>", "dovecot.auth-unfinished"),
    "dovecot.login-24": ("dovecot", "imap-login: Info: Logged in: user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, mpid=21191, secured, session=<sMc0krZhpoR/AAAB>", "dovecot.login"),
    "dovecot-passdb.verbose-password": ("dovecot", "auth: Info: passwd-file({u},{ip},<nhNMbbdhFdd/AAEL>): Password mismatch (given password: {a})", "dovecot-passdb.password-mismatch"),
    "dovecot-passdb.next-passdb": ("dovecot", "auth: Info: passwd-file({u},{ip},<nhNMbbdhFdd/AAEL>): Password mismatch (given password: {a}) - trying the next passdb", "dovecot-passdb.password-mismatch"),
    "dovecot-passdb.password-mismatch-24": ("dovecot", "auth({u},{ip},sasl:plain)<nhNMbbdhFdd/AAEL>: Info: passwd-file: Password mismatch (given password: {a})", "dovecot-passdb.password-mismatch-24"),
    "dovecot-passdb.unknown-user-24": ("dovecot", "auth({u},{ip},sasl:plain)<jOabkbZhaMt/AAAB>: Info: passwd-file: unknown user", "dovecot-passdb.unknown-user-24"),
    # dovecot breadth (issue 13): lines without `in M secs`, `lip=`, `user=`; proxies; 2.4 codes
    "dovecot.auth-failed-no-secs": ("dovecot", "imap-login: Disconnected (auth failed, 1 attempts): user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, TLS", "dovecot.auth-failed"),
    "dovecot.auth-failed-no-lip": ("dovecot", "imap-login: Info: Disconnected: Inactivity (auth failed, 1 attempts in 180 secs): user=<{a}>, method=PLAIN, rip={ip}, TLS: Connection closed, session=<IUuNnrhh1dR/AAAY>", "dovecot.auth-failed"),
    "dovecot.auth-failed-no-user": ("dovecot", "pop3-login: Disconnected (auth failed, 3 attempts in 12 secs): rip={ip}, lip=198.51.100.1, TLS: Disconnected", "dovecot.auth-failed"),
    "dovecot.auth-failed-proxy-23": ("dovecot", "imap-login: Disconnected (proxy dest auth failed): user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, TLS, session=<IUuNnrhh1dR/AAAY>", "dovecot.auth-failed"),
    "dovecot.auth-failed-proxy-24": ("dovecot", "imap-login: Info: Login aborted: Connection closed (proxy dest authentication failure, 3/3 successful auths in 18 secs, last failure: {b}) (proxy_dest_auth_failed): user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, TLS, session=<IUuNnrhh1dR/AAAY>", "dovecot.auth-failed"),
    "dovecot.proxy-login": ("dovecot", "imap-login: proxy({a}): Started proxying to <192.0.2.10>: user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, TLS, session=<IUuNnrhh1dR/AAAY>", "dovecot.proxy-login"),
    "dovecot.proxy-login-22": ("dovecot", "imap-login: proxy({a}): started proxying to 192.0.2.10:143: user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, TLS, session=<IUuNnrhh1dR/AAAY>", "dovecot.proxy-login"),
    "dovecot.attempt-refused": ("dovecot", "imap-login: Info: Login failed: Plaintext authentication disabled: user=<{a}>, rip={ip}, lip=198.51.100.1, session=<l45onrhh9+Z/AAAM>", "dovecot.attempt-refused"),
    "dovecot.login-no-user": ("dovecot", "imap-login: Info: Login: method=PLAIN, rip={ip}, rport=37347, lip=198.51.100.1, mpid=10605, TLS, TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits), session=<awOlDLlh45F/AAAS>", "dovecot.login"),
    "dovecot.attempt-refused-no-user": ("dovecot", "pop3-login: Info: Login failed: Plaintext authentication disabled: rip={ip}, rport=34997, lip=198.51.100.1, session=<g1+9DLlhtYh/AAAd>", "dovecot.attempt-refused"),
    "dovecot.attempt-refused-proxy": ("dovecot", "imap-login: proxy({a}): Login failed to 10.0.0.21:143: {b}: user=<{a}>, method=PLAIN, rip={ip}, lip=198.51.100.1, TLS, session=<j2Pb0lhTFwDLAHEh>", "dovecot.attempt-refused"),
    "dovecot.attempt-refused-mech": ("dovecot", "pop3-login: Authenticate FOO failed: Unsupported authentication mechanism.: user=<{a}>, method=FOO, rip={ip}, lip=198.51.100.1, session=<l45onrhh9+Z/AAAM>", "dovecot.attempt-refused"),
    "dovecot.tls-failed": ("dovecot", "imap-login: Disconnected: Connection closed: SSL_accept() failed: error:0A00009C:SSL routines::http request (no auth attempts in 0 secs): user=<{a}>, rip={ip}, lip=198.51.100.1, TLS handshaking: SSL_accept() failed: error:0A00009C:SSL routines::http request, session=<ESGBnrhhJbt/AAAU>", "dovecot.tls-failed"),
    "dovecot.tls-failed-24": ("dovecot", "imap-login: Info: Login aborted: Connection closed (disconnected during TLS handshake) (tls_handshake_not_finished): user=<{a}>, rip={ip}, lip=198.51.100.1, TLS handshaking, session=<ESGBnrhhJbt/AAAU>", "dovecot.tls-failed"),
    "dovecot.no-auth-attempts": ("dovecot", "pop3-login: Disconnected: Connection closed (no auth attempts in 0 secs): user=<{a}>, rip={ip}, lip=198.51.100.1, session=<jrelnrhhX6R/AAAg>", "dovecot.no-auth-attempts"),
    "dovecot-passdb.pam-failed": ("dovecot", "auth-worker(4242): Info: conn unix:auth-worker (pid=4241,uid=0): auth-worker<3>: pam({u},{ip},<{b}>): pam_authenticate() failed: Authentication failure (Password mismatch?)", "dovecot-passdb.pam-failed"),
    "dovecot-passdb.pam-failed-22": ("dovecot", "auth-worker(4242): pam({u},{ip}): pam_authenticate() failed: Authentication failure (password mismatch?) (given password: {a})", "dovecot-passdb.pam-failed"),
    "dovecot-passdb.other-failure": ("dovecot", "auth: ldap({u},{ip}): invalid credentials (given password: {a})", "dovecot-passdb.other-failure"),
    "dovecot-passdb.pam-failed-24": ("dovecot", "auth-worker({u},{ip})<4242><nhNMbbdhFdd/AAEL>: request [3]: Info: pam: pam_authenticate() failed: Authentication failure (Password mismatch?) (given password: {a})", "dovecot-passdb.pam-failed-24"),
    "dovecot-passdb.other-failure-24": ("dovecot", "auth-worker({u},{ip})<4242><nhNMbbdhFdd/AAEL>: request [3]: shadow: invalid password field", "dovecot-passdb.other-failure-24"),
    "dovecot-passdb.login-failed": ("dovecot", "auth: checkpassword({u},{ip},<nhNMbbdhFdd/AAEL>): Login failed (status=1)", "dovecot-passdb.login-failed"),
    "dovecot-passdb.login-failed-24": ("dovecot", "auth({u},{ip},sasl:plain)<nhNMbbdhFdd/AAEL>: ldap: Login attempt with empty password", "dovecot-passdb.login-failed-24"),
    "dovecot-passdb.username-refused": ("dovecot", "auth: plain(?,{ip},<nhNMbbdhFdd/AAEL>): Username character disallowed by auth_username_chars: 0x2c (username: {a})", "dovecot-passdb.username-refused"),
    "dovecot-passdb.username-refused-24": ("dovecot", "auth(?,{ip},sasl:plain)<nhNMbbdhFdd/AAEL>: Info: plain: Username character disallowed by auth_username_chars: 0x3e (username: {a})", "dovecot-passdb.username-refused"),
    "dovecot-passdb.pam-module-failure": ("auth", "pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser={u} rhost={ip}  user={u}", "dovecot-passdb.pam-module-failure"),
    "dovecot-passdb.pam-module-failure-unknown": ("dovecot", "pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser={u} rhost={ip} ", "dovecot-passdb.pam-module-failure"),
    # postfix: the AUTH= parameter after the account, addresses holding `>`
    "postfix.sasl-login-sender": ("postfix/submission/smtpd", "4F2A31C0D1: client={h}[{ip}], sasl_method=PLAIN, sasl_username={u}, sasl_sender=<{a}>", "postfix.sasl-login"),
    "postfix.relay-denied-454": ("postfix/smtpd", "NOQUEUE: reject: RCPT from {h}[{ip}]: 454 4.7.1 <{a}>: Relay access denied; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix.relay-denied"),
    # sendmail: ident names, the AUTH failure's relay, the reply that does not echo the argument
    # sendmail cut `relay=%.100s` before the address: no address on the line (the session's later
    # line gives it, see correlate.py), and none that a user name could forge
    "sendmail.auth-failed-cut": ("sm-mta", "6AMBBxgF023550: AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: {d}, user={a}, relay=" + "m" * 86 + ".example.net [", "sendmail.auth-failed-cut"),
    "sendmail.auth-failed-ident": ("sm-mta", "6AMBBxgF023550: AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: Password verification failed, user={a}, relay={i}@[{ip}]", "sendmail.auth-failed"),
    "sendmail.relaying-denied-ident": ("sm-mta", "6AMBCBPc023785: ruleset=check_rcpt, arg1=<{a}>, relay={i}@{h} [{ip}], reject=550 5.7.1 <{a}>... Relaying denied. Proper authentication required.", "sendmail.relaying-denied"),
    "sendmail.relaying-denied-bare": ("sm-mta", "6AMBCBPc023785: ruleset=check_rcpt, arg1={a}, relay=[{ip}], reject=450 4.4.0 {a}... Relaying temporarily denied. Cannot resolve PTR record for {ip}", "sendmail.relaying-denied"),
    "sendmail.smtp-attack-ident": ("sm-mta", "6AMBCBPc023785: {i}@[{ip}]: possible SMTP attack: command=AUTH, count=3", "sendmail.smtp-attack"),
    "sendmail-queue.queued-bare": ("sm-mta", "6APBLP2s018515: from={b}, size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA-v4, relay=[{ip}]", "sendmail-queue.queued-bare"),
    "sendmail-queue.queued-quoted": ("sm-mta", "6APBLP2s018515: from=<{b}>, size=18, class=0, nrcpts=1, msgid=<{c}>, proto=ESMTP, daemon=MTA-v4, relay={i}@{h} [{ip}]", "sendmail-queue.queued"),
    "sendmail-queue.deferred-reply": ("sm-mta", "6APBLP2s018515: to=<{a}>, delay=00:00:05, xdelay=00:00:05, mailer=esmtp, pri=30277, relay=mx.example.net. [203.0.113.9], dsn=4.0.0, reply=451 4.3.0 {d}, stat=Deferred: 451 4.3.0 {d}", "sendmail-queue.deferred"),
    "sendmail-queue.bounced-reply": ("sm-mta", "6APBLP2s018515: to=<{a}>, delay=00:00:05, xdelay=00:00:05, mailer=esmtp, pri=30277, relay=mx.example.net. [203.0.113.9], dsn=5.1.1, reply=550 5.1.1 {d}, stat=User unknown", "sendmail-queue.bounced"),
    "sendmail.lost-input(none)": ("sm-mta", "6AMBCBPc023785: lost input channel from {h} [{ip}] to MTA-v4 after {a}", None),
    # postfix: smtpd_client_port_logging, 3.10's queue id before session ends and SASL fields after
    # rejects, milters, the mechanism name a client chooses, the optional categories
    "postfix.sasl-auth-failed-port": ("postfix/smtps/smtpd", "warning: {h}[{ip}]:51234: SASL LOGIN authentication failed: {a}, sasl_username={b}", "postfix.sasl-auth-failed"),
    "postfix.sasl-auth-failed-mech": ("postfix/smtpd", "warning: {h}[{ip}]: SASL {c} authentication failed: Invalid authentication mechanism: '{c}', sasl_username=(unavailable)", "postfix.sasl-auth-failed"),
    "postfix.relay-denied-310": ("postfix-out/smtpd", "NOQUEUE: reject: RCPT from {h}[{ip}]:40000: 554 5.7.1 <{a}>: Relay access denied; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}> sasl_method=PLAIN sasl_username={d}", "postfix.relay-denied"),
    "postfix.milter-reject": ("postfix/smtpd", "NOQUEUE: milter-reject: RCPT from {h}[{ip}]:40000: 550 5.7.1 {d}; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix.milter-reject"),
    "postfix.milter-reject-cleanup": ("postfix/cleanup", "4F2A31C0D5: milter-reject: END-OF-MESSAGE from {h}[{ip}]: 5.7.1 {d}; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix-cleanup.milter-reject"),
    "postfix.too-many-errors-310": ("postfix/smtpd", "NOQUEUE: too many errors after RCPT from {h}[{ip}]:40000", "postfix.too-many-errors"),
    "postfix.improper-pipelining-notail": ("postfix/smtpd", "improper command pipelining after CONNECT from {h}[{ip}]", "postfix.improper-pipelining"),
    "postfix.lost-connection-auth": ("postfix/submission/smtpd", "NOQUEUE: lost connection after AUTH from {h}[{ip}]", "postfix.lost-connection-auth"),
    "postfix.lost-connection": ("postfix/smtpd", "lost connection after DATA (0 bytes) from {h}[{ip}]:40000", "postfix.lost-connection"),
    "postfix.timeout": ("postfix/smtpd", "NOQUEUE: timeout after EHLO from {h}[{ip}]", "postfix.timeout"),
    "postfix.disconnect-auth-failed": ("postfix/smtpd", "disconnect from {h}[{ip}] ehlo=1 auth=0/1 {d}", "postfix.disconnect-auth-failed"),
    "postfix.policy-rate-limit": ("postfix/smtpd", "NOQUEUE: reject: RCPT from {h}[{ip}]:40000: 450 4.7.1 <{a}>: Recipient address rejected: too many recipients {d}; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>", "postfix.policy-rate-limit"),
    "postfix.illegal-address-syntax": ("postfix/smtpd", "warning: Illegal address syntax from {h}[{ip}]:40000 in RCPT command: <{a}>,<{b}>", "postfix.illegal-address-syntax"),
    "postfix.user-unknown-vrfy": ("postfix/smtpd", "NOQUEUE: reject: VRFY from {h}[{ip}]: 550 5.1.1 <{a}>: Recipient address rejected: User unknown in local recipient table; to=<{a}> proto=SMTP helo=<{c}>", "postfix.user-unknown"),
    "postscreen.dnsbl-rank": ("postfix-mx2/postscreen", "DNSBL rank 4 for [{ip}]:41234", "postscreen.dnsbl-rank"),
    "postscreen.denylisted": ("postfix/postscreen", "DENYLISTED [{ip}]:41234", "postscreen.denylisted"),
    "postscreen.too-many-connections": ("postfix/postscreen", "NOQUEUE: reject: CONNECT from [{ip}]:41234: too many connections", "postscreen.too-many-connections"),
    # sendmail: 8.14/8.15 AUTH failures, greet_pause with a name or none, transaction stuffing,
    # VRFY/EXPN, unknown users and milter rejects (queue id only), the optional categories
    "sendmail.auth-failed-nouser": ("sm-mta", "6AMBBxgF023550: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: {d}, relay={h} [{ip}] (may be forged)", "sendmail.auth-failed-nouser"),
    "sendmail.greet-pause-noname": ("sm-mta", "6APB4OaY018146: rejecting commands from [{ip}] [{ip}] due to pre-greeting traffic after 0 seconds", "sendmail.greet-pause"),
    "sendmail.traffic-before-response": ("sm-mta", "6APB4OFn018148: rejecting server EHLO from {h} [{ip}] due to traffic before response", "sendmail.traffic-before-response"),
    "sendmail.vrfy-expn-rejected": ("sm-acceptingconnections", "6AMBCBPc023785: {i}@{h} [{ip}]: VRFY {a} [rejected]", "sendmail.vrfy-expn-rejected"),
    "sendmail.open-proxy": ("sendmail", "{h} [{ip}]: probable open proxy: command={a}", "sendmail.open-proxy"),
    "sendmail.input-too-long": ("sm-mta", "6AMBCBPc023785: [{ip}]: SMTP violation, input too long: 4100", "sendmail.input-too-long"),
    "sendmail.user-unknown": ("sm-mta", "6AMBCBPc023785: <{a}>... User unknown", "sendmail.user-unknown"),
    "sendmail.milter-reject": ("sm-mta", "6AMBCBPc023785: Milter: to=<{a}>, reject=550 5.7.1 {d}", "sendmail.milter-reject"),
    "sendmail.milter-connect-reject": ("sm-mta", "6AMBCBPc023785: Milter: connect: host={h}, addr={ip}, reject=554 5.7.1 {d}", "sendmail.milter-connect-reject"),
    "sendmail.lost-input": ("sm-mta", "6AMBCBPc023785: lost input channel from {h} [{ip}] to MTA-v4 after rcpt", "sendmail.lost-input"),
    "sendmail.timeout": ("sm-mta", "6AMBCBPc023785: timeout waiting for input from [{ip}] during server cmd read", "sendmail.timeout"),
    # breadth audit (tests/filters/breadth-source.log): postfix aborted SASL, TLS rate refusals, TLS
    # handshake failures in smtpd and tlsproxy, header/body check rejects (queue id only: the
    # address comes from smtpd's `client=` line); sendmail `cmd=data` milter rejects, debugging
    # commands and STARTTLS failures
    "postfix.sasl-auth-aborted": ("postfix/submission/smtpd", "warning: {h}[{ip}]:40000: SASL LOGIN authentication aborted", "postfix.sasl-auth-aborted"),
    "postfix.tls-rate-refused": ("postfix/smtpd", "warning: Refusing STARTTLS request from {h}[{ip}]:40000 for service smtp", "postfix.tls-rate-refused"),
    "postfix.tls-failed": ("postfix/smtpd", "SSL_accept error from {h}[{ip}]: {d}", "postfix.tls-failed"),
    "postscreen.tls-failed": ("postfix/tlsproxy", "SSL_accept error from [{ip}]:41234: {d}", "postscreen.tls-failed"),
    "postfix-cleanup.content-reject": ("postfix/cleanup", "4F2A31C0D6: reject: header Subject: {a} from {h}[{ip}]; from=<{b}> to=<{a}> proto=ESMTP helo=<{c}>: 5.7.1 {d}", "postfix-cleanup.content-reject"),
    "postfix-cleanup.content-reject-body": ("postfix/cleanup", "4F2A31C0D6: reject: body {a} from {h}[{ip}]:40000; from=<{b}> to=<{c}> proto=ESMTP helo=<{c}>", "postfix-cleanup.content-reject"),
    "sendmail.milter-reject-data": ("sm-mta", "6AMBCBPc023785: Milter: cmd=data, reject=554 5.7.1 {d}", "sendmail.milter-reject"),
    "sendmail.debug-command": ("sm-mta", '6AMBCBPc023785: "wiz" command from {i}@{h} [{ip}] (may be forged) ({ip})', "sendmail.debug-command"),
    "sendmail.tls-failed": ("sm-mta", "STARTTLS=server, error: accept failed=-1, reason={d}, SSL_error=5, errno=104, retry=-1, relay={i}@{h} [{ip}]", "sendmail.tls-failed"),
    # exim (tests/filters/exim-*.log): the client's H= first, its texts after; the command Exim quotes first
    "exim.auth-failed": ("exim", "plain_server authenticator failed for H={h} ({h}) [{ip}]:41234 I=[198.51.100.1]:587: 535 Incorrect authentication data (set_id={a})", "exim.auth-failed"),
    "exim.auth-failed-stamped": ("exim4", "2026-11-25 11:12:00 [4242] login authenticator failed for ({h}) [{ip}]: 535 Incorrect authentication data (set_id={a})", "exim.auth-failed"),
    "exim.auth-failed-literal": ("exim", "plain authenticator failed for ([6.6.6.6]) [{ip}]: 535 Incorrect authentication data (set_id={a})", "exim.auth-failed"),
    "exim.auth-aborted": ("exim", "plain_server authenticator failed for ({h}) [{ip}]: 501 Invalid base64 data", "exim.auth-aborted"),
    "exim.relay-denied": ("exim", "H=({h}) [{ip}]:41234 F=<{b}> rejected RCPT <{a}>: relay not permitted", "exim.relay-denied"),
    "exim.user-unknown": ("exim", "H={h} [{ip}] F=<{b}> rejected RCPT <{a}>: Unrouteable address", "exim.user-unknown"),
    "exim.sender-verify": ("exim", "H=({h}) [{ip}] F=<{b}> rejected RCPT <{a}>: Sender verify failed", "exim.sender-verify"),
    "exim.ratelimit": ("exim", "H=({h}) [{ip}] F=<{b}> rejected RCPT <{a}>: RATELIMIT: {ip} sent 3.0 recipients per 1h (limit 2)", "exim.ratelimit"),
    "exim.ratelimit-defer": ("exim4", "2026-11-25 11:12:00 H=({h}) [{ip}] F=<{b}> temporarily rejected RCPT <{a}>: Sender rate 20.3 / 1h", "exim.ratelimit"),
    "exim.helo-rejected": ("exim", "H=({h}) [{ip}] rejected EHLO or HELO {a}: {d}", "exim.helo-rejected"),
    "exim.helo-invalid": ("exim", "rejected EHLO from [{ip}]: syntactically invalid argument(s): {a}", "exim.helo-invalid"),
    "exim.data-rejected": ("exim", "1tAbCd-000000012Ab-1FGh H=({h}) [{ip}] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no SNI={c} F=<{b}> rejected after DATA: {d}", "exim.data-rejected"),
    "exim.acl-rejected": ("exim", "H=[{ip}] rejected connection in \"connect\" ACL: {d}", "exim.acl-rejected"),
    "exim.acl-rejected-mail": ("exim", "H={h} ({h}) [{ip}] rejected MAIL <{b}>: {d}", "exim.acl-rejected"),
    "exim.too-many-connections": ("exim", "Connection from [{ip}]:41234 I=[198.51.100.1]:25 refused: too many connections from that IP address", "exim.too-many-connections"),
    "exim.sync-greeting": ("exim", "SMTP protocol synchronization error (input sent without waiting for greeting): rejected connection from H=[{ip}] input=\"{a}\"", "exim.sync-greeting"),
    "exim.sync-pipelining": ("exim", "SMTP protocol synchronization error (next input sent too soon: pipelining was not advertised): rejected \"{a}\" H=({h}) [{ip}]:41234 I=[198.51.100.1]:25 next input=\"{b}\"", "exim.sync-pipelining"),
    "exim.too-many-nonmail": ("exim", "SMTP call from ({h}) [{ip}] dropped: too many nonmail commands (last was \"{a}\")", "exim.too-many-nonmail"),
    "exim.too-many-errors": ("exim", "SMTP call from ({h}) [{ip}]:41234 dropped: too many syntax or protocol errors (last command was \"{a}\",  C=EHLO,RCPT)", "exim.too-many-errors"),
    "exim.syntax-error": ("exim", "SMTP syntax error in \"{a}\" H=({h}) [{ip}] unrecognized command", "exim.syntax-error"),
    "exim.timeout": ("exim", "SMTP command timeout on connection from ({h}) [{ip}] D=2s", "exim.timeout"),
    "exim.lost-connection": ("exim", "unexpected disconnection while reading SMTP command from ({h}) [{ip}] D=12s", "exim.lost-connection"),
    "exim.lost-connection-smtp": ("exim", "SMTP connection from ({h}) [{ip}]:41234 I=[198.51.100.1]:25 lost D=0.001s", "exim.lost-connection-smtp"),
    # issue 16 audit (tests/filters/exim-audit.log): shapes written from Exim's source
    "exim.auth-aborted-553": ("exim", "plain authenticator failed for H=({h}) [{ip}]:41234: 553 Initial data not expected", "exim.auth-aborted"),
    "exim.helo-verify": ("exim", "rejected \"HELO {a}\" from {h} [{ip}]:41234 I=[198.51.100.1]:25", "exim.helo-verify"),
    "exim.connect-dropped": ("exim", "H=({h}) [{ip}]:41234 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 SNI={c} dropped by 'connect' ACL: {d}", "exim.connect-dropped"),
    "exim.host-rejected": ("exim", "refused connection from {h} [{ip}]:41234 (host_reject_connection)", "exim.host-rejected"),
    "exim.no-helo": ("exim", "rejected MAIL from [{ip}]:41234: no HELO/EHLO given", "exim.no-helo"),
    "exim.too-many-messages": ("exim", "rejected MAIL command H=({h}) [{ip}]: too many messages in one connection", "exim.too-many-messages"),
    "exim.too-many-recipients": ("exim", "too many recipients: message rejected: sender=<{b}> H=({h}) [{ip}]:41234 I=[198.51.100.1]:25", "exim.too-many-recipients"),
    "exim.data-timeout": ("exim", "SMTP data timeout (message abandoned) on connection from ({h}) [{ip}] F=<{b}> D=10m", "exim.data-timeout"),
    "exim.no-mail": ("exim", "no MAIL in SMTP connection from ({h}) [{ip}]:41234 D=0.2s X=TLS1.3:TLS_AES_256_GCM_SHA384:256 SNI={c} C=EHLO,AUTH,QUIT", "exim.no-mail"),
    "exim.tls-failed": ("exim", "TLS error on connection from ({h}) [{ip}]:41234 I=[198.51.100.1]:25 (gnutls_handshake): {d}", "exim.tls-failed"),
    "exim.syntax-error-any": ("exim", "SMTP syntax error in \"{a}\" H=({h}) [{ip}]:41234 malformed address: {b}", "exim.syntax-error"),
    "exim.lost-connection-smtp-ci": ("exim", "SMTP connection Ci=4242 from ({h}) [{ip}]:41234 I=[198.51.100.1]:25 lost while reading message data (header) D=1s", "exim.lost-connection-smtp"),
    "exim.acl-rejected-dkim": ("exim", "1rKx2p-0004Ab-1F H=({h}) [{ip}] F=<{b}> rejected DKIM : {d}", "exim.acl-rejected"),
    "exim.acl-rejected-dnssec": ("exim", " DSH={h} [{ip}] F=<{b}> rejected RCPT <{a}>: relay not permitted", "exim.acl-rejected"),
    "exim.input-eof": ("exim", "Error or EOF on input from H={h} ({h}) [{ip}]:41234 I=[198.51.100.1]:25 Ci=4242", "exim.input-eof"),
    # Exim's test-suite audit: a BDAT chunk with the next command behind it; VRFY of an unknown
    # address (the argument first); the message id before the connection endings of a message
    "exim.sync-pipelining-bdat": ("exim", "SMTP protocol synchronization error (next input sent too soon: pipelining was not advertised): rejected \"BDAT 4\" H=({h}) [{ip}]:41234 next input=\"{b}\"...", "exim.sync-pipelining"),
    "exim.vrfy-failed": ("exim", "VRFY failed for {a} H={h} ({h}) [{ip}]:41234 I=[198.51.100.1]:25", "exim.vrfy-failed"),
    "exim.lost-after-dot": ("exim", "1tAbCd-000000012Ab-1FGh SMTP connection lost after final dot H={h} ({h}) [{ip}]:41234 I=[198.51.100.1]:25 Ci=4242 P=esmtp L-", "exim.lost-after-dot"),
    "exim.data-timeout-qid": ("exim", "1rKx2p-0004Ab-1F SMTP data timeout (message abandoned) on connection from ({h}) [{ip}] F=<{b}> D=2s", "exim.data-timeout"),
    "exim.lost-connection-smtp-qid": ("exim", "1tAbCd-000000012Ab-1FGh SMTP connection from ({h}) [{ip}]:41234 lost while reading message data", "exim.lost-connection-smtp"),
    "exim.tls-failed-qid": ("exim", "1rKx2p-0004Ab-1F TLS error on connection from ({h}) [{ip}] (recv): {d}", "exim.tls-failed"),
    "exim.syntax-error-qid": ("exim", "1tAbCd-000000012Ab-1FGh SMTP protocol error in \"{a}\" H=({h}) [{ip}]:41234 only BDAT permissible after non-LAST BDAT", "exim.syntax-error"),
    # a reset (` (error: E)`), TCP Fast Open, the pre-4.90 lost connection; OpenSSL builds' TLS lines
    "exim.lost-connection-reset": ("exim", "unexpected disconnection while reading SMTP command from TFO ({h}) [{ip}]:41234 (error: Connection reset by peer) D=4s", "exim.lost-connection"),
    "exim.lost-connection-old": ("exim", "unexpected disconnection while reading SMTP command from ({h}) [{ip}]", "exim.lost-connection"),
    "exim.lost-connection-smtp-reset": ("exim", "SMTP connection from ({h}) [{ip}]:41234 lost (error: Connection reset by peer) D=0.021s", "exim.lost-connection-smtp"),
    "exim.tls-failed-closed": ("exim", "TLS error on connection from ({h}) [{ip}]:41234 SSL_accept: TCP connection closed by peer", "exim.tls-failed"),
    "exim.tls-failed-ssl-read": ("exim", "TLS error (SSL_read): on connection from ({h}) [{ip}]:41234 I=[198.51.100.1]:25 error:{d}", "exim.tls-failed"),
    # a reject made in a message, through syslog in parts (syslog_duplication = false: the
    # rejectlog copy, with the envelope and headers): the first part is Exim's whole line, the
    # others (headers: the client's text) give no event
    "exim.data-rejected-part": ("exim4", "[1\\10] 2026-11-25 11:12:00 1rKx2p-0004Ab-1F H=({h}) [{ip}] F=<{b}> rejected after DATA: {d}", "exim.data-rejected"),
    "exim.rejectlog-part-header(none)": ("exim4", "[10/10]   Subject: {a}", None),
    "exim.rejectlog-part-folded(none)": ("exim4", "[5\\10] #011{a}", None),
    "exim.input-eof-stamped": ("exim4", "2026-11-25 11:12:00 [4242] Error or EOF on input from H=({h}) [{ip}]", "exim.input-eof"),
    # 4.99+ escapes a `"` in the command as `\"` (a `\` stays as it is), 4.98 and older write it
    # raw: no reading of those quotes is sure, but Exim's ` H=` occurs once, before the client, and
    # a line with another (the captures' .48) gives no event
    "exim.syntax-error-escaped": ("exim", "SMTP syntax error in \"{a}\\\" {b}\" H=({h}) [{ip}]:41234 missing or malformed local part (expected word or \"<\")", "exim.syntax-error"),
    "exim.syntax-error-raw": ("exim", "SMTP syntax error in \"{a}\" {b}\" H=({h}) [{ip}]:41234 missing or malformed local part (expected word or \"<\")", "exim.syntax-error"),
    "exim.sync-pipelining-quoted": ("exim", "SMTP protocol synchronization error (next input sent too soon: pipelining was not advertised): rejected \"MAIL FROM:<\"{a}\">\" H=({h}) [{ip}]:41234 next input=\"RCPT TO:<\"{b}\">\\r\\n\"", "exim.sync-pipelining"),
    "exim.incomplete(none)": ("exim", "H=({h}) [{ip}] incomplete transaction (QUIT) from <{b}>", None),
    # exim-queue (tests/filters/exim-outbound.log): the sender first (spaces only inside its quoted
    # local part, `"` and `\\` escaped: QUOTED below), then Exim's H=, P=, A=, U=; subject, id= and
    # recipients after S=
    "exim-queue.arrival-auth": ("exim", "1tAbCd-000000012Ab-1FGh <= \"{b}\"@example.net H=({h}) [{ip}]:41234 P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no SNI={h} A=dovecot_plain:{u} S=300 id={a} T=\"{d}\" for {a} {c}", "exim-queue.arrival-auth"),
    "exim-queue.arrival-auth-stamped": ("exim4", "2026-11-25 11:12:00 [4242] 1rKx2p-0004Ab-1F <= {i}@example.net H=({h}) [{ip}] P=esmtpa A=plain_server:{u} S=300 T=\"{d}\" for {a}", "exim-queue.arrival-auth"),
    "exim-queue.arrival": ("exim", "1rKx2p-0004Ab-1F <= \"{b}\"@example.net H=({h}) [{ip}] P=esmtp S=300 id={a} T=\"{d}\" for {a}", "exim-queue.arrival"),
    "exim-queue.local": ("exim", "1rKx2p-0004Ab-1F <= \"{b}\"@example.net U={i} P=local S=300 T=\"{d}\" for {a} {c}", "exim-queue.local"),
    "exim-queue.delivered": ("exim", "1rKx2p-0004Ab-1F => {a} <{a}> R=dnslookup T=remote_smtp H={h} [{ip}] C=\"250 {d}\"", "exim-queue.delivered"),
    "exim-queue.delivered-more": ("exim", "1rKx2p-0004Ab-1F -> {a} <{a}> R=dnslookup T=remote_smtp H={h} [{ip}]", "exim-queue.delivered-more"),
    "exim-queue.cutthrough": ("exim", "1rKx2p-0004Ab-1F >> {a} R=dnslookup T=remote_smtp H={h} [{ip}] C=\"250 {d}\"", "exim-queue.cutthrough"),
    "exim-queue.bounced": ("exim", "1rKx2p-0004Ab-1F ** {a} R=dnslookup T=remote_smtp H={h} [{ip}]: SMTP error from remote mail server after RCPT TO:<{a}>: 550 {d}", "exim-queue.bounced"),
    "exim-queue.deferred": ("exim", "1rKx2p-0004Ab-1F == {a} R=dnslookup T=remote_smtp defer (-44) H={h} [{ip}]: SMTP error from remote mail server after RCPT TO:<{a}>: 451 {d}", "exim-queue.deferred"),
    "exim.sender-verify-fail(none)": ("exim", "H=({h}) [{ip}] sender verify fail for <{b}>: {d}", None),
}
# Rules that take only the queue id from a line that also shows the address, because client text
# surrounds it there: correlate.py gives their events the address of the message's earlier line.
QUEUE_ID_ONLY = {"postfix-cleanup.content-reject"}
# Slots that the program writes inside double quotes with `"` and `\\` escaped (Exim's quoted
# local parts, as the SMTP client must send them, and its T="subject"): the attacker's text is
# escaped as the program's own output would show it.
QUOTED = {name: "bd" for name in ("exim-queue.arrival-auth", "exim-queue.arrival-auth-stamped",
                                  "exim-queue.arrival", "exim-queue.local")}
# The delivery lines name the remote server (H=... [ip]), never the client: they take no address.
NO_CLIENT = {"exim-queue.delivered", "exim-queue.delivered-more", "exim-queue.cutthrough",
             "exim-queue.bounced", "exim-queue.deferred"}
HARMLESS = {"a": "alice@example.test", "b": "bob@example.net", "c": "client.example.net", "d": "whatever text",
            "h": "mx.example.net", "u": "carol@example.test", "i": "joe"}
# Templates whose rule must fire, with the real address (and the real account in {u}), whatever
# the client writes into the other slots: the program's own structure always identifies the
# client there, so an attacker must not be able to hide from these rules either.
ALWAYS_FOUND = {
    "postfix.sasl-auth-failed", "postfix.sasl-login-sender", "postfix.relay-denied", "postfix.relay-denied-454",
    "postfix.user-unknown", "postfix.sender-domain-not-found", "postfix.reject-other",
    "dovecot.auth-failed", "dovecot.auth-failed-aborted", "dovecot.auth-failed-24-mech",
    "dovecot.auth-failed-23-base64", "dovecot.auth-unfinished", "dovecot.login", "dovecot.login-24",
    "dovecot-passdb.verbose-password", "dovecot-passdb.next-passdb", "dovecot-passdb.password-mismatch-24",
    "dovecot.auth-failed-no-secs", "dovecot.auth-failed-no-lip", "dovecot.auth-failed-no-user",
    "dovecot.auth-failed-proxy-23", "dovecot.auth-failed-proxy-24", "dovecot.proxy-login", "dovecot.proxy-login-22",
    "dovecot.attempt-refused", "dovecot.attempt-refused-mech", "dovecot.tls-failed", "dovecot.tls-failed-24",
    "dovecot.no-auth-attempts", "dovecot.login-no-user", "dovecot.attempt-refused-no-user",
    "dovecot-passdb.pam-failed-22", "dovecot-passdb.other-failure",
    "dovecot-passdb.other-failure-24", "dovecot-passdb.pam-failed-24", "dovecot-passdb.login-failed",
    "dovecot-passdb.login-failed-24", "dovecot-passdb.username-refused", "dovecot-passdb.username-refused-24",
    "dovecot-passdb.pam-module-failure", "dovecot-passdb.pam-module-failure-unknown",
    "sendmail.auth-failed", "sendmail.auth-failed-ident", "sendmail.relaying-denied",
    "sendmail.relaying-denied-ident", "sendmail.relaying-denied-bare", "sendmail.check-rcpt", "sendmail.check-mail",
    "sendmail-queue.queued", "sendmail-queue.queued-quoted",
    "postfix.sasl-auth-failed-port", "postfix.relay-denied-310", "postfix.milter-reject", "postfix.milter-reject-cleanup",
    "sendmail.vrfy-expn-rejected", "postfix.illegal-address-syntax", "postfix.user-unknown-vrfy",
    "exim-queue.arrival-auth", "exim-queue.arrival-auth-stamped", "exim-queue.arrival",
    "exim.too-many-recipients", "exim.data-timeout", "exim.vrfy-failed", "exim.data-timeout-qid",
}
# Real account names (dovecot's default auth_username_chars), RFC 1413 names as sendmail keeps them.
account = st.from_regex(r"[a-z0-9][a-z0-9._@-]{0,24}", fullmatch=True)
ident = st.from_regex(r"[A-Za-z0-9!#$%&'*+./^_`{|}~-]{1,24}", fullmatch=True)


def line(program: str, message: str, ip: str, slots: dict[str, str]) -> bytes:
    text = message.format(ip=ip, **slots)
    return f"Nov 25 11:12:00 mail {program}[4242]: {text}".encode("utf-8", "surrogateescape")


def events(raw: bytes) -> list:
    header = SyslogParser(NOW).parse(raw)
    return FILTERS.match(raw, header) if header is not None else []


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_is_a_real_line_of_its_rule(name: str) -> None:
    """With harmless values each template produces its rule's event with the real address:
    the property below is about lines the filters really read, not about lines nothing matches."""
    program, message, rule = TEMPLATES[name]
    for ip in (REAL4, REAL6):
        found = events(line(program, message, ip, HARMLESS))
        got = {f"{e.filter}.{e.rule}" for e in found}
        if rule is None:
            assert not [e for e in found if e.ip], (name, found)
        else:
            assert rule in got, (name, got)
            assert all(e.ip in (None, ip) for e in found), (name, found)
            if "{ip}" in message and next(e for e in found if f"{e.filter}.{e.rule}" == rule).ip is None:
                assert (rule.startswith(("postfix-queue.", "sendmail-queue.")) and rule != "sendmail-queue.queued"
                        or rule in QUEUE_ID_ONLY or name in NO_CLIENT), found


def test_every_shipped_rule_has_a_template() -> None:
    rules = {f"{f.name}.{r.id}" for f in FILTERS.filters for r in f.rules}
    covered = {rule for _p, _m, rule in TEMPLATES.values() if rule}
    # `QID: removed`, `QID Completed`: no field to inject into
    missing = rules - covered - {"postfix-queue.removed", "exim-queue.completed"}
    assert not missing, missing


def imitations(message: str) -> list[str]:
    """What an attacker who knows the line's format writes into a slot: the rest of the line as
    the program would write it after that slot (and the start of it before), with a forged
    address where the real one goes, in IPv4, IPv6 and sendmail's `IPv6:` form."""
    out = []
    for forged in ("6.6.6.6", "2001:db8::666", "IPv6:2001:db8::666"):
        values = {**HARMLESS, "ip": forged}
        for slot in "abcdu":
            mark = "{" + slot + "}"
            at = message.find(mark)
            if at < 0:
                continue
            after = message[at + len(mark):].format(**values)
            before = message[:at].format(**values)
            out += [after, after + "x", before, before + "x" + after, after.split(", ")[0] + ", "]
    return out


def attacker_text(message: str) -> st.SearchStrategy[str]:
    own = imitations(message) or _FRAGMENTS
    pieces = st.one_of(st.sampled_from(_FRAGMENTS), st.sampled_from(own), st.text(alphabet=_ALPHABET, max_size=6))
    return st.one_of(hostile, st.lists(pieces, max_size=6).map("".join))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), h=dns_name, u=account, i=ident, v6=st.booleans())
def test_attacker_text_never_moves_the_address(name: str, data: st.DataObject, h: str, u: str, i: str,
                                                v6: bool) -> None:
    program, message, rule = TEMPLATES[name]
    text = attacker_text(message)
    slots = {k: data.draw(text, label=k) for k in "abcd"}
    for k in QUOTED.get(name, ""):
        slots[k] = slots[k].replace("\\", "\\\\").replace('"', '\\"')
    real = REAL6 if v6 else REAL4
    raw = line(program, message, real, {**slots, "h": h, "u": u, "i": i})
    found = events(raw)
    for event in found:
        assert event.ip in (None, real), (name, event.filter, event.rule, event.ip, raw)
        if "{u}" in message and event.user is not None and f"{event.filter}.{event.rule}" == rule:
            assert event.user == u, (name, event.user, u, raw)
        if "U={i}" in message and f"{event.filter}.{event.rule}" == rule:
            assert event.user == i, (name, event.user, i, raw)  # the login name, only from U=
    # sendmail takes arguments of 255 bytes at most, echoes one of 203 or more shortened, and
    # cuts msgid= to 100: the model's client stays within what the programs accept unchanged.
    if name in ALWAYS_FOUND and "\n" not in "".join(slots.values()) and max(map(len, slots.values())) <= 100:
        mine = [e for e in found if e.filter == rule.split(".")[0]]
        assert any(e.ip == real for e in mine) or any(e.ip is None and e.queue_id for e in mine), (name, found, raw)
