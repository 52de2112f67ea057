"""Fixtures shared by the dumps tests."""

import pytest


@pytest.fixture(params=[4, 5], ids=lambda p: f"proto{p}")
def protocol(request):
    """The native protocols, 4 and 5."""
    return request.param
