"""Generate a realistic mixed mail log, deterministically, at any size (for the benchmarks).

    python bench/genlog.py --lines 1000000 --seed 1 --format bsd -o /tmp/mixed.log
    python bench/genlog.py --lines 1000000 --seed 1 --mta exim -o /tmp/exim.log

About 90% of the lines are ordinary traffic of a busy mail host running postfix (with
postscreen), dovecot and sendmail side by side: inbound deliveries, authenticated submissions
with their cleanup/qmgr/smtp/removed lines, local mail through pickup, IMAP/POP3 logins, sendmail
AUTH sessions with their from=/to= lines, and the noise around them (connect/disconnect, anvil
statistics, connection failures). The other ~10% are attacks of every category the shipped
filters know (see ATTACKS below): password guessing against postfix, dovecot and sendmail, the
smtpd and sendmail rejects, anvil and sendmail rate limits, postscreen and smtpd protocol abuse,
an account guessed from a botnet, and a stolen account sending a burst of mail.

The line formats are copied from our own captures of the real programs (tests/filters/*.log,
/work/shared/samples/*.log). Two forms we have no capture of are written as the programs write
them on a syslog host: dovecot through syslog (`dovecot: imap-login: Login: ...`) and sendmail's
successful delivery (`stat=Sent (...)`, the `stat=Deferred` line of the capture with a 2.0.0 dsn).

`--mta exim` writes the host as an Exim host instead (Debian's exim4, cPanel): the same shares
of traffic, with Exim in place of postfix and sendmail, in Exim's own mainlog format
(`2026-11-24 00:00:00 [pid] ...`: the stamp and +pid, as /var/log/exim4/mainlog with
`log_selector = +pid`), dovecot's lines as before: arrivals (`<=` with H=, A=dovecot_plain:
for submissions, U= P=local for sendmail(1)), their deliveries (`=>`, `->`, `==`, `**`) and
`Completed`, queue runs and TLS noise; attacks of every category filters.d/exim.toml knows
(AUTH failures, relay and unknown-user rejects, HELO, after DATA, ACL and ratelimit rejects,
synchronization errors, too many nonmail commands or errors, too many connections), the botnet
guess and a stolen account, in the shapes of tests/filters/exim-*.log.

`--sessions N` writes N ordinary sessions (and the attacks among them) instead of a number of
lines: both MTAs' logs then hold the same host traffic (an Exim log is shorter: Exim writes a
message in about 3 lines where postfix writes 7 to 9), which is how bench/instructions.py and
bench/throughput.py compare the cost of the same traffic.

Same seed, same size, same format: the same bytes. The log starts at 2026-11-24T00:00:00Z and
advances at `--rate` lines per second of log time (default 20: 1M lines cover about 14 hours).
Attack lines are spread over that time so that find-time windows matter: an attacker address
comes back in bursts, some below the jail's threshold and some above it.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import sys
import time
from typing import Callable, Iterator

T0 = 1795478400.0  # 2026-11-24T00:00:00Z
HOST = "mx1"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# One scenario: (seconds after its start, syslog tag, message) lines.
Lines = list[tuple[float, str, str]]


def _public_v4(rng: random.Random) -> str:
    while True:
        a = rng.randrange(1, 224)
        if a not in (10, 127, 169, 172, 192):
            return f"{a}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _v6(rng: random.Random) -> str:
    return f"2001:db8:{rng.randrange(1, 0xffff):x}:{rng.randrange(0xffff):x}::{rng.randrange(1, 0xffff):x}"


class Generator:
    """Scenario builders. Each returns the lines of one scenario relative to its start."""

    def __init__(self, seed: int) -> None:
        rng = self.rng = random.Random(seed)
        self._qid = rng.randrange(0x100000, 0x200000)
        self._smid = 0
        self.users = [f"user{n}@example.test" for n in range(2000)]
        self.locals = [f"user{n}" for n in range(300)]
        self.senders = [_public_v4(rng) for _ in range(20000)]
        self.user_ips = [_public_v4(rng) if rng.random() < 0.9 else _v6(rng) for _ in range(3000)]
        # Attackers come back: a pool, so that some addresses reach a jail's threshold.
        self.attackers = [_public_v4(rng) if rng.random() < 0.85 else _v6(rng) for _ in range(4000)]
        self.domains = ["example.com", "mail.example.org", "news.example.net", "shop.example",
                        "lists.example.org", "partner.example.com"]

    # ---- small helpers ----------------------------------------------------------------------
    def qid(self) -> str:
        self._qid += self.rng.randrange(1, 9000)
        return f"{self._qid:X}{self.rng.randrange(0x100, 0xfff):X}"[:11]

    def smqid(self) -> str:
        """sendmail's queue id: 6 + letters of the date, then the pid (6AMBC1sf023574)."""
        self._smid += 1
        pid = self.rng.randrange(1000, 60000)
        chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        tail = "".join(self.rng.choice(chars) for _ in range(4))
        return f"6AOB{tail}{pid:06d}", pid

    def pid(self) -> int:
        return self.rng.randrange(1000, 60000)

    def session(self) -> str:
        chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        return "".join(self.rng.choice(chars) for _ in range(16))

    def delivery(self, qid: str, t: float, nrcpt: int, local: bool) -> Lines:
        rng = self.rng
        out: Lines = []
        pid = self.pid()
        for r in range(nrcpt):
            if local:
                rcpt = rng.choice(self.users)
                agent = rng.choice(("postfix/local", "postfix/lmtp", "postfix/virtual"))
                if agent == "postfix/local":
                    rest = "relay=local, delay=0.01, delays=0.01/0.01/0/0, dsn=2.0.0, status=sent (delivered to mailbox)"
                elif agent == "postfix/lmtp":
                    rest = (f"relay=mail.example.test[private/dovecot-lmtp], delay=0.05, delays=0.01/0.01/0.01/0.02, "
                            f"dsn=2.0.0, status=sent (250 2.0.0 <{rcpt}> {self.session()} Saved)")
                else:
                    rest = "relay=virtual, delay=0.02, delays=0.01/0.01/0/0, dsn=2.0.0, status=sent (delivered to maildir)"
                out.append((t + r * 0.01, f"{agent}[{pid}]", f"{qid}: to=<{rcpt}>, {rest}"))
                continue
            dom = rng.choice(self.domains)
            rcpt = f"rcpt{rng.randrange(10**5)}@{dom}"
            x = rng.random()
            if x < 0.93:
                rest = (f"relay=mx.{dom}[{self.senders[rng.randrange(500)]}]:25, delay=0.{rng.randrange(10, 99)}, "
                        f"delays=0.01/0.01/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {self.qid()})")
            elif x < 0.98:
                rest = ("relay=none, delay=0.01, delays=0/0.01/0/0, dsn=4.4.1, status=deferred "
                        f"(connect to mx.{dom}[{self.senders[rng.randrange(500)]}]:25: Connection timed out)")
            else:
                ip = self.senders[rng.randrange(500)]
                rest = (f"relay=mx.{dom}[{ip}]:25, delay=0.3, delays=0.1/0/0.1/0.1, dsn=5.1.1, status=bounced "
                        f"(host mx.{dom}[{ip}] said: 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown (in reply to RCPT TO command))")
            out.append((t + r * 0.01, f"postfix/smtp[{pid}]", f"{qid}: to=<{rcpt}>, {rest}"))
        return out

    # ---- ordinary traffic -------------------------------------------------------------------
    def inbound(self) -> Lines:
        rng = self.rng
        # Senders repeat (big providers send a lot), without one address dominating the log.
        ip = self.senders[int(rng.expovariate(1 / 2000)) % len(self.senders)]
        host = f"mail{rng.randrange(100)}.{rng.choice(self.domains)}"
        qid, smtpd, ps, port = self.qid(), self.pid(), 1650, rng.randrange(32768, 61000)
        nrcpt = 1 if rng.random() < 0.85 else rng.randrange(2, 5)
        out: Lines = [
            (0.0, f"postfix/postscreen[{ps}]", f"CONNECT from [{ip}]:{port} to [203.0.113.1]:25"),
            (0.0, f"postfix/postscreen[{ps}]", f"DISCONNECT [{ip}]:{port}") if rng.random() < 0.05 else
            (0.3, f"postfix/smtpd[{smtpd}]", f"connect from {host}[{ip}]"),
        ]
        if out[1][2].startswith("DISCONNECT"):
            return out
        out += [
            (0.6, f"postfix/smtpd[{smtpd}]", f"{qid}: client={host}[{ip}]"),
            (0.7, f"postfix/cleanup[{self.pid()}]", f"{qid}: message-id=<{qid}.{rng.randrange(10**9)}@{host}>"),
            (0.8, "postfix/qmgr[1777]", f"{qid}: from=<news{rng.randrange(100)}@{host}>, size={rng.randrange(900, 200000)}, nrcpt={nrcpt} (queue active)"),
            (0.9, f"postfix/smtpd[{smtpd}]", f"disconnect from {host}[{ip}] ehlo=1 mail=1 rcpt={nrcpt} data=1 quit=1 commands={4 + nrcpt}"),
        ]
        out += self.delivery(qid, 1.0, nrcpt, local=True)
        out.append((1.1 + nrcpt * 0.01, "postfix/qmgr[1777]", f"{qid}: removed"))
        return out

    def submission(self, user: str | None = None, ip: str | None = None) -> Lines:
        rng = self.rng
        n = rng.randrange(len(self.users))
        user = user or self.users[n]
        ip = ip or self.user_ips[n % len(self.user_ips)]
        qid, smtpd = self.qid(), self.pid()
        nrcpt = 1 if rng.random() < 0.7 else rng.randrange(2, 6)
        tag = f"postfix/submission/smtpd[{smtpd}]"
        out: Lines = [
            (0.0, tag, f"connect from unknown[{ip}]"),
            (0.5, tag, f"{qid}: client=unknown[{ip}], sasl_method=PLAIN, sasl_username={user}"),
            (0.6, f"postfix/cleanup[{self.pid()}]", f"{qid}: message-id=<{rng.randrange(10**12)}.{rng.randrange(10**6)}@example.test>"),
            (0.7, "postfix/qmgr[1777]", f"{qid}: from=<{user}>, size={rng.randrange(500, 90000)}, nrcpt={nrcpt} (queue active)"),
            (0.8, tag, f"disconnect from unknown[{ip}] ehlo=1 auth=1 mail=1 rcpt={nrcpt} data=1 quit=1 commands={5 + nrcpt}"),
        ]
        out += self.delivery(qid, 1.0, nrcpt, local=False)
        out.append((1.2 + nrcpt * 0.01, "postfix/qmgr[1777]", f"{qid}: removed"))
        return out

    def pickup(self) -> Lines:
        rng = self.rng
        qid = self.qid()
        n = rng.randrange(len(self.locals))
        uid = 1000 + n
        out: Lines = [
            (0.0, f"postfix/pickup[{self.pid()}]", f"{qid}: uid={uid} from=<{self.locals[n]}>"),
            (0.1, f"postfix/cleanup[{self.pid()}]", f"{qid}: message-id=<{rng.randrange(10**12)}.{rng.randrange(10**6)}@{HOST}.example.test>"),
            (0.2, "postfix/qmgr[1777]", f"{qid}: from=<{self.locals[n]}@{HOST}.example.test>, size={rng.randrange(500, 9000)}, nrcpt=1 (queue active)"),
        ]
        out += self.delivery(qid, 0.4, 1, local=rng.random() < 0.5)
        out.append((0.6, "postfix/qmgr[1777]", f"{qid}: removed"))
        return out

    def imap(self) -> Lines:
        rng = self.rng
        n = rng.randrange(len(self.users))
        svc = "imap-login" if rng.random() < 0.8 else "pop3-login"
        ip = self.user_ips[n % len(self.user_ips)]
        out: Lines = [(0.0, "dovecot", f"{svc}: Login: user=<{self.users[n]}>, method=PLAIN, rip={ip}, "
                                          f"lip=203.0.113.1, mpid={self.pid()}, TLS, session=<{self.session()}>")]
        if rng.random() < 0.1:
            out.append((0.01, "dovecot", f"{svc}: Disconnected: Connection closed (no auth attempts in 0 secs): "
                                         f"user=<>, rip={ip}, lip=203.0.113.1, TLS, session=<{self.session()}>"))
        return out

    def sendmail(self) -> Lines:
        rng = self.rng
        qid, pid = self.smqid()
        ip = self.senders[rng.randrange(len(self.senders))]
        nrcpt = 1 if rng.random() < 0.8 else rng.randrange(2, 4)
        out: Lines = []
        if rng.random() < 0.5:
            n = rng.randrange(len(self.users))
            ip = self.user_ips[n % len(self.user_ips)]
            user = self.locals[n % len(self.locals)]
            out.append((0.0, f"sm-mta[{pid}]", f"AUTH=server, relay=[{ip}], authid={user}, mech=PLAIN, bits=0"))
            sender, proto = f"{user}@mx.example.test", "ESMTPA"
        else:
            sender, proto = f"news{rng.randrange(100)}@{rng.choice(self.domains)}", "ESMTP"
        relay = f"[{ip}]" if rng.random() < 0.5 else f"mail{rng.randrange(100)}.{rng.choice(self.domains)} [{ip}]"
        out.append((0.2, f"sm-mta[{pid}]", f"{qid}: from=<{sender}>, size={rng.randrange(200, 90000)}, class=0, "
                                           f"nrcpts={nrcpt}, msgid=<{rng.randrange(10**14)}.{pid:06d}@vm.example.test>, "
                                           f"proto={proto}, daemon=MTA-v4, relay={relay}"))
        dpid = self.pid()
        for r in range(nrcpt):
            dom = rng.choice(self.domains)
            if rng.random() < 0.95:
                tail = f"relay=mx.{dom}. [{self.senders[rng.randrange(500)]}], dsn=2.0.0, stat=Sent ({self.qid()} Message accepted for delivery)"
            else:
                tail = f"relay={dom}., dsn=4.4.3, stat=Deferred: Name server: {dom}.: host name lookup failure"
            out.append((0.5 + r * 0.01, f"sm-mta[{dpid}]",
                        f"{qid}: to=<rcpt{rng.randrange(10**5)}@{dom}>, delay=00:00:01, xdelay=00:00:01, "
                        f"mailer=esmtp, pri={30000 + rng.randrange(1000)}, {tail}"))
        return out

    def noise(self) -> Lines:
        rng = self.rng
        x = rng.random()
        if x < 0.4:
            ip = self.senders[rng.randrange(len(self.senders))]
            pid = self.pid()
            return [(0.0, f"postfix/smtpd[{pid}]", f"connect from unknown[{ip}]"),
                    (0.5, f"postfix/smtpd[{pid}]", f"lost connection after EHLO from unknown[{ip}]"),
                    (0.5, f"postfix/smtpd[{pid}]", f"disconnect from unknown[{ip}] ehlo=1 commands=1")]
        if x < 0.7:
            return [(0.0, f"postfix/smtp[{self.pid()}]", f"connect to mx.{rng.choice(self.domains)}[{self.senders[rng.randrange(500)]}]:25: Connection refused")]
        if x < 0.9:
            port = rng.randrange(32768, 61000)
            ip = self.senders[rng.randrange(len(self.senders))]
            return [(0.0, "postfix/postscreen[1650]", f"CONNECT from [{ip}]:{port} to [203.0.113.1]:25"),
                    (0.0, "postfix/postscreen[1650]", f"PASS OLD [{ip}]:{port}")]
        return [(0.0, "postfix/anvil[1790]", f"statistics: max connection rate {rng.randrange(1, 9)}/60s for (smtp:{self.senders[rng.randrange(500)]}) at Nov 24 0{rng.randrange(10)}:00:00"),
                (0.0, "postfix/anvil[1790]", f"statistics: max cache size {rng.randrange(1, 99)} at Nov 24 0{rng.randrange(10)}:00:00")]

    # ---- attacks ----------------------------------------------------------------------------
    def attacker(self) -> str:
        # A few hundred addresses come back often (and get banned), most only now and then.
        return self.attackers[int(self.rng.expovariate(1 / 300)) % len(self.attackers)]

    def burst(self, one: Callable[[str, float], Lines], n: int | None = None) -> Lines:
        """`n` attempts from one address a few seconds apart: some bursts reach a threshold."""
        ip = self.attacker()
        n = n or self.rng.choice((1, 1, 2, 3, 4, 6, 8))
        out: Lines = []
        t = 0.0
        for _ in range(n):
            out += one(ip, t)
            t += self.rng.uniform(1.0, 20.0)
        return out

    def _smtpd(self, ip: str, t: float, msg: str, tag: str = "postfix/smtpd") -> Lines:
        pid = self.pid()
        return [(t, f"{tag}[{pid}]", f"connect from unknown[{ip}]"),
                (t + 0.4, f"{tag}[{pid}]", msg),
                (t + 0.5, f"{tag}[{pid}]", f"disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4")]

    def sasl_guess(self, ip: str, t: float) -> Lines:
        user = self.rng.choice(("admin", "info@example.test", "test", self.rng.choice(self.users)))
        mech = self.rng.choice(("PLAIN", "LOGIN"))
        return self._smtpd(ip, t, f"warning: unknown[{ip}]: SASL {mech} authentication failed: (reason unavailable), sasl_username={user}",
                           tag=self.rng.choice(("postfix/smtpd", "postfix/submission/smtpd")))

    def _reject(self, ip: str, t: float, reason: str) -> Lines:
        rcpt = f"user{self.rng.randrange(10**4)}@example.test"
        return self._smtpd(ip, t, f"NOQUEUE: reject: RCPT from unknown[{ip}]: {reason.format(rcpt=rcpt, ip=ip)}; "
                                  f"from=<spam@spammer.example> to=<{rcpt}> proto=ESMTP helo=<bot.example.test>")

    def relay(self, ip: str, t: float) -> Lines:
        return self._reject(ip, t, "554 5.7.1 <victim@remote.example.net>: Relay access denied")

    def unknown_user(self, ip: str, t: float) -> Lines:
        return self._reject(ip, t, "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient table")

    def helo(self, ip: str, t: float) -> Lines:
        return self._reject(ip, t, "504 5.5.2 <bad_helo>: Helo command rejected: need fully-qualified hostname")

    def no_hostname(self, ip: str, t: float) -> Lines:
        return self._reject(ip, t, "450 4.7.25 Client host rejected: cannot find your hostname, [{ip}]")

    def rbl(self, ip: str, t: float) -> Lines:
        return self._reject(ip, t, "554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.example.org")

    def sender_domain(self, ip: str, t: float) -> Lines:
        return self._reject(ip, t, "450 4.1.8 <a@nonexistent.example>: Sender address rejected: Domain not found")

    def access_denied(self, ip: str, t: float) -> Lines:
        return self._reject(ip, t, "554 5.7.1 <{rcpt}>: Recipient address rejected: Access denied")

    def anvil(self, ip: str, t: float) -> Lines:
        pid = self.pid()
        return [(t, f"postfix/smtpd[{pid}]", f"connect from unknown[{ip}]"),
                (t, f"postfix/smtpd[{pid}]", f"warning: Connection rate limit exceeded: {self.rng.randrange(6, 60)} from unknown[{ip}] for service smtp"),
                (t, f"postfix/smtpd[{pid}]", f"disconnect from unknown[{ip}] commands=0/0")]

    def too_many_errors(self, ip: str, t: float) -> Lines:
        return self._smtpd(ip, t, f"too many errors after RCPT from unknown[{ip}]")

    def pipelining(self, ip: str, t: float) -> Lines:
        return self._smtpd(ip, t, f"improper command pipelining after EHLO from unknown[{ip}]: MAIL FROM:<a@b.example>\\r\\nRCPT TO:<x@mail.example.test>\\r\\n")

    def non_smtp(self, ip: str, t: float) -> Lines:
        return self._smtpd(ip, t, f"warning: non-SMTP command from unknown[{ip}]: GET / HTTP/1.0")

    def _postscreen(self, ip: str, t: float, msgs: list[str]) -> Lines:
        port = self.rng.randrange(32768, 61000)
        out: Lines = [(t, "postfix/postscreen[1650]", f"CONNECT from [{ip}]:{port} to [203.0.113.1]:25")]
        out += [(t + 0.5, "postfix/postscreen[1650]", m.format(ip=ip, port=port)) for m in msgs]
        out.append((t + 0.6, "postfix/postscreen[1650]", f"DISCONNECT [{ip}]:{port}"))
        return out

    def ps_pregreet(self, ip: str, t: float) -> Lines:
        return self._postscreen(ip, t, ["PREGREET 28 after 0 from [{ip}]:{port}: EHLO pregreet.example.test\\r\\n"])

    def ps_pipelining(self, ip: str, t: float) -> Lines:
        return self._postscreen(ip, t, [
            "COMMAND PIPELINING from [{ip}]:{port} after EHLO: MAIL FROM:<a@b.example>\\r\\nRCPT TO:<x@mail.example.test>\\r\\n",
            "NOQUEUE: reject: RCPT from [{ip}]:{port}: 550 5.5.1 Protocol error; from=<a@b.example>, to=<x@mail.example.test>, proto=ESMTP, helo=<c.example.test>"])

    def ps_non_smtp(self, ip: str, t: float) -> Lines:
        return self._postscreen(ip, t, ["NON-SMTP COMMAND from [{ip}]:{port} after EHLO: GET / HTTP/1.0"])

    def ps_bare_newline(self, ip: str, t: float) -> Lines:
        return self._postscreen(ip, t, ["BARE NEWLINE from [{ip}]:{port} after MAIL FROM:<a@b.example>"])

    def ps_hangup(self, ip: str, t: float) -> Lines:
        return self._postscreen(ip, t, ["HANGUP after 0.2 from [{ip}]:{port} in tests before SMTP handshake"])

    def ps_limit(self, ip: str, t: float) -> Lines:
        return self._postscreen(ip, t, ["COMMAND COUNT LIMIT from [{ip}]:{port} after NOOP"])

    def ps_rbl(self, ip: str, t: float) -> Lines:
        return self._postscreen(ip, t, [
            "NOQUEUE: reject: RCPT from [{ip}]:{port}: 550 5.7.1 Service unavailable; client [{ip}] blocked using dnsbl.example.org; "
            "from=<a@spam.example>, to=<b@mail.example.test>, proto=ESMTP, helo=<x>"])

    def dovecot_guess(self, ip: str, t: float) -> Lines:
        user = self.rng.choice(("admin", "test", self.rng.choice(self.users)))
        svc = self.rng.choice(("imap-login", "pop3-login"))
        return [(t, "dovecot", f"auth: passwd-file({user},{ip},<{self.session()}>): Password mismatch"),
                (t + 2.0, "dovecot", f"{svc}: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): "
                                     f"user=<{user}>, method=PLAIN, rip={ip}, lip=203.0.113.1, TLS, session=<{self.session()}>")]

    def _sm(self, ip: str, t: float, msg: str, with_qid: bool = True) -> Lines:
        qid, pid = self.smqid()
        return [(t, f"sm-mta[{pid}]", (f"{qid}: " if with_qid else "") + msg.format(ip=ip))]

    def sm_auth(self, ip: str, t: float) -> Lines:
        user = self.rng.choice(("alice", "admin", "test"))
        qid, pid = self.smqid()
        return [(t, f"sm-mta[{pid}]", f"{qid}: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user={user}, relay=[{ip}]"),
                (t + 1.0, f"sm-mta[{pid}]", f"{qid}: [{ip}] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA-v4")]

    def sm_ratecontrol(self, ip: str, t: float) -> Lines:
        return self._sm(ip, t, "ruleset=check_relay, arg1=[{ip}], arg2={ip}, relay=[{ip}], reject=421 4.3.2 Connection rate limit exceeded.", False)

    def sm_check_relay(self, ip: str, t: float) -> Lines:
        return self._sm(ip, t, "ruleset=check_relay, arg1=[{ip}], arg2={ip}, relay=[{ip}], reject=550 5.7.1 Access denied", False)

    def sm_relaying(self, ip: str, t: float) -> Lines:
        qid, pid = self.smqid()
        return [(t, f"sm-mta[{pid}]", f"{qid}: ruleset=check_rcpt, arg1=<victim@remote.example.net>, relay=bad.example.net [{ip}], reject=550 5.7.1 <victim@remote.example.net>... Relaying denied. Proper authentication required."),
                (t + 0.5, f"sm-mta[{pid}]", f"{qid}: from=<spam@spammer.example>, size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA-v4, relay=bad.example.net [{ip}]")]

    def sm_check_rcpt(self, ip: str, t: float) -> Lines:
        return self._sm(ip, t, "ruleset=check_rcpt, arg1=<victim@blocked.example.net>, relay=[{ip}], reject=550 5.2.1 <victim@blocked.example.net>... Mailbox disabled for this recipient")

    def sm_check_mail(self, ip: str, t: float) -> Lines:
        return self._sm(ip, t, "ruleset=check_mail, arg1=<spam@spammer.example>, relay=[{ip}], reject=550 5.7.1 <spam@spammer.example>... Access denied")

    def sm_greet(self, ip: str, t: float) -> Lines:
        return self._sm(ip, t, "rejecting commands from [{ip}] [{ip}] due to pre-greeting traffic after 0 seconds")

    def sm_attack(self, ip: str, t: float) -> Lines:
        return self._sm(ip, t, "[{ip}]: possible SMTP attack: command=HELO/EHLO, count=3")

    def sm_flood(self, ip: str, t: float) -> Lines:
        return self._sm(ip, t, "[{ip}]: Possible SMTP RCPT flood, throttling.")

    def botnet_guess(self) -> Lines:
        """One account guessed from many addresses, two tries each (the account-guess jail)."""
        user = self.rng.choice(self.users)
        out: Lines = []
        for k in range(self.rng.randrange(6, 16)):
            ip = _public_v4(self.rng)
            for j in range(2):
                out += self._smtpd(ip, k * 7.0 + j * 3.0,
                                   f"warning: unknown[{ip}]: SASL LOGIN authentication failed: (reason unavailable), sasl_username={user}",
                                   tag="postfix/submission/smtpd")
        return out

    def stolen_account(self) -> Lines:
        """A stolen password: the account submits mail as fast as it can, from many addresses."""
        user = self.rng.choice(self.users)
        out: Lines = []
        for k in range(self.rng.randrange(20, 60)):
            out += [(k * 2.0 + dt, tag, msg) for dt, tag, msg in self.submission(user, self.attacker())]
        return out

    # ---- Exim (--mta exim): lines tagged EXIM are written in Exim's own mainlog format ---------
    def mid(self) -> str:
        """An Exim 4.97+ message id (1xZ7Xv-000000000rj-0e35)."""
        self._qid += self.rng.randrange(1, 9000)
        chars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        n, tail = self._qid, ""
        for _ in range(6):
            n, r = divmod(n, 62)
            tail = chars[r] + tail
        return f"1xZ{tail[-3:]}-00000{tail}-{''.join(self.rng.choice(chars) for _ in range(4))}"

    def _ex(self, t: float, pid: int, msg: str) -> tuple[float, str, str]:
        return (t, EXIM, f"[{pid}] {msg}")

    def exim_deliveries(self, mid: str, t: float, nrcpt: int, local: bool) -> Lines:
        rng = self.rng
        pid = self.pid()
        out: Lines = []
        for r in range(nrcpt):
            mark = "=>" if r == 0 else "->"
            if local:
                user = rng.choice(self.users)
                out.append(self._ex(t + r * 0.01, pid, f"{mid} {mark} {user.split('@')[0]} <{user}> R=local_user T=dovecot_lmtp"))
                continue
            dom = rng.choice(self.domains)
            rcpt = f"rcpt{rng.randrange(10**5)}@{dom}"
            ip = self.senders[rng.randrange(500)]
            x = rng.random()
            if x < 0.93:
                msg = (f"{mid} {mark} {rcpt} R=dnslookup T=remote_smtp H=mx.{dom} [{ip}] "
                       f"X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 2.0.0 Ok: queued as {self.qid()}\"")
            elif x < 0.98:
                msg = f"{mid} == {rcpt} R=dnslookup T=remote_smtp defer (110): Connection timed out"
            else:
                msg = (f"{mid} ** {rcpt} R=dnslookup T=remote_smtp H=mx.{dom} [{ip}]: SMTP error from remote mail "
                       f"server after RCPT TO:<{rcpt}>: 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown")
            out.append(self._ex(t + r * 0.01, pid, msg))
        out.append(self._ex(t + nrcpt * 0.01 + 0.01, pid, f"{mid} Completed"))
        return out

    def exim_inbound(self) -> Lines:
        rng = self.rng
        ip = self.senders[int(rng.expovariate(1 / 2000)) % len(self.senders)]
        host = f"mail{rng.randrange(100)}.{rng.choice(self.domains)}"
        mid, pid = self.mid(), self.pid()
        nrcpt = 1 if rng.random() < 0.85 else rng.randrange(2, 5)
        out: Lines = [self._ex(0.6, pid, f"{mid} <= news{rng.randrange(100)}@{host} H={host} [{ip}] P=esmtps "
                               f"X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no S={rng.randrange(900, 200000)} "
                               f"id={rng.randrange(10**12)}.{rng.randrange(10**6)}@{host}")]
        return out + self.exim_deliveries(mid, 1.0, nrcpt, local=True)

    def exim_submission(self, user: str | None = None, ip: str | None = None) -> Lines:
        rng = self.rng
        n = rng.randrange(len(self.users))
        user = user or self.users[n]
        ip = ip or self.user_ips[n % len(self.user_ips)]
        mid, pid = self.mid(), self.pid()
        nrcpt = 1 if rng.random() < 0.7 else rng.randrange(2, 6)
        out: Lines = [self._ex(0.5, pid, f"{mid} <= {user} H=(laptop{n % 97}) [{ip}] P=esmtpsa "
                               f"X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=dovecot_plain:{user} "
                               f"S={rng.randrange(500, 90000)} id={rng.randrange(10**12)}.{rng.randrange(10**6)}@example.test")]
        return out + self.exim_deliveries(mid, 1.0, nrcpt, local=False)

    def exim_local(self) -> Lines:
        rng = self.rng
        login = rng.choice(self.locals)
        mid, pid = self.mid(), self.pid()
        out: Lines = [self._ex(0.0, pid, f"{mid} <= {login}@mx1.example.test U={login} P=local S={rng.randrange(400, 9000)}")]
        return out + self.exim_deliveries(mid, 0.5, 1, local=rng.random() < 0.5)

    def exim_noise(self) -> Lines:
        rng = self.rng
        ip = self.senders[rng.randrange(len(self.senders))]
        pid = self.pid()
        x = rng.random()
        if x < 0.3:
            return [self._ex(0.0, pid, f"Start queue run: pid={pid}"), self._ex(2.0, pid, f"End queue run: pid={pid}")]
        if x < 0.6:
            return [self._ex(0.0, pid, f"TLS error on connection from (mail{rng.randrange(100)}.example.com) [{ip}] "
                                       "(SSL_accept): error:0A000126:SSL routines::unexpected eof while reading")]
        if x < 0.8:
            return [self._ex(0.0, pid, f"no host name found for IP address {ip}")]
        return [self._ex(0.0, pid, f"H=(mail{rng.randrange(100)}.example.com) [{ip}] incomplete transaction (QUIT) "
                                   f"from <news{rng.randrange(100)}@example.com>")]

    def _exa(self, t: float, msg: str) -> Lines:
        return [self._ex(t, self.pid(), msg)]

    def ex_auth(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"dovecot_login authenticator failed for (User) [{ip}]:{self.rng.randrange(1024, 65535)}: "
                            f"535 Incorrect authentication data (set_id={self.rng.choice(self.users)})")

    def ex_relay(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"H=(client.example.test) [{ip}] F=<spam@spammer.example> rejected RCPT "
                            f"<victim{self.rng.randrange(1000)}@remote.example.net>: relay not permitted")

    def ex_unknown(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"H=(client.example.test) [{ip}] F=<spam@spammer.example> rejected RCPT "
                            f"<nosuch{self.rng.randrange(1000)}@example.test>: Unrouteable address")

    def ex_helo(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"H=(localhost) [{ip}] rejected EHLO or HELO localhost: HELO/EHLO refused: bad name")

    def ex_data(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"{self.mid()} H=(client.example.test) [{ip}] F=<spam@spammer.example> rejected after DATA: "
                            "Message refused: content policy")

    def ex_rbl(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"H=[{ip}] rejected connection in \"connect\" ACL: blocked by zen.spamhaus.org")

    def ex_ratelimit(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"H=(client.example.test) [{ip}] F=<news@spammer.example> rejected RCPT <a@example.test>: "
                            f"RATELIMIT: {ip} sent 31.0 recipients per 1h (limit 30)")

    def ex_greeting(self, ip: str, t: float) -> Lines:
        return self._exa(t, "SMTP protocol synchronization error (input sent without waiting for greeting): "
                            f"rejected connection from H=[{ip}] input=\"EHLO User\\r\\n\"")

    def ex_pipelining(self, ip: str, t: float) -> Lines:
        return self._exa(t, "SMTP protocol synchronization error (next input sent too soon: pipelining was not "
                            f"advertised): rejected \"MAIL FROM:<spam@spammer.example>\" H=(client.example.test) [{ip}] "
                            "next input=\"RCPT TO:<bob@example.test>\\r\\nDATA\\r\\n\" (37 bytes)")

    def ex_nonmail(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"SMTP call from (User) [{ip}] dropped: too many nonmail commands (last was \"RSET\")")

    def ex_errors(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"SMTP call from (User) [{ip}] dropped: too many syntax or protocol errors "
                            "(last command was \"RCPT TO:<bob@example.test>\",  C=EHLO,RCPT,RCPT,RCPT,RCPT)")

    def ex_connections(self, ip: str, t: float) -> Lines:
        return self._exa(t, f"Connection from [{ip}]:{self.rng.randrange(1024, 65535)} refused: too many connections "
                            "from that IP address")

    def ex_botnet_guess(self) -> Lines:
        user = self.rng.choice(self.users)
        out: Lines = []
        for k in range(self.rng.randrange(6, 16)):
            ip = _public_v4(self.rng)
            for j in range(2):
                out += self._exa(k * 7.0 + j * 3.0, f"dovecot_plain authenticator failed for (User) [{ip}]: "
                                                    f"535 Incorrect authentication data (set_id={user})")
        return out

    def ex_stolen_account(self) -> Lines:
        user = self.rng.choice(self.users)
        out: Lines = []
        for k in range(self.rng.randrange(20, 60)):
            out += [(k * 2.0 + dt, tag, msg) for dt, tag, msg in self.exim_submission(user, self.attacker())]
        return out


