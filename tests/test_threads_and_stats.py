"""Many threads at once, and the counters of ``stats()``.

* ``dumps`` and ``loads`` give each thread what a single thread gets, while other threads pickle,
  unpickle and empty the caches (which hold only by-reference decisions and what code objects
  determine, see ``test_by_value_state.py``).
* ``stats()`` counts what happened, and ``stats(reset=True)`` zeroes the counters.
"""

from __future__ import annotations

import concurrent.futures
import functools
import pathlib
import pickle
import pickletools
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

import ferropickle


def script(source: str) -> dict[str, Any]:
    """Runs `source` as if it were the user's script, so its functions go by value."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<user script>", "exec"), ns)
    return ns


# ---------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------

THREADS = 8
ITERATIONS = 300

# Streams are compared with the single-threaded reference up to unused memo entries:
# `dumps` skips memoizing a sub-object whose reference count says nothing else refers to it,
# so whether another thread momentarily holds (or has just loaded a copy sharing an interned
# string with) the same sub-object changes whether a MEMOIZE is written. See
# `test_dumps_bytes_do_not_depend_on_unrelated_references` below.


@pytest.fixture(scope="module")
def seed_tasks():
    """50 distinct ``Task(key, partial(process, Path(...)))`` sharing the demo's ``process``."""
    task_spec = pytest.importorskip("dask._task_spec")
    from ferropickle import _demo

    process = _demo.script_function()
    return [
        task_spec.Task(
            ("process-8d3f", i), functools.partial(process, pathlib.Path(f"/data/in/f{i}.parquet"))
        )
        for i in range(50)
    ]


def deterministic_objects(seed_tasks: list[Any]) -> list[Any]:
    return [
        *seed_tasks[:10],
        seed_tasks[10:20],
        pathlib.PurePosixPath("/data/in/f1.parquet"),
        [pathlib.Path(f"/p/{i}") for i in range(20)],
        {"k": (1, 2.5, "three"), "nested": [{"x": None}, b"bytes"], "n": 2**70},
        functools.partial(max, 1, key=abs),
    ]


def check_loaded(expected: Any, actual: Any) -> None:
    """Loaded values are right (tasks compared by what they carry, not by running pandas)."""
    if isinstance(expected, list):
        assert type(actual) is list and len(actual) == len(expected)
        for e, a in zip(expected, actual, strict=True):
            check_loaded(e, a)
    elif isinstance(expected, functools.partial):
        assert (actual.func, actual.args, actual.keywords) == (
            expected.func,
            expected.args,
            expected.keywords,
        )
    elif type(expected).__name__ == "Task":
        assert type(actual) is type(expected)
        assert actual.key == expected.key
        assert actual.func.args == expected.func.args
        assert actual.func.func.__code__.co_code == expected.func.func.__code__.co_code
    else:
        assert type(actual) is type(expected)
        assert actual == expected


def same_stream(data: bytes, reference: bytes, optimized: bytes) -> bool:
    """`data` is `reference`, up to memo entries nobody fetches (see the note above)."""
    return data == reference or pickletools.optimize(data) == optimized


def clear_caches(n: int) -> None:
    ferropickle.cache_clear()
    ferropickle.cache_info()
    ferropickle.stats(reset=n % 11 == 0)


def run_concurrently(seed_tasks: list[Any], disturb: Callable[[int], None] | None = None) -> None:
    """`THREADS` threads pickle and unpickle at once, while `disturb(n)` runs over and over in
    another thread, if given."""
    objects = deterministic_objects(seed_tasks)
    reference = [ferropickle.dumps(o) for o in objects]
    optimized = [pickletools.optimize(r) for r in reference]
    barrier = threading.Barrier(THREADS + (disturb is not None))
    done = threading.Event()

    def worker(t: int) -> int:
        barrier.wait()
        for i in range(ITERATIONS):
            k = (t * 7 + i) % len(objects)
            data = ferropickle.dumps(objects[k])
            assert same_stream(data, reference[k], optimized[k]), (t, i, k)
            check_loaded(objects[k], ferropickle.loads(data))
            check_loaded(objects[k], pickle.loads(data))

            lam = lambda x, t=t, i=i: (t, i, x)  # noqa: E731 - a fresh by-value lambda
            msg = ferropickle.dumps({"f": lam, "p": functools.partial(lam, 1), "i": i})
            back = ferropickle.loads(msg)
            assert back["f"]("x") == (t, i, "x")
            assert back["p"]() == (t, i, 1)
            assert back["p"].func is back["f"]
            if i % 50 == 0:
                task = seed_tasks[(t + i) % len(seed_tasks)]
                assert ferropickle.loads(ferropickle.dumps(task))() == task()
        return t

    def disturber() -> int:
        assert disturb is not None
        barrier.wait()
        n = 0
        while not done.is_set():
            disturb(n)
            n += 1
            done.wait(0.001)
        return n

    with concurrent.futures.ThreadPoolExecutor(THREADS + 1) as pool:
        disturbing = pool.submit(disturber) if disturb is not None else None
        workers = [pool.submit(worker, t) for t in range(THREADS)]
        try:
            assert sorted(f.result(timeout=120) for f in workers) == list(range(THREADS))
        finally:
            done.set()
        if disturbing is not None:
            assert disturbing.result(timeout=30) > 0

    # Afterwards a single thread still gets the same streams.
    for o, ref, opt in zip(objects, reference, optimized, strict=True):
        assert same_stream(ferropickle.dumps(o), ref, opt)


