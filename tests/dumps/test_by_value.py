"""Functions and classes pickled by value (through cloudpickle), and the decision by value vs by
reference.

As in cloudpickle, a function or class goes by value when it can't be imported by name where the
stream is loaded: defined in `__main__`, locally (`<locals>`), as a lambda, in a module that is not
importable, or in a module registered with `cloudpickle.register_pickle_by_value`. Everything else
goes by reference.

The key property: a stream ferropickle writes for a script-defined function loads in a fresh
process that has only `pickle` (and cloudpickle installed), never `ferropickle`.
"""

from __future__ import annotations

import gc
import importlib
import json
import pickle
import subprocess
import sys
import textwrap
import types
import uuid

import cloudpickle
import pytest
from oracle import roundtrip

import ferropickle

SCRIPT = """
import collections
import math

TABLE = {i: i * i for i in range(2000)}
OFFSET = 10


def hypot(a, b):
    return math.sqrt(a * a + b * b)


def lookup(k, default=-1):
    return TABLE.get(k, default) + OFFSET


def with_defaults(x, y=[1, 2], *, z="zed"):
    return (x, y, z)


def make_adder(n):
    def add(x):
        return x + n
    return add


def make_counter():
    count = 0
    def bump(by=1):
        nonlocal count
        count += by
        return count
    return bump


def make_fib():
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)
    return fib


square = lambda x: x * x


class Shape:
    sides = 0
    registry = collections.OrderedDict(a=1)

    def __init__(self, name):
        self.name = name

    def describe(self):
        return f"{self.name} with {self.sides} sides"

    @classmethod
    def make(cls, name):
        return cls(name)

    @staticmethod
    def unit():
        return "cm"

    @property
    def upper(self):
        return self.name.upper()


class Square(Shape):
    sides = 4

    def area(self, side):
        return side ** 2


def uses_class(n):
    return Square(f"sq{n}").describe()
"""


def load_script() -> dict:
    """Runs SCRIPT as if it were a user's `__main__` (a fresh namespace each call)."""
    ns = {"__name__": "__main__"}
    exec(compile(SCRIPT, "<script>", "exec"), ns)
    return ns


def is_by_value(data: bytes) -> bool:
    return b"cloudpickle" in data


# ---------------------------------------------------------------------------------------------
# In-process round trips
# ---------------------------------------------------------------------------------------------


def calls(*cases):
    """A `check` for `roundtrip`: the rebuilt function gives the same results as the original."""

    def check(expected, actual):
        assert callable(actual)
        for args, result in cases:
            assert actual(*args) == result
            assert expected(*args) == result

    return check


def test_script_functions_go_by_value(protocol):
    ns = load_script()
    for name in ["hypot", "lookup", "with_defaults", "square", "uses_class"]:
        data = ferropickle.dumps(ns[name], protocol)
        assert is_by_value(data), name
    roundtrip(ns["hypot"], protocol=protocol, check=calls(((3, 4), 5.0)))
    roundtrip(ns["lookup"], protocol=protocol, check=calls(((7,), 59), ((5000,), 9)))
    roundtrip(ns["with_defaults"], protocol=protocol, check=calls(((1,), (1, [1, 2], "zed"))))
    roundtrip(ns["square"], protocol=protocol, check=calls(((9,), 81)))
    roundtrip(ns["uses_class"], protocol=protocol, check=calls(((2,), "sq2 with 4 sides")))


def test_lambda(protocol):
    roundtrip(lambda x, y=2: x**y, protocol=protocol, check=calls(((3,), 9), ((2, 5), 32)))


def test_closure(protocol):
    base = [100]

    def add(x):
        return x + base[0]

    roundtrip(add, protocol=protocol, check=calls(((1,), 101)))


def test_closure_with_nonlocal_state(protocol):
    ns = load_script()
    counter = ns["make_counter"]()
    counter(10)  # state at pickling time: 10
    for r in roundtrip(counter, protocol=protocol, check=lambda a, b: None):
        assert r(1) == 11
        assert r(1) == 12
    assert counter(0) == 10  # the original is untouched


def test_recursive_closure(protocol):
    ns = load_script()
    roundtrip(ns["make_fib"](), protocol=protocol, check=calls(((10,), 55)))


def test_nested_function(protocol):
    def outer(n):
        def inner(m):
            return n * m

        return inner

    roundtrip(outer, protocol=protocol, check=lambda a, b: None)
    roundtrip(outer(3), protocol=protocol, check=calls(((4,), 12)))


def test_same_lambda_twice_is_one_object(protocol):
    f = lambda: 42  # noqa: E731
    for r in roundtrip([f, f, {"again": f}], protocol=protocol, check=lambda a, b: None):
        assert r[0] is r[1] is r[2]["again"]
        assert r[0]() == 42


