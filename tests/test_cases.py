"""Scenario fixtures: each folder of tests/cases/ is a configuration, an input log and the decisions
`mailban replay --json` takes on it (the daemon's pipeline and decision stage with log time as the
clock). A change of behaviour shows as a diff of expected.jsonl:

    MAILBAN_REGEN_CASES=1 python -m pytest tests/test_cases.py    # rewrite them, then review the diff
    python tests/cases/make_inputs.py                              # after changing a scenario's input

tests/cases/make_inputs.py says how the inputs are written; each mailban.toml says what its case
shows."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from mailban import config
from mailban.offline import run_replay

CASES = sorted(p for p in (Path(__file__).resolve().parent / "cases").iterdir() if p.is_dir())


def replayed(case: Path) -> str:
    out = io.StringIO()
    assert run_replay([str(case / "input.log")], config.load(str(case / "mailban.toml")), True, out) == 0
    return out.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Path) -> None:
    got = replayed(case)
    expected = case / "expected.jsonl"
    if os.environ.get("MAILBAN_REGEN_CASES") == "1":
        expected.write_text(got)
    assert got == expected.read_text(), f"{case.name}: decisions changed (MAILBAN_REGEN_CASES=1 rewrites them)"


def _decisions(name: str) -> list[dict]:
    return [json.loads(line) for line in (Path(__file__).resolve().parent / "cases" / name / "expected.jsonl")
            .read_text().splitlines()]


def test_the_cases_show_what_their_headers_say() -> None:
    """The expected files are reviewed once here, so that a regenerated file cannot quietly
    accept a wrong behaviour."""
    bans = [(d["jail"], d["key"]) for d in _decisions("threshold") if d["decision"] == "ban"]
    assert ("mail-abuse", "198.51.100.1") in bans
    assert not any(key in ("198.51.100.2", "198.51.100.3") for _j, key in bans)

    lengths = [d["bantime"] for d in _decisions("escalation") if d["jail"] == "mail-abuse"]
    assert lengths == [3600.0, 7200.0, 14400.0]

    fold = _decisions("prefix-fold")
    assert [(d["decision"], d.get("key") or d.get("into")) for d in fold if d["jail"] == "mail-abuse"] == [
        ("ban", "2001:db8:1:2::a"), ("ban", "2001:db8:1:2::b"), ("ban", "2001:db8:1:2::/64"),
        ("folded", "2001:db8:1:2::/64"), ("ban", "2001:db8:9:9::1")]
    assert next(d for d in fold if d["decision"] == "folded")["ips"] == ["2001:db8:1:2::a", "2001:db8:1:2::b"]

    valve = [(d["decision"], d["key"]) for d in _decisions("valve") if d["jail"] == "mail-abuse"]
    assert [k for what, k in valve if what == "ban"] == ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.50"]
    assert [k for what, k in valve if what == "suppressed"] == [f"203.0.113.{n}" for n in range(4, 9)]

    guess = _decisions("account-guess-owner")
    assert ("user", "alice@example.test") in [(d["key_type"], d["key"]) for d in guess]
    banned_ips = {d["key"] for d in guess if d["jail"] == "account-guess" and d["key_type"] == "ip"}
    assert {f"198.51.100.{20 + k}" for k in range(10)} | {"198.51.100.40"} == banned_ips
    assert "192.0.2.77" not in {d["key"] for d in guess}  # the owner

    (stolen,) = [d for d in _decisions("outbound-hold") if d["decision"] == "ban"]
    assert (stolen["jail"], stolen["key"], stolen["count"]) == ("outbound-user", "bob@example.test", 200)
    assert stolen["actions"] == ["notify", "queue-hold", "sasl-disable"]

    exim = [d for d in _decisions("exim-outbound") if d["decision"] == "ban"]
    assert [(d["jail"], d["key_type"], d["key"], d["count"]) for d in exim] == [
        ("outbound-user", "user", "bob@example.test", 200), ("outbound-uid", "uid", "33", 200)]
    assert exim[0]["actions"] == ["notify", "queue-hold", "sasl-disable"]
    assert exim[0]["ips"] == [f"198.51.100.{n}" for n in range(100, 125)]  # from H=, never the forged one
    assert all("U=www-data P=local" in line for line in exim[1]["lines"])
    assert not any(d["key"] in ("news@example.test", "192.0.2.10") for d in _decisions("exim-outbound"))
