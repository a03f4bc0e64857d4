"""A log writer for the crash and rotation scenarios: paced lines, logrotate-style rotations.

`Writer` appends lines to a log at a target rate from a thread, and rotates the log every
`rotate_every` seconds, alternating a rename rotation (`mail.log` -> `mail.log.N`, the writer
reopens at once, as rsyslog does after logrotate's postrotate HUP) and a copytruncate (copy to
`mail.log.N`, truncate; nothing is written between the two, as with logrotate's copytruncate on a
quiet instant). Every line is unique (a sequence number), so a line read twice or skipped shows
in the counts. `attack_plan()` makes the failure lines whose bans the scenarios check: addresses
with exactly `maxretry` failures (must be banned once, with `maxretry` distinct lines) and
addresses with one failure less (must never be banned: a line counted twice would ban them).
No shell is used; the writer only touches files in the directory it is given.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator


def stamp(when: float) -> str:
    return time.strftime("%b %e %H:%M:%S", time.localtime(when))


def attacker(i: int) -> str:
    """Distinct addresses from 100.64.0.0/10 (shared address space: on no test interface)."""
    return f"100.{64 + (i >> 16) % 64}.{(i >> 8) & 255}.{i & 255}"


def failure(ip: str, tag: str, when: float) -> bytes:
    return (f"{stamp(when)} mail postfix/smtpd[4242]: warning: unknown[{ip}]: SASL PLAIN authentication "
            f"failed: (reason unavailable), sasl_username={tag}\n").encode()


def noise(seq: int, when: float) -> bytes:
    return (f"{stamp(when)} mail postfix/smtpd[4243]: connect from mx{seq % 997}.example.net"
            f"[203.0.113.{seq % 250 + 1}] seq={seq}\n").encode()


def attack_plan(banned: int, near: int, maxretry: int, seed: int) -> list[tuple[str, int]]:
    """(address, failure number) in a shuffled order that spreads each address's failures."""
    rng = random.Random(seed)
    events = [(attacker(i), k) for i in range(banned) for k in range(maxretry)]
    events += [(attacker(banned + i), k) for i in range(near) for k in range(maxretry - 1)]
    rng.shuffle(events)
    return events


class Writer:
    def __init__(self, log: Path, rate: float, seconds: float, rotate_every: float,
                 attacks: list[tuple[str, int]], seed: int = 1, keep: int = 3) -> None:
        self.log = log
        self.rate = rate
        self.seconds = seconds
        self.rotate_every = rotate_every
        self.attacks = attacks
        self.rng = random.Random(seed)
        self.keep = keep  # rotated files kept (older ones are deleted, like logrotate's `rotate`)
        self.lock = threading.Lock()
        self.fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.written = 0
        self.rotations: list[str] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error

    def _lines(self) -> Iterator[bytes]:
        total = int(self.rate * self.seconds)
        attacks = iter(self.attacks)
        # Spread the attack lines evenly over the run.
        every = max(1, total // max(1, len(self.attacks)))
        for seq in range(total):
            now = time.time()
            if seq % every == 0:
                nxt = next(attacks, None)
                if nxt is not None:
                    ip, k = nxt
                    yield failure(ip, f"u-{ip}-{k}", now)
                    continue
            yield noise(seq, now)
        for ip, k in attacks:  # whatever did not fit
            yield failure(ip, f"u-{ip}-{k}", time.time())

    def _run(self) -> None:
        try:
            started = time.monotonic()
            next_rotation = started + self.rotate_every
            batch = max(1, int(self.rate / 200))  # 200 writes a second
            pending: list[bytes] = []
            for n, line in enumerate(self._lines(), start=1):
                pending.append(line)
                if len(pending) < batch:
                    continue
                self._write(pending)
                pending = []
                due = started + n / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if time.monotonic() >= next_rotation:
                    next_rotation += self.rotate_every
                    self.rotate()
            if pending:
                self._write(pending)
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.done.set()

    def _write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        with self.lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            self.written += len(lines)

    def rotate(self) -> None:
        k = len(self.rotations) + 1
        target = f"{self.log}.{k}"
        with self.lock:
            if k % 2:
                os.rename(self.log, target)
                os.close(self.fd)
                self.fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                self.rotations.append("rename")
            else:
                shutil.copyfile(self.log, target)
                os.truncate(self.log, 0)
                self.rotations.append("copytruncate")
        old = Path(f"{self.log}.{k - self.keep}")
        if k > self.keep and old.exists():
            old.unlink()

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