def test_same_function_in_many_places(protocol):
    ns = load_script()
    f = ns["hypot"]
    obj = {"tasks": [(f, i, i + 1) for i in range(50)]}
    data = ferropickle.dumps(obj, protocol)
    assert data.count(b"cloudpickle") == ferropickle.dumps(f, protocol).count(b"cloudpickle")
    for r in roundtrip(obj, protocol=protocol, check=lambda a, b: None):
        funcs = {id(t[0]) for t in r["tasks"]}
        assert len(funcs) == 1
        assert r["tasks"][3][0](3, 4) == 5.0


def make_local_class():
    class Local:
        kind = "local"
        counter = 0

        def __init__(self, v):
            self.v = v

        def double(self):
            return self.v * 2

        @classmethod
        def build(cls, v):
            return cls(v)

        @staticmethod
        def tag():
            return "static"

        @property
        def neg(self):
            return -self.v

        def __eq__(self, other):
            return type(other).__qualname__ == type(self).__qualname__ and other.v == self.v

        __hash__ = None

    return Local


def test_local_class_and_instances(protocol):
    Local = make_local_class()
    objs = [Local, Local(1), Local(2), Local.build(3)]
    for r in roundtrip(objs, protocol=protocol):
        cls = r[0]
        assert cls.__qualname__ == Local.__qualname__
        assert all(type(x) is cls for x in r[1:])
        assert [x.double() for x in r[1:]] == [2, 4, 6]
        assert cls.tag() == "static"
        assert cls.build(5).neg == -5
        assert cls.kind == "local"


def test_many_instances_share_one_by_value_class(protocol):
    Local = make_local_class()
    objs = [Local(i) for i in range(100)]
    data = ferropickle.dumps(objs, protocol)
    # The class is pickled once, not once per instance.
    assert data.count(b"double") == ferropickle.dumps(Local, protocol).count(b"double")
    for r in roundtrip(objs, protocol=protocol):
        assert len({type(x) for x in r}) == 1
        assert type(r[0]) is type(r[1])


def test_script_class_and_instances(protocol):
    ns = load_script()
    Square = ns["Square"]
    objs = {"cls": Square, "a": Square("a"), "b": Square.make("b")}
    for r in roundtrip(objs, protocol=protocol):
        assert type(r["a"]) is r["cls"]
        assert type(r["b"]) is r["cls"]
        assert r["a"].describe() == "a with 4 sides"
        assert r["b"].upper == "B"
        assert r["cls"].unit() == "cm"
        assert r["cls"]("c").area(3) == 9


def test_dynamic_module_function(protocol):
    mod = types.ModuleType("not_importable_anywhere")
    exec("def f(x):\n    return ('dyn', x)\n", mod.__dict__)
    assert is_by_value(ferropickle.dumps(mod.f, protocol))
    roundtrip(mod.f, protocol=protocol, check=calls(((1,), ("dyn", 1))))


def test_cache_does_not_confuse_recycled_addresses(protocol):
    """A remembered decision (or cached bytes) belongs to one live object: functions created,
    pickled and freed in turn (so addresses get reused) each come back as themselves."""
    seen_ids = set()
    for i in range(30):
        ns: dict = {"__name__": "__main__"}
        exec(f"def f():\n    return {i}\n", ns)
        f = ns["f"]
        seen_ids.add(id(f))
        data = ferropickle.dumps(f, protocol)
        assert pickle.loads(data)() == i
        del ns, f, data
        gc.collect()
    # (if addresses were never reused, the test proves less, but must still pass)
    assert seen_ids


def test_by_value_function_mutated_between_messages_is_a_new_object(protocol):
    """A new function object (e.g. a redefinition in a notebook) is pickled afresh."""
    ns = load_script()
    first = ferropickle.dumps(ns["square"], protocol)
    exec("square = lambda x: -x", ns)
    second = ferropickle.dumps(ns["square"], protocol)
    assert pickle.loads(first)(3) == 9
    assert pickle.loads(second)(3) == -3


STATEFUL = """
def make_counter():
    count = 0
    def bump():
        nonlocal count
        count += 1
        return count
    return bump

LOG = []

def log(x):
    LOG.append(x)
    return len(LOG)

def with_mutable_default(x, seen=[]):
    seen.append(x)
    return len(seen)
"""


@pytest.mark.parametrize("name", ["counter", "log", "with_mutable_default"])
def test_loading_a_stateful_function_twice_gives_independent_state(protocol, name):
    ns: dict = {"__name__": "__main__"}
    exec(STATEFUL, ns)
    if name == "counter":
        func, arg = ns["make_counter"](), ()
    else:
        func, arg = ns[name], ("x",)
    data = ferropickle.dumps(func, protocol)
    # Stock pickle: each load is an independent copy, starting from the pickled state.
    assert [pickle.loads(data)(*arg), pickle.loads(data)(*arg)] == [1, 1]
    assert [ferropickle.loads(data)(*arg), ferropickle.loads(data)(*arg)] == [1, 1]


