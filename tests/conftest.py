"""Fixtures for every test: each native protocol in turn, and caches that start empty.

The helpers the tests share (three-way round trips, `assert_same`, stream checks) are in
``helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import NATIVE_PROTOCOLS

import ferropickle

#: `ferropickle.configure`'s settings as a fresh process has them.
CACHE_DEFAULTS = {
    "cache": True,
    "cache_max_bytes": 64 * 1024 * 1024,
    "loads_cache": True,
    "loads_cache_max_entries": 4096,
    "loads_cache_max_bytes": 64 * 1024 * 1024,
    "loads_cache_stateful": False,
}


@pytest.fixture(params=NATIVE_PROTOCOLS, ids=lambda p: f"proto{p}")
def protocol(request: pytest.FixtureRequest) -> int:
    """Each native protocol in turn."""
    return request.param


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Every test starts from empty caches with the default settings, and leaves them so: what
    one test pickled or configured can't change what another sees."""
    ferropickle.configure(**CACHE_DEFAULTS)
    ferropickle.cache_clear()
    yield
    ferropickle.configure(**CACHE_DEFAULTS)
    ferropickle.cache_clear()
