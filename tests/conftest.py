"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.netns import Link


@pytest.fixture()
def link() -> Iterator[Link]:
    """Two network namespaces joined by a veth pair (see tests/netns.py), removed afterwards."""
    link = Link()
    try:
        link.up()
        yield link
    finally:
        link.close()