def test_a_function_using_a_by_value_class_is_rebuilt():
    """`loads` once shared a rebuilt function between loads of the same bytes, which skipped
    the reset of the by-value class attributes it reads that every stock load does."""
    ns: dict = {"__name__": "__main__"}
    exec("class Counter:\n    n = 0\ndef bump():\n    Counter.n += 1\n    return Counter.n\n", ns)
    data = ferropickle.dumps(ns["bump"])
    assert [ferropickle.loads(data)(), ferropickle.loads(data)()] == [1, 1]
    assert [pickle.loads(data)(), pickle.loads(data)()] == [1, 1]


def test_a_stateless_function_is_rebuilt_for_every_load(protocol):
    """As with stock pickle: each load builds its own function (a reused one showed what an
    earlier caller did to it)."""
    ns: dict = {"__name__": "__main__"}
    exec("import math\ndef hyp(a, b=2):\n    return math.sqrt(a * a + b * b)\n", ns)
    data = ferropickle.dumps(ns["hyp"], protocol)
    first, second = ferropickle.loads(data), ferropickle.loads(data)
    assert first is not second
    assert first.__code__ is not second.__code__
    assert first(3, 4) == second(3, 4) == 5.0


def test_global_held_once_and_read_by_name_again_is_shared(protocol):
    """A by-value function's globals are read by name from its module dict: a global held only
    by that dict (a tuple of a frozenset) and written once already as a dict value was written
    again, where cloudpickle fetches it from the memo."""
    ns = {"__name__": "__main__"}
    exec("G = (frozenset({3, 5}), None)\ndef f():\n    return G\n", ns)
    del ns["__builtins__"]
    obj = [ns, ns["f"]]
    assert ferropickle.dumps(obj, protocol) == cloudpickle.dumps(obj, protocol)

    def check(_, loaded):
        assert loaded[0]["G"] == (frozenset({3, 5}), None)
        assert loaded[1].__globals__["G"] is loaded[0]["G"]
        assert loaded[1]() is loaded[0]["G"]

    roundtrip(obj, protocol=protocol, dumper="cloudpickle", check=check)


def test_classes_of_types_after_a_by_value_part_are_written_as_cloudpickle_writes_them(
    protocol,
):
    """cloudpickle writes every class of `types` (its `_BUILTIN_TYPE_NAMES`) as
    `_builtin_type(name)`, `pickle` writes the ones it finds by name by name: in a stream with a
    by-value function they were written by name, so `def f(x) -> list[int]` from a script (a
    `types.GenericAlias` in its annotations) differed from cloudpickle's bytes. Without a
    by-value part the stream is still `pickle`'s."""
    ns = {"__name__": "__main__"}
    source = "def f(x: int | None) -> list[int]:\n    return [x]\n"
    exec(compile(source, "<script>", "exec", dont_inherit=True), ns)  # real annotations
    f = ns["f"]
    by_name = [types.SimpleNamespace(a=1), types.DynamicClassAttribute, types._GeneratorWrapper]
    assert ferropickle.dumps(by_name, protocol) == pickle.dumps(by_name, protocol)
    obj = [f, *by_name, list[int], int | None]
    data = ferropickle.dumps(obj, protocol)
    assert data == cloudpickle.dumps(obj, protocol)
    assert b"_builtin_type" in data

    def check(_, loaded):
        assert loaded[0](3) == [3]
        assert loaded[0].__annotations__ == {"x": int | None, "return": list[int]}
        assert loaded[1:] == [*by_name, list[int], int | None]

    roundtrip(obj, protocol=protocol, dumper="cloudpickle", check=check)


def script_function():
    """A function defined in a script (`__main__`): pickled by value, as cloudpickle does."""
    ns = {"__name__": "__main__"}
    exec(compile("def f(x):\n    return [x]\n", "<script>", "exec", dont_inherit=True), ns)
    return ns["f"]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda f: [types.SimpleNamespace, f], id="class-then-function"),
        pytest.param(
            lambda f: {"ns": types.SimpleNamespace(a=1), "alias": list[int], "f": f},
            id="instance-and-alias-then-function",
        ),
        pytest.param(lambda f: ((types.SimpleNamespace,), [f, types.GenericAlias]), id="nested"),
        pytest.param(
            lambda f: [types.SimpleNamespace, types.SimpleNamespace, f.__code__], id="code-object"
        ),
    ],
)
def test_classes_of_types_before_a_by_value_part_are_written_as_cloudpickle_writes_them(
    protocol, make
):
    """A class of `types` met before the first object only cloudpickle writes was written by
    name (`pickle`'s form) where cloudpickle writes `_builtin_type(name)` from the stream's first
    byte: the walk starts over as cloudpickle's once that object comes."""
    f = script_function()
    obj = make(f)
    data = ferropickle.dumps(obj, protocol)
    assert data == cloudpickle.dumps(obj, protocol)
    assert b"_builtin_type" in data
    assert b"SimpleNamespace" in data
    roundtrip(obj, protocol=protocol, dumper="cloudpickle", check=same_but_rebuilt_code)


