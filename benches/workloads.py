"""Micro-benchmark workloads shared by ``python benches/run.py`` and the ``benches/`` tests.

Every case is timed for each available implementation in the same process, one after the other,
and reported as a ratio to ferropickle, so machine speed cancels out.
"""

from __future__ import annotations

import contextlib
import functools
import math
import pathlib
import pickle
import sys
import timeit
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ferropickle import _demo


def _process(path: pathlib.PurePath) -> int:
    return len(str(path))


def cases() -> dict[str, Any]:
    """The objects benchmarked, by name (generic containers first, then Dask's shapes)."""
    out: dict[str, Any] = {
        "dict of 1,000 small tuples": {i: (i, str(i), float(i)) for i in range(1000)},
        "list of 10,000 str": [f"s3://bucket/part-{i:05d}.parquet" for i in range(10_000)],
        "list of 10,000 int": list(range(-5000, 5000)),
        "Path": pathlib.PurePosixPath("/data/2026/11/26/part-00042.parquet"),
        "partial": functools.partial(_process, pathlib.PurePosixPath("/data/part-00042.parquet")),
    }
    try:
        from dask._task_spec import Task
    except ImportError:
        return out
    out["dask Task"] = Task(
        ("process-abc123", 42),
        functools.partial(_process, pathlib.PurePosixPath("/data/part-00042.parquet")),
    )
    return out


# The seed workload's task function with a 2,000-entry dict global; the plain one is the demo's
# (`ferropickle._demo.SCRIPT`).
_SCRIPT_WITH_LOOKUP = """
import json
import re

import numpy as np
import pandas as pd

LOOKUP = {f"key-{i}": i for i in range(2000)}


def process(path):
    frame = pd.DataFrame({"x": np.arange(3)})
    return (
        int(frame.x.sum())
        + len(json.dumps(str(path)))
        + len(re.findall("f", str(path)))
        + LOOKUP.get(path.stem, len(LOOKUP))
    )
"""


def script_function(n_global: int = 0) -> Callable[[Any], Any]:
    """``process`` as if defined in a script run as ``__main__`` (so it is pickled by value);
    with ``n_global`` (0 or 2000) it also reads a dict global of that many entries."""
    return _demo.script_function(_SCRIPT_WITH_LOOKUP if n_global else _demo.SCRIPT)


def seed_tasks(n: int, n_global: int = 0, fresh: bool = False) -> list[Any]:
    """``n`` distinct ``Task(key, partial(process, Path(...)))``.

    They share one ``process`` (``client.map``), or with ``fresh`` each has its own copy, as
    the scheduler holds them in a ``client.submit`` loop: every submit is its own graph, which
    the scheduler unpickles into a new function.
    """
    import cloudpickle
    from dask._task_spec import Task

    process = script_function(n_global)
    blob = cloudpickle.dumps(process)
    return [
        Task(
            ("process-8d3f", i),
            functools.partial(
                pickle.loads(blob) if fresh else process,
                pathlib.Path(f"/data/in/f{i}.parquet"),
            ),
        )
        for i in range(n)
    ]


def implementations() -> dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]]:
    """``name -> (dumps, loads)`` for ferropickle and each baseline that is installed."""
    import ferropickle

    impls: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "ferropickle": (ferropickle.dumps, ferropickle.loads),
        "pickle": (functools.partial(pickle.dumps, protocol=5), pickle.loads),
    }
    try:
        import cloudpickle

        impls["cloudpickle"] = (functools.partial(cloudpickle.dumps, protocol=5), pickle.loads)
    except ImportError:
        pass
    try:
        from distributed.protocol import pickle as dpickle

        impls["distributed"] = (dpickle.dumps, dpickle.loads)
    except ImportError:
        pass
    else:
        # What the scheduler runs with the plugin: ferropickle plus the wrapper's safety valve
        # and per-task-prefix accounting, which must stay cheap enough to leave on.
        import ferropickle.dask

        impls["ferropickle.dask"] = (ferropickle.dask.dumps, ferropickle.dask.loads)
    return impls


#: The seed cases whose every task holds its own copy of ``process`` (a submit loop). Stock
#: ``pickle`` can't write those by reference (only one copy can be ``__main__.process``), so they
#: have no ``pickle`` row.
FRESH = "fresh copy"

#: The seed workloads: ``case -> (entries of process's dict global, a fresh copy per task)``.
SEED_SHAPES = {
    "seed Task (plain)": (0, False),
    "seed Task (2,000-entry global)": (2000, False),
    FRESH + " (plain)": (0, True),
    FRESH + " (2,000-entry global)": (2000, True),
}


def seed_cases(n: int = 1000) -> dict[str, list[Any]]:
    """The scheduler's workload: ``n`` distinct seed tasks, each pickled once."""
    return {case: seed_tasks(n, g, fresh=fresh) for case, (g, fresh) in SEED_SHAPES.items()}


@contextlib.contextmanager
def functions_in_main(objects: list[Any]) -> Iterator[None]:
    """Makes the seed tasks' ``process`` importable as ``__main__.process`` meanwhile.

    In a real script it is; stock ``pickle.dumps`` (the by-reference baseline, whose bytes a
    worker could not load) needs it to be.
    """
    main = sys.modules["__main__"]
    funcs = {t.func.func for t in objects if hasattr(getattr(t, "func", None), "func")}
    missing = object()
    saved = getattr(main, "process", missing)
    try:
        for f in funcs:
            main.process = f
        yield
    finally:
        if saved is missing:
            main.__dict__.pop("process", None)
        else:
            main.process = saved


