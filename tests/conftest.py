"""Fixtures for every test: each native protocol in turn, and caches that start empty.

The helpers the tests share (three-way round trips, `assert_same`, stream checks) are in
``oracle.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from oracle import NATIVE_PROTOCOLS

import ferropickle


@pytest.fixture(params=NATIVE_PROTOCOLS, ids=lambda p: f"proto{p}")
def protocol(request: pytest.FixtureRequest) -> int:
    """Each native protocol in turn."""
    return request.param


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Every test starts from empty caches and leaves them so: what one test pickled can't
    change what another sees (the caches only ever hold what can't go stale, so this keeps
    tests independent of their order rather than correct)."""
    ferropickle.cache_clear()
    yield
    ferropickle.cache_clear()
