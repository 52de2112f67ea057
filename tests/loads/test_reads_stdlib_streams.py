"""ferropickle.loads reads what pickle/cloudpickle write, exactly as pickle.loads does."""

import collections
import copyreg
import dataclasses
import datetime
import decimal
import enum
import fractions
import pickle
import subprocess
import sys
import textwrap
import uuid

import cloudpickle
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import assert_same

import ferropickle

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def check(obj, protocols=PROTOCOLS, **kwargs):
    """Pickle `obj` with the stdlib at each protocol; ferropickle must read it identically."""
    for proto in protocols:
        data = pickle.dumps(obj, protocol=proto)
        check_bytes(data, **kwargs)


def check_bytes(data, **kwargs):
    expected = pickle.loads(data, **kwargs)
    got = ferropickle.loads(data, **kwargs)
    assert_same(expected, got)
    return got


# ----- module-level classes (picklable by reference) ------------------------------------


class Plain:
    def __init__(self, a=1):
        self.a = a
        self.b = [a, str(a)]


class WithSlots:
    __slots__ = ("x", "y")

    def __init__(self):
        self.x = 1
        self.y = [2]


class SlotsAndDict:
    __slots__ = ("__dict__", "x")

    def __init__(self):
        self.x = 1
        self.z = 2


class Reduced:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (Reduced, self.args)

    def __eq__(self, other):
        return type(other) is Reduced and self.args == other.args


class ReducedEx:
    def __init__(self, v):
        self.v = v

    def __reduce_ex__(self, proto):
        return (ReducedEx, (self.v * 1,), None, None, None)

    def __eq__(self, other):
        return type(other) is ReducedEx and self.v == other.v


class WithState:
    def __init__(self):
        self.secret = 5
        self.visible = "v"

    def __getstate__(self):
        return {"visible": self.visible}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.restored = True


class NewArgsEx:
    def __new__(cls, a, *, b):
        self = super().__new__(cls)
        self.a, self.b = a, b
        return self

    def __getnewargs_ex__(self):
        return (self.a,), {"b": self.b}


class ListSub(list):
    pass


class DictSub(dict):
    pass


class Registered:
    def __init__(self, v):
        self.v = v


def _reduce_registered(obj):
    return (Registered, (obj.v,))


copyreg.pickle(Registered, _reduce_registered)

Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class DC:
    a: int
    b: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenDC:
    a: int
    b: str


class Color(enum.Enum):
    RED = 1
    GREEN = "g"


class Flags(enum.IntFlag):
    A = 1
    B = 2


# ----- scalars ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        255,
        256,
        65535,
        65536,
        2**31 - 1,
        -(2**31),
        2**31,
        -(2**31) - 1,
        2**63 - 1,
        -(2**63),
        2**64,
        2**1000,
        -(2**1000) + 7,
        0.0,
        -0.0,
        1.5,
        1e300,
        5e-324,
        float("inf"),
        float("-inf"),
        float("nan"),
        "",
        "a",
        "é",
        "\u20ac" * 10,
        "\U0001f600 non-BMP",
        "lone \ud800 surrogate \udfff",
        "x" * 300,
        "line\nbreak\\ and \r\x00 nul",
        b"",
        b"\x00\xff" * 200,
        bytearray(b"mutable"),
        bytearray(),
        1j,
        Ellipsis,
        NotImplemented,
    ],
    ids=repr,
)
def test_scalars(obj):
    check(obj)


def test_huge_string_and_bytes_use_long_forms():
    check(["s" * 70000, b"b" * 70000, bytearray(b"c" * 300)])


# ----- containers, sharing, cycles -------------------------------------------------------


def test_containers():
    check(
        {
            "list": [1, [2, [3, []]]],
            "tuple": (1, (2,), (3, 4), (5, 6, 7), (8, 9, 10, 11), ()),
            "dict": {1: "a", "b": 2, (1, 2): [3], None: {}},
            "set": {1, 2, "x", (3, 4)},
            "frozenset": frozenset({frozenset(), 1}),
            "empty": [[], {}, set(), frozenset(), ()],
            "many": list(range(2500)),
            "big_dict": {str(i): i for i in range(2500)},
            "big_set": set(range(2500)),
        }
    )


