"""Regression tests, one per bug found in review; each names what was wrong."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys

import pytest
from helpers import roundtrip

import ferropickle


def test_a_set_changed_while_pickled_raises_runtime_error_not_a_panic():
    """PyO3's set iterator panicked (a BaseException that escapes `except Exception`)."""
    box: set = set()

    class Grow:
        def __reduce__(self):
            box.add(object())
            return (int, ())

    box.update({Grow(), 1, 2})
    with pytest.raises(RuntimeError) as err:
        ferropickle.dumps(box)
    assert "changed size" in str(err.value)
    with pytest.raises(RuntimeError):
        pickle.dumps(box)


def test_a_reducers_shared_argument_tuple_keeps_its_identity():
    """`BaseException.__reduce__` returns `self.args`: it was written as a fresh tuple every
    time it was reached, so the mutable object inside came back as two copies. Written once,
    it is one object in the stream; whether the rebuilt exception keeps that very tuple as its
    `args` is up to the interpreter (CPython 3.14's exceptions copy it), so that is checked
    against what `pickle` itself gives back."""
    e = ValueError(bytearray(b"x"))
    stock = pickle.loads(pickle.dumps([e, e.args]))
    keeps_tuple = stock[0].args is stock[1]
    assert ferropickle.dumps([e, e.args]) == pickle.dumps([e, e.args], 5)
    for r in roundtrip([e, e.args], identity=keeps_tuple):
        exc, args = r
        assert (exc.args is args) is keeps_tuple
        assert exc.args[0] is args[0]


def test_a_bytearray_is_one_object_however_it_was_reached():
    data = bytearray(b"abc")
    for r in roundtrip((data,) * 3):
        assert r[0] is r[1] is r[2]


class _Call:
    def __call__(self):
        return 1


def test_a_cycle_through_a_partials_function_keeps_one_partial():
    """The native partial writer memoized the partial without checking whether writing its
    function had already written it."""
    c = _Call()
    p = functools.partial(c)
    c.p = p
    for r in roundtrip(p):
        assert r.func.p is r


def test_a_cycle_through_a_datanode_value_keeps_one_node():
    ts = pytest.importorskip("dask._task_spec")
    value: list = []
    node = ts.DataNode("k", value)
    value.append(node)
    # (Not `roundtrip`: its deep comparison would follow the cycle through DataNode.__eq__.)
    for r in (
        pickle.loads(ferropickle.dumps(node)),
        ferropickle.loads(pickle.dumps(node)),
        ferropickle.loads(ferropickle.dumps(node)),
    ):
        assert r.value[0] is r


def test_a_function_using_a_by_value_class_is_rebuilt():
    """Sharing it would skip the reset of that class's attributes a reload does."""
    ns: dict = {"__name__": "__main__"}
    exec("class Counter:\n    n = 0\ndef bump():\n    Counter.n += 1\n    return Counter.n\n", ns)
    data = ferropickle.dumps(ns["bump"])
    assert [ferropickle.loads(data)(), ferropickle.loads(data)()] == [1, 1]
    assert [pickle.loads(data)(), pickle.loads(data)()] == [1, 1]
    ferropickle.cache_clear()


CRASH_PROBE = """
import sys, threading, ferropickle
deep = []
for _ in range(985):
    deep = [deep]
class Evil:
    def __reduce__(self):
        repr(deep)  # deeply recursive Python code, called from deep inside dumps
        return (int, ())
outcomes = []
def work():
    for depth in range(0, 1000, 7):
        obj = [Evil()]
        for _ in range(depth):
            obj = [obj]
        try:
            ferropickle.dumps(obj)
            outcomes.append("ok")
        except RecursionError:
            outcomes.append("recursion")
threading.stack_size(256 * 1024)
t = threading.Thread(target=work)
t.start()
t.join()
print(len(outcomes))
"""


def test_python_code_called_deep_inside_dumps_in_a_small_thread_does_not_crash():
    """Issue 8: our nesting was not counted by the interpreter, so `repr()` of a 985-deep list
    in a `__reduce__` called near the red zone of a 256 KiB thread got the whole recursion
    limit and overflowed the C stack (SIGSEGV); stock pickle raises RecursionError."""
    out = subprocess.run(
        [sys.executable, "-c", CRASH_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(range(0, 1000, 7)))]


SUBINTERPRETER_PROBE = """
import importlib, pickle
interp = None
for name in ("_interpreters", "_xxsubinterpreters"):
    try:
        interp = importlib.import_module(name)
        break
    except ImportError:
        pass
if interp is None:
    print("no subinterpreters")
    raise SystemExit(0)
i = interp.create()
code = (
    "try:\\n    import ferropickle\\nexcept ImportError as e:\\n"
    "    assert 'subinterpreter' in str(e), e\\nelse:\\n    raise AssertionError('imported')\\n"
)
(interp.exec if hasattr(interp, "exec") else interp.run_string)(i, code)
interp.destroy(i)
import ferropickle
ns = {"__name__": "__main__"}
exec("def f():\\n    return 41 + 1\\n", ns)
print(pickle.loads(ferropickle.dumps(ns["f"]))())
"""


def test_a_subinterpreter_is_refused_and_the_main_interpreter_keeps_working():
    """Issue 8: a subinterpreter could import the module first, its objects then served the
    main interpreter, and once it was destroyed every by-value dumps failed."""
    out = subprocess.run(
        [sys.executable, "-c", SUBINTERPRETER_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "no subinterpreters":
        pytest.skip("this Python has no subinterpreter module")
    assert out.stdout.split() == ["42"]


def test_a_bound_classmethod_of_an_importable_class_goes_by_reference():
    """Issue 8: `Fraction.from_float` was pickled by value (1,387 bytes against pickle's 77)."""
    import fractions

    for protocol in (4, 5):
        assert ferropickle.dumps(fractions.Fraction.from_float, protocol) == pickle.dumps(
            fractions.Fraction.from_float, protocol
        )


def test_one_byte_bytearrays_share_the_interpreters_one_byte_bytes():
    """Before protocol 5 a bytearray is `bytearray(bytes)`; since CPython 3.15 the bytes of a
    one-byte bytearray are the interpreter's shared one-byte object, which `pickle` memoizes:
    a second such bytearray fetches it. Ours wrote it again."""
    obj = [bytearray(b"\x00"), bytearray(b"\x00"), bytearray(b"\x01"), bytearray(b"ab")]
    for protocol in range(5):
        assert ferropickle.dumps(obj, protocol) == pickle.dumps(obj, protocol), protocol
    for r in roundtrip(obj, protocol=4):
        assert r[0] is not r[1]
