"""``python -m ferropickle demo --workload large``: tasks that all carry the same large object,
on a real local cluster, stock vs plugin (where send-once sends that object once per worker).

Starts a ``dask scheduler`` process and two ``dask worker`` processes that cannot import
ferropickle on 127.0.0.1, once stock and once with ``--preload ferropickle.dask`` on the
scheduler (``benches/test_send_once.py`` adds a run with send-once off, and runs of both with
a small object in place of the large one), and runs each workload of `WORKLOADS`, every task
of which carries the same ~1 MiB object:

* ``client.map(functools.partial(operator.getitem, array_1MiB), range(n))``;
* ``client.map(g, range(n))``, ``g`` defined in ``__main__`` reading a ~1 MiB dict global;
* ``x.map_blocks(functools.partial(np.take, array_1MiB))`` on a dask array of ``n`` blocks;
* a ``client.submit`` loop passing a new copy of the same 1 MiB array with every call.

For each it reports the bytes the scheduler wrote to its TCP comms per task (counted by
wrapping ``distributed.comm.tcp.TCP.write`` in the scheduler, whose return value is the bytes
written), the scheduler's CPU per task (psutil, user + system, from the first submission to the
last result), tasks per second, and whether the results equal stock's.
"""

from __future__ import annotations

import functools
import operator
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferropickle._demo import ProcessCluster

MIB = 1 << 20
#: What send-once aims at, reported (never asserted): bytes per task at most 5% of stock's,
#: scheduler CPU per task at most half of stock's, tasks per second at least stock's.
TARGETS = {"bytes": 0.05, "cpu": 0.5, "rate": 1.0}

#: ``$entries`` entries of 45 bytes each: 20,000 pickle to about as much as a 1 MiB array.
GLOBAL_SCRIPT = string.Template("""
TABLE = {i: f"{i:08d}" * 5 for i in range($entries)}

def g(i):
    return len(TABLE[i % $entries]) + i
""")


