"""Send-once on real clusters: a ``dask scheduler --preload ferropickle.dask`` process and
``dask worker`` processes that cannot import ferropickle.

The workers (``ProcessCluster(workers_without_ferropickle=True)``) run the same interpreter
and packages, with a directory first on their ``PYTHONPATH`` whose ``ferropickle`` package
raises ``ImportError``: everything they run must come from Dask and the standard library.
Each test checks the results against the same computation done here, counts the bytes the
scheduler's TCP comms wrote (a large shared part must cross them about once, not once per
task) and, once the futures are released, that neither the scheduler nor a worker holds a
hoisted key any more.
"""

from __future__ import annotations

import functools
import os
import pathlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import send_once_tasks as tasks
from distributed import as_completed
from distributed.client import FutureCancelledError

import ferropickle.dask as ferro_dask
from ferropickle import _demo

pytestmark = pytest.mark.slow

HERE = pathlib.Path(__file__).parent
TIMEOUT = 120
N = 30
MIB = 1 << 20
#: Bytes the scheduler may write for N tasks sharing a 1 MiB part: the part about once (to the
#: first worker; the other fetches it from that one), plus the small task messages. Stock Dask
#: writes N MiB.
ONCE = 3 * MIB

GLOBAL_SCRIPT = """
TABLE = {-k: "v" * 40 for k in range(1, 20000)}

def grow(i):
    TABLE[i] = "new"          # mutates its global: no other task may see it
    return len(TABLE)
"""


