"""Errors: `dumps` raises what `pickle.dumps` raises (same type, same message), with a note that
names where the unpicklable object sits; bad `__reduce__` results are rejected as `pickle` rejects
them; deep nesting raises `PicklingRecursionError` (a `RecursionError`, never a crash);
control-flow exceptions pass through untouched."""

from __future__ import annotations

import collections
import copyreg
import functools
import pickle
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import ferropickle


def raised(obj, protocol=5, *, like_pickle=True) -> BaseException:
    """What `ferropickle.dumps(obj)` raises; with `like_pickle`, checked to be of the type
    `pickle.dumps` raises for the same object (`ferropickle.PicklingError` where that is
    `pickle.PicklingError`, whose subclass it is), with the same message."""
    with pytest.raises(Exception) as ours:
        ferropickle.dumps(obj, protocol)
    if like_pickle:
        with pytest.raises(Exception) as theirs:
            pickle.dumps(obj, protocol)
        if type(theirs.value) is pickle.PicklingError:
            assert type(ours.value) is ferropickle.PicklingError
        else:
            assert type(ours.value) is type(theirs.value)
        assert str(ours.value) == str(theirs.value)
    return ours.value


def where(err: BaseException) -> str:
    """The note `dumps` adds: where the object that failed sits."""
    notes = [n for n in getattr(err, "__notes__", []) if n.startswith("when pickling ")]
    assert len(notes) == 1, getattr(err, "__notes__", None)
    return notes[0]


def test_exception_types_subclass_the_stdlib_ones():
    assert issubclass(ferropickle.PicklingError, pickle.PicklingError)
    assert issubclass(ferropickle.UnpicklingError, pickle.UnpicklingError)
    assert issubclass(ferropickle.PicklingRecursionError, RecursionError)
    assert issubclass(ferropickle.PicklingRecursionError, pickle.PicklingError)


def test_lock_raises_pickles_type_error(protocol):
    err = raised(threading.Lock(), protocol)
    assert type(err) is TypeError
    assert where(err) == "when pickling lock"
    try:
        ferropickle.dumps(threading.Lock())
    except TypeError:  # what `except` clauses written for pickle catch
        pass


def test_socket(protocol):
    with socket.socket() as s:
        err = raised({"conn": s}, protocol)
    assert type(err) is TypeError
    assert where(err) == "when pickling dict['conn'] -> socket"


def test_generator(protocol):
    gen = (x for x in range(3))
    err = raised([gen], protocol)
    assert where(err) == "when pickling list[0] -> generator"


class ReduceRaises:
    def __reduce__(self):
        raise ValueError("refusing to be pickled")


def test_an_exception_from_reduce_is_raised_as_it_is(protocol):
    err = raised({"k": (1, ReduceRaises())}, protocol)
    assert type(err) is ValueError
    assert err.args == ("refusing to be pickled",)
    assert where(err) == "when pickling dict['k'] -> tuple[1] -> ReduceRaises"


def test_local_object_whose_reduce_raises(protocol):
    class Local:
        def __reduce__(self):
            raise TypeError("local says no")

    err = raised([Local()], protocol)
    assert type(err) is TypeError
    assert "Local" in where(err)


def test_error_path_names_each_step_outermost_first(protocol):
    lock = threading.Lock()
    err = raised({"a": [1, {"conn": lock}]}, protocol)
    assert where(err) == "when pickling dict['a'] -> list[1] -> dict['conn'] -> lock"


def test_error_path_through_tuple_set_and_instance(protocol):
    class Holder:
        pass

    h = Holder()
    h.payload = (0, 1, threading.Lock())
    # pickle can't write the local class by reference; ours goes by value, as cloudpickle.
    note = where(raised([h], protocol, like_pickle=False))
    assert note.index("list[0]") < note.index("Holder") < note.index("tuple[2]")


def test_long_dict_key_is_shortened_in_the_path(protocol):
    key = "k" * 10_000
    assert len(where(raised({key: threading.Lock()}, protocol))) < 1000


def process(path, lock=None):
    return path


def test_error_path_through_partial(protocol):
    p = functools.partial(process, "x", lock=threading.Lock())
    note = where(raised(p, protocol))
    assert "partial" in note
    assert note.endswith("lock")


