"""By-value functions mean what cloudpickle's mean: the state at the time of each ``dumps``.

A function pickled by value (defined in ``__main__``, locally, or in a module registered with
``cloudpickle.register_pickle_by_value``) is written inline, with cloudpickle's reduction, in
the one stream. So:

* every ``dumps`` reads the function's globals, defaults, closure, names and attributes anew,
  whatever was pickled before: nothing is a snapshot;
* functions of one module in one message share one globals dict when loaded, an object reached
  from a function and from the rest of the message is one object, and buffers go out of band;
* the stream is cloudpickle's, byte for byte;
* ``loads`` gives each call its own objects, freed when the caller drops them.
"""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import types
import weakref

import cloudpickle
import pytest
from oracle import script

import ferropickle

PROTOCOLS = [4, 5]


def loaders():
    """Stock pickle and ferropickle, both reading our bytes."""
    return [pickle.loads, ferropickle.loads]


# ---------------------------------------------------------------------------------------------
# The state at the time of dumps
# ---------------------------------------------------------------------------------------------


def test_rebinding_a_global_and_mutating_a_global_dict_show_in_the_next_dumps(protocol):
    ns = script(
        """
        X = 1
        CONFIG = {"s": 0}
        def f(i):
            return X + CONFIG["s"] + i
        """
    )
    f = ns["f"]
    results = []
    for step in range(3):
        if step == 1:
            ns["X"] = 100
        if step == 2:
            ns["CONFIG"]["s"] = 1000
        data = ferropickle.dumps(f, protocol)
        results.append([load(data)(step) for load in loaders()])
    assert results == [[1, 1], [101, 101], [1102, 1102]]


@pytest.mark.parametrize(
    "change",
    [
        "f.__defaults__ = (10,)",
        "f.__kwdefaults__ = {'k': 20}",
        "f.__qualname__ = 'renamed'",
        "f.__name__ = 'renamed'",
        "f.__doc__ = 'new doc'",
        "f.__module__ = 'elsewhere'",
        "f.attr = 'new'",
        "f.__annotations__ = {'return': int}",
        "outer_cell[0] = 'rebound'",
    ],
)
def test_every_part_of_a_function_is_read_at_each_dumps(protocol, change):
    ns = script(
        """
        def make():
            cell = "closure"
            def f(a=1, *, k=2):
                "doc"
                return a, k, cell
            def rebind(v):
                nonlocal cell
                cell = v
            return f, rebind
        f, rebind = make()
        f.attr = "old"
        """
    )
    f = ns["f"]
    ferropickle.dumps(f, protocol)  # a first pickle must not pin anything
    if change.startswith("outer_cell"):
        ns["rebind"]("rebound")
    else:
        exec(change, {"f": f})
    expected = pickle.loads(cloudpickle.dumps(f, protocol))
    for load in loaders():
        got = load(ferropickle.dumps(f, protocol))
        assert got() == expected() == f()
        for attr in ("__name__", "__qualname__", "__doc__", "__module__", "__defaults__"):
            assert getattr(got, attr) == getattr(f, attr), attr
        assert got.__kwdefaults__ == f.__kwdefaults__
        assert got.__annotations__ == f.__annotations__
        assert got.__dict__ == f.__dict__


def test_another_protocol_in_between_changes_nothing():
    ns = script("X = 1\ndef f():\n    return X\n")
    f = ns["f"]
    assert pickle.loads(ferropickle.dumps(f, 5))() == 1
    ns["X"] = 2
    assert pickle.loads(ferropickle.dumps(f, 4))() == 2
    ns["X"] = 3
    assert pickle.loads(ferropickle.dumps(f, 5))() == 3


def test_a_method_added_to_a_script_class_is_sent(protocol):
    ns = script("class K:\n    def a(self):\n        return 1\n")
    cls = ns["K"]
    ferropickle.dumps(cls(), protocol)
    cls.b = lambda self: 2
    for load in loaders():
        obj = load(ferropickle.dumps(cls(), protocol))
        assert (obj.a(), obj.b()) == (1, 2)


