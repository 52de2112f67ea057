"""The native fast paths: `pathlib` paths, `functools.partial` and dask graph nodes.

Each is written from its slots instead of through `__reduce_ex__`, producing what `pickle` writes
from the object's own reduce value, so every stream still loads with stock `pickle.loads`. Only
the exact classes take a fast path; subclasses (which may override `__reduce__`) take the generic
one. `ferropickle.loads` also builds POSIX paths from already-parsed parts without calling the
class, falling back to the call whenever the parts are not in parsed form.

The fast paths for dask nodes are picked up only once `dask._task_spec` has been imported by
someone else: ferropickle itself never imports dask.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import pathlib
import pickle
import pickletools
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from oracle import check_stream, roundtrip

import ferropickle

PurePosixPath = pathlib.PurePosixPath
PureWindowsPath = pathlib.PureWindowsPath


def reduced_objects(obj: Any) -> int:
    """How many objects `ferropickle.dumps(obj)` wrote through `__reduce_ex__` (generic path)."""
    before = ferropickle.stats()["objects_reduced"]
    ferropickle.dumps(obj)
    return ferropickle.stats()["objects_reduced"] - before


def pickling_error(obj: Any, protocol: int = 5) -> str:
    """The place note of the `TypeError` an unpicklable lock inside `obj` raises."""
    with pytest.raises(TypeError) as info:
        ferropickle.dumps(obj, protocol)
    [note] = info.value.__notes__
    return note


# ---------------------------------------------------------------------------------------------
# pathlib paths
# ---------------------------------------------------------------------------------------------

LONG_POSIX = PurePosixPath("/", *(f"segment-{i:04d}" for i in range(2000)))

PATHS = [
    PurePosixPath("/a/b/c.txt"),
    PurePosixPath("relative/dir/file"),
    PurePosixPath("../up/./x"),
    PurePosixPath("//host/share/x"),  # POSIX keeps exactly two leading slashes
    PurePosixPath("///three/slashes"),  # ... and folds three or more into one
    PurePosixPath(),
    PurePosixPath("/"),
    PurePosixPath("/données/ünïcode/日本語.csv"),
    PurePosixPath("/emoji/🐍/📁 folder/🦀.rs"),
    PurePosixPath("/with spaces/a file name.txt"),
    PurePosixPath(" leading and trailing "),
    LONG_POSIX,
    pathlib.PosixPath("/tmp/data.parquet"),
    pathlib.PosixPath("relative/x"),
    pathlib.PosixPath(),
    PureWindowsPath("C:\\x\\y"),
    PureWindowsPath("\\\\server\\share\\x"),
    PureWindowsPath("C:x"),
    PureWindowsPath("\\"),
    PureWindowsPath("C:"),
    PureWindowsPath("c:/Mixed/Slashes\\and CASE"),
    PureWindowsPath("relative\\win"),
    PureWindowsPath("D:\\🐍 emoji\\ü.txt"),
    # Made of several segments (kept as given by CPython 3.13+, parsed by 3.10-3.12).
    PurePosixPath("/data") / "f1.parquet",
    pathlib.PosixPath("a", "b/c", "./d"),
    PurePosixPath("x", "/restart", "y"),
    PureWindowsPath("C:/a", "b\\c"),
]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{type(p).__name__}({str(p)[:40]!r})")
def test_path_roundtrips_with_type_str_and_parts(protocol, path):
    for r in roundtrip(path, protocol=protocol):
        assert type(r) is type(path)
        assert r == path
        assert str(r) == str(path)
        assert r.parts == path.parts
        assert hash(r) == hash(path)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{type(p).__name__}({str(p)[:40]!r})")
def test_path_stream_is_what_pickle_writes(path):
    ours = pickletools.optimize(ferropickle.dumps(path))
    assert ours == pickletools.optimize(pickle.dumps(path, 5))


# Constructor args of paths made fresh for each test: CPython 3.12 parses a path only when
# something first needs its parts, and pickling it may be that first time.
FRESH = [
    (PurePosixPath, ("/a/b", "c.txt")),
    (PurePosixPath, ("rel//x/.", "y")),
    (PurePosixPath, ()),
    (pathlib.PosixPath, ("/tmp", "data.parquet")),
    (PureWindowsPath, ("C:\\a", "b")),
    (PureWindowsPath, ("//server/share/x",)),
    (PureWindowsPath, ("C:x",)),
]


@pytest.mark.parametrize(("cls", "args"), FRESH, ids=repr)
def test_fresh_path_stream_is_what_pickle_writes(cls, args):
    ours = ferropickle.dumps(cls(*args))
    assert pickletools.optimize(ours) == pickletools.optimize(pickle.dumps(cls(*args), 5))
    assert_same_path(cls(*args), pickle.loads(ours))
    path = cls(*args)
    assert reduced_objects(path) == 0
    assert str(path) == str(cls(*args))  # pickling left the path as it was


@pytest.mark.parametrize("cls", [PurePosixPath, pathlib.PosixPath, PureWindowsPath])
def test_path_without_its_fields_fails_as_pickle_does(cls):
    blank = object.__new__(cls)  # never initialised: nothing to pickle
    with pytest.raises(Exception) as stock:
        pickle.dumps(blank, 5)
    with pytest.raises(Exception) as ours:
        ferropickle.dumps(blank)
    assert type(ours.value.__cause__ or ours.value) is type(stock.value)
    assert str(stock.value) in str(ours.value)


def test_concrete_path_classes_take_the_fast_path():
    for path in [PurePosixPath("/a"), pathlib.PosixPath("/a"), PureWindowsPath("C:\\a")]:
        assert reduced_objects(path) == 0, type(path)


@pytest.mark.skipif(
    sys.version_info >= (3, 16), reason="pathlib layouts checked on CPython 3.10-3.15 only"
)
def test_native_path_writer_is_active_on_this_python():
    assert ferropickle.stats()["native_writers"]["path"] is True


CHILD_WITH_UNKNOWN_PATH_LAYOUT = """
import json, pathlib, pickle, pickletools

