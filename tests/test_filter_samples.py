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