# name -> how to build one scenario; weights are per scenario, not per line.
NORMAL: list[tuple[str, float, Callable[[Generator], Lines]]] = [
    ("inbound", 40, Generator.inbound),
    ("submission", 18, Generator.submission),
    ("pickup", 4, Generator.pickup),
    ("imap", 60, Generator.imap),
    ("sendmail", 12, Generator.sendmail),
    ("noise", 30, Generator.noise),
]
_BURSTS = ("sasl_guess", "relay", "unknown_user", "helo", "no_hostname", "rbl", "sender_domain",
           "access_denied", "anvil", "too_many_errors", "pipelining", "non_smtp", "ps_pregreet",
           "ps_pipelining", "ps_non_smtp", "ps_bare_newline", "ps_hangup", "ps_limit", "ps_rbl",
           "dovecot_guess", "sm_auth", "sm_ratecontrol", "sm_check_relay", "sm_relaying",
           "sm_check_rcpt", "sm_check_mail", "sm_greet", "sm_attack", "sm_flood")
_HEAVY = {"sasl_guess": 8, "dovecot_guess": 5, "relay": 3, "unknown_user": 3, "ps_pregreet": 3,
          "sm_auth": 3, "anvil": 2, "ps_hangup": 2}
ATTACKS: list[tuple[str, float, Callable[[Generator], Lines]]] = [
    (name, float(_HEAVY.get(name, 1)), (lambda g, _m=getattr(Generator, name): g.burst(lambda ip, t: _m(g, ip, t))))
    for name in _BURSTS
] + [("botnet_guess", 0.3, Generator.botnet_guess), ("stolen_account", 0.02, Generator.stolen_account)]