# A pathlib whose __reduce__ matches none of the layouts ferropickle knows.
pathlib.PurePath.__reduce__ = lambda self: (type(self), (str(self),))

import ferropickle

path = pathlib.PurePosixPath("/a/b")
data = ferropickle.dumps(path)
stats = ferropickle.stats()
print(json.dumps({
    "active": stats["native_writers"]["path"],
    "reduced": stats["objects_reduced"],
    "same": pickletools.optimize(data) == pickletools.optimize(pickle.dumps(path, 5)),
    "loads": [pickle.loads(data) == path, ferropickle.loads(data) == path],
}))
"""


def run_child(code: str) -> Any:
    """Runs `code` in a fresh interpreter; what it printed, as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def test_unknown_path_layout_goes_through_reduce_and_says_so():
    out = run_child(CHILD_WITH_UNKNOWN_PATH_LAYOUT)
    assert out == {"active": False, "reduced": 1, "same": True, "loads": [True, True]}


class TaggedPath(PurePosixPath):
    """A user subclass: it may override `__reduce__`, so it takes the generic path."""


def test_path_subclass_takes_the_generic_path_and_keeps_its_type(protocol):
    path = TaggedPath("/data", "part-0.parquet")
    assert reduced_objects(path) >= 1
    for r in roundtrip([path, path], protocol=protocol):
        assert type(r[0]) is TaggedPath
        assert r[0] == path
        assert str(r[0]) == "/data/part-0.parquet"
        assert r[0] is r[1]


@pytest.mark.parametrize(
    "path", [PurePosixPath("/a/b"), pathlib.PosixPath("rel"), PureWindowsPath("C:\\w")], ids=repr
)
def test_same_path_twice_in_a_list_is_one_object(protocol, path):
    for r in roundtrip([path, "between", path], protocol=protocol):
        assert r[0] is r[2]
    distinct = [path, type(path)(str(path))]
    for r in roundtrip(distinct, protocol=protocol):
        assert r[0] == r[1]
        assert r[0] is not r[1]


# ---------------------------------------------------------------------------------------------
# ferropickle.loads building POSIX paths natively
# ---------------------------------------------------------------------------------------------