def same_but_rebuilt_code(expected, actual):
    """`actual == expected`, a by-value function or code object compared by what it does."""
    if isinstance(expected, types.FunctionType):
        assert actual(3) == expected(3)
    elif isinstance(expected, types.CodeType):
        assert isinstance(actual, types.CodeType) and actual.co_code == expected.co_code
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected)
        for e, a in zip(expected, actual, strict=True):
            same_but_rebuilt_code(e, a)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            same_but_rebuilt_code(expected[key], actual[key])
    else:
        assert actual == expected


def test_a_walk_that_starts_over_hands_each_buffer_to_the_callback_once():
    """Buffers that went to the buffer callback before the walk started over as cloudpickle's
    are not handed to it again: the callback sees each buffer once, and its answers (out of
    band or in band) are the ones the stream follows, as with cloudpickle."""
    f = script_function()

    def make():
        return [
            pickle.PickleBuffer(b"out of band"),
            pickle.PickleBuffer(bytearray(b"in band")),
            types.SimpleNamespace,
            f,
            pickle.PickleBuffer(b"after"),
        ]

    def collecting(into):
        def callback(buf):
            into.append(bytes(buf))
            return bytes(buf) == b"in band"

        return callback

    ours, theirs = [], []
    obj = make()
    data = ferropickle.dumps(obj, 5, buffer_callback=collecting(ours))
    expected = cloudpickle.dumps(obj, 5, buffer_callback=collecting(theirs))
    assert data == expected
    assert ours == theirs == [b"out of band", b"in band", b"after"]
    out_of_band = [b"out of band", b"after"]
    for loads in (pickle.loads, ferropickle.loads):
        loaded = loads(data, buffers=out_of_band)
        assert [bytes(loaded[0]), bytes(loaded[1]), bytes(loaded[4])] == [
            b"out of band",
            b"in band",
            b"after",
        ]
        assert loaded[2] is types.SimpleNamespace
        assert loaded[3](1) == [1]


class WithPrivateNames:
    """Private names: each is found by `getattr` only by its mangled name (`_WithPrivateNames__m`),
    while its `__qualname__` says `WithPrivateNames.__m`."""

    def __method(self):
        return "method"

    @staticmethod
    def __static():
        return "static"

    class __Inner:
        def __deeper(self):
            return "deeper"


PRIVATE = {
    "method": WithPrivateNames._WithPrivateNames__method,
    "static": WithPrivateNames._WithPrivateNames__static,
    "class": WithPrivateNames._WithPrivateNames__Inner,
    "nested": WithPrivateNames._WithPrivateNames__Inner._Inner__deeper,
}


def pickles_stream(obj, protocol) -> bytes | None:
    """`pickle.dumps(obj)`, or `None` where this interpreter's `pickle` can't write it."""
    try:
        return pickle.dumps(obj, protocol)
    except pickle.PicklingError:
        return None


@pytest.mark.parametrize("name", PRIVATE)
def test_private_functions_and_classes_are_written_as_pickle_or_cloudpickle_writes_them(
    protocol, name
):
    """CPython 3.15's `pickle` looks a private name up, and writes it, mangled
    (`WithPrivateNames._WithPrivateNames__method`); earlier ones raise; cloudpickle looks the
    name up as it is and writes the object by value. The stream is `pickle`'s where this
    interpreter's `pickle` writes one, cloudpickle's otherwise, and cloudpickle's whenever a
    by-value part is in it too (before or after the private object)."""
    obj = PRIVATE[name]
    data = ferropickle.dumps(obj, protocol)
    expected = pickles_stream(obj, protocol)
    if expected is None:
        assert data == cloudpickle.dumps(obj, protocol)
        assert is_by_value(data)
    else:
        assert data == expected
        assert pickle.loads(data) is obj
    for pair in ([obj, script_function()], [script_function(), obj]):
        assert ferropickle.dumps(pair, protocol) == cloudpickle.dumps(pair, protocol)
    for loads in (pickle.loads, ferropickle.loads):
        loaded = loads(data)
        if name == "class":
            assert loaded()._Inner__deeper() == "deeper"
        else:
            assert (loaded() if name == "static" else loaded(None)) == {"nested": "deeper"}.get(
                name, name
            )


# ---------------------------------------------------------------------------------------------
# cloudpickle.register_pickle_by_value, and by-reference decisions that must not go stale
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def temp_module(tmp_path, monkeypatch):
    """An importable module in a temporary directory; removed from `sys.modules` afterwards."""
    name = f"fp_temp_mod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            SCALE = 3

            def scaled(x):
                return x * SCALE

            class Thing:
                def __init__(self, v):
                    self.v = v

                def get(self):
                    return self.v * SCALE
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    yield module
    if name in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.unregister_pickle_by_value(module)
    sys.modules.pop(name, None)


