"""Deterministic synthetic postfix logs in the exact line formats postfix 3.7 writes (compare
tests/filters/postfix*.log, captured from the real program), for replay scenarios.

Each helper appends (time, line) pairs to a Log; `text()` sorts them by time and renders BSD
syslog lines, so the lines of many messages interleave as they do on a busy host.
"""

from __future__ import annotations

import random
import time as _time
from dataclasses import dataclass, field

T0 = 1795600000.0  # 2026-11-25T08:26:40Z; tests replay with log time as the clock


@dataclass
class Log:
    seed: int = 1
    host: str = "mx1"
    entries: list[tuple[float, int, str]] = field(default_factory=list)
    rng: random.Random = field(init=False)
    _qid: int = 0x100000

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def add(self, t: float, tag: str, msg: str) -> None:
        self.entries.append((t, len(self.entries), f"{_stamp(t)} {self.host} {tag}: {msg}"))

    def qid(self) -> str:
        self._qid += self.rng.randrange(1, 5000)
        return f"{self._qid:X}A{self.rng.randrange(16):X}"

    def pid(self) -> int:
        return self.rng.randrange(1000, 60000)

    # ---- traffic -----------------------------------------------------------------------------
    def authenticated_message(self, t: float, user: str, ip: str, nrcpt: int = 1,
                              status: str = "sent") -> str:
        qid, smtpd, qmgr, smtp = self.qid(), self.pid(), 1777, self.pid()
        self.add(t, f"postfix/submission/smtpd[{smtpd}]", f"connect from unknown[{ip}]")
        self.add(t + 0.1, f"postfix/submission/smtpd[{smtpd}]",
                 f"{qid}: client=unknown[{ip}], sasl_method=PLAIN, sasl_username={user}")
        self.add(t + 0.2, f"postfix/cleanup[{self.pid()}]", f"{qid}: message-id=<{qid}@{self.host}.example.test>")
        self.add(t + 0.2, f"postfix/qmgr[{qmgr}]", f"{qid}: from=<{user}>, size={self.rng.randrange(500, 90000)}, nrcpt={nrcpt} (queue active)")
        self.add(t + 0.3, f"postfix/submission/smtpd[{smtpd}]", f"disconnect from unknown[{ip}] ehlo=1 auth=1 mail=1 rcpt={nrcpt} data=1 quit=1 commands={5 + nrcpt}")
        self._deliver(t + 0.5, qid, nrcpt, status, smtp)
        return qid

    def pickup_message(self, t: float, uid: int, sender: str, nrcpt: int = 1, status: str = "sent") -> str:
        qid = self.qid()
        self.add(t, f"postfix/pickup[{self.pid()}]", f"{qid}: uid={uid} from=<{sender}>")
        self.add(t + 0.1, f"postfix/cleanup[{self.pid()}]", f"{qid}: message-id=<{qid}@{self.host}.example.test>")
        self.add(t + 0.1, "postfix/qmgr[1777]", f"{qid}: from=<{sender}@{self.host}.example.test>, size=1234, nrcpt={nrcpt} (queue active)")
        self._deliver(t + 0.4, qid, nrcpt, status, self.pid())
        return qid

    def _deliver(self, t: float, qid: str, nrcpt: int, status: str, pid: int) -> None:
        dsn = {"sent": "2.0.0", "bounced": "5.1.1", "deferred": "4.4.1"}[status]
        why = {"sent": "250 2.0.0 Ok: queued as 4Q9F", "bounced": "host mx.remote.example.net[203.0.113.25] said: 550 5.1.1 no such user (in reply to RCPT TO command)",
               "deferred": "connect to mx.remote.example.net[203.0.113.25]:25: Connection timed out"}[status]
        for r in range(nrcpt):
            self.add(t + r * 0.01, f"postfix/smtp[{pid}]",
                     f"{qid}: to=<rcpt{self.rng.randrange(10**6)}@remote.example.net>, relay=mx.remote.example.net[203.0.113.25]:25, "
                     f"delay=0.5, delays=0.1/0/0.2/0.2, dsn={dsn}, status={status} ({why})")
        if status != "deferred":
            self.add(t + 0.1 + nrcpt * 0.01, "postfix/qmgr[1777]", f"{qid}: removed")

    def sasl_failure(self, t: float, user: str, ip: str) -> None:
        pid = self.pid()
        self.add(t, f"postfix/submission/smtpd[{pid}]", f"connect from unknown[{ip}]")
        self.add(t + 0.5, f"postfix/submission/smtpd[{pid}]",
                 f"warning: unknown[{ip}]: SASL LOGIN authentication failed: (reason unavailable), sasl_username={user}")
        self.add(t + 0.6, f"postfix/submission/smtpd[{pid}]", f"disconnect from unknown[{ip}] ehlo=1 auth=0/1 quit=1 commands=2/3")

    def inbound_message(self, t: float, ip: str, rcpt: str) -> None:
        qid, pid = self.qid(), self.pid()
        self.add(t, f"postfix/smtpd[{pid}]", f"connect from mail.sender.example[{ip}]")
        self.add(t + 0.1, f"postfix/smtpd[{pid}]", f"{qid}: client=mail.sender.example[{ip}]")
        self.add(t + 0.2, "postfix/qmgr[1777]", f"{qid}: from=<news@sender.example>, size=4321, nrcpt=1 (queue active)")
        self.add(t + 0.3, f"postfix/local[{self.pid()}]", f"{qid}: to=<{rcpt}>, relay=local, delay=0.3, delays=0.2/0/0/0.1, dsn=2.0.0, status=sent (delivered to mailbox)")
        self.add(t + 0.3, "postfix/qmgr[1777]", f"{qid}: removed")

    def text(self) -> str:
        return "".join(line + "\n" for _, _, line in sorted(self.entries))


def _stamp(t: float) -> str:
    tm = _time.gmtime(t)
    return f"{_time.strftime('%b', tm)} {tm.tm_mday:2d} {_time.strftime('%H:%M:%S', tm)}"


def outbound_incident(seed: int = 1) -> Log:
    """An hour of a small hosting company's mail: 300 ordinary users sending a few messages
    each, a newsletter account at 150 messages an hour, a web app's uid at a steady 20 an hour,
    inbound mail, and two incidents: a stolen account sending 1,500 messages from 30 addresses,
    and a hacked PHP site (uid 1033) sending 600 messages through pickup."""
    log = Log(seed=seed)
    rng = log.rng
    hour = 3600.0
    for u in range(300):
        for _ in range(rng.randrange(1, 6)):
            log.authenticated_message(T0 + rng.uniform(0, hour), f"user{u}@example.test",
                                      f"198.51.100.{u % 200 + 1}", nrcpt=rng.randrange(1, 4))
    for i in range(150):
        log.authenticated_message(T0 + i * 24.0, "newsletter@example.test", "203.0.113.10", nrcpt=1)
    for i in range(20):
        log.pickup_message(T0 + i * 180.0, 1001, "shop", nrcpt=1)
    for i in range(400):
        log.inbound_message(T0 + rng.uniform(0, hour), f"203.0.113.{rng.randrange(20, 250)}", f"user{i % 300}@example.test")
    for i in range(1500):
        log.authenticated_message(T0 + 600 + i * 2.0, "victim@example.test", f"192.0.2.{i % 30 + 100}",
                                  nrcpt=rng.randrange(5, 40), status=rng.choice(["sent", "bounced", "deferred"]))
    for i in range(600):
        log.pickup_message(T0 + 900 + i * 4.0, 1033, "hackedsite", nrcpt=rng.randrange(1, 20))
    return log
