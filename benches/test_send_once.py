"""Real-cluster benchmark of send-once: a large object shared by many tasks, stock vs plugin.

    pytest benches/test_send_once.py --benchmark-only -s
    python benches/test_send_once.py            # the same table, without pytest

On a ``dask scheduler`` process (stock, then with ``--preload ferropickle.dask``) and two
``dask worker`` processes that cannot import ferropickle, runs ``FERROPICKLE_SEND_ONCE_TASKS``
(default 2,000) tasks of each workload, each task carrying the same ~1 MiB object:

* ``client.map(functools.partial(operator.getitem, array_1MiB), range(n))``;
* ``client.map(g, range(n))``, ``g`` defined in ``__main__`` reading a ~1 MiB dict global;
* ``x.map_blocks(functools.partial(np.take, array_1MiB))`` on a dask array of ``n`` blocks;
* a ``client.submit`` loop passing a new copy of the same 1 MiB array with every call.

Then once more with ferropickle but ``ferropickle.send-once.threshold: false``, to tell what
send-once adds to the rest of the plugin. For each it reports the bytes the scheduler wrote to
its TCP comms per task (counted by wrapping ``distributed.comm.tcp.TCP.write`` in the
scheduler, whose return value is the bytes written), the scheduler's CPU per task (psutil,
user + system, from the first submission to the last result), tasks per second, and whether
the results equal stock's. Targets (reported, never asserted): bytes per task <= 5% of
stock's, scheduler CPU <= 0.5x stock's, tasks/s >= stock's.
"""

from __future__ import annotations

import functools
import operator
import os
import pathlib
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferropickle import _demo

N_TASKS = int(os.environ.get("FERROPICKLE_SEND_ONCE_TASKS", "2000"))
MIB = 1 << 20
TARGETS = {"bytes": 0.05, "cpu": 0.5, "rate": 1.0}

GLOBAL_SCRIPT = """
TABLE = {i: f"{i:08d}" * 5 for i in range(20000)}

def g(i):
    return len(TABLE[i % 20000]) + i
"""


def script_function() -> Any:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(GLOBAL_SCRIPT, "<script>", "exec"), namespace)
    return namespace["g"]


def count_sent_bytes(dask_scheduler: Any) -> int:
    """Bytes the scheduler's TCP comms have written since the first call. The count lives on
    the class it wraps, so this works whether it arrives by reference or by value."""
    from distributed.comm import tcp

    if "_bench_sent" not in tcp.TCP.__dict__:
        original = tcp.TCP.write
        tcp.TCP._bench_sent = [0]

        async def write(self: Any, *args: Any, **kwargs: Any) -> int:
            n = await original(self, *args, **kwargs)
            tcp.TCP._bench_sent[0] += n
            return n

        tcp.TCP.write = write
    return tcp.TCP._bench_sent[0]