def script_function(entries: int = 20000) -> Callable[[int], int]:
    """``g`` as if defined in a script run as ``__main__``: pickled by value, with ``TABLE``."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    source = GLOBAL_SCRIPT.substitute(entries=entries)
    exec(compile(source, "<script>", "exec"), namespace)
    return namespace["g"]  # type: ignore[no-any-return]


def count_sent_bytes(dask_scheduler: Any) -> int:
    """Bytes the scheduler's TCP comms have written since the first call. The count lives on
    the class it wraps, so this works whether it arrives by reference or by value."""
    from distributed.comm import tcp

    if "_demo_sent" not in tcp.TCP.__dict__:
        original = tcp.TCP.write
        tcp.TCP._demo_sent = [0]  # type: ignore[attr-defined]

        async def write(self: Any, *args: Any, **kwargs: Any) -> int:
            n = await original(self, *args, **kwargs)
            tcp.TCP._demo_sent[0] += n  # type: ignore[attr-defined]
            return n

        tcp.TCP.write = write  # type: ignore[method-assign]
    return tcp.TCP._demo_sent[0]  # type: ignore[attr-defined,no-any-return]


def scheduler_task_count(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


@dataclass
class Measure:
    """One workload on one cluster."""

    workload: str
    n: int
    #: Bytes the scheduler's TCP comms wrote while it ran.
    sent: int
    cpu_s: float
    wall_s: float
    results: Any


def _map_partial(client: Any, a: np.ndarray, n: int) -> Any:
    return client.gather(client.map(functools.partial(operator.getitem, a), range(n)))


def _map_global(client: Any, a: np.ndarray, n: int) -> Any:
    # A global about as large as the array the other workloads carry.
    return client.gather(client.map(script_function(max(1, 20000 * a.nbytes // MIB)), range(n)))


def _map_blocks(client: Any, a: np.ndarray, n: int) -> Any:
    import dask.array as da

    x = da.arange(n * 10, chunks=10) % a.size
    return x.map_blocks(functools.partial(np.take, a), dtype=a.dtype).compute(scheduler=client)


def _submit_loop(client: Any, a: np.ndarray, n: int) -> Any:
    futures = [client.submit(operator.getitem, a.copy(), i) for i in range(n)]
    return client.gather(futures)


WORKLOADS: dict[str, Callable[[Any, np.ndarray, int], Any]] = {
    "client.map(partial(f, array_1MiB))": _map_partial,
    "client.map(g), g reads a 1 MiB global": _map_global,
    "x.map_blocks(partial(h, array_1MiB))": _map_blocks,
    "client.submit loop, a new 1 MiB copy each": _submit_loop,
}


def run(
    label: str,
    plugin: bool,
    n: int,
    *,
    send_once: bool = True,
    small: bool = False,
    n_workers: int = 2,
    progress: bool = True,
) -> dict[str, Measure]:
    """Starts a fresh cluster (the plugin on the scheduler, or stock) and runs every workload
    with ``n`` tasks, one after the other; measures by workload. With ``small`` each task
    carries an object of ``8 * n`` bytes instead of 1 MiB (below send-once's threshold): what
    the scheduler spends per task whatever the content, Dask's own cost."""
    off = {} if send_once else {"DASK_FERROPICKLE__SEND_ONCE__THRESHOLD": "false"}
    cluster = ProcessCluster(
        n_workers,
        scheduler_preload=["ferropickle.dask"] if plugin else [],
        env=off,
        workers_without_ferropickle=True,
    )
    out = {}
    with cluster:
        client = cluster.client()
        try:
            a = np.arange(max(n, 2) if small else MIB // 8, dtype=float)
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
                if progress:
                    print(f"  {label}: {name}: {wall:.1f} s", file=sys.stderr, flush=True)
                # Let the scheduler forget this workload before the next one starts.
                deadline = time.monotonic() + 60
                while client.run_on_scheduler(scheduler_task_count) and time.monotonic() < deadline:
                    time.sleep(0.2)
        finally:
            client.close()
    return out


def equal(x: Any, y: Any) -> bool:
    """Whether two workloads' results are the same (arrays compared element by element)."""
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return bool(np.array_equal(x, y))
    return bool(x == y)


def _rows(base: dict[str, Measure], other: dict[str, Measure]) -> list[str]:
    """One row per workload: ``other`` beside ``base`` (stock), with the ratios."""
    rows = [
        "| workload | bytes/task stock | bytes/task ferropickle | ratio | sched CPU/task stock "
        "| ferropickle | ratio | tasks/s stock | ferropickle | ratio | results identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in WORKLOADS:
        s, o = base[name], other[name]
        rows.append(
            f"| {name} | {s.sent / s.n:,.0f} | {o.sent / o.n:,.0f} | {o.sent / s.sent:.3f}x "
            f"| {s.cpu_s / s.n * 1e6:,.0f} us | {o.cpu_s / o.n * 1e6:,.0f} us "
            f"| {o.cpu_s / s.cpu_s:.2f}x | {s.n / s.wall_s:,.0f} | {o.n / o.wall_s:,.0f} "
            f"| {s.wall_s / o.wall_s:.2f}x | {'yes' if equal(s.results, o.results) else 'NO'} |"
        )
    return rows


def table(
    stock: dict[str, Measure],
    ours: dict[str, Measure],
    off: dict[str, Measure] | None = None,
    n_workers: int = 2,
    small: dict[str, Measure] | None = None,
    small_ours: dict[str, Measure] | None = None,
) -> str:
    """The bytes-per-task table: stock and ferropickle side by side, with ratios (and the same
    for ferropickle with send-once off, and the CPU per task with a small object, stock and
    ferropickle, if given)."""
    n = next(iter(stock.values())).n
    rows = [
        *_rows(stock, ours),
        f"targets: bytes/task <= {TARGETS['bytes']:.0%} of stock's, scheduler CPU <= "
        f"{TARGETS['cpu']}x stock's, tasks/s >= stock's ({n:,} tasks per workload, "
        f"{n_workers} worker processes without ferropickle)",
    ]
    if off is not None:
        rows += ["", "ferropickle with send-once off (threshold false), same workloads:"]
        rows += _rows(stock, off)
    if small is not None:
        rows += [
            "",
            f"each task carrying {8 * max(n, 2):,} bytes instead of 1 MiB: the scheduler's CPU "
            "per task that does not depend on the content (Dask's own, and the plugin's), so "
            "the lowest CPU ratio send-once could reach; 'content' is what the 1 MiB still "
            "costs per task:",
        ]
        for name in WORKLOADS:
            s, f = stock[name], small[name]
            line = (
                f"  {name}: stock {f.cpu_s / f.n * 1e6:,.0f} us/task ({f.cpu_s / s.cpu_s:.2f}x "
                f"stock's with 1 MiB; content {(s.cpu_s - f.cpu_s) / s.n * 1e6:,.0f} us)"
            )
            if small_ours is not None:
                o, g = ours[name], small_ours[name]
                line += (
                    f", ferropickle {g.cpu_s / g.n * 1e6:,.0f} us/task ({g.cpu_s / s.cpu_s:.2f}x;"
                    f" content {(o.cpu_s - g.cpu_s) / o.n * 1e6:,.0f} us, at "
                    f"{o.cpu_s / s.cpu_s:.2f}x)"
                )
            rows.append(line)
    return "\n".join(rows)


def main(n_tasks: int, n_workers: int = 2, progress: bool = True) -> int:
    """Runs the large-object workloads stock, then with the plugin, and prints the table;
    exit status 1 if any result differs."""
    print(
        f"Starting a local cluster twice (scheduler + {n_workers} workers that cannot import "
        "ferropickle, 127.0.0.1): stock, then with --preload ferropickle.dask on the scheduler; "
        f"{n_tasks:,} tasks per workload, each carrying the same ~1 MiB object.",
        flush=True,
    )
    stock = run("stock", False, n_tasks, n_workers=n_workers, progress=progress)
    ours = run("ferropickle", True, n_tasks, n_workers=n_workers, progress=progress)
    print()
    print(table(stock, ours, n_workers=n_workers))
    same = all(equal(stock[name].results, ours[name].results) for name in WORKLOADS)
    return 0 if same else 1
