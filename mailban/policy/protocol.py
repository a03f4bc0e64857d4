"""Postfix's policy delegation protocol, without I/O: requests out of bytes, answers as bytes.

A request is `name=value` lines ended by an empty line; the answer is one `action=...` line and
an empty line (postfix SMTPD_POLICY_README). `RequestBuffer.feed` takes what a connection sent
and returns the complete requests in it, parsed into `Request`; a request longer than
MAX_REQUEST, or one without `request=smtpd_access_policy`, raises ProtocolError, and the
server closes that connection without answering (the README: "in case of trouble the policy
server must not send a reply"; postfix then applies its default_action).

Only the attributes mailban uses are read (sasl_username, sender, client_address,
protocol_state, instance), each found with one `bytes.find` rather than by splitting every line:
postfix sends about thirty attributes and mailban reads five. When an attribute comes twice,
the first one counts (the README allows the first or the last).
Security note: every value is client text (sender) or derived from it; values are decoded with
replacement, never interpreted, and only `client_address` becomes an address, through
`normalize_ip`.
Must never: block, read the clock, or keep more than MAX_REQUEST bytes per connection.
"""

from __future__ import annotations

from ..core.records import normalize_ip

# Postfix's requests are 0.5-2 KB (the longest values are TLS certificate names); 32 KB leaves
# room for anything postfix writes and bounds what a connection may make us keep.
MAX_REQUEST = 32768
MAX_VALUE_KEPT = 320  # longer names are kept cut (they only key windows and explain lines)


class ProtocolError(ValueError):
    """The connection is not speaking the protocol: close it without an answer."""


class Request:
    """The attributes of one policy request that mailban reads ("" or None when absent)."""

    __slots__ = ("state", "user", "sender", "client", "instance")

    def __init__(self, state: str, user: str | None, sender: str | None, client: str | None,
                 instance: bytes) -> None:
        self.state = state
        self.user = user
        self.sender = sender
        self.client = client
        self.instance = instance

    def __repr__(self) -> str:
        return (f"Request(state={self.state!r}, user={self.user!r}, sender={self.sender!r}, "
                f"client={self.client!r})")


def _value(text: bytes, name: bytes) -> bytes:
    """The value of the first `name=` line of `text` (which starts with a newline), or b""."""
    at = text.find(name)
    if at < 0:
        return b""
    start = at + len(name)
    end = text.find(b"\n", start)
    return text[start:end] if end >= 0 else text[start:]


def _text(raw: bytes) -> str | None:
    if not raw:
        return None
    return raw[:MAX_VALUE_KEPT].decode("utf-8", "replace")


def parse(body: bytes) -> Request:
    """One request's lines (without the empty line that ends it) -> Request."""
    text = b"\n" + body
    if _value(text, b"\nrequest=") != b"smtpd_access_policy":
        raise ProtocolError("not an smtpd_access_policy request")
    state = _value(text, b"\nprotocol_state=")[:32].decode("ascii", "replace").upper()
    client_raw = _value(text, b"\nclient_address=")
    client = normalize_ip(client_raw[:64].decode("ascii", "replace")) if client_raw else None
    return Request(state, _text(_value(text, b"\nsasl_username=")), _text(_value(text, b"\nsender=")),
                   client, _value(text, b"\ninstance=")[:128])


class RequestBuffer:
    """What one connection sent that is not a complete request yet."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes) -> list[Request]:
        """Add `data`; return the requests it completes, in order (raises ProtocolError)."""
        if self.pending:
            data = self.pending + data
            self.pending = b""
        elif data.endswith(b"\n\n") and data.find(b"\n\n") == len(data) - 2:
            # What postfix does: one whole request per write, one write per request.
            if len(data) > MAX_REQUEST:
                raise ProtocolError("request too long")
            return [parse(data[:-2])] if len(data) > 2 else _empty()
        out: list[Request] = []
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            if end < 0:
                break
            if end - start > MAX_REQUEST:
                raise ProtocolError("request too long")
            if end == start:
                _empty()
            out.append(parse(data[start:end]))
            start = end + 2
        rest = data[start:]
        if len(rest) > MAX_REQUEST:
            raise ProtocolError("request too long")
        self.pending = rest
        return out

    @property
    def partial(self) -> bool:
        return bool(self.pending)


def _empty() -> list[Request]:
    raise ProtocolError("empty request")


def answer(action: str) -> bytes:
    """The bytes that answer with `action` (one line; the caller checked it has no newline)."""
    return b"action=" + action.encode("utf-8") + b"\n\n"