def test_register_pickle_by_value_switches_both_ways(protocol, temp_module):
    f = temp_module.scaled
    by_ref = ferropickle.dumps(f, protocol)
    assert not is_by_value(by_ref)
    assert temp_module.__name__.encode() in by_ref
    assert pickle.loads(by_ref) is f

    cloudpickle.register_pickle_by_value(temp_module)
    try:
        by_value = ferropickle.dumps(f, protocol)
        assert is_by_value(by_value)
        assert pickle.loads(by_value)(2) == 6
        # classes of the module too
        assert is_by_value(ferropickle.dumps(temp_module.Thing(1), protocol))
    finally:
        cloudpickle.unregister_pickle_by_value(temp_module)

    again = ferropickle.dumps(f, protocol)
    assert not is_by_value(again)
    assert pickle.loads(again) is f


def test_register_pickle_by_value_roundtrip(protocol, temp_module):
    cloudpickle.register_pickle_by_value(temp_module)
    obj = [temp_module.scaled, temp_module.Thing(5)]
    for r in roundtrip(obj, protocol=protocol, dumper="cloudpickle", check=lambda a, b: None):
        assert r[0](2) == 6
        assert r[1].get() == 15


def test_registered_by_value_loads_where_the_module_is_missing(protocol, temp_module):
    """The whole point of by-value: the loading process doesn't have the module."""
    cloudpickle.register_pickle_by_value(temp_module)
    data = ferropickle.dumps([temp_module.scaled, temp_module.Thing(5)], protocol)
    out = run_child("print(json.dumps([obj[0](2), obj[1].get()]))", data)
    assert out == [6, 15]


def test_rebinding_a_module_attribute_is_noticed(protocol, temp_module):
    """A remembered by-reference decision must not go stale when the module attribute is rebound
    (`importlib.reload`, monkeypatching): the old function then goes by value (as cloudpickle
    does; `pickle` raises), never by reference to the *new* one."""
    old = temp_module.scaled
    assert pickle.loads(ferropickle.dumps(old, protocol)) is old  # decision: by reference
    temp_module.scaled = lambda x: "new"
    r = pickle.loads(ferropickle.dumps(old, protocol))
    assert r is not temp_module.scaled
    assert r(2) == 6


def test_rebinding_a_nested_attribute_is_noticed(protocol, temp_module):
    old = temp_module.Thing.get
    assert pickle.loads(ferropickle.dumps(old, protocol)) is old  # decision: by reference
    temp_module.Thing.get = lambda self: "new"
    r = pickle.loads(ferropickle.dumps(old, protocol))
    assert r is not temp_module.Thing.get


def test_rebinding_before_first_pickle_goes_by_value(protocol, temp_module):
    old = temp_module.scaled
    temp_module.scaled = lambda x: "new"
    data = ferropickle.dumps(old, protocol)
    assert is_by_value(data)
    assert pickle.loads(data)(2) == 6


@pytest.mark.parametrize(
    ("name", "attr", "value"),
    [("scaled", "__qualname__", "a.f"), ("Thing", "__module__", "__main__")],
)
def test_name_changed_after_a_dumps_goes_by_value(protocol, temp_module, name, attr, value):
    """A remembered by-reference decision re-checked only the module and name it remembered,
    not the object's current `__qualname__`/`__module__`: after one `dumps`,
    `f.__qualname__ = "a.f"` or `K.__module__ = "__main__"` still wrote them by reference where
    cloudpickle writes them by value."""
    obj = getattr(temp_module, name)
    assert ferropickle.dumps(obj, protocol) == pickle.dumps(obj, protocol)
    setattr(obj, attr, value)
    data = ferropickle.dumps(obj, protocol)
    assert data == cloudpickle.dumps(obj, protocol)
    assert is_by_value(data)
    for r in roundtrip(obj, protocol=protocol, dumper="cloudpickle", check=lambda a, b: None):
        assert (r(2) if name == "scaled" else r(2).get()) == 6
        # A function comes back as a new one; a class, in the process that wrote it, as
        # itself (cloudpickle's class tracker).
        assert (r is obj) == (name == "Thing")


