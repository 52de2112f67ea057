"""CPython's own pickle tests (``Lib/test/pickletester.py`` of the running interpreter), bound to
ferropickle the way ``Lib/test/test_pickle.py`` binds ``pickle.dumps``/``pickle.loads``
(``InMemoryPickleTests``), in the three directions: ours both ways, ours read by stock
``pickle.loads``, and stock ``pickle.dumps`` read by ours.

Every test that passes with C pickle passes here, except the deliberate differences listed in
``DELIBERATE`` (each an expected failure, which fails the run if it ever starts passing).
"""

from __future__ import annotations

import functools
import pickle
import unittest
from typing import Any

import pytest

pickletester = pytest.importorskip("test.pickletester", reason="needs the stdlib test package")

import ferropickle  # noqa: E402

#: Tests of our dumps that fail on purpose, with the reason (docs/compatibility.md lists the
#: same).
DELIBERATE = {
    "test_local_lookup_error": (
        "local functions (and a function whose name doesn't lead back to it) are pickled by "
        "value, as cloudpickle does, where pickle raises AttributeError"
    ),
    "test_py_methods": (
        "staticmethod and classmethod objects are pickled (cloudpickle's _classmethod_reduce), "
        "where pickle raises TypeError; the rest of the test passes"
    ),
    "test_c_methods": (
        "the same for a staticmethod wrapping a builtin (bytearray.__dict__['maketrans'])"
    ),
}


def with_deliberate_differences(cls: type) -> type:
    """Marks `DELIBERATE`'s tests as expected failures of `cls` only (a new function each: the
    abstract class's own is shared by every binding)."""
    for name in DELIBERATE:
        original = getattr(cls, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def expected(self, _original=original):
            return _original(self)

        setattr(cls, name, unittest.expectedFailure(expected))
    return cls


class _Bindings:
    """`dumps`/`loads` as the abstract tests call them."""

    pickle_dumps: Any = staticmethod(pickle.dumps)
    pickle_loads: Any = staticmethod(pickle.loads)

    def dumps(self, arg, protocol=None, **kwargs):
        return self.pickle_dumps(arg, protocol, **kwargs)

    def loads(self, buf, **kwds):
        return self.pickle_loads(buf, **kwds)

    # Need a file-like writer, or an Unpickler class to subclass: not a dumps/loads API (as
    # in test_pickle.py's InMemoryPickleTests).
    test_framed_write_sizes_with_delayed_writer = None
    test_find_class = None
    test_custom_find_class = None


@with_deliberate_differences
class TestOursBothWays(
    _Bindings,
    pickletester.AbstractPickleTests,
    pickletester.AbstractUnpickleTests,
    unittest.TestCase,
):
    pickle_dumps = staticmethod(ferropickle.dumps)
    pickle_loads = staticmethod(ferropickle.loads)
    # What C pickle's loads raises for a malformed stack, truncated data and a size too large
    # for the machine (test_pickle.py's CUnpicklerTests).
    bad_stack_errors = (pickle.UnpicklingError,)
    truncated_errors = (pickle.UnpicklingError,)
    truncated_data_error = (pickle.UnpicklingError, "truncated")
    size_overflow_error = (OverflowError, "exceeds")


@with_deliberate_differences
class TestOursReadByPickle(_Bindings, pickletester.AbstractPickleTests, unittest.TestCase):
    pickle_dumps = staticmethod(ferropickle.dumps)


class TestPickleReadByOurs(
    _Bindings,
    pickletester.AbstractPickleTests,
    pickletester.AbstractUnpickleTests,
    unittest.TestCase,
):
    pickle_loads = staticmethod(ferropickle.loads)
    bad_stack_errors = TestOursBothWays.bad_stack_errors
    truncated_errors = TestOursBothWays.truncated_errors
    truncated_data_error = TestOursBothWays.truncated_data_error
    size_overflow_error = TestOursBothWays.size_overflow_error


class TestModuleLevel(unittest.TestCase):
    """The module tests that apply to a dumps/loads API."""

    dumps = staticmethod(ferropickle.dumps)
    loads = staticmethod(ferropickle.loads)

    check_dumps_loads_oob_buffers = pickletester.AbstractPickleModuleTests.__dict__[
        "check_dumps_loads_oob_buffers"
    ]
    test_dumps_loads_oob_buffers = pickletester.AbstractPickleModuleTests.__dict__[
        "test_dumps_loads_oob_buffers"
    ]

    def test_highest_and_default_protocol(self):
        assert ferropickle.HIGHEST_PROTOCOL == pickle.HIGHEST_PROTOCOL == 5
        assert ferropickle.dumps(1)[:2] == b"\x80\x05"