# --mta exim: the same host with Exim in place of postfix and sendmail (dovecot stays).
EXIM = "@exim"  # the tag of a line written in Exim's own mainlog format
EXIM_NORMAL: list[tuple[str, float, Callable[[Generator], Lines]]] = [
    ("exim_inbound", 40, Generator.exim_inbound),
    ("exim_submission", 30, Generator.exim_submission),
    ("exim_local", 4, Generator.exim_local),
    ("imap", 60, Generator.imap),
    ("exim_noise", 30, Generator.exim_noise),
]
_EXIM_BURSTS = ("ex_auth", "ex_relay", "ex_unknown", "ex_helo", "ex_data", "ex_rbl", "ex_ratelimit", "ex_greeting",
                "ex_pipelining", "ex_nonmail", "ex_errors", "ex_connections", "dovecot_guess")
_EXIM_HEAVY = {"ex_auth": 10, "dovecot_guess": 5, "ex_relay": 3, "ex_unknown": 3, "ex_rbl": 3, "ex_greeting": 2}
EXIM_ATTACKS: list[tuple[str, float, Callable[[Generator], Lines]]] = [
    (name, float(_EXIM_HEAVY.get(name, 1)), (lambda g, _m=getattr(Generator, name): g.burst(lambda ip, t: _m(g, ip, t))))
    for name in _EXIM_BURSTS
] + [("ex_botnet_guess", 0.3, Generator.ex_botnet_guess), ("ex_stolen_account", 0.02, Generator.ex_stolen_account)]