def test_threads_dumps_and_loads_agree_with_a_single_thread(seed_tasks):
    run_concurrently(seed_tasks)


def test_threads_with_concurrent_cache_clear(seed_tasks):
    run_concurrently(seed_tasks, clear_caches)


@pytest.mark.parametrize("case", ["loaded-copy-of-path", "held-partial-args"])
def test_unrelated_references_change_only_unused_memo_entries(case):
    """Documented limit: a sub-object that something else also refers to is memoized (it might
    be met again), one that only its container holds is not, so the bytes can differ by unused
    MEMOIZE opcodes while the stream means the same thing."""
    if case == "loaded-copy-of-path":
        obj = pathlib.PurePosixPath("/refcount/probe/only-here-7f3a.bin")
        first = ferropickle.dumps(obj)
        keep = pickle.loads(first)  # shares the interned part strings with `obj`
    else:
        obj = functools.partial(max, "abc")
        first = ferropickle.dumps(obj)
        keep = obj.args
    second = ferropickle.dumps(obj)
    assert keep is not None
    assert pickletools.optimize(second) == pickletools.optimize(first)


# ---------------------------------------------------------------------------------------------
# stats()
# ---------------------------------------------------------------------------------------------

COUNTERS = [
    "dumps_calls",
    "dumps_errors",
    "dumps_bytes",
    "dumps_ns",
    "objects_native",
    "objects_reduced",
    "objects_by_value",
    "loads_calls",
    "loads_errors",
    "loads_bytes",
    "loads_ns",
]


def test_stats_counters_move_as_expected():
    ferropickle.stats(reset=True)
    f = script("def f(x):\n    return -x\n")["f"]

    data = ferropickle.dumps(f)
    s = ferropickle.stats()
    assert s["dumps_calls"] == 1
    assert s["dumps_bytes"] == len(data)
    assert s["objects_by_value"] == 1

    msg = ferropickle.dumps([f, f, functools.partial(f, 1)])  # written once, then memo fetches
    s = ferropickle.stats()
    assert s["dumps_calls"] == 2
    assert s["objects_by_value"] == 2

    ferropickle.dumps({"plain": [1, 2.0, "x"]})
    s = ferropickle.stats()
    assert s["dumps_calls"] == 3
    assert s["objects_by_value"] == 2
    assert s["objects_native"] > 0

    for _ in range(3):
        assert ferropickle.loads(msg)[2]() == -1
    s = ferropickle.stats()
    assert s["loads_calls"] == 3
    assert s["loads_bytes"] == 3 * len(msg)

    with pytest.raises(TypeError):
        ferropickle.dumps(threading.Lock())
    with pytest.raises(EOFError):
        ferropickle.loads(b"\x80\x05")
    s = ferropickle.stats()
    assert (s["dumps_calls"], s["dumps_errors"]) == (4, 1)
    assert (s["loads_calls"], s["loads_errors"]) == (4, 1)


def test_reduced_objects_are_counted():
    ferropickle.stats(reset=True)
    ferropickle.dumps(pathlib.PurePosixPath("/a"))
    assert ferropickle.stats()["objects_reduced"] == 0
    ferropickle.dumps(complex(1, 2))  # through __reduce_ex__
    assert ferropickle.stats()["objects_reduced"] == 1


def test_stats_reset_returns_the_counts_and_zeroes_them():
    f = script("def f():\n    return 1\n")["f"]
    for _ in range(2):
        ferropickle.loads(ferropickle.dumps(f))
    before = ferropickle.stats(reset=True)
    assert before["dumps_calls"] >= 2
    assert before["loads_calls"] >= 2
    assert before["objects_by_value"] >= 2
    after = ferropickle.stats()
    assert {k: after[k] for k in COUNTERS} == dict.fromkeys(COUNTERS, 0)
    assert after.keys() == {*COUNTERS, "native_writers"}
    # Resetting counters keeps what the caches know.
    assert ferropickle.cache_info()["code_objects"] == 1


FIRST_BY_VALUE_DUMPS = """
import ferropickle
f = lambda x: x + 1
ferropickle.dumps(f)
print(ferropickle.stats()["dumps_calls"], ferropickle.stats()["objects_by_value"])
"""


def test_the_first_by_value_dumps_of_a_process_counts_once():
    """The first by-value dumps checks the native writer against cloudpickle by pickling
    sample functions; those pickles were counted as calls too, so a fresh process's one dumps
    showed ``dumps_calls: 4``."""
    out = subprocess.run(
        [sys.executable, "-c", FIRST_BY_VALUE_DUMPS],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == ["1", "1"]


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
    """The module's state is process-wide, so it loads in the main interpreter only. A
    subinterpreter could import the module first, its objects then served the main interpreter,
    and once it was destroyed every by-value dumps failed."""
    out = subprocess.run(
        [sys.executable, "-c", SUBINTERPRETER_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "no subinterpreters":
        pytest.skip("this Python has no subinterpreter module")
    assert out.stdout.split() == ["42"]