class NamedByReduce:
    """Pickled as the module attribute its `__reduce__` names."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name


def test_reduce_returning_a_name_that_changes_writes_the_new_name(protocol, temp_module):
    """An object whose `__reduce__` returns a global name kept being written under the first
    name it returned, as the remembered decision ignored the name."""
    obj = NamedByReduce("FIRST")
    obj.__module__ = temp_module.__name__
    temp_module.FIRST = temp_module.SECOND = obj
    assert ferropickle.dumps(obj, protocol) == pickle.dumps(obj, protocol)
    obj.name = "SECOND"
    data = ferropickle.dumps(obj, protocol)
    assert data == pickle.dumps(obj, protocol)
    assert b"SECOND" in data
    for r in roundtrip(obj, protocol=protocol, check=lambda a, b: None):
        assert r is obj


def test_function_without_module_is_found_by_a_scan_of_sys_modules(protocol, temp_module):
    """`__module__ = None`: cloudpickle asks `_whichmodule`, which finds the function in its
    module and writes it by reference; it was written by value."""
    f = temp_module.scaled
    f.__module__ = None
    data = ferropickle.dumps(f, protocol)
    assert data == cloudpickle.dumps(f, protocol)
    assert not is_by_value(data)
    for r in roundtrip(f, protocol=protocol, dumper="cloudpickle", check=lambda a, b: None):
        assert r is f


def test_registered_module_whose_name_changed_goes_by_reference(protocol, temp_module):
    """cloudpickle checks the registry by the module's own `__name__`: a module registered by
    value and then renamed is no longer registered, and its function and class go by
    reference (under the `__module__` they still have). Ours checked their `__module__`,
    wrote the function by value and refused the class."""
    name = temp_module.__name__
    cloudpickle.register_pickle_by_value(temp_module)
    try:
        temp_module.__name__ = "renamed"
        obj = [temp_module.scaled, temp_module.Thing]
        data = ferropickle.dumps(obj, protocol)
        assert data == cloudpickle.dumps(obj, protocol)
        assert not is_by_value(data)
        for r in roundtrip(obj, protocol=protocol, dumper="cloudpickle", check=lambda a, b: None):
            assert r[0] is temp_module.scaled
            assert r[1] is temp_module.Thing
    finally:
        temp_module.__name__ = name
        cloudpickle.unregister_pickle_by_value(temp_module)


def written_three_times(obj, protocol) -> bytes:
    """`ferropickle.dumps(obj)` three times, each equal to `cloudpickle.dumps(obj)`: the first
    makes the by-reference decision, the second checks it again, the third may reuse it while
    nothing the check read has changed (dict watchers from CPython 3.12, the dicts' version tags
    before). Returns the stream."""
    expected = cloudpickle.dumps(obj, protocol)
    for _ in range(3):
        assert ferropickle.dumps(obj, protocol) == expected
    return expected


@pytest.mark.parametrize("name", ["scaled", "Thing"])
def test_a_reused_decision_notices_a_rebound_module_attribute(protocol, temp_module, name):
    """After several `dumps`, rebinding the module attribute (and binding it back) changes the
    stream at once, as with cloudpickle."""
    obj = getattr(temp_module, name)
    assert not is_by_value(written_three_times(obj, protocol))
    assert ferropickle.dumps(obj, protocol) == pickle.dumps(obj, protocol)
    setattr(temp_module, name, lambda x: "new")
    assert is_by_value(written_three_times(obj, protocol))
    setattr(temp_module, name, obj)
    assert not is_by_value(written_three_times(obj, protocol))
    delattr(temp_module, name)
    assert is_by_value(written_three_times(obj, protocol))


@pytest.mark.parametrize("name", ["scaled", "Thing"])
def test_a_reused_decision_notices_the_module_replaced_in_sys_modules(protocol, temp_module, name):
    """Another module under the same name in `sys.modules`: without the object the object goes
    by value; with the very object (a module whose dict is a copy) it goes by reference."""
    obj = getattr(temp_module, name)
    assert not is_by_value(written_three_times(obj, protocol))
    empty = types.ModuleType(temp_module.__name__)
    sys.modules[temp_module.__name__] = empty
    assert is_by_value(written_three_times(obj, protocol))
    holding = types.ModuleType(temp_module.__name__)
    holding.__dict__.update({name: obj})
    sys.modules[temp_module.__name__] = holding
    assert not is_by_value(written_three_times(obj, protocol))
    assert ferropickle.dumps(obj, protocol) == pickle.dumps(obj, protocol)
    del sys.modules[temp_module.__name__]
    assert is_by_value(written_three_times(obj, protocol))


@pytest.mark.parametrize(
    ("name", "attr", "value"),
    [("scaled", "__qualname__", "a.f"), ("Thing", "__module__", "__main__"),
     ("scaled", "__module__", "fp_no_such_module"), ("Thing", "__qualname__", "Other")],
)  # fmt: skip
def test_a_reused_decision_notices_a_changed_name(protocol, temp_module, name, attr, value):
    """`__module__` or `__qualname__` set after several `dumps` (neither is in a watched dict:
    they are compared with the remembered objects on every use)."""
    obj = getattr(temp_module, name)
    assert not is_by_value(written_three_times(obj, protocol))
    setattr(obj, attr, value)
    assert is_by_value(written_three_times(obj, protocol))


def test_a_reused_decision_notices_every_way_a_module_dict_is_written(protocol, temp_module):
    """The module's dict written by the module's own code (`global`), through `vars()` and by
    its dict methods, and `importlib.reload`: each write that unbinds the name shows in the
    next stream; a write elsewhere in the dict, or binding the same object back, leaves it by
    reference, equal to `pickle`'s."""
    f = temp_module.scaled
    namespace = vars(temp_module)
    exec("def rebind(v):\n    global scaled\n    scaled = v\n", namespace)
    exec("def unbind():\n    global scaled\n    del scaled\n", namespace)
    by_ref = pickle.dumps(f, protocol)

    def unbinds(write, restore):
        assert written_three_times(f, protocol) == by_ref
        write()
        assert is_by_value(written_three_times(f, protocol))
        restore()
        assert written_three_times(f, protocol) == by_ref

    def put_back():
        namespace["scaled"] = f

    unbinds(lambda: temp_module.rebind(len), lambda: temp_module.rebind(f))
    unbinds(temp_module.unbind, put_back)
    unbinds(lambda: namespace.update(scaled=len), put_back)
    unbinds(lambda: namespace.pop("scaled"), put_back)
    unbinds(lambda: exec("scaled = None", namespace), put_back)
    saved = dict(namespace)
    unbinds(namespace.clear, lambda: namespace.update(saved))
    namespace["SCALE"] = 4
    namespace["other"] = object()
    namespace.setdefault("scaled", len)
    assert written_three_times(f, protocol) == by_ref
    importlib.reload(temp_module)
    assert temp_module.scaled is not f
    assert is_by_value(written_three_times(f, protocol))
    assert written_three_times(temp_module.scaled, protocol) == pickle.dumps(
        temp_module.scaled, protocol
    )