# ---------------------------------------------------------------------------------------------
# One stream: sharing, cycles, buffers
# ---------------------------------------------------------------------------------------------


def test_functions_of_one_module_share_their_globals_when_loaded(protocol):
    ns = script(
        """
        VALUE = 0
        def get():
            return VALUE
        def put(v):
            global VALUE
            VALUE = v
        """
    )
    for load in loaders():
        get, put = load(ferropickle.dumps((ns["get"], ns["put"]), protocol))
        put(42)
        assert get() == 42
        assert get.__globals__ is put.__globals__
    assert ns["VALUE"] == 0


def test_an_object_reached_from_a_function_and_the_message_is_one_object(protocol):
    ns = script("TABLE = {'a': [1, 2]}\ndef f():\n    return TABLE\n")
    for load in loaders():
        f, table = load(ferropickle.dumps((ns["f"], ns["TABLE"]), protocol))
        assert f() is table
        table["a"].append(3)
        assert f()["a"] == [1, 2, 3]


def test_the_same_function_twice_and_recursion(protocol):
    ns = script(
        """
        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)
        def make():
            def inner(n):
                return 0 if n == 0 else inner(n - 1) + 1
            return inner
        inner = make()
        """
    )
    for load in loaders():
        a, b, inner = load(ferropickle.dumps([ns["fact"], ns["fact"], ns["inner"]], protocol))
        assert a is b
        assert a(5) == 120
        assert inner(4) == 4


def test_buffers_of_a_by_value_class_and_closure_go_out_of_band():
    np = pytest.importorskip("numpy")
    ns = script(
        """
        def make(arr):
            class Holder:
                data = arr
            def read():
                return arr.sum()
            return Holder, read
        """
    )
    arr = np.arange(1000, dtype="int64")
    holder, read = ns["make"](arr)
    for obj, stock in [(holder, cloudpickle), (read, cloudpickle)]:
        ours, theirs = [], []
        data = ferropickle.dumps(obj, buffer_callback=ours.append)
        stock.dumps(obj, protocol=5, buffer_callback=theirs.append)
        assert len(ours) == len(theirs) == 1
        assert arr.tobytes() not in data
        for load in (pickle.loads, ferropickle.loads):
            back = load(data, buffers=ours)
            value = back.data if isinstance(back, type) else back()
            assert (value == arr).all() if isinstance(back, type) else value == arr.sum()


# ---------------------------------------------------------------------------------------------
# The stream is cloudpickle's
# ---------------------------------------------------------------------------------------------

CORPUS = {
    "plain": """
def f(x):
    return x + 1
OBJ = f
""",
    "globals": """
import json
X = 1
D = {'k': [1]}
def f():
    return json.dumps(D), X
OBJ = f
""",
    "submodule": """
import json.decoder
def f():
    return json.decoder.JSONDecodeError
OBJ = f
""",
    "closure": """
def make():
    a = [1]
    def inner():
        return a
    return inner
OBJ = make()
""",
    "empty cell": """
def make():
    def inner():
        return late
    return inner
    late = 1
OBJ = make()
""",
    "recursive": """
def make():
    def r(n):
        return r if n else 0
    return r
OBJ = make()
""",
    "lambda": """
X = 2
OBJ = lambda y, z=3: y * X + z
""",
    "one-letter names": """
def g(a):
    return a
OBJ = g
""",
    "defaults": """
def f(a, b=(1, 2), *, c={'x': 1}, d=None) -> 'ret':
    'doc'
    return a
f.attr = [1]
OBJ = f
""",
    "nested code": """
def f(xs):
    def inner(y):
        return [z for z in y]
    return inner(xs), (lambda: xs)
OBJ = f
""",
    "generator": """
def f(n):
    yield from range(n)
OBJ = f
""",
    "async": """
async def f():
    return 1
OBJ = f
""",
    "two functions": """
V = 1
def a():
    return V
def b():
    return a()
OBJ = (a, b, [a])
""",
    "class": """
X = 1
class K:
    def m(self):
        return X
    @staticmethod
    def s():
        return K
OBJ = K
""",
    "instance": """
class K:
    def __init__(self):
        self.v = 1
OBJ = [K(), K()]
""",
    "enum": """
import enum
class Color(enum.Enum):
    RED = 1
OBJ = Color.RED
""",
}