def _bsd_stamp(t: float) -> str:
    tm = time.gmtime(t)
    return f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


def _iso_stamp(t: float) -> str:
    tm = time.gmtime(t)
    return (f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T{tm.tm_hour:02d}:{tm.tm_min:02d}:"
            f"{tm.tm_sec:02d}.{min(999999, round((t % 1) * 1e6)):06d}+00:00")


def _exim_stamp(t: float) -> str:
    tm = time.gmtime(t)
    return f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


def generate(lines: int, seed: int = 1, fmt: str = "bsd", rate: float = 20.0,
             attack_share: float = 0.10, stats: dict[str, int] | None = None, mta: str = "postfix",
             sessions: int | None = None) -> Iterator[str]:
    """Yield exactly `lines` log lines (without newlines), in time order; with `sessions`, the
    lines of that many ordinary sessions (NORMAL's or EXIM_NORMAL's scenarios: a message in, a
    submission, an IMAP login, ...) and of the attacks among them instead, whatever their number
    (`lines` is then ignored): the same host's traffic written by either MTA."""
    if sessions is not None:
        lines = sys.maxsize
    gen = Generator(seed)
    rng = random.Random(seed ^ 0x5EED)
    normal, attacks = (EXIM_NORMAL, EXIM_ATTACKS) if mta == "exim" else (NORMAL, ATTACKS)
    exim_cache: tuple[int, str] = (-1, "")
    normal_w = [w for _, w, _ in normal]
    attack_w = [w for _, w, _ in attacks]
    pending: list[tuple[float, int, str, str]] = []
    seq = 0
    emitted = 0
    attack_lines = total_lines = normal_sessions = 0
    t = T0
    stamp_cache: tuple[int, str] = (-1, "")
    iso = fmt == "rfc3339"
    while emitted < lines:
        if (total_lines < lines) if sessions is None else (normal_sessions < sessions):
            is_attack = attack_lines < attack_share * (total_lines + 1)
            table, weights = (attacks, attack_w) if is_attack else (normal, normal_w)
            name, _, build = rng.choices(table, weights)[0]
            scenario = build(gen)
            for dt, tag, msg in scenario:
                seq += 1
                heapq.heappush(pending, (t + dt, seq, tag, msg))
            total_lines += len(scenario)
            if is_attack:
                attack_lines += len(scenario)
            else:
                normal_sessions += 1
            if stats is not None:
                stats[name] = stats.get(name, 0) + len(scenario)
            t += rng.expovariate(rate / max(1, len(scenario)))
            horizon = t
        else:
            if not pending:
                return  # --sessions: every session written
            horizon = float("inf")
        while pending and pending[0][0] <= horizon and emitted < lines:
            when, _, tag, msg = heapq.heappop(pending)
            if tag is EXIM:  # Exim's own mainlog line: its stamp, no syslog header
                sec = int(when)
                if exim_cache[0] != sec:
                    exim_cache = (sec, _exim_stamp(sec))
                yield f"{exim_cache[1]} {msg}"
                emitted += 1
                continue
            if iso:
                stamp = _iso_stamp(when)
            else:
                sec = int(when)
                if stamp_cache[0] != sec:
                    stamp_cache = (sec, _bsd_stamp(sec))
                stamp = stamp_cache[1]
            yield f"{stamp} {HOST} {tag}: {msg}"
            emitted += 1


