"""Found, missed and wrong over the Exim breadth captures (tests/filters/exim*-captured-*.log):
how the filters do on real Exim lines, counted without trusting the filters' own opinion of what
an attack line is.

    python3 -m tests.mta.exim_score [--filters DIR] FILE...

An *attack line* is a line that names, where Exim writes the client, one of tests/mta/exim_breadth.py's
attacking clients (127.0.0.N or fd00:e1::N, N in ATTACKERS) and carries one of Exim's failure
words (FAILURE below); the ones that are not the client's doing (`temporarily rejected`, 435, the
+smtp_incomplete_transaction line) are left out. Per line:
- found: an `exim.*` event (opt-in rules included) with that client's address;
- missed: an attack line with no such event;
- wrong: any event, on any line, whose address is not the line's client (the forged 6.6.6.6, or
  127.0.0.1, the remote server of the smarthost deliveries).
`--filters DIR` scores with another tree's filters.d (a base branch's, to compare before and after).
Reads sample files only: no Exim, no root.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mailban.config import load_filter_file
from mailban.core.filters import FilterSet
from mailban.core.syslog import SyslogParser
from tests.filter_samples import NOW, all_filters

# tests/mta/exim_breadth.py's clients that attack (the others: .13 the submission, .39 an ordinary
# message, .46 a forged sender then QUIT, .49 a TLS submission, .54 the right password, .55 after
# dovecot stopped)
ATTACKERS = frozenset(range(10, 49)) - {13, 39, 46} | {50, 51, 52, 53} | set(range(56, 71))
# The client as Exim writes it: `[ip]` after H=, `from`, a name or a HELO, never inside a quoted
# command (the hostile clients forge only 6.6.6.6, so the breadth clients' own addresses are Exim's).
# dovecot's log (the `dovecot` run) writes it as `(user,ip)` or `(user,ip,sasl:plain)`.
CLIENT = re.compile(r"(?:\[|(?<=,))(127\.0\.0\.|fd00:e1::)(\d+)(?:\]|(?=[,)]))")
FAILURE = re.compile(r"authenticator failed|rejected|synchronization error|syntax error|protocol error|dropped"
                     r"|timeout|lost|no MAIL|TLS error|refused|too many|Error or EOF|unexpected disconnection"
                     r"|VRFY failed")
# (`[ip] SSL verify error: ... cert=SUBJECT`: an OpenSSL build noting a client certificate it could
# not verify, no attack; the subject is the client's, .47 forges a reject in it)
NOT_THE_CLIENTS = re.compile(r"temporarily rejected|: 435 |incomplete transaction|SMTP error from remote"
                             r"|\] (?:SSL|DANE) verify ")


def score(path: Path, fset: FilterSet) -> tuple[int, int, int, list[str], list[str]]:
    """(attack lines, found, wrong events, missed lines, wrong lines) of one sample file."""
    parser = SyslogParser(NOW)
    attacks = found = 0
    missed: list[str] = []
    wrong: list[str] = []
    for raw in path.read_bytes().split(b"\n"):
        if not raw or raw.startswith(b"#"):
            continue
        text = raw.decode(errors="replace")
        header = parser.parse(raw)
        events = [e for e in (fset.match_logged(parser, raw, header) if header else []) if e.ip]
        clients = {m.group(1) + m.group(2) for m in CLIENT.finditer(text)}
        wrong += [f"{e.filter}.{e.rule} ip={e.ip}: {text}" for e in events if e.ip not in clients
                  or "remote mail server" in text]
        m = CLIENT.search(text)
        if not m or int(m.group(2)) not in ATTACKERS or not FAILURE.search(text) or NOT_THE_CLIENTS.search(text):
            continue
        attacks += 1
        ip = m.group(1) + m.group(2)
        if any(e.filter == "exim" and e.ip == ip for e in events):
            found += 1
        else:
            missed.append(text)
    return attacks, found, len(wrong), missed, wrong


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "--filters":
        fset = FilterSet([load_filter_file(p) for p in sorted(Path(argv[1]).glob("*.toml"))])
        argv = argv[2:]
    else:
        fset = all_filters()
    total = [0, 0, 0]
    for name in argv:
        attacks, found, nwrong, missed, wrong = score(Path(name), fset)
        total = [total[0] + attacks, total[1] + found, total[2] + nwrong]
        print(f"{Path(name).name}: {found} of {attacks} found, {len(missed)} missed, {nwrong} wrong")
        for text in missed:
            print(f"  missed: {text[:200]}")
        for text in wrong:
            print(f"  WRONG: {text[:200]}")
    print(f"total: {total[1]} of {total[0]} attack lines found, {total[0] - total[1]} missed, {total[2]} wrong")


if __name__ == "__main__":
    main(sys.argv[1:])