def test_a_reused_decision_notices_sys_modules_written_every_way(protocol, temp_module):
    """`sys.modules` rebound through `sys.__dict__`, and written by its dict methods: each
    write that loses the module shows in the next stream."""
    f = temp_module.scaled
    name = temp_module.__name__
    original = sys.modules
    by_ref = pickle.dumps(f, protocol)
    try:
        assert written_three_times(f, protocol) == by_ref
        vars(sys)["modules"] = {k: v for k, v in original.items() if k != name}
        assert is_by_value(written_three_times(f, protocol))
        vars(sys)["modules"] = original
        assert written_three_times(f, protocol) == by_ref
        for write in (
            lambda: original.pop(name),
            lambda: original.update({name: types.ModuleType(name)}),
            lambda: original.__setitem__(name, None),
        ):
            write()
            assert is_by_value(written_three_times(f, protocol))
            original[name] = temp_module
            assert written_three_times(f, protocol) == by_ref
    finally:
        sys.modules = original
        original[name] = temp_module


def test_rebinding_sys_modules_is_seen_as_pickle_and_cloudpickle_see_it(protocol, temp_module):
    """`pickle` and cloudpickle read the `sys.modules` attribute, which a program may rebind;
    the interpreter's import dict stays the original. Rebound to a copy, streams stay theirs;
    rebound to a copy without the module, a function of it goes by value and the module
    itself, as a global of a by-value function, goes by value (`dynamic_subimport`) where
    `subimport` needs it in `sys.modules`."""
    f = temp_module.scaled
    user = script_function()
    user.__globals__["m"] = temp_module
    user.__code__ = compile("def f(x):\n    return m.SCALE * x\n", "<script>", "exec").co_consts[0]
    original = sys.modules
    try:
        sys.modules = dict(original)
        assert written_three_times(f, protocol) == pickle.dumps(f, protocol)
        assert b"subimport" in written_three_times(user, protocol)
        del sys.modules[temp_module.__name__]
        assert is_by_value(written_three_times(f, protocol))
        assert b"dynamic_subimport" in written_three_times(user, protocol)
        sys.modules = original
        assert written_three_times(f, protocol) == pickle.dumps(f, protocol)
        assert b"dynamic_subimport" not in written_three_times(user, protocol)
    finally:
        sys.modules = original


def test_a_sys_modules_made_where_a_freed_one_was_is_watched(protocol, temp_module):
    """A watched `sys.modules` dict that is freed is forgotten: a new dict is often made at the
    same address (`dict.copy` takes a freed dict from CPython's free list), and it must be
    watched before a decision is reused against it. Each round: a copy is watched, freed while
    two others replace it, and the module deleted from the newest sends the function by value."""
    f = temp_module.scaled
    original = sys.modules
    try:
        for _ in range(5):
            sys.modules = original.copy()
            assert not is_by_value(written_three_times(f, protocol))
            sys.modules = sys.modules.copy()  # the watched copy is freed here
            sys.modules = sys.modules.copy()
            assert not is_by_value(written_three_times(f, protocol))
            del sys.modules[temp_module.__name__]
            assert is_by_value(written_three_times(f, protocol))
            sys.modules = original
    finally:
        sys.modules = original