def size_args(lines: int, sessions: int | None) -> list[str]:
    """This script's arguments for a log of `lines` lines, or of `sessions` sessions when given
    (for the benchmarks that run it)."""
    return ["--lines", str(lines)] if sessions is None else ["--sessions", str(sessions)]


def count_lines(path: str | os.PathLike[str]) -> int:
    """The lines of a written log (a --sessions log's size is known only once written)."""
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=None,
                    help="instead of --lines: the lines of this many ordinary sessions (messages, logins, "
                         "...) and the attacks among them, so that both MTAs' logs hold the same traffic")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("bsd", "rfc3339"), default="bsd")
    ap.add_argument("--rate", type=float, default=20.0, help="lines per second of log time (default 20)")
    ap.add_argument("--attack-share", type=float, default=0.10)
    ap.add_argument("--mta", choices=("postfix", "exim"), default="postfix",
                    help="postfix (with postscreen and sendmail) or exim: the MTA whose traffic the log holds")
    ap.add_argument("-o", "--output", default="-")
    ap.add_argument("--stats", action="store_true", help="print lines per scenario to stderr")
    args = ap.parse_args(argv)
    stats: dict[str, int] = {}
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        buf: list[str] = []
        for line in generate(args.lines, args.seed, args.format, args.rate, args.attack_share, stats, args.mta,
                             args.sessions):
            buf.append(line)
            if len(buf) >= 10000:
                out.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            out.write("\n".join(buf) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if args.stats:
        total = sum(stats.values())
        for name, n in sorted(stats.items(), key=lambda kv: -kv[1]):
            sys.stderr.write(f"{n:>9} {100 * n / total:5.1f}%  {name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
