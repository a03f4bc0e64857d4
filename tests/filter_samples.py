"""Filter sample files: every log line carries its expected events on the comment line above it.

Format (tests/filters/*.log):
    # expect: none
    <log line>
    # expect: postfix.sasl-auth-failed auth-failure ip=192.0.2.1 user=alice@example.test
    <log line>
Several events for one line are separated by " ; ". `--regen` rewrites the expectations from what
the filters produce now, for review in the diff (python -m tests.filter_samples --regen FILE).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mailban.config import shipped_dir, load_filter_file
from mailban.core.filters import FilterSet
from mailban.core.records import Event
from mailban.core.syslog import SyslogParser

SAMPLES = Path(__file__).parent / "filters"
NOW = 1795600000.0  # 2026-11-25: BSD timestamps in the samples infer 2026


def all_filters() -> FilterSet:
    return FilterSet([load_filter_file(p) for p in sorted(shipped_dir("filters.d").glob("*.toml"))])


def describe(event: Event, logins: frozenset[tuple[str, str]] = frozenset()) -> str:
    parts = [f"{event.filter}.{event.rule}", event.kind]
    if (event.filter, event.rule) in logins and event.user is not None:
        # a local login name (Exim's U=), which the pipeline resolves to the uid
        parts.append(f"login={event.user}")
        event = event._replace(user=None)
    for name in ("ip", "user", "uid", "sender", "queue_id", "recipients", "status"):
        value = getattr(event, name)
        if value is not None:
            parts.append(f"{name}={value}")
    if event.count != 1:
        parts.append(f"count={event.count}")
    return " ".join(parts)


def expected_and_actual(path: Path, fset: FilterSet) -> list[tuple[int, str, str]]:
    parser = SyslogParser(NOW)
    rows = []
    expect: str | None = None
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if raw.startswith(b"# expect:"):
            expect = raw[len(b"# expect:"):].decode().strip()
            continue
        if not raw or raw.startswith(b"#"):
            continue
        header = parser.parse(raw)
        events = fset.match_logged(parser, raw, header) if header else []
        actual = " ; ".join(describe(e, fset.login_rules) for e in events) or "none"
        rows.append((lineno, expect if expect is not None else "<missing expectation>", actual))
        expect = None
    return rows


def regen(path: Path) -> None:
    fset = all_filters()
    parser = SyslogParser(NOW)
    out: list[bytes] = []
    for raw in path.read_bytes().split(b"\n"):
        if raw.startswith(b"# expect:"):
            continue
        if raw and not raw.startswith(b"#"):
            header = parser.parse(raw)
            events = fset.match_logged(parser, raw, header) if header else []
            out.append(b"# expect: " + (" ; ".join(describe(e, fset.login_rules) for e in events) or "none").encode())
        out.append(raw)
    path.write_bytes(b"\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--regen":
        for name in sys.argv[2:]:
            regen(Path(name))
    else:
        print(__doc__)
