"""Objects pickled through the `__reduce_ex__` protocol, copyreg, and globals by reference.

Covers every shape of `__reduce__` result (2- to 6-tuples, a global name), `__reduce_ex__`,
`__getstate__`/`__setstate__`, `__slots__`, `__getnewargs__`/`__getnewargs_ex__`, copyreg's
dispatch table and extension registry, and the standard library and numpy/pandas types Dask
messages commonly carry.
"""

from __future__ import annotations

import array
import collections
import copyreg
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import logging
import math
import operator
import pathlib
import pickle
import pickletools
import re
import sys
import types
import uuid
import warnings

import pytest
from oracle import assert_like_pickle, roundtrip

import ferropickle

THIS_MODULE = __name__


def opcodes(data: bytes) -> list[str]:
    return [op.name for op, _, _ in pickletools.genops(data)]


# ---------------------------------------------------------------------------------------------
# __reduce__ results of every length
# ---------------------------------------------------------------------------------------------


class Pair:
    """`__reduce__` -> (callable, args)."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __reduce__(self):
        return (Pair, (self.a, self.b))

    def __eq__(self, other):
        return type(other) is Pair and (self.a, self.b) == (other.a, other.b)

    __hash__ = None  # type: ignore[assignment]


class WithState:
    """`__reduce__` -> (callable, args, state) with the default `BUILD` (dict update)."""

    def __init__(self, x):
        self.x = x

    def __reduce__(self):
        return (WithState, (None,), {"x": self.x, "extra": "from-state"})


class WithSetState:
    """`__reduce__` -> (callable, args, state) with `__setstate__`."""

    def __init__(self):
        self.log = []

    def __reduce__(self):
        return (WithSetState, (), ("opaque", 42))

    def __setstate__(self, state):
        self.log = ["setstate", state]


class Bag:
    """`__reduce__` -> (callable, args, None, listitems)."""

    def __init__(self, items=()):
        self.items = list(items)

    def append(self, x):
        self.items.append(x)

    def extend(self, xs):
        self.items.extend(xs)

    def __reduce__(self):
        return (Bag, (), None, iter(self.items))


class Table:
    """`__reduce__` -> (callable, args, state, None, dictitems)."""

    def __init__(self, name=""):
        self.name = name
        self.rows = {}

    def __setitem__(self, k, v):
        self.rows[k] = v

    def __reduce__(self):
        return (Table, (), {"name": self.name}, None, iter(self.rows.items()))


def set_box_state(box, state):
    box.content = ("via-setter", state)


class Box:
    """`__reduce__` -> 6-tuple with a state setter."""

    def __init__(self, content=None):
        self.content = content

    def __reduce__(self):
        return (Box, (), self.content, None, None, set_box_state)


def test_reduce_2_tuple(protocol):
    roundtrip(Pair(1, [2, "three"]), protocol=protocol)


def test_reduce_3_tuple_state_dict(protocol):
    for r in roundtrip(WithState([1, 2]), protocol=protocol, check=lambda a, b: None):
        assert (r.x, r.extra) == ([1, 2], "from-state")


def test_reduce_3_tuple_setstate(protocol):
    for r in roundtrip(WithSetState(), protocol=protocol, check=lambda a, b: None):
        assert r.log == ["setstate", ("opaque", 42)]


@pytest.mark.parametrize("n", [0, 1, 2, 1000, 2500])
def test_reduce_listitems(protocol, n):
    roundtrip(Bag(range(n)), protocol=protocol)


@pytest.mark.parametrize("n", [0, 1, 2, 1001])
def test_reduce_dictitems(protocol, n):
    t = Table("t")
    for i in range(n):
        t[f"k{i}"] = [i]
    roundtrip(t, protocol=protocol)


def test_reduce_6_tuple_state_setter(protocol):
    for r in roundtrip(Box(["payload"]), protocol=protocol, check=lambda a, b: None):
        assert r.content == ("via-setter", ["payload"])


def test_state_setter_with_shared_and_cyclic_state(protocol):
    b = Box()
    b.content = {"me": b}
    for r in roundtrip([b, b], protocol=protocol, check=lambda a, b: None):
        assert r[0] is r[1]
        assert r[0].content[0] == "via-setter"
        assert r[0].content[1]["me"] is r[0]


class ReduceExRecorder:
    def __init__(self, seen=None):
        self.seen = seen

    def __reduce_ex__(self, proto):
        return (ReduceExRecorder, (proto,))


def test_reduce_ex_gets_the_protocol(protocol):
    data = ferropickle.dumps(ReduceExRecorder(), protocol)
    assert pickle.loads(data).seen == protocol
    assert ferropickle.loads(data).seen == protocol


class ReduceExOverReduce:
    """`__reduce_ex__` wins over `__reduce__`, as in `pickle`."""

    def __reduce__(self):
        raise AssertionError("__reduce__ must not be called")

    def __reduce_ex__(self, proto):
        return (str, ("from reduce_ex",))


def test_reduce_ex_wins_over_reduce(protocol):
    for r in roundtrip(ReduceExOverReduce(), protocol=protocol, check=lambda a, b: None):
        assert r == "from reduce_ex"


class GetSetState:
    def __init__(self, value):
        self.value = value
        self.cache = "transient"

    def __getstate__(self):
        return {"value": self.value}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.cache = "rebuilt"


def test_getstate_setstate(protocol):
    for r in roundtrip(GetSetState([1]), protocol=protocol, check=lambda a, b: None):
        assert type(r) is GetSetState
        assert (r.value, r.cache) == ([1], "rebuilt")


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a = a
        self.b = b


class SlottedPartly(Slotted):
    __slots__ = ("c",)


class SlottedWithDict:
    __slots__ = ("__dict__", "a")


def test_slots_without_dict(protocol):
    roundtrip(Slotted(1, [2]), protocol=protocol)


def test_slots_with_an_unset_slot(protocol):
    s = Slotted(1, 2)
    del s.b
    for r in roundtrip(s, protocol=protocol):
        assert not hasattr(r, "b")


def test_inherited_slots(protocol):
    s = SlottedPartly("x", "y")
    s.c = {"z"}
    roundtrip(s, protocol=protocol)


def test_slots_with_dict(protocol):
    s = SlottedWithDict()
    s.a = "slot"
    s.other = "dict"
    for r in roundtrip(s, protocol=protocol):
        assert (r.a, r.other) == ("slot", "dict")


class NeedsNewArgs:
    def __new__(cls, a, b):
        self = super().__new__(cls)
        self.ab = (a, b)
        return self

    def __getnewargs__(self):
        return self.ab


class KeywordOnlyNew:
    def __new__(cls, *, key, value=None):
        self = super().__new__(cls)
        self.kv = (key, value)
        return self

    def __getnewargs_ex__(self):
        return ((), {"key": self.kv[0], "value": self.kv[1]})


def test_getnewargs_uses_newobj(protocol):
    obj = NeedsNewArgs(1, "two")
    assert "NEWOBJ" in opcodes(ferropickle.dumps(obj, protocol))
    roundtrip(obj, protocol=protocol)


def test_getnewargs_ex_uses_newobj_ex(protocol):
    obj = KeywordOnlyNew(key="k", value=[1])
    assert "NEWOBJ_EX" in opcodes(ferropickle.dumps(obj, protocol))
    roundtrip(obj, protocol=protocol)


class CopyregPoint:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __reduce__(self):
        raise AssertionError("copyreg's reducer must win over __reduce__")


def reduce_copyreg_point(p):
    return (CopyregPoint, (p.x, p.y))


@pytest.fixture
def copyreg_point():
    copyreg.pickle(CopyregPoint, reduce_copyreg_point)
    yield
    del copyreg.dispatch_table[CopyregPoint]


def test_copyreg_dispatch_table(protocol, copyreg_point):
    roundtrip(CopyregPoint(1, 2.5), protocol=protocol)


class Singleton:
    def __reduce__(self):
        return "SINGLETON"


SINGLETON = Singleton()


class Holder:
    class Nested:
        def __reduce__(self):
            return "Holder.NESTED"


Holder.NESTED = Holder.Nested()  # type: ignore[attr-defined]


def test_reduce_returning_a_global_name(protocol):
    for r in roundtrip([SINGLETON, SINGLETON, Holder.NESTED], protocol=protocol):
        assert r[0] is SINGLETON
        assert r[1] is SINGLETON
        assert r[2] is Holder.NESTED


# ---------------------------------------------------------------------------------------------
# Standard library types
# ---------------------------------------------------------------------------------------------

Point = collections.namedtuple("Point", ["x", "y"])


@dataclasses.dataclass
class DC:
    a: int
    b: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class FrozenDC:
    a: int
    b: tuple = ()


@dataclasses.dataclass(slots=True)
class SlotsDC:
    a: int
    b: str = "b"


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


def test_namedtuple(protocol):
    for r in roundtrip([Point(1, "y"), Point(x=[1], y=None)], protocol=protocol):
        assert r[0].x == 1


def test_dataclasses(protocol):
    roundtrip([DC(1, [2]), FrozenDC(3, (4,)), SlotsDC(5)], protocol=protocol)


@pytest.mark.parametrize(
    "member", [Color.RED, Color.GREEN, Level.HIGH, Perm.R, Perm.R | Perm.W, Perm(0)], ids=str
)
def test_enums_come_back_as_the_same_member(protocol, member):
    for r in roundtrip(member, protocol=protocol):
        assert r is member


def test_int_enum_stays_an_enum(protocol):
    for r in roundtrip({Level.LOW: Level.HIGH}, protocol=protocol):
        ((k, v),) = r.items()
        assert k is Level.LOW
        assert v is Level.HIGH


IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST")

DATETIMES = [
    datetime.date(2024, 2, 29),
    datetime.date.min,
    datetime.datetime(2024, 1, 2, 3, 4, 5, 678901),
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    datetime.datetime(2024, 11, 3, 1, 30, tzinfo=IST, fold=1),
    datetime.datetime.max,
    datetime.time(23, 59, 59, 999999),
    datetime.time(1, 2, tzinfo=IST),
    datetime.timedelta(days=-1, seconds=5, microseconds=7),
    datetime.timedelta.max,
    datetime.timezone.utc,
    IST,
]


@pytest.mark.parametrize("value", DATETIMES, ids=repr)
def test_datetime_types(protocol, value):
    for r in roundtrip(value, protocol=protocol):
        assert repr(r) == repr(value)


@pytest.mark.parametrize(
    "value",
    [
        decimal.Decimal("1.10"),
        decimal.Decimal("-0"),
        decimal.Decimal("NaN"),
        decimal.Decimal("-Infinity"),
        decimal.Decimal("3.141592653589793238462643383279502884197"),
        fractions.Fraction(-3, 7),
        complex(1.5, -0.0),
        complex(math.inf, math.nan),
        range(0),
        range(-5, 100, 7),
        slice(1, None, -2),
        slice("a", ["b"]),
        Ellipsis,
        NotImplemented,
        type(None),
        type(Ellipsis),
        type(NotImplemented),
    ],
    ids=repr,
)
def test_numbers_and_builtin_oddities(protocol, value):
    for r in roundtrip(value, protocol=protocol):
        assert repr(r) == repr(value)


def test_singletons_are_the_same_objects(protocol):
    obj = [Ellipsis, NotImplemented, None, type(None), type(Ellipsis)]
    for r in roundtrip(obj, protocol=protocol):
        assert all(x is y for x, y in zip(r, obj, strict=True))


def test_collections(protocol):
    od = collections.OrderedDict([("b", 1), ("a", [2])])
    od.move_to_end("b")
    dd = collections.defaultdict(list, {"x": [1]})
    dq = collections.deque([1, "two", [3]], maxlen=5)
    counter = collections.Counter("abracadabra")
    chain = collections.ChainMap({"a": 1}, {"a": 2, "b": 3})
    for r in roundtrip([od, dd, dq, counter, chain, collections.deque()], protocol=protocol):
        assert list(r[0]) == ["a", "b"]
        assert r[1].default_factory is list
        r[1]["new"].append(1)
        assert r[2].maxlen == 5
        assert r[3].most_common(1) == [("a", 5)]
        assert r[4]["a"] == 1
        assert r[4].maps == [{"a": 1}, {"a": 2, "b": 3}]


def test_defaultdict_containing_itself(protocol):
    dd = collections.defaultdict(dict)
    dd["me"] = dd
    for r in roundtrip(dd, protocol=protocol):
        assert r["me"] is r


def test_uuid(protocol):
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    for r in roundtrip([u, uuid.uuid4(), u], protocol=protocol):
        assert r[0] == u
        assert r[0] is r[2]


@pytest.mark.parametrize(
    "pattern",
    [re.compile(r"a+b*", re.I | re.M), re.compile(rb"\d+"), re.compile("\\w+", re.ASCII)],
    ids=repr,
)
def test_regex(protocol, pattern):
    for r in roundtrip(pattern, protocol=protocol):
        assert (r.pattern, r.flags) == (pattern.pattern, pattern.flags)


@pytest.mark.parametrize("typecode", list(array.typecodes))
def test_array(protocol, typecode):
    with warnings.catch_warnings():
        # 'u' (wchar_t) is deprecated since CPython 3.13 but still pickles; 'w' (UCS4) is new.
        warnings.filterwarnings("ignore", "The 'u' type code is deprecated", DeprecationWarning)
        values = [0, 1, 65] if typecode not in "fd" else [0.5, -1.0, math.inf]
        if typecode in "uw":
            wide = array.array(typecode).itemsize == 4
            values = ["a", "\xe9", "\U0001f600"] if wide else ["a", "\xe9"]
        a = array.array(typecode, values)
        for r in roundtrip(a, protocol=protocol):
            assert r.typecode == typecode
            assert r == a


def test_simple_namespace(protocol):
    ns = types.SimpleNamespace(a=1, b=[2], c=types.SimpleNamespace(d="e"))
    roundtrip(ns, protocol=protocol)


class MyError(Exception):
    def __init__(self, msg, code):
        super().__init__(msg, code)
        self.code = code


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad", 1),
        KeyError("k"),
        OSError(2, "No such file"),
        MyError("custom", 7),
        StopIteration(),
        SystemExit(3),
    ],
    ids=repr,
)
def test_exceptions(protocol, exc):
    for r in roundtrip(exc, protocol=protocol):
        assert type(r) is type(exc)
        assert r.args == exc.args


def test_exception_attributes(protocol):
    e = MyError("custom", 7)
    e.note = "attached"
    for r in roundtrip(e, protocol=protocol):
        assert (r.code, r.note) == (7, "attached")


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


class Counter:
    def __init__(self, start):
        self.n = start

    def add(self, k):
        self.n += k
        return self.n

    @classmethod
    def make(cls, n):
        return cls(n)

    @staticmethod
    def double(x):
        return 2 * x


def test_bound_method_of_importable_class(protocol):
    c = Counter(10)
    for r in roundtrip(c.add, protocol=protocol):
        assert type(r.__self__) is Counter
        assert r(5) == 15


def test_classmethod_and_staticmethod_by_reference(protocol):
    for r in roundtrip([Counter.make, Counter.double], protocol=protocol):
        assert r[0](3).n == 3
        assert r[1] is Counter.double


def test_a_bound_classmethod_of_an_importable_class_goes_by_reference():
    """`Fraction.from_float` was pickled by value (1,387 bytes against pickle's 77): a bound
    classmethod of an importable class is pickle's by-reference reduction, byte for byte."""
    for protocol in (4, 5):
        assert ferropickle.dumps(fractions.Fraction.from_float, protocol) == pickle.dumps(
            fractions.Fraction.from_float, protocol
        )


@pytest.mark.parametrize(
    "func",
    [
        operator.attrgetter("real"),
        operator.attrgetter("real", "imag"),
        operator.itemgetter(1),
        operator.itemgetter(0, -1),
        operator.methodcaller("conjugate"),
        operator.methodcaller("to_bytes", 2, byteorder="big"),
    ],
    ids=repr,
)
def test_operator_callables(protocol, func):
    for r in roundtrip(func, protocol=protocol):
        assert type(r) is type(func)
        for arg in [(3 + 4j), [1, 2, 3], "xyz", 7]:
            try:
                expected = func(arg)
            except (AttributeError, TypeError, IndexError):
                continue
            assert r(arg) == expected


def add3(a, b, c=0, *, scale=1):
    return (a + b + c) * scale


def test_partial(protocol):
    p = functools.partial(add3, 1, c=2, scale=10)
    for r in roundtrip(p, protocol=protocol):
        assert r.func is add3
        assert r(2) == 50


def test_partial_with_dict_and_nesting(protocol):
    inner = functools.partial(add3, 1)
    p = functools.partial(inner, 2, scale=3)
    p.label = "task"
    for r in roundtrip([p, p, inner], protocol=protocol):
        assert r[0] is r[1]
        assert r[0].label == "task"
        assert r[0]() == 9
        assert r[2](2) == 3


def test_partial_of_builtin(protocol):
    p = functools.partial(max, key=len)
    for r in roundtrip(p, protocol=protocol):
        assert r(["a", "bbb", "cc"]) == "bbb"


@pytest.mark.parametrize(
    "path",
    [
        pathlib.PurePosixPath("/a/b/c.txt"),
        pathlib.PureWindowsPath(r"C:\Users\x\file.csv"),
        pathlib.PurePath("rel/dir"),
        pathlib.Path("/tmp/data.parquet"),
        pathlib.PosixPath("relative/\xe9t\xe9"),
        pathlib.Path(),
    ],
    ids=repr,
)
def test_paths(protocol, path):
    for r in roundtrip(path, protocol=protocol):
        assert type(r) is type(path)
        assert str(r) == str(path)


def test_many_paths_in_one_message(protocol):
    paths = [pathlib.Path(f"/data/part-{i}.parquet") for i in range(50)]
    roundtrip([*paths, paths[0]], protocol=protocol)


@pytest.mark.parametrize(
    "func",
    [len, max, print, math.sqrt, operator.add, getattr, sys.getsizeof, str.upper, dict.fromkeys],
    ids=repr,
)
def test_builtin_functions_and_methods(protocol, func):
    for r in roundtrip(func, protocol=protocol):
        assert r == func


def test_bound_builtin_method(protocol):
    lst = [1, 2]
    for r in roundtrip(lst.append, protocol=protocol):
        r(3)
        assert r.__self__ == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# Globals by reference
# ---------------------------------------------------------------------------------------------


def module_function(x):
    return x + 1


class Outer:
    class Inner:
        def method(self):
            return "inner"

    def method(self):
        return "outer"


@pytest.mark.parametrize(
    "obj",
    [module_function, Outer, Outer.Inner, Outer.method, Outer.Inner.method, Counter],
    ids=lambda o: o.__qualname__,
)
def test_module_level_globals_go_by_reference(protocol, obj):
    data = ferropickle.dumps(obj, protocol)
    assert "STACK_GLOBAL" in opcodes(data)
    assert b"cloudpickle" not in data
    assert obj.__module__ == THIS_MODULE
    for r in roundtrip(obj, protocol=protocol):
        assert r is obj


def test_globals_written_like_pickle(protocol):
    objs = [module_function, Outer.Inner, len, math.sqrt, int, type(None)]
    for obj in objs:
        assert_like_pickle(obj, protocol)
    # (Several globals in one stream may differ from `pickle` in whether a repeated module name
    # is fetched from the memo or written again; both load the same.)


def test_same_global_twice_is_memoized(protocol):
    data = ferropickle.dumps([module_function, module_function, Outer, Outer], protocol)
    assert opcodes(data).count("STACK_GLOBAL") == 2
    for r in roundtrip([module_function, module_function], protocol=protocol):
        assert r[0] is r[1] is module_function


def test_builtin_types_by_reference(protocol):
    types_ = [int, str, list, dict, object, type, Exception, collections.OrderedDict, re.Pattern]
    for r in roundtrip(types_, protocol=protocol):
        assert all(x is y for x, y in zip(r, types_, strict=True))


class Extended:
    pass


@pytest.fixture
def extension():
    """Registers `Extended` under a copyreg extension code; yields a setter for the code."""
    registered = []

    def register(code):
        copyreg.add_extension(THIS_MODULE, "Extended", code)
        registered.append(code)

    yield register
    for code in registered:
        copyreg.remove_extension(THIS_MODULE, "Extended", code)


@pytest.mark.parametrize(
    ("code", "opcode"),
    [
        (1, "EXT1"),
        (255, "EXT1"),
        (256, "EXT2"),
        (65535, "EXT2"),
        (65536, "EXT4"),
        (0x7FFFFFFF, "EXT4"),
    ],
)
def test_copyreg_extension_codes(protocol, extension, code, opcode):
    extension(code)
    data = ferropickle.dumps([Extended, Extended], protocol)
    assert_like_pickle([Extended, Extended], protocol)
    assert opcodes(data).count(opcode) == 2
    for r in roundtrip([Extended, Extended()], protocol=protocol):
        assert r[0] is Extended
        assert type(r[1]) is Extended


def test_extension_removed_means_back_to_stack_global(protocol, extension):
    extension(7)
    assert "EXT1" in opcodes(ferropickle.dumps(Extended, protocol))
    copyreg.remove_extension(THIS_MODULE, "Extended", 7)
    try:
        data = ferropickle.dumps(Extended, protocol)
        assert "STACK_GLOBAL" in opcodes(data)
        assert pickle.loads(data) is Extended
    finally:
        copyreg.add_extension(THIS_MODULE, "Extended", 7)  # for the fixture's cleanup


# ---------------------------------------------------------------------------------------------
# Objects only cloudpickle's reducers know
# ---------------------------------------------------------------------------------------------


def test_dict_views_and_mappingproxy(protocol):
    d = {"a": 1, "b": 2}
    obj = [d.keys(), d.values(), d.items(), types.MappingProxyType(d)]
    for r in roundtrip(obj, protocol=protocol, check=lambda a, b: None):
        assert list(r[0]) == ["a", "b"]
        assert list(r[1]) == [1, 2]
        assert list(r[2]) == [("a", 1), ("b", 2)]
        assert r[3] == d
        assert type(r[3]) is types.MappingProxyType


def test_logger(protocol):
    logger = logging.getLogger("ferropickle.tests")
    for r in roundtrip(logger, protocol=protocol):
        assert r is logger


def test_module_object(protocol):
    for r in roundtrip([math, collections], protocol=protocol):
        assert r[0] is math
        assert r[1] is collections


# ---------------------------------------------------------------------------------------------
# numpy and pandas
# ---------------------------------------------------------------------------------------------


def _numpy():
    return pytest.importorskip("numpy")


NUMPY_CASES = [
    "int8",
    "uint64",
    "float32",
    "float64-nan",
    "complex128",
    "bool",
    "datetime64",
    "timedelta64",
    "unicode",
    "bytes",
    "structured",
    "0-d",
    "empty",
    "2-d",
    "non-contiguous",
    "transposed",
    "fortran",
    "readonly",
    "large",
    "object",
]


def numpy_array(name):
    np = _numpy()
    base = np.arange(24, dtype=np.int64).reshape(4, 6)
    cases = {
        "int8": lambda: np.array([-128, 0, 127], dtype=np.int8),
        "uint64": lambda: np.array([0, 2**64 - 1], dtype=np.uint64),
        "float32": lambda: np.linspace(0, 1, 7, dtype=np.float32),
        "float64-nan": lambda: np.array([np.nan, -0.0, np.inf]),
        "complex128": lambda: np.array([1 + 2j, -1j]),
        "bool": lambda: np.array([True, False, True]),
        "datetime64": lambda: np.array(["2020-01-01", "NaT"], dtype="datetime64[ns]"),
        "timedelta64": lambda: np.array([1, 2], dtype="timedelta64[s]"),
        "unicode": lambda: np.array(["a", "\xe9\U0001f600"]),
        "bytes": lambda: np.array([b"ab", b"c"]),
        "structured": lambda: np.array([(1, 2.0), (3, 4.0)], dtype=[("i", "<i4"), ("f", ">f8")]),
        "0-d": lambda: np.array(3.5),
        "empty": lambda: np.empty((0, 3)),
        "2-d": lambda: base,
        "non-contiguous": lambda: base[::2, ::3],
        "transposed": lambda: base.T,
        "fortran": lambda: np.asfortranarray(base),
        "readonly": lambda: np.frombuffer(b"\x01\x02\x03\x04", dtype=np.uint8),
        "large": lambda: np.arange(100_000, dtype=np.float64),
        "object": lambda: np.array([1, "two", [3], None, (4.0,)], dtype=object),
    }
    assert list(cases) == NUMPY_CASES
    return cases[name]()


@pytest.mark.parametrize("name", NUMPY_CASES)
def test_numpy_arrays(protocol, name):
    roundtrip(numpy_array(name), protocol=protocol)


def test_numpy_big_endian_array_like_pickle(protocol):
    """numpy's own reducer loses the byte order of `>i4` at protocol 4 (stock `pickle` too), so
    compare with what `pickle` gives rather than with the original."""
    np = _numpy()
    arr = np.arange(5, dtype=">i4")
    expected = pickle.loads(pickle.dumps(arr, protocol))
    for r in [
        pickle.loads(ferropickle.dumps(arr, protocol)),
        ferropickle.loads(ferropickle.dumps(arr, protocol)),
    ]:
        assert r.dtype == expected.dtype
        assert (r == arr).all()


def test_numpy_array_shared_and_in_containers(protocol):
    np = _numpy()
    a = np.arange(10)
    for r in roundtrip({"a": a, "again": a, "view": a[2:5]}, protocol=protocol):
        assert r["a"] is r["again"]


def test_numpy_scalars(protocol):
    np = _numpy()
    scalars = [
        np.int8(-3),
        np.int64(2**62),
        np.uint32(7),
        np.float16(1.5),
        np.float32(-0.0),
        np.float64("nan"),
        np.complex64(1 - 1j),
        np.bool_(True),
        np.datetime64("2020-01-01T12:00"),
        np.timedelta64(5, "ms"),
        np.str_("np-str"),
        np.bytes_(b"np-bytes"),
    ]
    for r in roundtrip(scalars, protocol=protocol):
        assert [type(x) for x in r] == [type(x) for x in scalars]


def test_numpy_dtypes(protocol):
    np = _numpy()
    dtypes = [np.dtype("f8"), np.dtype(">i2"), np.dtype([("a", "u1"), ("b", "U3")]), np.dtype("O")]
    roundtrip(dtypes, protocol=protocol)


@pytest.fixture
def pd():
    return pytest.importorskip("pandas")


def test_pandas_dataframe(protocol, pd):
    np = _numpy()
    df = pd.DataFrame(
        {
            "i": np.arange(5),
            "f": [0.5, np.nan, 1.5, -0.0, 2.0],
            "s": list("abcde"),
            "c": pd.Categorical(list("xyxyz")),
            "t": pd.date_range("2024-01-01", periods=5, tz="UTC"),
        },
        index=pd.Index([10, 20, 30, 40, 50], name="idx"),
    )
    roundtrip(df, protocol=protocol)


def test_pandas_series_and_friends(protocol, pd):
    objs = [
        pd.Series([1.0, 2.0], name="s", index=["a", "b"]),
        pd.Series(["x", None], dtype="string"),
        pd.Timestamp("2024-07-01 02:30", tz="America/New_York"),
        pd.Timestamp("2024-01-01"),
        pd.Timedelta("1 day 2 hours"),
        pd.Categorical(["a", "b", "a"], categories=["b", "a"], ordered=True),
        pd.Period("2024-01", freq="M"),
        pd.Interval(0, 1, closed="left"),
        pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["n", "l"]),
    ]
    roundtrip(objs, protocol=protocol)


class WithPrivateMethods:
    def __private(self):
        return "instance"

    @classmethod
    def __class_private(cls):
        return "class"


def test_bound_private_methods():
    """Since CPython 3.15 a bound method's `__reduce__` gives its mangled name (`_C__m`) and
    `pickle` writes it by that name: so do we. Before, that name is `__m`, which `getattr`
    can't find, and the method goes by value (cloudpickle's `MethodType(func, self)`)."""
    for method, expected in [
        (WithPrivateMethods()._WithPrivateMethods__private, "instance"),
        (WithPrivateMethods._WithPrivateMethods__class_private, "class"),
    ]:
        if sys.version_info >= (3, 15):
            assert ferropickle.dumps(method) == pickle.dumps(method, 5)
        assert pickle.loads(ferropickle.dumps(method))() == expected
        assert ferropickle.loads(ferropickle.dumps(method))() == expected
