"""Fixtures for the ``ferropickle.dask`` tests: every test starts and ends with the plugin
uninstalled, distributed's functions in place and the per-prefix accounting empty.

Loading this file also puts this directory on ``sys.path`` (pytest's default import mode), so
the tests here and in ``cluster/`` import ``plugin_support``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from plugin_support import assert_stock

import ferropickle.dask as ferro_dask
from ferropickle.dask._state import STATE


@pytest.fixture(autouse=True)
def clean_plugin() -> Iterator[None]:
    """No test sees another's installation or accounting."""
    STATE.accounting.reset()
    yield
    ferro_dask.uninstall()
    assert_stock()
    STATE.accounting.reset()


@pytest.fixture
def installed() -> Iterator[None]:
    assert ferro_dask.install() is True
    yield
    ferro_dask.uninstall()


@pytest.fixture
def never_left_installed() -> Iterator[None]:
    """For tests of install itself: each must uninstall what it installed."""
    yield
    assert not ferro_dask.installed(), "a test left ferropickle.dask installed"