@pytest.mark.parametrize("name", CORPUS)
def test_the_stream_is_cloudpickles_byte_for_byte(protocol, name):
    obj = script(CORPUS[name])["OBJ"]
    assert ferropickle.dumps(obj, protocol) == cloudpickle.dumps(obj, protocol)


def test_submodules_follow_sys_modules(tmp_path, monkeypatch):
    pkg = tmp_path / "fp_pkg_sub"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "child.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fp_pkg_sub

    ns = script("import fp_pkg_sub\ndef f():\n    return fp_pkg_sub.child.VALUE\n")
    f = ns["f"]
    try:
        before = ferropickle.dumps(f)
        assert before == cloudpickle.dumps(f)
        assert b"fp_pkg_sub.child" not in before
        import fp_pkg_sub.child  # noqa: F401 - now it is in sys.modules

        after = ferropickle.dumps(f)
        assert after == cloudpickle.dumps(f)
        assert b"fp_pkg_sub.child" in after
        assert pickle.loads(after)() == 7
    finally:
        for mod in ("fp_pkg_sub.child", "fp_pkg_sub"):
            sys.modules.pop(mod, None)


def test_submodules_are_looked_up_again_only_when_sys_modules_changes(tmp_path, monkeypatch):
    """The submodules a function's code reaches are cached until `sys.modules` changes (its
    dict version tag before CPython 3.12, a dict watcher since): an unchanged `sys.modules`
    costs no scan, and adding, replacing or removing an entry is noticed."""
    pkg = tmp_path / "fp_pkg_watch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "child.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fp_pkg_watch

    f = script("import fp_pkg_watch\ndef f():\n    return fp_pkg_watch.child.VALUE\n")["f"]

    def scans_for_one_dumps() -> int:
        before = ferropickle.cache_info()["submodule_scans"]
        assert ferropickle.dumps(f) == cloudpickle.dumps(f)
        return ferropickle.cache_info()["submodule_scans"] - before

    try:
        scans_for_one_dumps()
        assert scans_for_one_dumps() == 0
        assert scans_for_one_dumps() == 0
        import fp_pkg_watch.child  # noqa: F401 - an insertion into sys.modules

        assert scans_for_one_dumps() == 1
        assert b"fp_pkg_watch.child" in ferropickle.dumps(f)
        assert scans_for_one_dumps() == 0
        sys.modules["fp_pkg_watch.child"] = sys.modules["fp_pkg_watch.child"]  # no change
        assert scans_for_one_dumps() == 0
        sys.modules["fp_pkg_watch.child"] = types.ModuleType("fp_pkg_watch.child")  # a new one
        assert scans_for_one_dumps() == 1
        del sys.modules["fp_pkg_watch.child"]  # a deletion
        assert scans_for_one_dumps() == 1
        assert b"fp_pkg_watch.child" not in ferropickle.dumps(f)
    finally:
        for mod in ("fp_pkg_watch.child", "fp_pkg_watch"):
            sys.modules.pop(mod, None)


def test_submodules_follow_a_rebound_sys_modules(tmp_path, monkeypatch):
    """cloudpickle looks the submodules up in the `sys.modules` attribute: rebinding it to a
    copy without the submodule (the interpreter's import dict still has it) drops the
    submodule from the stream, and binding the original back brings it back."""
    pkg = tmp_path / "fp_pkg_rebound"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "child.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fp_pkg_rebound.child  # noqa: F401

    f = script("import fp_pkg_rebound\ndef f():\n    return fp_pkg_rebound.child.VALUE\n")["f"]
    original = sys.modules
    try:
        for _ in range(2):
            assert ferropickle.dumps(f) == cloudpickle.dumps(f)
        assert b"fp_pkg_rebound.child" in ferropickle.dumps(f)
        sys.modules = {k: v for k, v in original.items() if k != "fp_pkg_rebound.child"}
        for _ in range(2):
            assert ferropickle.dumps(f) == cloudpickle.dumps(f)
        assert b"fp_pkg_rebound.child" not in ferropickle.dumps(f)
        sys.modules = original
        for _ in range(2):
            assert ferropickle.dumps(f) == cloudpickle.dumps(f)
        assert b"fp_pkg_rebound.child" in ferropickle.dumps(f)
    finally:
        sys.modules = original
        for mod in ("fp_pkg_rebound.child", "fp_pkg_rebound"):
            sys.modules.pop(mod, None)