def test_shared_references():
    shared = [1, 2]
    shared_d = {"k": shared}
    check([shared, shared, shared_d, shared_d, (shared, shared_d)])


def test_self_referencing_list():
    lst = [1]
    lst.append(lst)
    for proto in PROTOCOLS:
        got = check_bytes(pickle.dumps(lst, protocol=proto))
        assert got[1] is got


def test_dict_cycle():
    a = {"name": "a"}
    b = {"name": "b", "a": a}
    a["b"] = b
    for proto in PROTOCOLS:
        got = check_bytes(pickle.dumps(a, protocol=proto))
        assert got["b"]["a"] is got


def test_object_self_reference_through_dict():
    obj = Plain()
    obj.me = obj
    obj.items = [obj, {"o": obj}]
    for proto in PROTOCOLS:
        got = check_bytes(pickle.dumps(obj, protocol=proto))
        assert got.me is got and got.items[1]["o"] is got


def test_tuple_containing_cycle_through_list():
    lst = []
    tup = (lst, lst)
    lst.append(tup)
    check(tup)


def test_container_subclasses():
    ls = ListSub([1, 2])
    ls.attr = "x"
    ds = DictSub(a=1)
    ds.attr = [1]
    check([ls, ds, collections.OrderedDict(b=1, a=2)])


# ----- classes and reduce protocols ------------------------------------------------------


def test_plain_and_slots_objects():
    check([Plain(), Plain("z")])
    # Protocols 0 and 1 cannot pickle __slots__ without __getstate__.
    check([WithSlots(), SlotsAndDict()], protocols=[2, 3, 4, 5])


def test_reduce_variants():
    check([Reduced(1, "a"), Reduced(), ReducedEx([1]), WithState(), Registered(3)])


def test_getnewargs_ex():
    for proto in PROTOCOLS:
        if proto < 2:
            continue
        got = check_bytes(pickle.dumps(NewArgsEx(1, b=[2]), protocol=proto))
        assert (got.a, got.b) == (1, [2])


def test_namedtuple_dataclass_enum():
    check([Point(1, 2), DC(1, [2]), Color.RED, Color.GREEN, Flags.A | Flags.B])
    check(FrozenDC(1, "x"), protocols=[2, 3, 4, 5])


def test_stdlib_types():
    check(
        [
            datetime.datetime(2024, 2, 29, 12, 30, 5, 123, tzinfo=datetime.timezone.utc),
            datetime.date(1999, 12, 31),
            datetime.time(1, 2, 3),
            datetime.timedelta(days=-3, seconds=5),
            decimal.Decimal("3.14159"),
            decimal.Decimal("-Infinity"),
            fractions.Fraction(22, 7),
            collections.OrderedDict([("z", 1), ("a", [2])]),
            collections.defaultdict(list, {"k": [1]}),
            collections.deque([1, 2, 3], maxlen=5),
            collections.Counter("mississippi"),
            uuid.UUID(int=12345),
            range(1, 10, 2),
            slice(1, None, 3),
            type(None),
            int,
            len,
            sys.maxsize,
        ]
    )


def test_global_with_dotted_name_protocol4():
    check([collections.OrderedDict.fromkeys, datetime.datetime.now], protocols=[4, 5])


def test_extension_registry():
    copyreg.add_extension(__name__, "Plain", 0xBEEF)
    copyreg.add_extension(__name__, "WithSlots", 0x12)
    copyreg.add_extension(__name__, "DC", 0x12345)
    try:
        check([Plain, WithSlots, DC, Plain], protocols=[2, 3, 4, 5])
    finally:
        copyreg.remove_extension(__name__, "Plain", 0xBEEF)
        copyreg.remove_extension(__name__, "WithSlots", 0x12)
        copyreg.remove_extension(__name__, "DC", 0x12345)


# ----- cloudpickle -----------------------------------------------------------------------


def test_cloudpickle_functions_and_classes():
    y = 10

    def closure(x):
        return x + y

    class Local:
        attr = 5

        def method(self):
            return self.attr * 2

    for proto in (2, 3, 4, 5):
        data = cloudpickle.dumps([lambda x: x * 3, closure, Local, Local()], protocol=proto)
        expected = pickle.loads(data)
        got = ferropickle.loads(data)
        assert got[0](2) == expected[0](2) == 6
        assert got[1](1) == expected[1](1) == 11
        assert got[2].__name__ == "Local" and got[3].method() == 10
        assert type(got[3]) is got[2]