def scheduler_task_count(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


@dataclass
class Measure:
    workload: str
    n: int
    sent: int
    cpu_s: float
    wall_s: float
    results: Any


def _map_partial(client: Any, a: np.ndarray, n: int) -> Any:
    return client.gather(client.map(functools.partial(operator.getitem, a), range(n)))


def _map_global(client: Any, a: np.ndarray, n: int) -> Any:
    return client.gather(client.map(script_function(), range(n)))


def _map_blocks(client: Any, a: np.ndarray, n: int) -> Any:
    import dask.array as da

    x = da.arange(n * 10, chunks=10) % a.size
    return x.map_blocks(functools.partial(np.take, a), dtype=a.dtype).compute(scheduler=client)


def _submit_loop(client: Any, a: np.ndarray, n: int) -> Any:
    futures = [client.submit(operator.getitem, a.copy(), i) for i in range(n)]
    return client.gather(futures)


WORKLOADS = {
    "client.map(partial(f, array_1MiB))": _map_partial,
    "client.map(g), g reads a 1 MiB global": _map_global,
    "x.map_blocks(partial(h, array_1MiB))": _map_blocks,
    "client.submit loop, a new 1 MiB copy each": _submit_loop,
}


def _no_ferropickle_dir() -> str:
    shadow = pathlib.Path(tempfile.mkdtemp(prefix="ferropickle-absent-"))
    (shadow / "ferropickle").mkdir()
    (shadow / "ferropickle" / "__init__.py").write_text(
        "raise ImportError('ferropickle is not installed on this worker')\n"
    )
    return str(shadow)


def run(label: str, plugin: bool, n: int, send_once: bool = True) -> dict[str, Measure]:
    here = str(pathlib.Path(__file__).parent)
    extra = os.environ.get("PYTHONPATH")
    path = [here, *([extra] if extra else [])]
    off = {} if send_once else {"DASK_FERROPICKLE__SEND_ONCE__THRESHOLD": "false"}
    cluster = _demo.ProcessCluster(
        2,
        scheduler_preload=["ferropickle.dask"] if plugin else [],
        env={"PYTHONPATH": os.pathsep.join(path), **off},
        worker_env={"PYTHONPATH": os.pathsep.join([_no_ferropickle_dir(), *path])},
    )
    out = {}
    with cluster:
        client = cluster.client()
        try:
            a = np.arange(MIB // 8, dtype=float)
            client.run_on_scheduler(count_sent_bytes)
            for name, workload in WORKLOADS.items():
                sent0 = client.run_on_scheduler(count_sent_bytes)
                cpu0 = cluster.scheduler_cpu()
                start = time.perf_counter()
                results = workload(client, a, n)
                wall = time.perf_counter() - start
                cpu = cluster.scheduler_cpu() - cpu0
                sent = client.run_on_scheduler(count_sent_bytes) - sent0
                out[name] = Measure(name, n, sent, cpu, wall, results)
                print(f"  {label}: {name}: {wall:.1f} s", file=sys.stderr)
                # Let the scheduler forget this workload before the next one starts.
                deadline = time.monotonic() + 60
                while client.run_on_scheduler(scheduler_task_count) and time.monotonic() < deadline:
                    time.sleep(0.2)
        finally:
            client.close()
    return out


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return bool(np.array_equal(x, y))
    return x == y


def table(
    stock: dict[str, Measure], ours: dict[str, Measure], off: dict[str, Measure] | None = None
) -> str:
    rows = [
        "| workload | bytes/task stock | bytes/task ferropickle | ratio | sched CPU/task stock "
        "| ferropickle | ratio | tasks/s stock | ferropickle | results identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in WORKLOADS:
        s, o = stock[name], ours[name]
        rows.append(
            f"| {name} | {s.sent / s.n:,.0f} | {o.sent / o.n:,.0f} | {o.sent / s.sent:.3f}x "
            f"| {s.cpu_s / s.n * 1e6:,.0f} us | {o.cpu_s / o.n * 1e6:,.0f} us "
            f"| {o.cpu_s / s.cpu_s:.2f}x | {s.n / s.wall_s:,.0f} | {o.n / o.wall_s:,.0f} "
            f"| {'yes' if _equal(s.results, o.results) else 'NO'} |"
        )
    rows.append(
        f"targets: bytes/task <= {TARGETS['bytes']:.0%} of stock's, scheduler CPU <= "
        f"{TARGETS['cpu']}x stock's, tasks/s >= stock's ({s.n:,} tasks per workload, "
        "2 worker processes without ferropickle)"
    )
    if off is not None:
        rows.append("")
        rows.append("ferropickle with send-once off (threshold false), same workloads:")
        for name in WORKLOADS:
            s, x = stock[name], off[name]
            rows.append(
                f"  {name}: {x.sent / x.n:,.0f} bytes/task, scheduler CPU "
                f"{x.cpu_s / x.n * 1e6:,.0f} us/task ({x.cpu_s / s.cpu_s:.2f}x stock), "
                f"{x.n / x.wall_s:,.0f} tasks/s, results "
                f"{'identical' if _equal(s.results, x.results) else 'DIFFERENT'}"
            )
    return "\n".join(rows)


def main(n: int = N_TASKS) -> tuple[dict[str, Measure], dict[str, Measure]]:
    stock = run("stock", False, n)
    ours = run("ferropickle", True, n)
    off = run("ferropickle, send-once off", True, n, send_once=False)
    print(table(stock, ours, off))
    return stock, ours


def test_send_once_bytes_cpu_and_rate(benchmark, capsys):
    runs: list[tuple[dict[str, Measure], dict[str, Measure]]] = []
    benchmark.group = f"send-once, real cluster, {N_TASKS} tasks per workload (wall of both runs)"
    with capsys.disabled():
        benchmark.pedantic(lambda: runs.append(main()), rounds=1, iterations=1)
    stock, ours = runs[0]
    for name in WORKLOADS:
        s, o = stock[name], ours[name]
        benchmark.extra_info[f"{name}: bytes per task ratio"] = o.sent / s.sent
        benchmark.extra_info[f"{name}: scheduler CPU ratio"] = o.cpu_s / s.cpu_s
        benchmark.extra_info[f"{name}: tasks/s ratio"] = s.wall_s / o.wall_s
        assert _equal(s.results, o.results), name


if __name__ == "__main__":
    main()