def script(source: str, name: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<script>", "exec"), namespace)
    return namespace[name]


def pythonpath(*entries: str) -> str:
    extra = os.environ.get("PYTHONPATH")
    return os.pathsep.join([*entries, *([extra] if extra else [])])


def start(*, nanny: bool = False, **scheduler_env: str) -> Any:
    return _demo.ProcessCluster(
        2,
        scheduler_preload=["ferropickle.dask"],
        env={"PYTHONPATH": pythonpath(str(HERE)), **scheduler_env},
        workers_without_ferropickle=True,
        nanny=nanny,
    )


def connect(cluster: Any) -> Any:
    client = cluster.client()
    workers = client.scheduler_info()["workers"]
    assert client.run(tasks.can_import_ferropickle) == dict.fromkeys(workers, False)
    assert client.run_on_scheduler(tasks.can_import_ferropickle) is True
    return client


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with start() as cluster:
        client = connect(cluster)
        try:
            yield client
        finally:
            client.close()


def sent(client: Any) -> int:
    return client.run_on_scheduler(tasks.count_sent_bytes)


def assert_nothing_hoisted_is_held(client: Any) -> None:
    """Once the futures are gone, the scheduler forgets hoisted keys and workers drop them."""
    deadline = time.monotonic() + 30
    while True:
        on_scheduler = client.run_on_scheduler(tasks.scheduler_hoisted_keys)
        on_workers = {w: k for w, k in client.run(tasks.worker_hoisted_keys).items() if k}
        if not on_scheduler and not on_workers:
            return
        assert time.monotonic() < deadline, (on_scheduler, on_workers)
        time.sleep(0.1)


def array(value: float = 1.0) -> np.ndarray:
    return np.arange(MIB // 8, dtype=float) + value


# --------------------------------------------------------------------------------------------
# The workloads
# --------------------------------------------------------------------------------------------


def test_map_over_a_partial_holding_an_array_sends_the_array_once(client):
    a = array()
    before = sent(client)
    futures = client.map(functools.partial(tasks.scale, a), range(N))
    assert client.gather(futures) == [tasks.scale(a, i) for i in range(N)]
    assert sent(client) - before < ONCE
    del futures
    assert_nothing_hoisted_is_held(client)


def test_map_of_a_script_function_reading_a_large_global_sends_it_once(client):
    grow = script(GLOBAL_SCRIPT, "grow")
    before = sent(client)
    futures = client.map(grow, range(N))
    # Every task grew its own copy of the global by one key.
    assert client.gather(futures) == [20000] * N
    assert sent(client) - before < ONCE
    assert len(grow.__globals__["TABLE"]) == 19999
    del futures
    assert_nothing_hoisted_is_held(client)


def test_map_blocks_with_a_partial_holding_an_array_sends_it_once(client):
    a = array()
    x = da.arange(N * 100, chunks=100, dtype=float)
    y = x.map_blocks(functools.partial(tasks.scale_block, a=a))
    before = sent(client)
    got = y.compute(scheduler=client)
    assert np.array_equal(got, np.arange(N * 100, dtype=float) + np.tile(a[:100], N))
    # The result's N blocks also pass through the scheduler here (compute gathers them).
    assert sent(client) - before < ONCE + got.nbytes * 2
    assert_nothing_hoisted_is_held(client)


def test_a_submit_loop_of_new_copies_of_one_array_sends_it_about_once(client):
    a = array(5.0)
    before = sent(client)
    futures = [client.submit(tasks.scale, a.copy(), i) for i in range(N)]
    assert client.gather(futures) == [tasks.scale(a, i) for i in range(N)]
    # The first call goes as stock (nothing to recognise yet), the second hoists the content,
    # the others refer to it while the cluster holds it.
    assert sent(client) - before < ONCE + MIB
    stats = ferro_dask.stats(client)["send_once"]["task_prefixes"]
    assert stats["scale"]["tasks"] >= N - 1
    del futures
    assert_nothing_hoisted_is_held(client)


def test_a_graph_sent_again_keeps_the_tasks_the_scheduler_has(client):
    b = array(6.0)
    total = dask.delayed(tasks.scale, pure=True)(b, 1)
    first = client.compute(total)  # one task: nothing to share yet, sent as is
    second = client.compute(total)  # the same key, the same content again
    assert first.key == second.key
    assert second.result(timeout=TIMEOUT) == first.result(timeout=TIMEOUT) == tasks.scale(b, 1)
    logs = "\n".join(line for _level, line in client.get_scheduler_logs(n=200))
    assert "Detected different `run_spec`" not in logs
    del first, second
    assert_nothing_hoisted_is_held(client)


def test_the_part_leaves_the_workers_soon_after_its_last_task_ran(client):
    old = client.run_on_scheduler(tasks.set_grace, 0.5)
    try:
        a = array(8.0)
        futures = client.map(functools.partial(tasks.scale, a), range(N))
        assert client.gather(futures) == [tasks.scale(a, i) for i in range(N)]
        # The results stay (their futures are held); the part leaves the workers' memory.
        deadline = time.monotonic() + 30
        while any(client.run(tasks.worker_hoisted_data).values()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.run_on_scheduler(tasks.scheduler_hoisted_keys)  # until they are released
        assert client.gather(futures) == [tasks.scale(a, i) for i in range(N)]
        del futures
        assert_nothing_hoisted_is_held(client)
    finally:
        client.run_on_scheduler(tasks.set_grace, old)


def test_a_task_that_mutates_its_argument_changes_nothing_for_the_others(client):
    a = np.zeros(MIB // 8)
    futures = client.map(functools.partial(tasks.bump, a), range(N))
    assert client.gather(futures) == [1.0] * N
    del futures
    assert_nothing_hoisted_is_held(client)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


def test_cancelled_tasks_leave_nothing_and_the_same_content_computes_again(client):
    a = array(2.0)
    futures = client.map(functools.partial(tasks.slow, a), range(N))
    done = as_completed(futures)
    next(done)
    client.cancel(futures)
    del futures, done
    assert_nothing_hoisted_is_held(client)
    # The same content again, after its key was forgotten: hoisted anew, computed as stock.
    futures = client.map(functools.partial(tasks.scale, a), range(N))
    assert client.gather(futures) == [tasks.scale(a, i) for i in range(N)]
    del futures
    assert_nothing_hoisted_is_held(client)


def test_retried_tasks_rebuild_their_part_and_give_stocks_results(client, tmp_path):
    a = array(3.0)
    func = functools.partial(tasks.fail_once, a, flags=str(tmp_path))
    futures = client.map(func, range(N // 3), retries=1)
    assert client.gather(futures) == [tasks.scale(a, i) for i in range(N // 3)]
    del futures
    assert_nothing_hoisted_is_held(client)


def test_stolen_tasks_fetch_the_part_where_they_run(client):
    a = array(7.0)
    first, second = sorted(client.scheduler_info()["workers"])
    # All placed on one worker, allowed elsewhere: the idle one steals some, and needs the part.
    stolen = client.run_on_scheduler(tasks.steals)
    futures = client.map(
        functools.partial(tasks.slow, a), range(N), workers=[first], allow_other_workers=True
    )
    assert client.gather(futures) == [tasks.scale(a, i) for i in range(N)]
    ran_on = {worker for holders in client.who_has(futures).values() for worker in holders}
    assert second in ran_on
    assert client.run_on_scheduler(tasks.steals) > stolen
    del futures
    assert_nothing_hoisted_is_held(client)


def test_a_killed_worker_and_a_restart_give_stocks_results_and_leave_nothing():
    with start(nanny=True) as cluster:
        client = connect(cluster)
        try:
            a = array(4.0)
            futures = client.map(functools.partial(tasks.slow, a), range(2 * N))
            done = as_completed(futures)
            next(done)
            # Kill the worker holding the hoisted part, mid-run; its nanny starts a new one.
            holders = client.run_on_scheduler(tasks.hoisted_key_holders)
            assert holders
            [victim] = client.run(tasks.pid, workers=holders[:1]).values()
            os.kill(victim, signal.SIGKILL)
            assert client.gather(futures) == [tasks.scale(a, i) for i in range(2 * N)]
            del futures, done
            assert_nothing_hoisted_is_held(client)

            futures = client.map(functools.partial(tasks.slow, a), range(2 * N))
            next(as_completed(futures))
            client.restart()
            with pytest.raises(FutureCancelledError):
                futures[-1].result(timeout=TIMEOUT)
            del futures
            assert_nothing_hoisted_is_held(client)
            futures = client.map(functools.partial(tasks.scale, a), range(N))
            assert client.gather(futures) == [tasks.scale(a, i) for i in range(N)]
            del futures
            assert_nothing_hoisted_is_held(client)
        finally:
            client.close()


# --------------------------------------------------------------------------------------------
# The off switch
# --------------------------------------------------------------------------------------------


def test_threshold_false_sends_the_part_with_every_task():
    with start(DASK_FERROPICKLE__SEND_ONCE__THRESHOLD="false") as cluster:
        client = connect(cluster)
        try:
            a = array()
            before = sent(client)
            futures = client.map(functools.partial(tasks.scale, a), range(N))
            assert client.gather(futures) == [tasks.scale(a, i) for i in range(N)]
            assert sent(client) - before > N * a.nbytes
            assert ferro_dask.stats(client)["send_once"] == {"threshold": None, "task_prefixes": {}}
            assert client.run_on_scheduler(tasks.scheduler_hoisted_keys) == []
        finally:
            client.close()
