"""Queue-id correlation: attach the account that submitted a message to its later log lines.

Inputs: events in log order, with the syslog header of their line. Output: the same events, with
`user`, `uid`, `ip` and `sender` filled in from earlier lines of the same message, or None for an
event that carries nothing new (qmgr logs `from=..., nrcpt=N (queue active)` again at every retry
of a deferred message: counting it twice would count its recipients twice).

A message's lines are joined by (host, queue id): postfix smtpd `client=..., sasl_username=` or
pickup `uid=N from=<...>` open the record, qmgr `nrcpt=` and the delivery agents' `status=` read
it, qmgr `removed` closes it. sendmail logs its successful AUTH once per SMTP session without a
queue id, so its `AUTH=server` line is remembered per (host, program, pid) and joined to the
`from=` lines that the same process logs next.

A failure whose line names no address but carries a queue id (sendmail cuts `relay=%.100s` in its
AUTH failure lines: a client with a long reverse name loses its `[ip]` there) is held until a
later line of the same session and queue id names the address (sendmail's `did not issue MAIL`
or `possible SMTP attack` at the latest); it then comes out after that line's event, with the
address filled in (`released`, drained by the pipeline). It is never counted with a guessed
address, and a session that never names one drops it after SESSION_TTL.

Memory is bounded: at most `max_messages` records (the oldest go first) and none older than `ttl`
in log time, so queue ids whose later lines never come cannot accumulate.
Must never: read the clock or perform I/O; trust a line's text for anything but its own fields.
"""

from __future__ import annotations

from .records import FAILURE_KINDS, Event
from .syslog import Header

DEFAULT_TTL = 5 * 86400.0  # postfix's maximal_queue_lifetime: a deferred message may live 5 days
DEFAULT_MAX_MESSAGES = 200_000
SESSION_TTL = 3600.0
MAX_SESSIONS = 20_000
MAX_HELD = 20_000  # held failures waiting for their session's address (see the module doc)


class Message:
    """A message's record: who submitted it, and whether qmgr queued it already."""

    __slots__ = ("time", "user", "uid", "ip", "sender", "queued")

    def __init__(self, time: float, user: str | None, uid: int | None, ip: str | None,
                 sender: str | None) -> None:
        self.time = time
        self.user = user
        self.uid = uid
        self.ip = ip
        self.sender = sender
        self.queued = False