def test_cloudpickle_by_value_module_class():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        data = cloudpickle.dumps([Plain(4), Color.RED, DC(1)])
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    got = ferropickle.loads(data)
    assert got[0].a == 4 and got[0].b == [4, "4"]
    assert got[1].value == 1 and got[2].a == 1


# ----- numpy and pandas ------------------------------------------------------------------


def test_numpy_in_band():
    arrays = [
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.array([1.5, np.nan, -np.inf]),
        np.array(["a", "bc"]),
        np.zeros((2, 3), order="F"),
        np.array([1, "x", None], dtype=object),
        np.float32(1.25),
        np.int8(-3),
    ]
    check(arrays)


def test_numpy_out_of_band_buffers():
    ro = np.arange(5.0)
    ro.flags.writeable = False
    arrays = [np.arange(100, dtype=np.uint16), ro, np.ones((4, 4))]
    buffers = []
    data = pickle.dumps(arrays, protocol=5, buffer_callback=buffers.append)
    expected = pickle.loads(data, buffers=buffers)
    got = ferropickle.loads(data, buffers=iter(buffers))
    assert_same(expected, got)
    # Writable out-of-band buffers behind READONLY_BUFFER become read-only views.
    raw = [bytearray(b.raw()) for b in buffers]
    assert_same(pickle.loads(data, buffers=raw), ferropickle.loads(data, buffers=raw))
    assert not ferropickle.loads(data, buffers=raw)[1].flags.writeable


def test_pickle_buffer_in_band():
    for buf in (pickle.PickleBuffer(b"ro"), pickle.PickleBuffer(bytearray(b"rw"))):
        check(buf, protocols=[5])


def test_pandas_dataframe():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {"a": [1, 2, 3], "b": ["x", "y", None], "c": [1.5, np.nan, 3.0]},
        index=pd.Index([10, 20, 30], name="idx"),
    )
    df["d"] = pd.Categorical(["u", "v", "u"])
    for proto in PROTOCOLS:
        data = pickle.dumps(df, protocol=proto)
        pd.testing.assert_frame_equal(ferropickle.loads(data), pickle.loads(data))


# ----- Python 2 streams ------------------------------------------------------------------

# What Python 2.7's pickle wrote for: {'k': 'v\xe9', u'u\xe9': [1, 2L, 3.5, True]}.
PY2_PROTO0 = b"(dp0\nS'k'\np1\nS'v\\xe9'\np2\nsVu\\u00e9\np3\n(lp4\nI1\naL2L\naF3.5\naI01\nas."
PY2_PROTO1 = (
    b"}q\x00(U\x01kq\x01U\x02v\xe9q\x02X\x03\x00\x00\x00u\xc3\xa9q\x03"
    b"]q\x04(K\x01\x8a\x01\x02G@\x0c\x00\x00\x00\x00\x00\x00\x88eu."
)
PY2_PROTO2 = b"\x80\x02" + PY2_PROTO1
# Python 2.7: pickle.dumps(datetime.datetime(2020, 1, 2, 3, 4, 5), 2) and a set via
# __builtin__ (remapped to builtins by fix_imports), and an old-style INST instance.
PY2_DATETIME = (
    b"\x80\x02cdatetime\ndatetime\nq\x00"
    b"U\n\x07\xe4\x01\x02\x03\x04\x05\x00\x00\x00q\x01\x85q\x02Rq\x03."
)
PY2_SET = b"c__builtin__\nset\np0\n((lp1\nI1\naI2\natp2\nRp3\n."
PY2_INST = b"(icollections\nOrderedDict\np0\n(dp1\nb."
PY2_BINSTRING = b"\x80\x02T\x03\x00\x00\x00ab\xffq\x00."


@pytest.mark.parametrize("data", [PY2_PROTO0, PY2_PROTO1, PY2_PROTO2], ids=["p0", "p1", "p2"])
@pytest.mark.parametrize("encoding", ["latin1", "bytes", "utf-8"])
def test_python2_streams(data, encoding):
    errors = "strict" if encoding != "utf-8" else "replace"
    got = check_bytes(data, encoding=encoding, errors=errors)
    assert got["u\xe9"] == [1, 2, 3.5, True]