def test_error_path_through_dask_task(protocol):
    task_spec = pytest.importorskip("dask._task_spec")
    lock = threading.Lock()
    task = task_spec.Task("key-1", functools.partial(process, lock))
    note = where(raised(task, protocol, like_pickle=False))
    assert note.index("Task") < note.index("partial") < note.index("lock")
    task = task_spec.Task("key-2", process, "p", lock=lock)
    note = where(raised({"tasks": [task]}, protocol, like_pickle=False))
    assert "Task" in note
    assert note.endswith("lock")


def test_unpicklable_global_of_a_by_value_function(protocol):
    lock = threading.Lock()

    def uses_lock():
        return lock

    err = raised([uses_lock], protocol, like_pickle=False)
    assert type(err) is TypeError
    assert "uses_lock" in where(err)
    assert where(err).endswith("lock")


class GarbageReduce:
    def __init__(self, rv):
        self.rv = rv

    def __reduce__(self):
        return self.rv


@pytest.mark.parametrize(
    ("rv", "match"),
    [
        (None, "string or tuple"),
        (42, "string or tuple"),
        ([len, ()], "string or tuple"),
        ((), "2 through 6"),
        ((len,), "2 through 6"),
        ((len, (), None, None, None, None, None), "2 through 6"),
        ((1, ()), "callable"),
        ((len, [1]), "tuple"),
        ((len, "abc"), "tuple"),
        ((len, (), None, [1]), "iterator"),
        ((len, (), None, None, {"a": 1}), "iterator"),
        ((len, (), {}, None, None, 5), "sixth"),
        # Neither callable nor a tuple: the callable is checked first.
        ((1, 2), "callable"),
        # A type outside builtins (named by its qualified name since 3.14).
        (collections.OrderedDict(), "string or tuple"),
        ((len, (), None, collections.OrderedDict()), "iterator"),
    ],
    ids=repr,
)
def test_garbage_from_reduce(protocol, rv, match):
    err = raised(GarbageReduce(rv), protocol)
    assert isinstance(err, pickle.PicklingError)
    assert match in str(err)


def test_dictitems_that_are_not_pairs(protocol):
    obj = GarbageReduce((dict, (), None, None, iter([1, 2])))
    with pytest.raises((pickle.PicklingError, TypeError, ValueError)):
        ferropickle.dumps(obj, protocol)


def test_newobj_with_wrong_class(protocol):
    obj = GarbageReduce((copyreg.__newobj__, (int,)))
    err = raised(obj, protocol)
    assert isinstance(err, pickle.PicklingError)
    assert "class" in str(err)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((), "__newobj__"),
        ((1,), "__newobj__"),
    ],
    ids=repr,
)
def test_newobj_with_bad_arguments(args, match):
    err = raised(GarbageReduce((copyreg.__newobj__, args)), 4)
    assert isinstance(err, pickle.PicklingError)
    assert match in str(err)


@pytest.mark.parametrize(
    "args",
    [(GarbageReduce, ()), (1, (), {}), (GarbageReduce, [], {}), (GarbageReduce, (), [])],
    ids=repr,
)
def test_newobj_ex_with_bad_arguments(args):
    err = raised(GarbageReduce((copyreg.__newobj_ex__, args)), 4)
    assert isinstance(err, pickle.PicklingError)


class NotTheSame:
    def __reduce__(self):
        return "IMPOSTOR"


IMPOSTOR = "a different object"


class Missing:
    def __reduce__(self):
        return "NO_SUCH_GLOBAL"


def test_reduce_string_naming_another_object(protocol):
    err = raised(NotTheSame(), protocol, like_pickle=False)
    assert isinstance(err, pickle.PicklingError)
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(NotTheSame(), protocol)
    assert "IMPOSTOR" in str(err)


def test_reduce_string_naming_nothing(protocol):
    err = raised(Missing(), protocol)
    assert isinstance(err, pickle.PicklingError)
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(Missing(), protocol)
    assert "NO_SUCH_GLOBAL" in str(err)


def test_reduce_string_in_unimportable_module(protocol):
    class Orphan:
        def __reduce__(self):
            return "thing"

    Orphan.__module__ = "no_such_module_for_ferropickle"
    err = raised(Orphan(), protocol)
    assert isinstance(err, pickle.PicklingError)
    assert "no_such_module_for_ferropickle" in str(err)


class GetstateRaises:
    def __getstate__(self):
        raise RuntimeError("state unavailable")