# ---------------------------------------------------------------------------------------------
# Loading in a fresh process that never imports ferropickle
# ---------------------------------------------------------------------------------------------

CHILD_PRELUDE = """
import json
import pickle
import sys

obj = pickle.loads(sys.stdin.buffer.read())
assert "ferropickle" not in sys.modules, "the loading process must not need ferropickle"
"""


def run_child(code: str, data: bytes):
    """Loads `data` with stock `pickle` in a fresh, isolated interpreter (`-I`: no current
    directory or PYTHONPATH on `sys.path`, so neither the tests nor ferropickle's source tree are
    importable by accident), runs `code` with the result bound to `obj`, and returns what it
    printed as JSON."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CHILD_PRELUDE + code],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


CHILD_CHECKS = """
sq = obj["Square"]
out = {
    "hypot": obj["hypot"](3, 4),
    "lookup": [obj["lookup"](7), obj["lookup"](5000)],
    "defaults": obj["with_defaults"](1),
    "adder": obj["adder"](10),
    "counter": [obj["counter"](), obj["counter"](5)],
    "fib": obj["fib"](15),
    "square": obj["square"](9),
    "cls": [sq("a").describe(), sq.make("b").name, sq.unit(), sq("c").upper, sq("d").area(3)],
    "mro": [c.__name__ for c in sq.__mro__],
    "inst": [obj["inst"].describe(), type(obj["inst"]) is sq],
    "uses_class": obj["uses_class"](2),
    "same_class_in_function": obj["uses_class"].__globals__["Square"] is sq,
    "modules": sorted(
        m for m in ("ferropickle", "cloudpickle", "test_by_value") if m in sys.modules
    ),
}
print(json.dumps(out))
"""

CHILD_EXPECTED = {
    "hypot": 5.0,
    "lookup": [59, 9],
    "defaults": [1, [1, 2], "zed"],
    "adder": 15,
    "counter": [1, 6],
    "fib": 610,
    "square": 81,
    "cls": ["a with 4 sides", "b", "cm", "C", 9],
    "mro": ["Square", "Shape", "object"],
    "inst": ["s1 with 4 sides", True],
    "uses_class": "sq2 with 4 sides",
    "same_class_in_function": True,
    "modules": ["cloudpickle"],
}


def script_payload(ns: dict) -> dict:
    return {
        "hypot": ns["hypot"],
        "lookup": ns["lookup"],
        "with_defaults": ns["with_defaults"],
        "adder": ns["make_adder"](5),
        "counter": ns["make_counter"](),
        "fib": ns["make_fib"](),
        "square": ns["square"],
        "Square": ns["Square"],
        "inst": ns["Square"]("s1"),
        "uses_class": ns["uses_class"],
    }


def test_script_functions_load_in_a_fresh_process(protocol):
    data = ferropickle.dumps(script_payload(load_script()), protocol)
    assert run_child(CHILD_CHECKS, data) == CHILD_EXPECTED


def test_script_functions_load_in_a_fresh_process_twice_in_one_message(protocol):
    """Two messages' worth in one stream, and the pickler's cache warm from a first dumps."""
    ns = load_script()
    ferropickle.dumps(script_payload(ns), protocol)  # warm any cache
    payload = script_payload(ns)
    data = ferropickle.dumps([payload, payload["hypot"], payload["Square"]], protocol)
    code = (
        "first, hyp, cls = obj\n"
        "assert hyp is first['hypot'] and cls is first['Square']\n"
        "obj = first\n" + CHILD_CHECKS
    )
    assert run_child(code, data) == CHILD_EXPECTED


def test_real_script_main_module(tmp_path):
    """A real `python script.py` whose functions live in `__main__` pickles them with
    ferropickle; a separate fresh process loads them with stock `pickle`."""
    script = tmp_path / "user_script.py"
    out_file = tmp_path / "payload.pkl"
    script.write_text(
        SCRIPT
        + textwrap.dedent(
            f"""
            import sys
            import ferropickle

            assert hypot.__module__ == "__main__"
            payload = {{
                "hypot": hypot,
                "lookup": lookup,
                "with_defaults": with_defaults,
                "adder": make_adder(5),
                "counter": make_counter(),
                "fib": make_fib(),
                "square": square,
                "Square": Square,
                "inst": Square("s1"),
                "uses_class": uses_class,
            }}
            with open({str(out_file)!r}, "wb") as f:
                f.write(ferropickle.dumps(payload))
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert run_child(CHILD_CHECKS, out_file.read_bytes()) == CHILD_EXPECTED


def test_by_reference_does_not_load_where_the_module_is_missing(temp_module):
    """The counterpart: a by-reference function needs its module where it is loaded."""
    data = ferropickle.dumps(temp_module.scaled)
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CHILD_PRELUDE],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert b"ModuleNotFoundError" in proc.stderr