class Correlator:
    __slots__ = ("ttl", "max_messages", "messages", "sessions", "dropped", "held", "released")

    def __init__(self, ttl: float = DEFAULT_TTL, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.ttl = ttl
        self.max_messages = max_messages
        # (host, queue id) -> record; insertion order is age order, so expiry looks at the front.
        self.messages: dict[tuple[bytes | None, str], Message] = {}
        self.sessions: dict[tuple[bytes | None, bytes, bytes | None], tuple[float, str | None, str | None]] = {}
        self.dropped = 0  # records evicted by the cap before their message left the queue
        # (host, queue id) -> failures without an address, oldest first; and those a later line
        # of their session gave an address, for the pipeline to take after the current line.
        self.held: dict[tuple[bytes | None, str], list[Event]] = {}
        self.released: list[Event] = []

    def process(self, event: Event, header: Header) -> Event | None:
        kind = event.kind
        qid = event.queue_id
        if qid is None:
            if kind == "submission" and event.user is not None:
                self._remember_session(event, header)
            return event
        key = (header.host, qid)
        if kind == "submission":
            self._store(key, Message(event.time, event.user, event.uid, event.ip, event.sender), event.time)
            return event
        msg = self.messages.pop(key, None) if kind == "removed" else self.messages.get(key)
        if kind == "queued":
            if msg is None:
                # sendmail: the `from=` line opens the record; its session may know the user.
                session = self.sessions.get((header.host, header.program, header.pid))
                user = session[1] if session and session[2] in (None, event.ip) else None
                msg = Message(event.time, user, event.uid, event.ip, event.sender)
                self._store(key, msg, event.time)
                if self.held and event.ip is not None:
                    # the envelope's failures (`<rcpt>... User unknown`) came before it
                    self.unrecorded(event, key)
            elif msg.queued:
                return None  # a retry of a message already counted
            msg.queued = True
            if msg.sender is None:
                msg.sender = event.sender
        if msg is None:
            return self.unrecorded(event, key) if event.ip is None or self.held else event
        # The event is a tuple (records.Event): fill the four joined fields by position, which
        # costs a fraction of _replace() on the two lines of every message that get here.
        time, kind, filt, rule, ip, user, uid, sender, *rest = event
        if user is None:
            user = msg.user
        if uid is None:
            uid = msg.uid
        if ip is None:
            ip = msg.ip
        if sender is None:
            sender = msg.sender
        if user is event.user and uid is event.uid and ip is event.ip and sender is event.sender:
            return event
        return Event.make((time, kind, filt, rule, ip, user, uid, sender, *rest))

    def address_of(self, kind: str, qid: str, ip: str | None, host: bytes | None,
                   when: float) -> tuple[bool, str | None]:
        """process() for an event with a queue id, reduced to what `mailban test`'s summary
        reads: whether the event is kept (a qmgr retry is not) and its address afterwards.

        The same records are kept and evicted as by process() (user, uid and sender aside,
        which the summary does not show), so a summary fed only through here counts exactly
        what process() would pass; it saves building an Event and a Header per queue line
        (~400,000 in the 1M-line benchmark log), the serial part of a multi-process summary."""
        key = (host, qid)
        if kind == "submission":
            self._store(key, Message(when, None, None, ip, None), when)
            return True, ip
        msg = self.messages.pop(key, None) if kind == "removed" else self.messages.get(key)
        if kind == "queued":
            if msg is None:
                msg = Message(when, None, None, ip, None)
                self._store(key, msg, when)
            elif msg.queued:
                return False, ip  # a retry of a message already counted
            msg.queued = True
        if msg is None or ip is not None:
            return True, ip
        return True, msg.ip

    def unrecorded(self, event: Event, key: tuple[bytes | None, str]) -> Event | None:
        """An event with a queue id that no record knows (the C correlate() calls this too): a
        failure without an address is held (None); an event with one releases what its session
        held."""
        if event.ip is None:
            if event.kind not in FAILURE_KINDS:
                return event
            held = self.held
            waiting = held.get(key)
            if waiting is None:
                waiting = held[key] = []
            waiting.append(event)
            horizon = event.time - SESSION_TTL
            while held:
                first = next(iter(held))
                if len(held) <= MAX_HELD and held[first][-1].time >= horizon:
                    break
                del held[first]
            return None
        waiting = self.held.pop(key, None)
        if waiting:
            ip = event.ip
            self.released.extend(e._replace(ip=ip) for e in waiting)
        return event

    def _store(self, key: tuple[bytes | None, str], msg: Message, now: float) -> None:
        messages = self.messages
        messages.pop(key, None)
        messages[key] = msg
        horizon = now - self.ttl
        while messages:
            oldest_key = next(iter(messages))
            oldest = messages[oldest_key]
            if len(messages) > self.max_messages:
                self.dropped += 1 if not oldest.queued else 0
            elif oldest.time >= horizon:
                break
            del messages[oldest_key]

    def _remember_session(self, event: Event, header: Header) -> None:
        sessions = self.sessions
        key = (header.host, header.program, header.pid)
        sessions.pop(key, None)
        sessions[key] = (event.time, event.user, event.ip)
        horizon = event.time - SESSION_TTL
        while sessions:
            first = next(iter(sessions))
            if len(sessions) <= MAX_SESSIONS and sessions[first][0] >= horizon:
                break
            del sessions[first]

    def queue_ids(self, key_type: str, key: str) -> list[str]:
        """The queue ids of the messages this key submitted that are still recorded (what
        queue-hold holds at once when it acts on an account, a uid or a sender)."""
        if key_type not in ("user", "uid", "sender", "ip"):
            return []
        want: object = key
        if key_type == "uid":
            if not key.isdigit():
                return []
            want = int(key)
        return [qid for (_host, qid), msg in self.messages.items() if getattr(msg, key_type) == want]

    def __len__(self) -> int:
        return len(self.messages)