def test_submodules_follow_sys_modules_copies_made_where_freed_ones_were(tmp_path, monkeypatch):
    """Which dict `sys.modules` is, is remembered while `sys.__dict__` is unchanged: rebinding
    it to a copy, then to copies of the copy (the first freed, a new one often made at its
    address), and deleting the submodule from the newest drops it from the stream."""
    pkg = tmp_path / "fp_pkg_copies"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "child.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fp_pkg_copies.child  # noqa: F401

    f = script("import fp_pkg_copies\ndef f():\n    return fp_pkg_copies.child.VALUE\n")["f"]

    def written() -> bytes:
        expected = cloudpickle.dumps(f)
        for _ in range(2):
            assert ferropickle.dumps(f) == expected
        return expected

    original = sys.modules
    try:
        for _ in range(5):
            sys.modules = original.copy()
            assert b"fp_pkg_copies.child" in written()
            sys.modules = sys.modules.copy()  # the first copy is freed here
            sys.modules = sys.modules.copy()
            assert b"fp_pkg_copies.child" in written()
            del sys.modules["fp_pkg_copies.child"]
            assert b"fp_pkg_copies.child" not in written()
            sys.modules = original
            assert b"fp_pkg_copies.child" in written()
    finally:
        sys.modules = original
        for mod in ("fp_pkg_copies.child", "fp_pkg_copies"):
            sys.modules.pop(mod, None)


def test_a_fresh_copy_per_task_reuses_what_its_code_determines():
    """`client.submit` in a loop: the scheduler holds a fresh copy of the function per task."""
    blob = cloudpickle.dumps(script("import json\ndef f(x):\n    return json.dumps(x)\n")["f"])
    ferropickle.cache_clear()
    streams = {ferropickle.dumps(pickle.loads(blob)) for _ in range(20)}
    assert len(streams) == 1
    assert ferropickle.cache_info()["code_objects"] == 1
    assert pickle.loads(streams.pop())([1]) == "[1]"


def test_stock_pickle_reads_it_where_ferropickle_is_not_installed(tmp_path):
    ns = script("import math\nX = 3\ndef f(y):\n    return math.sqrt(X * X + y * y)\n")
    data = ferropickle.dumps([ns["f"], lambda: ns["X"]])
    path = tmp_path / "msg.pickle"
    path.write_bytes(data)
    code = (
        "import sys, pickle\n"
        "sys.modules['ferropickle'] = None  # any import of it fails\n"
        f"f, g = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "assert 'ferropickle' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
        "print(f(4), g())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["5.0", "3"]


# ---------------------------------------------------------------------------------------------
# loads: every call its own objects
# ---------------------------------------------------------------------------------------------


def test_loads_gives_independent_functions_freed_with_their_caller():
    ns = script("import math\ndef hyp(a, b=2):\n    return math.sqrt(a * a + b * b)\n")
    data = ferropickle.dumps(ns["hyp"])
    first = ferropickle.loads(data)
    first.__defaults__ = (1000,)
    first.__globals__["math"] = None
    second = ferropickle.loads(data)
    assert second is not first
    assert second(3, 4) == 5.0 and second(0) == 2.0
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None


def test_a_malformed_code_object_loads_as_with_pickle():
    ns = script("def f():\n    return 1\n")
    f = ns["f"]
    f.__code__ = f.__code__.replace(co_code=b"\x00" * len(f.__code__.co_code))
    data = ferropickle.dumps(f)
    assert type(pickle.loads(data)) is type(ferropickle.loads(data))