def test_getstate_raising(protocol):
    err = raised([GetstateRaises()], protocol)
    assert type(err) is RuntimeError
    assert where(err) == "when pickling list[0] -> GetstateRaises"


@pytest.mark.parametrize("protocol_", [6, 100])
def test_protocol_too_high(protocol_):
    with pytest.raises(ValueError):
        ferropickle.dumps(1, protocol_)


@pytest.mark.parametrize("protocol_", [None, -1, -5])
def test_protocol_none_or_negative_means_5(protocol_):
    assert ferropickle.dumps(1, protocol_)[:2] == b"\x80\x05"
    assert ferropickle.DEFAULT_PROTOCOL == 5
    assert ferropickle.HIGHEST_PROTOCOL == 5


def test_protocol_of_the_wrong_type():
    with pytest.raises(TypeError):
        ferropickle.dumps(1, "5")


class RaisesBase:
    def __init__(self, exc):
        self.exc = exc

    def __reduce__(self):
        raise self.exc


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)], ids=repr)
def test_control_flow_exceptions_propagate_unchanged(protocol, exc):
    with pytest.raises(type(exc)) as info:
        ferropickle.dumps({"a": [RaisesBase(exc)]}, protocol)
    assert info.value is exc
    assert not hasattr(info.value, "__notes__")


def test_memory_error_propagates_with_its_place(protocol):
    exc = MemoryError()
    with pytest.raises(MemoryError) as info:
        ferropickle.dumps({"a": [RaisesBase(exc)]}, protocol)
    assert info.value is exc
    assert where(exc) == "when pickling dict['a'] -> list[0] -> RaisesBase"


def test_a_recursion_error_from_python_code_is_both_kinds(protocol):
    """pickle lets it through as a `RecursionError`; cloudpickle raises `PicklingError`
    ("... deep recursion ...") instead; ours is both, the original as its cause."""
    exc = RecursionError("deep")
    with pytest.raises(RecursionError) as info:
        ferropickle.dumps({"a": [RaisesBase(exc)]}, protocol)
    assert isinstance(info.value, pickle.PicklingError)
    assert "deep recursion" in str(info.value)
    assert info.value.__cause__ is exc


def test_pickler_is_usable_after_errors(protocol):
    for _ in range(3):
        raised({"x": threading.Lock()}, protocol)
        with pytest.raises(RecursionError):
            ferropickle.dumps(nested_lists(100_000), protocol)
    assert pickle.loads(ferropickle.dumps({"ok": [1, "two"]}, protocol)) == {"ok": [1, "two"]}


# ---------------------------------------------------------------------------------------------
# Deep nesting
# ---------------------------------------------------------------------------------------------


def nested_lists(depth):
    obj: list = []
    for _ in range(depth):
        obj = [obj]
    return obj


def test_deep_nesting_raises_recursion_error(protocol):
    with pytest.raises(RecursionError):
        ferropickle.dumps(nested_lists(100_000), protocol)


class ReducesToChild:
    """One link of a chain pickled through `__reduce__`, one level per link."""

    def __init__(self, child):
        self.child = child

    def __reduce__(self):
        return (ReducesToChild, (self.child,))


@pytest.mark.parametrize("kind", ["reduce", "list", "tuple"])
def test_nesting_past_the_recursion_limit_raises_on_every_version(protocol, kind):
    """From 3.12 the interpreter's recursion counter for C code has its own fixed limit, not
    `sys.getrecursionlimit()`: a 5,000-deep `__reduce__` chain pickled under a limit of 1,000
    on 3.13. The walk's depth is bounded by `sys.getrecursionlimit()` on every version."""
    obj = None if kind == "reduce" else [] if kind == "list" else ()
    for _ in range(5_000):
        obj = ReducesToChild(obj) if kind == "reduce" else [obj] if kind == "list" else (obj,)
    shallow = obj
    for _ in range(4_800):
        shallow = shallow.child if kind == "reduce" else shallow[0]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)
    try:
        with pytest.raises(RecursionError):
            ferropickle.dumps(obj, protocol)
        data = ferropickle.dumps(shallow, protocol)
    finally:
        sys.setrecursionlimit(limit)
    assert data == pickle.dumps(shallow, protocol)


