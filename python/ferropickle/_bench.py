"""Micro-benchmark workloads shared by ``python -m ferropickle bench`` and ``benches/``.

Every case is timed for each available implementation in the same process, one after the other,
and reported as a ratio to ferropickle, so machine speed cancels out.
"""

from __future__ import annotations

import functools
import pathlib
import pickle
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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


# The seed workload's task function, as a user's script defines it: in `__main__`, reading
# package globals; the heavy variant also reads a 2,000-entry dict global.
_SCRIPT = """
import json
import re

import numpy as np
import pandas as pd


def process(path):
    frame = pd.DataFrame({"x": np.arange(3)})
    return int(frame.x.sum()) + len(json.dumps(str(path))) + len(re.findall("f", str(path)))
"""

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
    source = _SCRIPT_WITH_LOOKUP if n_global else _SCRIPT
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<script>", "exec"), namespace)
    return namespace["process"]


def seed_tasks(n: int, n_global: int = 0) -> list[Any]:
    """``n`` distinct ``Task(key, partial(process, Path(...)))``, one shared ``process``."""
    from dask._task_spec import Task

    process = script_function(n_global)
    return [
        Task(
            ("process-8d3f", i), functools.partial(process, pathlib.Path(f"/data/in/f{i}.parquet"))
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
    return impls


@dataclass
class Timing:
    case: str
    impl: str
    dumps_s: float
    loads_s: float
    size: int


def _best(fn: Callable[[], Any], budget_s: float) -> float:
    """Best per-call time over 5 repeats, each sized to take about ``budget_s / 5``."""
    number, _ = timeit.Timer(fn).autorange()
    per_repeat = max(1, int(number * budget_s / 5 / 0.2))
    return min(timeit.repeat(fn, number=per_repeat, repeat=5)) / per_repeat


def measure(budget_s: float = 0.5) -> list[Timing]:
    """Times dumps and loads of every case with every implementation, in this process."""
    results = []
    impls = implementations()
    for case, obj in cases().items():
        for name, (dumps, loads) in impls.items():
            data = dumps(obj)
            results.append(
                Timing(
                    case=case,
                    impl=name,
                    dumps_s=_best(lambda d=dumps, o=obj: d(o), budget_s),
                    loads_s=_best(lambda lo=loads, b=data: lo(b), budget_s),
                    size=len(data),
                )
            )
    return results


def table(results: list[Timing]) -> str:
    """A plain-text table: times per call and each baseline's time as a multiple of ours."""
    ours = {r.case: r for r in results if r.impl == "ferropickle"}
    lines = [
        f"{'case':<28} {'impl':<12} {'dumps':>10} {'x ours':>7} {'loads':>10} {'x ours':>7} "
        f"{'bytes':>9} {'x ours':>7}"
    ]
    for r in results:
        base = ours[r.case]
        lines.append(
            f"{r.case:<28} {r.impl:<12} {r.dumps_s * 1e6:>8.2f}us {r.dumps_s / base.dumps_s:>6.2f}x"
            f" {r.loads_s * 1e6:>8.2f}us {r.loads_s / base.loads_s:>6.2f}x"
            f" {r.size:>9} {r.size / base.size:>6.2f}x"
        )
    return "\n".join(lines)