def test_python2_default_ascii_fails_like_pickle():
    for data in (PY2_PROTO0, PY2_BINSTRING):
        with pytest.raises(UnicodeDecodeError):
            pickle.loads(data)
        with pytest.raises(UnicodeDecodeError):
            ferropickle.loads(data)


def test_python2_datetime_and_fix_imports():
    got = check_bytes(PY2_DATETIME, encoding="latin1")
    assert got == datetime.datetime(2020, 1, 2, 3, 4, 5)
    assert check_bytes(PY2_SET) == {1, 2}
    check_bytes(PY2_INST)
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(PY2_SET, fix_imports=False)
    with pytest.raises(ModuleNotFoundError):
        ferropickle.loads(PY2_SET, fix_imports=False)


def test_protocol0_edge_literals():
    for data in (
        b"I00\n.",
        b"I01\n.",
        b"I-7\n.",
        b"I123456789012345678901234567890\n.",
        b"L-99999999999999999999L\n.",
        b"L5\n.",
        b"F1.25\n.",
        b"Fnan\n.",
        b"F-inf\n.",
        b"F1e-310\n.",
        b"S'a\\'b\\n'\n.",
        b'S"dq"\n.',
        b"Vraw\\u20ac\\\\x\n.",
        b"(I1\nI2\nl.",
        b"(I1\nI2\nt.",
        b"(S'k'\nI1\nd.",
        b"I5\np7\n0g7\n.",
        b"I7\n(I2\n1.",
        b"N(I1\n00.",
    ):
        check_bytes(data)


# ----- input types -----------------------------------------------------------------------


def test_bytes_like_inputs():
    obj = {"a": [1, 2.5, "x"], "b": b"y"}
    data = pickle.dumps(obj, protocol=5)
    for source in (
        data,
        bytearray(data),
        memoryview(data),
        memoryview(bytearray(data)).toreadonly(),
        np.frombuffer(data, dtype=np.uint8),
        memoryview(data).cast("c"),
    ):
        assert ferropickle.loads(source) == obj


def test_non_contiguous_buffer_rejected():
    data = pickle.dumps([1, 2], protocol=5)
    strided = memoryview(bytearray(data * 2))[::2]
    with pytest.raises(BufferError):
        ferropickle.loads(strided)


def test_trailing_garbage_after_stop_is_ignored():
    assert ferropickle.loads(pickle.dumps([1], protocol=2) + b"garbage") == [1]


# ----- property-based --------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=True)
    | st.text()
    | st.binary()
)
# NaN keys are excluded: NaN != NaN makes equal containers compare unequal.
hashable_scalars = scalars.filter(lambda x: x == x)
hashables = st.recursive(
    hashable_scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
nested = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.tuples(inner)
        | st.tuples(inner, inner, inner)
        | st.lists(inner, min_size=4, max_size=8).map(tuple)
        | st.dictionaries(hashables, inner, max_size=5)
        | st.sets(hashables, max_size=5)
        | st.frozensets(hashables, max_size=5)
        | st.binary().map(bytearray)
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=nested, proto=st.sampled_from(list(PROTOCOLS)))
def test_hypothesis_nested(obj, proto):
    check_bytes(pickle.dumps(obj, protocol=proto))


@settings(max_examples=60, deadline=None)
@given(obj=nested)
def test_hypothesis_shared_and_cyclic(obj):
    shared = [obj]
    outer = {"a": shared, "b": [shared, (shared,)], "c": obj}
    shared.append(outer)
    for proto in PROTOCOLS:
        check_bytes(pickle.dumps(outer, protocol=proto))


def test_find_class_raises_the_audit_event_like_pickle():
    """`pickle.find_class` audit events fire for every global, as with stock pickle (run in a
    child: an audit hook can't be removed)."""
    code = textwrap.dedent(
        """
        import collections, pickle, sys
        import ferropickle
        seen = []
        sys.addaudithook(lambda e, a: seen.append(a) if e == "pickle.find_class" else None)
        data = pickle.dumps([collections.OrderedDict(a=1), collections.Counter("ab")], 4)
        ferropickle.loads(data)
        ours, seen[:] = list(seen), []
        pickle.loads(data)
        assert ours == seen and ours, (ours, seen)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
