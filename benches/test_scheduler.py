"""The scheduler's hot path: the seed workload, one ``Task(key, partial(process,
Path))`` per message with ``process`` defined in ``__main__``, as the scheduler pickles them.

    pytest benches/test_scheduler.py --benchmark-only

Each round pickles (or unpickles) all ``N`` distinct tasks once; divide by ``N`` for the cost per
task. "plain" has ``process`` read package globals only; "2000-global" also reads a
2,000-entry dict global, which cloudpickle copies into every message; "fresh-*" give every task
its own copy of ``process``, as the scheduler holds them in a ``client.submit`` loop.
"""

from __future__ import annotations

import pickle

import pytest
import workloads

pytest.importorskip("dask")
pytest.importorskip("numpy")
pytest.importorskip("pandas")

N = 1000
#: (dict global size, a fresh copy of the function per task as in a `client.submit` loop)
VARIANTS = {
    "plain": (0, False),
    "2000-global": (2000, False),
    "fresh-plain": (0, True),
    "fresh-2000-global": (2000, True),
}
IMPLS = workloads.implementations()


@pytest.fixture(scope="module", params=list(VARIANTS))
def tasks(request):
    n_global, fresh = VARIANTS[request.param]
    items = workloads.seed_tasks(N, n_global, fresh=fresh)
    # Stock pickle writes `process` by reference, as `__main__.process`: make that resolvable.
    with workloads.functions_in_main(items):
        yield request.param, items


@pytest.mark.parametrize("impl", list(IMPLS))
def test_dumps_seed_tasks(benchmark, tasks, impl):
    variant, items = tasks
    if impl == "pickle" and variant.startswith("fresh"):
        pytest.skip("stock pickle can write only one copy of `process` by reference")
    dumps, _ = IMPLS[impl]
    benchmark.group = f"dumps {N} seed tasks ({variant})"
    benchmark.pedantic(lambda: [dumps(t) for t in items], rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["ferropickle", "pickle"])
def test_loads_seed_tasks(benchmark, tasks, impl):
    """Both read the same ferropickle bytes, each rebuilding every task's function."""
    variant, items = tasks
    dumps, _ = IMPLS["ferropickle"]
    blobs = [dumps(t) for t in items]
    loads = {"ferropickle": IMPLS["ferropickle"][1], "pickle": pickle.loads}[impl]
    benchmark.group = f"loads {N} seed tasks ({variant})"
    benchmark.pedantic(lambda: [loads(b) for b in blobs], rounds=5, warmup_rounds=1)