@dataclass
class Timing:
    case: str
    impl: str
    #: Seconds per object; NaN where the row times only loads.
    dumps_s: float
    loads_s: float
    size: int


def _per_object(fn: Callable[[Any], Any], objects: list[Any], budget_s: float) -> float:
    """Best time per object over 5 passes, each over as many objects as fit in a fifth of
    ``budget_s`` (at least one), so slow baselines don't take minutes."""
    t0 = timeit.default_timer()
    fn(objects[0])
    once = max(timeit.default_timer() - t0, 1e-7)
    count = max(1, int(budget_s / 5 / once))
    sample = [objects[i % len(objects)] for i in range(count)]

    def one_pass() -> None:
        for o in sample:
            fn(o)

    return min(timeit.repeat(one_pass, number=1, repeat=5)) / count


def _per_new_object(
    fn: Callable[[Any], Any], make: Callable[[], list[Any]], budget_s: float
) -> float:
    """Like `_per_object`, over objects ``fn`` has never seen: 5 passes over disjoint slices of
    a list ``make`` builds anew. A fresh copy of a function is pickled once in a submit loop, so
    what a pickler keeps per code object from an earlier ``dumps`` must not count."""
    objects = make()
    t0 = timeit.default_timer()
    fn(objects[0])
    once = max(timeit.default_timer() - t0, 1e-7)
    count = max(1, min(int(budget_s / 5 / once), (len(objects) - 1) // 5))
    passes = iter([objects[1 + k * count : 1 + (k + 1) * count] for k in range(5)])

    def one_pass() -> None:
        for o in next(passes):
            fn(o)

    return min(timeit.repeat(one_pass, number=1, repeat=5)) / count


def measure(budget_s: float = 0.5, seed_n: int = 1000) -> list[Timing]:
    """Times dumps and loads of every case with every implementation, in this process.

    Single objects are pickled over and over; the seed workloads pickle distinct tasks, as
    the scheduler does, and a fresh copy of the function is pickled only once (in a new list of
    tasks for each implementation), as in a submit loop. For those, one more row times stock
    ``pickle.loads`` reading ferropickle's bytes (what a worker without ferropickle does),
    against ``ferropickle.loads`` of the same bytes (which, like ``pickle.loads``, rebuilds the
    function from every message).
    """
    results = []
    impls = implementations()
    groups: dict[str, list[Any]] = {case: [obj] for case, obj in cases().items()}
    try:
        groups.update(seed_cases(seed_n))
    except ImportError:
        pass
    for case, objects in groups.items():
        with functions_in_main(objects):
            g = SEED_SHAPES.get(case, (0, False))[0]
            for name, (dumps, loads) in impls.items():
                if name == "pickle" and case.startswith(FRESH):
                    continue
                blobs = [dumps(o) for o in objects]
                results.append(
                    Timing(
                        case=case,
                        impl=name,
                        dumps_s=(
                            _per_new_object(
                                dumps,
                                functools.partial(seed_tasks, len(objects), g, fresh=True),
                                budget_s,
                            )
                            if case.startswith(FRESH)
                            else _per_object(dumps, objects, budget_s)
                        ),
                        loads_s=_per_object(loads, blobs, budget_s),
                        size=len(blobs[0]),
                    )
                )
                if name == "ferropickle" and case.startswith(("seed", FRESH)):
                    ours = blobs
            if case.startswith(("seed", FRESH)):
                results.append(
                    Timing(
                        case=case,
                        impl="pickle.loads(ours)",
                        dumps_s=math.nan,
                        loads_s=_per_object(pickle.loads, ours, budget_s),
                        size=len(ours[0]),
                    )
                )
    return results


def _span(values: list[float], fmt: str) -> str:
    """``low-high`` of ``values`` in ``fmt``, or one number when both print the same."""
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}-{high}"


def table(runs: list[list[Timing]]) -> str:
    """A plain-text table of one or more runs of :func:`measure`: times per object and each one's
    time as a multiple of ours. Over several runs each figure is the range ``lowest-highest``
    across them, a multiple taken within its own run (where the machine's speed cancels out);
    sizes don't vary between runs."""
    # (case, impl) -> [(timing, ferropickle's timing of that case in the same run)]
    rows: dict[tuple[str, str], list[tuple[Timing, Timing]]] = {}
    for run in runs:
        ours = {r.case: r for r in run if r.impl == "ferropickle"}
        for r in run:
            rows.setdefault((r.case, r.impl), []).append((r, ours[r.case]))
    lines = [
        f"{'case':<31} {'impl':<19} {'dumps us':>17} {'x ours':>13} {'loads us':>17} "
        f"{'x ours':>13} {'bytes':>7} {'x ours':>7}"
    ]
    for (case, impl), pairs in rows.items():
        if math.isnan(pairs[0][0].dumps_s):
            dumps = f"{'-':>17} {'':>13}"
        else:
            dumps = (
                f"{_span([r.dumps_s * 1e6 for r, _ in pairs], '.2f'):>17} "
                f"{_span([r.dumps_s / b.dumps_s for r, b in pairs], '.2f') + 'x':>13}"
            )
        loads = (
            f"{_span([r.loads_s * 1e6 for r, _ in pairs], '.2f'):>17} "
            f"{_span([r.loads_s / b.loads_s for r, b in pairs], '.2f') + 'x':>13}"
        )
        r, b = pairs[0]
        lines.append(f"{case:<31} {impl:<19} {dumps} {loads} {r.size:>7} {r.size / b.size:>6.2f}x")
    return "\n".join(lines)
