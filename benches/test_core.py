"""Core micro-benchmarks: generic containers, Path, partial and a dask Task, dumps and
loads, for ferropickle and each baseline in one run.

    pytest benches --benchmark-only

prints pytest-benchmark's tables and, at the end, every group's times as ratios to ferropickle.
"""

from __future__ import annotations

import pytest
import workloads

CASES = workloads.cases()
IMPLS = workloads.implementations()


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", list(CASES))
def test_dumps(benchmark, case, impl):
    dumps, _ = IMPLS[impl]
    obj = CASES[case]
    benchmark.group = f"dumps {case}"
    benchmark(dumps, obj)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", list(CASES))
def test_loads(benchmark, case, impl):
    dumps, loads = IMPLS[impl]
    data = dumps(CASES[case])
    benchmark.group = f"loads {case}"
    benchmark(loads, data)
