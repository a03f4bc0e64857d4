"""Every line of tests/filters/*.log produces exactly the events written above it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.filter_samples import SAMPLES, all_filters, expected_and_actual

FILES = sorted(SAMPLES.glob("*.log"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_sample_file(path: Path) -> None:
    fset = all_filters()
    wrong = [
        f"{path.name}:{lineno}: expected {exp!r}, got {act!r}"
        for lineno, exp, act in expected_and_actual(path, fset)
        if exp != act
    ]
    assert not wrong, "\n".join(wrong)


def test_every_shipped_rule_has_a_sample() -> None:
    fset = all_filters()
    covered = set()
    for path in FILES:
        for _lineno, expected, _actual in expected_and_actual(path, fset):
            for part in expected.split(" ; "):
                covered.add(part.split(" ")[0])
    rules = {f"{f.name}.{r.id}" for f in fset.filters for r in f.rules}
    assert rules - covered == set(), f"rules without a sample line: {sorted(rules - covered)}"


def test_red_team_captures_never_name_a_forged_address() -> None:
    """The real lines captured for issue 20 carry forged addresses in client text (192.0.2.0/24,
    2001:db8::/32); every event the filters make of them names the real client (127.0.0.0/8)."""
    import ipaddress

    fset = all_filters()
    for path in sorted(SAMPLES.glob("*-redteam.log")):
        for lineno, _expected, actual in expected_and_actual(path, fset):
            for part in actual.split(" ; "):
                ip = next((w[3:] for w in part.split(" ") if w.startswith("ip=")), None)
                if ip is not None:
                    assert ipaddress.ip_address(ip).is_loopback, (path.name, lineno, part)


def test_exim_captures_never_name_a_forged_address_or_a_remote_server() -> None:
    """The real Exim lines of tests/mta/exim_breadth.py carry a forged 6.6.6.6 in client text and
    hostile replies of remote servers (127.0.0.1) in delivery lines: every event names a client
    (127.0.0.0/8, fd00:e1::/64), and no delivery line gives an event with an address."""
    import ipaddress

    fset = all_filters()
    clients = ipaddress.ip_network("fd00:e1::/64")
    paths = sorted(SAMPLES.glob("exim*-captured-*.log"))
    # 4.94, 4.96, 4.98, 4.98 with OpenSSL 3 and with 1.1.1, 4.100: six runs each (dovecot, syslog-nodup, ...)
    assert len(paths) == 36
    for path in paths:
        lines = path.read_text().split("\n")
        for lineno, _expected, actual in expected_and_actual(path, fset):
            for part in actual.split(" ; "):
                ip = next((w[3:] for w in part.split(" ") if w.startswith("ip=")), None)
                if ip is None:
                    continue
                address = ipaddress.ip_address(ip)
                assert address.is_loopback or address in clients, (path.name, lineno, part)
                assert "remote mail server" not in lines[lineno - 1], (path.name, lineno, part)


def test_exim_captures_every_attack_line_found_but_quoted_commands() -> None:
    """tests/mta/exim_score.py over the captures of 4.94, 4.96, 4.98 (GnuTLS, OpenSSL 3 and 1.1.1) and 4.100: no wrong address,
    and the only attack lines missed are the ones whose command holds both a quote and a forged
    ` H=` (4.98 and older write it raw, 4.99+ escape it as `\\"` but leave a `\\` as it is: no
    reading of the quotes is sure, and Exim's ` H=` is then not the line's only one)."""
    from tests.mta.exim_score import score

    fset = all_filters()
    for path in sorted(SAMPLES.glob("exim*-captured-*.log")):
        attacks, found, wrong, missed, _ = score(path, fset)
        assert attacks and wrong == 0, path.name
        for text in missed:
            assert ('rejected "MAIL FROM:<' in text and "pipelining was not advertised" in text
                    or 'SMTP syntax error in "MAIL FROM: \\"x\\"' in text  # .48, 4.99+
                    or 'SMTP syntax error in "MAIL FROM: "x"' in text), (path.name, text)  # .48, 4.98 and older