class CallsWith:
    """Pickles as `cls(*args)`: a REDUCE whose args are whatever we choose."""

    def __init__(self, cls: type, *args: Any) -> None:
        self.cls, self.args = cls, args

    def __reduce__(self):
        return self.cls, self.args


def assert_same_path(expected: Any, actual: Any) -> None:
    assert type(actual) is type(expected)
    assert actual == expected
    assert str(actual) == str(expected)
    assert actual.parts == expected.parts
    assert hash(actual) == hash(expected)
    # Pickled again, it is the same call (its `__reduce__` args are equal, whatever slots this
    # Python keeps them in).
    assert actual.__reduce__() == expected.__reduce__()
    assert pickletools.optimize(pickle.dumps(actual, 5)) == pickletools.optimize(
        pickle.dumps(expected, 5)
    )
    # Derived paths work on the rebuilt object (the lazily computed slots are consistent).
    assert actual / "z" == expected / "z"
    assert actual.parent == expected.parent
    assert actual.name == expected.name


@pytest.mark.parametrize("stock_protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_stock_pickle_stream_of_a_posix_path_loads_equal(stock_protocol):
    for path in [PurePosixPath("/a/b"), pathlib.PosixPath("/a/b"), PurePosixPath("//h/x")]:
        data = pickle.dumps(path, stock_protocol)
        assert_same_path(path, ferropickle.loads(data))
        assert_same_path(pickle.loads(data), ferropickle.loads(data))


def test_hand_written_stream_with_unparsed_parts_loads_by_calling_the_class():
    # PROTO 2; GLOBAL pathlib.PurePosixPath; ('a/b', 'c'); REDUCE; STOP
    data = b"\x80\x02cpathlib\nPurePosixPath\nX\x03\x00\x00\x00a/bX\x01\x00\x00\x00c\x86R."
    check_stream(data)
    expected = PurePosixPath("a/b", "c")
    assert_same_path(expected, pickle.loads(data))
    assert_same_path(expected, ferropickle.loads(data))
    assert ferropickle.loads(data).parts == ("a", "b", "c")


UNPARSED_ARGS = [
    ("a/b", "c"),  # a separator inside a part
    ("/", ".", "x"),  # a "." part
    ("x", "/abs"),  # an absolute part later on restarts the path
    ("a", "", "b"),  # an empty part
    ("",),
    (".",),
    ("a//b/",),
    ("///",),
    ("/", "/"),
    ("//", "//x"),
    ("a", "b/"),
]


@pytest.mark.parametrize("cls", [PurePosixPath, pathlib.PosixPath], ids=lambda c: c.__name__)
@pytest.mark.parametrize("args", UNPARSED_ARGS, ids=repr)
def test_posix_path_from_unparsed_args_loads_like_calling_the_class(cls, args):
    data = pickle.dumps(CallsWith(cls, *args), 5)
    expected = cls(*args)
    stock = pickle.loads(data)
    ours = ferropickle.loads(data)
    assert_same_path(expected, stock)
    assert_same_path(expected, ours)
    assert_same_path(stock, ours)


PARSED_ARGS = [
    ("/", "a", "b"),
    ("//", "host", "x"),
    ("rel", "..", "x.txt"),
    (),
    ("/",),
    ("//",),
    ("~", "a b", "🐍"),
]


@pytest.mark.parametrize("cls", [PurePosixPath, pathlib.PosixPath], ids=lambda c: c.__name__)
@pytest.mark.parametrize("args", PARSED_ARGS, ids=repr)
def test_posix_path_from_parsed_args_loads_like_calling_the_class(cls, args):
    data = pickle.dumps(CallsWith(cls, *args), 5)
    assert_same_path(cls(*args), ferropickle.loads(data))
    assert_same_path(pickle.loads(data), ferropickle.loads(data))


class Text(str):
    pass


def test_posix_path_from_str_subclass_parts_loads_like_calling_the_class():
    data = pickle.dumps(CallsWith(PurePosixPath, Text("a"), Text("b")), 5)
    assert_same_path(PurePosixPath(Text("a"), Text("b")), ferropickle.loads(data))


def test_posix_path_from_bad_args_raises_what_the_class_raises():
    data = pickle.dumps(CallsWith(PurePosixPath, 1), 5)
    with pytest.raises(TypeError):
        pickle.loads(data)
    with pytest.raises(TypeError):
        ferropickle.loads(data)


# os.fsdecode of a non-UTF-8 file name, as os.listdir returns it on Linux.
UNDECODABLE = [
    PurePosixPath(os.fsdecode(b"/data/\xff\xfe.bin")),
    pathlib.PosixPath(os.fsdecode(b"caf\xe9/x")),
]


@pytest.mark.parametrize("path", UNDECODABLE, ids=repr)
def test_posix_path_with_undecodable_file_name_loads(path):
    assert_same_path(path, pickle.loads(ferropickle.dumps(path)))  # our stream is fine
    assert_same_path(path, ferropickle.loads(pickle.dumps(path, 5)))


@pytest.mark.parametrize(
    "path", [*UNDECODABLE, PureWindowsPath(os.fsdecode(b"C:\\\xff"))], ids=repr
)
def test_path_with_undecodable_file_name_dumps(path):
    assert_same_path(path, pickle.loads(ferropickle.dumps(path)))


# ---------------------------------------------------------------------------------------------
# functools.partial
# ---------------------------------------------------------------------------------------------


def add3(a, b, c=0, *, scale=1):
    return (a + b + c) * scale


class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    def add(self, x: int) -> int:
        return self.start + x


class TaggedPartial(functools.partial):
    """A user subclass of partial: generic path."""


def test_partial_with_args_and_keywords(protocol):
    p = functools.partial(add3, 1, 2, scale=10)
    for r in roundtrip(p, protocol=protocol):
        assert type(r) is functools.partial
        assert r.func is add3
        assert r.args == (1, 2)
        assert r.keywords == {"scale": 10}
        assert r(3) == 60


def test_partial_with_empty_keywords(protocol):
    p = functools.partial(add3, 1)
    for r in roundtrip(p, protocol=protocol):
        assert r.keywords == {}
        assert type(r.keywords) is dict
        assert r(2) == 3


def test_partial_without_arguments(protocol):
    p = functools.partial(add3)
    for r in roundtrip(p, protocol=protocol):
        assert r.args == ()
        assert r.keywords == {}
        assert r(1, 2) == 3


def test_partial_instance_attributes(protocol):
    p = functools.partial(add3, 1, c=5)
    p.label = "task"
    p.meta = {"retries": 3, "tags": ["a", "b"]}
    for r in roundtrip(p, protocol=protocol):
        assert r.__dict__ == {"label": "task", "meta": {"retries": 3, "tags": ["a", "b"]}}
        assert r(1) == 7


def make_then_empty_by_deleting(p):
    p.tmp = 1
    del p.tmp


@pytest.mark.parametrize(
    "make_dict",
    [vars, lambda p: hasattr(p, "__dict__"), make_then_empty_by_deleting],
    ids=["vars", "hasattr", "set-then-delete"],
)
def test_partial_whose_dict_exists_but_is_empty(protocol, make_dict):
    """`partial.__reduce__` gives the instance dict once one was made, `None` only before: an
    empty one (made by `vars(p)`, by `hasattr(p, "__dict__")`, or left by deleting the last
    attribute) was written as `None`, as if never made, and the bytes differed from pickle's."""
    p = functools.partial(add3, 1)
    make_dict(p)
    expected = pickle.dumps(p, protocol)
    assert ferropickle.dumps(p, protocol) == expected
    for r in roundtrip(p, protocol=protocol):
        assert r.__dict__ == {}
        assert r(2) == 3
        # The loaded partial has its dict made too: it pickles to the same bytes again.
        assert pickle.dumps(r, protocol) == expected


def test_partial_of_partial_is_flattened_by_partial_itself(protocol):
    p = functools.partial(functools.partial(add3, 1), 2, scale=3)
    assert p.func is add3  # functools flattens it; the pickle must keep that shape
    for r in roundtrip(p, protocol=protocol):
        assert r.func is add3
        assert r.args == (1, 2)
        assert r() == 9


def test_partial_of_partial_with_attributes_stays_nested(protocol):
    inner = functools.partial(add3, 1)
    inner.note = "inner"
    p = functools.partial(inner, 2, c=3)
    assert p.func is inner
    for r in roundtrip([p, inner], protocol=protocol):
        assert type(r[0].func) is functools.partial
        assert r[0].func is r[1]
        assert r[0].func.note == "inner"
        assert r[0]() == 6


def test_same_partial_twice_is_one_object(protocol):
    p = functools.partial(add3, 1, 2)
    for r in roundtrip({"a": p, "b": [p, p]}, protocol=protocol):
        assert r["a"] is r["b"][0] is r["b"][1]


def test_partials_sharing_a_function_write_it_once(protocol):
    ps = [functools.partial(add3, i) for i in range(3)]
    data = ferropickle.dumps(ps, protocol)
    assert data.count(b"add3") == 1
    for r in roundtrip(ps, protocol=protocol):
        assert [q(1) for q in r] == [1, 2, 3]


def code_writes(data: bytes, func: Any) -> int:
    """How many times `data` writes `func`'s code (by value, its bytecode is in the stream)."""
    return data.count(func.__code__.co_code)


def test_partial_of_a_by_value_lambda_carries_the_function_once(protocol):
    f = lambda x, y=0: x * 10 + y  # noqa: E731 - a lambda is pickled by value
    p = functools.partial(f, 4, y=2)
    data = ferropickle.dumps([p, f, functools.partial(f, 1)], protocol)
    check_stream(data)
    assert code_writes(data, f) == 1
    for r in roundtrip(p, protocol=protocol, check=lambda a, b: None):
        assert r() == 42
    r = pickle.loads(data)
    assert r[0].func is r[1] is r[2].func
    assert r[0]() == 42
    assert r[2](3) == 13


def test_partial_subclass_takes_the_generic_path(protocol):
    p = TaggedPartial(add3, 1, scale=2)
    p.tag = "x"
    assert reduced_objects(p) >= 1
    for r in roundtrip([p, p], protocol=protocol):
        assert type(r[0]) is TaggedPartial
        assert r[0] is r[1]
        assert r[0].tag == "x"
        assert r[0](2) == 6


def test_exact_partial_takes_the_fast_path():
    assert reduced_objects(functools.partial(add3, 1, c=2)) == 0


def test_partial_of_a_bound_method(protocol):
    p = functools.partial(Counter(3).add, 4)
    for r in roundtrip(p, protocol=protocol):
        assert r() == 7
        assert type(r.func.__self__) is Counter
        assert r.func.__func__ is Counter.add


def test_partial_of_a_bound_method_shares_its_instance(protocol):
    c = Counter(10)
    p = functools.partial(c.add, 1)
    for r in roundtrip([p, c], protocol=protocol):
        assert r[0].func.__self__ is r[1]
        r[1].start = 20
        assert r[0]() == 21


class _Call:
    def __call__(self):
        return 1


def test_a_cycle_through_a_partials_function_keeps_one_partial():
    """The native partial writer memoized the partial without checking whether writing its
    function had already written it, so the partial came back as two objects."""
    c = _Call()
    p = functools.partial(c)
    c.p = p
    for r in roundtrip(p):
        assert r.func.p is r


def test_unpicklable_partial_argument_is_named():
    lock = threading.Lock()
    msg = pickling_error(functools.partial(add3, 1, lock))
    assert "partial.args[1]" in msg
    assert "lock" in msg
    msg = pickling_error(functools.partial(add3, 1, c=lock))
    assert "partial.keywords" in msg
    assert "dict['c']" in msg
    assert msg.index("partial.keywords") < msg.index("dict['c']")
    q = functools.partial(add3, 1)
    q.resource = lock
    assert "partial.__dict__" in pickling_error(q)


def test_unpicklable_partial_argument_is_named_inside_containers(protocol):
    lock = threading.Lock()
    msg = pickling_error({"jobs": [functools.partial(add3, 1, 2, lock)]}, protocol)
    for piece in ["dict['jobs']", "list[0]", "partial.args[2]", "lock"]:
        assert piece in msg, (piece, msg)
    assert msg.index("dict['jobs']") < msg.index("partial.args[2]")


# ---------------------------------------------------------------------------------------------
# dask graph nodes
# ---------------------------------------------------------------------------------------------

try:
    import dask._task_spec as ts
except ImportError:  # a test dependency; without it only the tests below are skipped
    ts = None

needs_dask = pytest.mark.skipif(ts is None, reason="needs dask")


def process(path, scale=1, *, suffix=""):
    return f"{pathlib.PurePath(path).name}:{scale}{suffix}"


def combine(*parts, **named):
    return [*parts, sorted(named.items())]


if ts is not None:

    class LabelledTask(ts.Task):
        """A user subclass of Task: generic path."""


def same_task(expected, actual, values=None, *, by_value=False):
    """Checks a round-tripped node with dask's own semantics."""
    values = values or {}
    assert type(actual) is type(expected)
    assert actual.key == expected.key
    assert actual.dependencies == expected.dependencies
    assert actual(values) == expected(values)
    if isinstance(expected, ts.Task):
        if by_value:
            assert actual.func is not expected.func
            assert actual.func.__code__.co_code == expected.func.__code__.co_code
        elif isinstance(expected.func, functools.partial):
            assert type(actual.func) is type(expected.func)
            assert actual.func.func is expected.func.func
            assert actual.func.args == expected.func.args
            assert actual.func.keywords == expected.func.keywords
        else:
            assert actual.func is expected.func
        if not by_value:
            assert actual == expected  # dask's own equality: tokenizes both
        assert actual.args == expected.args
        assert actual.kwargs == expected.kwargs
        assert actual.data_producer == expected.data_producer


@needs_dask
def test_task_with_args_and_kwargs(protocol):
    task = ts.Task("k", process, "/data/x.csv", 2, suffix="!")
    for r in roundtrip(task, protocol=protocol, check=same_task):
        assert r() == "x.csv:2!"
        assert r.kwargs == {"suffix": "!"}


@needs_dask
def test_task_with_taskref_args_and_kwargs(protocol):
    task = ts.Task("k", combine, ts.TaskRef("a"), 1, ts.TaskRef(("b", 0)), z=ts.TaskRef("c"))
    values = {"a": "A", ("b", 0): "B", "c": "C"}
    for r in roundtrip(task, protocol=protocol, check=lambda a, b: same_task(a, b, values)):
        assert r.dependencies == {"a", ("b", 0), "c"}
        assert r(values) == ["A", 1, "B", [("z", "C")]]


@needs_dask
def test_task_with_nested_containers(protocol):
    task = ts.Task(
        "nested",
        combine,
        ts.List(ts.TaskRef("a"), 1, ts.Tuple(2, ts.TaskRef("b"))),
        ts.Set(1, 2, 3),
        ts.Dict({"x": ts.TaskRef("a"), "y": ts.List(ts.Set(ts.TaskRef("b")))}),
        inner=ts.Task("inner", operator.add, ts.TaskRef("a"), 10),
        literal=[1, (2, 3), {"k": {4}}],
    )
    values = {"a": 1, "b": 2}
    expected = [
        [1, 1, (2, 2)],
        {1, 2, 3},
        {"x": 1, "y": [{2}]},
        [("inner", 11), ("literal", [1, (2, 3), {"k": {4}}])],
    ]
    assert task(values) == expected
    for r in roundtrip(task, protocol=protocol, check=lambda a, b: same_task(a, b, values)):
        assert r(values) == expected
        assert type(r.args[0]) is ts.List
        assert type(r.args[0].args[2]) is ts.Tuple
        assert type(r.args[1]) is ts.Set
        assert type(r.args[2]) is ts.Dict
        for container in [r.args[0], r.args[1], r.args[2]]:
            assert container.kwargs["constructor"] is type(container).constructor


@needs_dask
@pytest.mark.parametrize("cls", ["List", "Tuple", "Set", "Dict"])
def test_nested_container_alone(protocol, cls):
    node = {
        "List": lambda: ts.List(1, ts.TaskRef("a")),
        "Tuple": lambda: ts.Tuple(ts.TaskRef("a"), "x"),
        "Set": lambda: ts.Set(1, ts.TaskRef("a")),
        "Dict": lambda: ts.Dict(p=ts.TaskRef("a"), q=2),
    }[cls]()
    for r in roundtrip(node, protocol=protocol, check=lambda a, b: same_task(a, b, {"a": 5})):
        assert r.__getstate__() == node.__getstate__()


@needs_dask
def test_alias(protocol):
    nodes = [ts.Alias("a", "b"), ts.Alias("same"), ts.Alias(("t", 1), ts.TaskRef(("t", 0)))]
    for r in roundtrip(nodes, protocol=protocol):
        for a, b in zip(nodes, r, strict=True):
            same_task(a, b, {a.target: "value"})
            assert b.target == a.target


DATA_VALUES = [
    None,
    0,
    -(2**100),
    1.5,
    "text",
    b"\x00bytes",
    [1, [2, {"k": (3,)}]],
    {"a": {1, 2}},
    (1, "two"),
    frozenset({1}),
    PurePosixPath("/p/q"),
    functools.partial(add3, 1),
]


@needs_dask
@pytest.mark.parametrize("value", DATA_VALUES, ids=lambda v: type(v).__name__)
def test_datanode(protocol, value):
    node = ts.DataNode(("data", 1), value)
    for r in roundtrip(node, protocol=protocol):
        assert r.key == ("data", 1)
        assert r.typ is type(value)
        assert r.dependencies == frozenset()
        if isinstance(value, functools.partial):
            assert r()(2) == 3
        else:
            assert r() == value


@needs_dask
def test_task_whose_func_is_by_value(protocol):
    offset = 100
    f = lambda x, y=1: x * y + offset  # noqa: E731 - a lambda is pickled by value
    task = ts.Task("k", f, ts.TaskRef("a"), y=3)
    check = lambda a, b: same_task(a, b, {"a": 2}, by_value=True)  # noqa: E731
    for r in roundtrip(task, protocol=protocol, check=check):
        assert r({"a": 2}) == 106
    data = ferropickle.dumps([task, task, ts.Task("k2", f, 1)], protocol)
    assert code_writes(data, f) == 1
    r = pickle.loads(data)
    assert r[0] is r[1]
    assert r[0].func is r[2].func


@needs_dask
def test_task_of_partial_and_path(protocol):
    task = ts.Task("p", functools.partial(process, PurePosixPath("/in/f.parquet"), 3))
    for r in roundtrip(task, protocol=protocol, check=same_task):
        assert type(r.func) is functools.partial
        assert type(r.func.args[0]) is PurePosixPath
        assert r() == "f.parquet:3"


@needs_dask
def test_task_with_cached_token_and_repr(protocol):
    task = ts.Task("k", operator.add, 1, 2)
    hash(task)
    repr(task)
    assert task._token is not None
    for r in roundtrip(task, protocol=protocol, check=same_task):
        assert r._token == task._token
        assert r._repr == task._repr


@needs_dask
def test_task_subclass_takes_the_generic_path(protocol):
    task = LabelledTask("k", process, "/x/y.txt", suffix="?")
    assert reduced_objects(task) >= 1
    for r in roundtrip([task, task], protocol=protocol):
        assert type(r[0]) is LabelledTask
        assert r[0] is r[1]
        same_task(task, r[0])


@needs_dask
def test_exact_dask_nodes_take_the_fast_path():
    nodes = [
        ts.Task("k", process, ts.TaskRef("a"), ts.List(1, ts.TaskRef("b"))),
        ts.Alias("a", "b"),
        ts.DataNode("d", [1, 2]),
        ts.TaskRef("r"),
        ts.Dict(x=ts.Tuple(1, ts.Set(2))),
    ]
    assert reduced_objects(nodes) == 0


@needs_dask
@pytest.mark.parametrize(
    "make",
    [
        lambda: ts.Task("k", process, "/a/b.txt", 2, suffix="!"),
        lambda: ts.Task("k", combine, ts.TaskRef("a"), ts.List(ts.TaskRef("b"), 2), z=1),
        lambda: ts.Dict(x=ts.TaskRef("a"), y=ts.Set(1)),
        lambda: ts.Alias("x", "y"),
        lambda: ts.DataNode("d", {"v": [1]}),
    ],
    ids=["task", "task-containers", "dict", "alias", "datanode"],
)
def test_dask_node_bytes_load_with_stock_pickle_like_its_own_reduce(protocol, make):
    node = make()
    ours = pickle.loads(ferropickle.dumps(node, protocol))
    theirs = pickle.loads(pickle.dumps(node, protocol))
    assert type(ours) is type(theirs) is type(node)
    assert ours.__reduce_ex__(protocol)[1:] == theirs.__reduce_ex__(protocol)[1:]
    if isinstance(node, ts.Task):
        assert ours.__getstate__() == theirs.__getstate__() == node.__getstate__()
        # ferropickle.loads restores a Task's slots natively: the same state again.
        assert ferropickle.loads(pickle.dumps(node, protocol)).__getstate__() == node.__getstate__()


@needs_dask
def test_same_task_twice_is_one_object_and_shares_its_args(protocol):
    arg = ts.List(ts.TaskRef("a"))
    t1 = ts.Task("t1", combine, arg)
    t2 = ts.Task("t2", combine, arg)
    for r in roundtrip({"x": t1, "y": [t1, t2]}, protocol=protocol):
        assert r["x"] is r["y"][0]
        assert r["y"][0].args[0] is r["y"][1].args[0]


def test_a_cycle_through_a_datanode_value_keeps_one_node():
    """The native dask-node writer memoized the node without checking whether writing its
    value, which leads back to the node, had already written it: the node came back as two."""
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


@needs_dask
def test_unpicklable_value_inside_a_task_is_named():
    lock = threading.Lock()
    msg = pickling_error(ts.Task("k", combine, {"conn": lock}))
    assert "Task.args[0]" in msg
    assert "dict['conn']" in msg
    assert msg.index("Task.args[0]") < msg.index("dict['conn']") < msg.rindex("lock")
    msg = pickling_error(ts.Task("k", combine, 1, conn=lock))
    assert "Task.kwargs" in msg
    assert "dict['conn']" in msg
    msg = pickling_error(ts.Task("k", functools.partial(combine, lock)))
    assert msg.index("Task.func") < msg.index("partial.args[0]")


# ---------------------------------------------------------------------------------------------
# dask is never imported by ferropickle
# ---------------------------------------------------------------------------------------------

CHILD_WITHOUT_DASK = """
import functools, json, pathlib, pickle, sys

import ferropickle

def dask_modules():
    return sorted(m for m in sys.modules if m == "dask" or m.startswith(("dask.", "distributed")))

objects = [
    pathlib.PurePosixPath("/a/b"),
    pathlib.Path("rel/x"),
    pathlib.PureWindowsPath("C:\\\\x"),
    functools.partial(max, 1, key=abs),
    {"k": (1, 2.0, "three"), "nested": [{"x": None}]},
    lambda x: x + 1,
]
data = ferropickle.dumps(objects)
back = ferropickle.loads(data)
assert back[:3] == objects[:3] and back[4] == objects[4], back
assert (back[3].func, back[3].args, back[3].keywords) == (max, (1,), {"key": abs}), back[3]
assert back[5](1) == 2
assert pickle.loads(data)[0] == objects[0]
ferropickle.loads(pickle.dumps(objects[:5]))
ferropickle.cache_info()
ferropickle.stats()
before = dask_modules()

# Imported late, by someone else: the fast path is picked up from then on.
from dask._task_spec import List, Task, TaskRef

task = Task("k", json.dumps, List(TaskRef("a"), TaskRef("b")), sort_keys=True)
ferropickle.stats(reset=True)
data = ferropickle.dumps(task)
reduced = ferropickle.stats()["objects_reduced"]
values = {"a": {"z": 1, "y": 2}, "b": 1}
results = [pickle.loads(data)(values), ferropickle.loads(data)(values)]
print(json.dumps({"before": before, "reduced": reduced, "results": results}))
"""


@needs_dask
def test_ferropickle_never_imports_dask_and_picks_it_up_late():
    out = run_child(CHILD_WITHOUT_DASK)
    assert out["before"] == []
    assert out["reduced"] == 0  # the Task, its TaskRefs and List went natively
    assert out["results"] == ['[{"y": 2, "z": 1}, 1]'] * 2