@pytest.mark.parametrize(
    "make",
    [
        "lambda o: (o,)",
        "lambda o: {'k': o}",
        "lambda o: [o, 1]",
        "lambda o: functools.partial(max, o)",
        "lambda o: Wrapper(o)",
    ],
)
def test_deep_nesting_of_each_kind_raises_recursion_error(make):
    """With the recursion limit raised to 100,000 the pickler still stops (it caps its depth to
    protect the native stack) instead of crashing. Run in a child process: a crash there fails
    the test instead of killing the test run."""
    code = textwrap.dedent(
        f"""
        import functools, sys, pickle
        import ferropickle

        class Wrapper:
            def __init__(self, inner):
                self.inner = inner

        make = {make}
        obj = None
        for _ in range(100_000):
            obj = make(obj)
        sys.setrecursionlimit(100_000)
        try:
            ferropickle.dumps(obj)
        except RecursionError:
            print("RecursionError")
        sys.setrecursionlimit(1000)
        assert pickle.loads(ferropickle.dumps([[1]])) == [[1]]
        print("still usable")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().splitlines() == ["RecursionError", "still usable"]


def test_deep_nesting_with_a_huge_recursion_limit():
    code = textwrap.dedent(
        """
        import sys
        import ferropickle

        obj = []
        for _ in range(100_000):
            obj = [obj]
        sys.setrecursionlimit(100_000)
        try:
            ferropickle.dumps(obj)
        except RecursionError:
            print("RecursionError")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "RecursionError" in proc.stdout.decode()


@pytest.mark.parametrize(
    "dumps",
    [
        pytest.param(
            "pickle.dumps",
            marks=pytest.mark.skipif(
                sys.version_info[:3] == (3, 13, 0),
                reason="stock CPython 3.13.0's own pickle.dumps overflows a small thread stack "
                "(a crash in CPython, not ours: nothing to compare with)",
            ),
        ),
        "ferropickle.dumps",
    ],
)
def test_deep_nesting_in_a_thread_with_a_small_stack(dumps):
    """With the default recursion limit, in a thread with a 256 KiB stack, stock `pickle` raises
    `RecursionError`; so must we (the depth limit alone doesn't protect a small native stack)."""
    code = textwrap.dedent(
        f"""
        import pickle, threading
        import ferropickle

        threading.stack_size(256 * 1024)
        obj = []
        for _ in range(100_000):
            obj = [obj]
        out = []

        def run():
            try:
                {dumps}(obj, 5)
            except RecursionError:
                out.append("RecursionError")

        t = threading.Thread(target=run)
        t.start()
        t.join()
        print(*out)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"child died with {proc.returncode}"
    assert proc.stdout.decode().split() == ["RecursionError"]


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
    """Our nesting was not counted by the interpreter, so `repr()` of a 985-deep list in a
    `__reduce__` called near the red zone of a 256 KiB thread got the whole recursion limit and
    overflowed the C stack (SIGSEGV); stock pickle raises RecursionError."""
    out = subprocess.run(
        [sys.executable, "-c", CRASH_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(range(0, 1000, 7)))]


def test_deep_nesting_small_stacks_and_a_huge_recursion_limit():
    """Threads with small stacks, the recursion limit raised to 100,000, every kind of nesting:
    always `RecursionError`, never a crash."""
    code = textwrap.dedent(
        """
        import functools, sys, threading
        import ferropickle

        class Wrapper:
            def __init__(self, inner):
                self.inner = inner

        makers = {
            "list": lambda o: [o],
            "tuple": lambda o: (o,),
            "dict": lambda o: {"k": o},
            "partial": lambda o: functools.partial(max, o),
            "instance": Wrapper,
            "frozenset": lambda o: frozenset([(o,)]),
        }
        sys.setrecursionlimit(100_000)
        for kib in (160, 512, 1024):
            threading.stack_size(kib * 1024)
            for name, make in makers.items():
                obj = None
                for _ in range(100_000):
                    obj = make(obj)
                out = []

                def run():
                    try:
                        ferropickle.dumps(obj)
                    except RecursionError:
                        out.append("RecursionError")

                t = threading.Thread(target=run)
                t.start()
                t.join()
                print(kib, name, *out, flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=120, check=False
    )
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 0, f"child died with {proc.returncode} after {lines[-1:]}"
    assert len(lines) == 18
    assert all(line.endswith(" RecursionError") for line in lines), lines
