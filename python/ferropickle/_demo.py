"""``python -m ferropickle demo``: the seed workload on a real local cluster, stock vs plugin.

Starts a ``dask scheduler`` process and worker processes on 127.0.0.1 twice - once stock, once
with ``--preload ferropickle.dask`` on the scheduler only (the workers run nothing new) - maps a
function defined as in a user's script over ``N`` paths, and compares the scheduler's CPU per
task, tasks per second and bytes per task message. ``benches/test_cluster.py`` and the Dask
tests reuse :class:`ProcessCluster`, :func:`run_workload` and the workload, :func:`script_function`.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

#: Seconds to wait for a process to come up (imports of numpy/pandas/distributed on a busy
#: 2-core machine take a few seconds each).
START_TIMEOUT = 120.0


#: What a worker that cannot import ferropickle finds first on its ``PYTHONPATH``: a
#: ``ferropickle`` package whose import raises ``ImportError``, as on a machine where it is not
#: installed, although the worker runs from the same environment. An environment variable, not
#: a change made inside the worker's process, so that the processes a nanny spawns inherit it.
_ABSENT_FERROPICKLE = "raise ImportError('ferropickle is not installed on this worker')\n"


class ClusterError(RuntimeError):
    """A scheduler or worker process did not start; the message ends with its log."""


def _tail(path: pathlib.Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ProcessCluster:
    """A ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Each is its own OS process (``sys.executable -m distributed.cli.dask_scheduler`` /
    ``dask_worker``), listening on loopback only (random ports, found through a scheduler
    file), with no dashboard and one thread per worker (no nanny unless ``nanny=True``, so the
    workers are exactly ``n_workers`` processes). With ``workers_without_ferropickle`` the
    workers (and the processes their nannies start) cannot import ferropickle, as if it were
    not installed where they run. Use it as a context manager;
    processes are always terminated on exit and their logs live in a temporary directory until
    then.
    """

    def __init__(
        self,
        n_workers: int = 2,
        *,
        scheduler_preload: Sequence[str] = (),
        worker_preload: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        worker_env: Mapping[str, str] | None = None,
        workers_without_ferropickle: bool = False,
        nanny: bool = False,
    ) -> None:
        self.n_workers = n_workers
        self.workers_without_ferropickle = workers_without_ferropickle
        self.nanny = nanny
        self.scheduler_preload = list(scheduler_preload)
        self.worker_preload = list(worker_preload)
        self.env = {**os.environ, **(env or {})}
        self.worker_env = {**self.env, **(worker_env or {})}
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="ferropickle-cluster-"))
        if workers_without_ferropickle:
            absent = self.workdir / "without-ferropickle"
            (absent / "ferropickle").mkdir(parents=True)
            (absent / "ferropickle" / "__init__.py").write_text(_ABSENT_FERROPICKLE)
            path = self.worker_env.get("PYTHONPATH")
            self.worker_env["PYTHONPATH"] = os.pathsep.join(
                [str(absent), *([path] if path else [])]
            )
        self.scheduler_file = self.workdir / "scheduler.json"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        # A file, not a pipe: nobody reads the logs while the cluster runs, and a full pipe
        # would block the process writing to it.
        with open(self.workdir / f"{name}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=self.workdir,
            )

    def start(self) -> ProcessCluster:
        """Starts the scheduler, waits for its address, then starts the workers."""
        args = [
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            # The HTTP server (/metrics, /health) still runs without the dashboard: keep it on
            # loopback too.
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(self.scheduler_file),
        ]
        for module in self.scheduler_preload:
            args += ["--preload", module]
        self.scheduler = self._spawn("scheduler", args, self.env)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.scheduler_file.exists():
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(
                    "the scheduler did not start:\n" + _tail(self.workdir / "scheduler.log")
                )
            time.sleep(0.05)
        for i in range(self.n_workers):
            args = [
                "-m",
                "distributed.cli.dask_worker",
                "--scheduler-file",
                str(self.scheduler_file),
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--nanny" if self.nanny else "--no-nanny",
                "--no-dashboard",
                "--dashboard-address",
                "127.0.0.1:0",
                "--name",
                f"worker-{i}",
                "--local-directory",
                str(self.workdir),
            ]
            for module in self.worker_preload:
                args += ["--preload", module]
            self.workers.append(self._spawn(f"worker-{i}", args, self.worker_env))
        return self

    def client(self, **kwargs: Any) -> Any:
        """A ``distributed.Client`` connected to the scheduler, once all workers have joined."""
        from distributed import Client

        client = Client(scheduler_file=str(self.scheduler_file), timeout=START_TIMEOUT, **kwargs)
        try:
            client.wait_for_workers(self.n_workers, timeout=START_TIMEOUT)
        except Exception as exc:
            client.close()
            logs = "\n".join(
                f"--- {p.name}\n{_tail(p)}" for p in sorted(self.workdir.glob("*.log"))
            )
            raise ClusterError(f"workers did not join ({exc}):\n{logs}") from exc
        return client

    def stop(self) -> None:
        """Terminates the workers, then the scheduler (SIGTERM; SIGKILL after 15 s each).

        Workers go first: a worker told to close by a closing scheduler *and* by SIGTERM at the
        same moment can hang in its own shutdown.
        """
        for group in (self.workers, [self.scheduler] if self.scheduler else []):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
        self.workers = []
        self.scheduler = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ProcessCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- measurements ------------------------------------------------------------------------

    def scheduler_cpu(self) -> float:
        """CPU seconds (user + system) the scheduler process has used so far."""
        assert self.scheduler is not None
        times = psutil.Process(self.scheduler.pid).cpu_times()
        return times.user + times.system


# --------------------------------------------------------------------------------------------
# The workload
# --------------------------------------------------------------------------------------------

#: The seed workload's task function, as a user's script defines it: in `__main__`, reading
#: package globals.
SCRIPT = """
import json
import re

import numpy as np
import pandas as pd


def process(path):
    frame = pd.DataFrame({"x": np.arange(3)})
    return int(frame.x.sum()) + len(json.dumps(str(path))) + len(re.findall("f", str(path)))
"""


def script_function(source: str = SCRIPT) -> Callable[[Any], Any]:
    """``process`` as if defined in a script run as ``__main__`` (so it is pickled by value)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<script>", "exec"), namespace)
    return namespace["process"]


def seed_paths(n: int) -> list[pathlib.Path]:
    """The ``n`` input paths the seed workload maps over."""
    return [pathlib.Path(f"/data/in/part-{i:05d}.parquet") for i in range(n)]


@dataclass
class RunResult:
    """One run of the seed workload on one cluster."""

    label: str
    n_tasks: int
    wall_s: float
    scheduler_cpu_s: float
    results: list[Any]
    #: `ferropickle.dask.stats(client)` after minus before the workload (numeric fields), plus
    #: the non-numeric fields as read after it.
    scheduler_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_per_task_s(self) -> float:
        return self.scheduler_cpu_s / self.n_tasks

    @property
    def tasks_per_s(self) -> float:
        return self.n_tasks / self.wall_s


def _stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in after.items():
        old = before.get(key)
        numeric = isinstance(value, int) and not isinstance(value, bool)
        out[key] = value - old if numeric and isinstance(old, int) else value
    return out


@dataclass
class Workload:
    """What `run_workload` measured. Keep it until the client is closed (see there)."""

    results: list[Any]
    wall_s: float
    #: Scheduler CPU seconds from submission until the last result arrived (0.0 if no clock).
    scheduler_cpu_s: float
    futures: list[Any]


def run_workload(
    client: Any,
    process: Callable[[Any], Any],
    paths: Sequence[pathlib.Path],
    *,
    scheduler_cpu: Callable[[], float] | None = None,
    label: str = "",
    progress: bool = True,
    mode: str = "map",
) -> Workload:
    """``client.map(process, paths)`` (``mode="map"``), or one ``client.submit(process, path)``
    per path (``mode="submit"``, the futures loop: each submit is its own graph, so the
    scheduler holds a fresh copy of ``process`` per task); the results in order, wall time and
    scheduler CPU.

    The progress bar is tqdm over ``distributed.as_completed`` in this (the client's) process:
    distributed's own progress bar is a scheduler plugin and would add scheduler CPU.

    The futures are returned so that they are released when the client closes, in one message:
    dropped one by one earlier, each would send its own release that the scheduler handles
    separately (seconds of its CPU for thousands of tasks, none of which is the workload's).
    """
    from distributed import as_completed
    from tqdm import tqdm

    cpu_before = scheduler_cpu() if scheduler_cpu else 0.0
    start = time.perf_counter()
    keys = [f"process-{mode}-{i}" for i in range(len(paths))]
    if mode == "map":
        futures = client.map(process, paths, key=keys)
    else:
        futures = [client.submit(process, p, key=k) for p, k in zip(paths, keys, strict=True)]
    index = {future.key: i for i, future in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    with tqdm(
        total=len(futures),
        desc=label,
        unit="task",
        # None: tqdm's own check, off when stderr is not a terminal (a file, a CI log), where
        # its carriage returns would pile up as one line per refresh.
        disable=None if progress else True,
        file=sys.stderr,
    ) as bar:
        for future, result in as_completed(futures, with_results=True):
            results[index[future.key]] = result
            bar.update()
    wall = time.perf_counter() - start
    cpu = scheduler_cpu() - cpu_before if scheduler_cpu else 0.0
    return Workload(results=results, wall_s=wall, scheduler_cpu_s=cpu, futures=futures)


#: The ways a user submits the workload, as the report names them.
MODES = {"map": "client.map", "submit": "client.submit loop"}


def run(
    label: str,
    n_tasks: int,
    *,
    n_workers: int = 2,
    plugin: bool,
    progress: bool = True,
    process: Callable[[Any], Any] | None = None,
    modes: Sequence[str] = MODES,
) -> dict[str, RunResult]:
    """Starts a fresh cluster (plugin on the scheduler only, or stock) and runs the workload
    once per mode (``"map"``, ``"submit"``), one after the other; results by mode."""
    from ferropickle import dask as ferro_dask

    process = process or script_function()
    paths = seed_paths(n_tasks)
    preload = ["ferropickle.dask"] if plugin else []
    out = {}
    # The workers cannot import ferropickle in either run: the scheduler's messages are read by
    # stock pickle (and cloudpickle), as on workers where it is not installed.
    with ProcessCluster(
        n_workers, scheduler_preload=preload, workers_without_ferropickle=True
    ) as cluster:
        # Results come straight from the workers (both runs alike): routed through the scheduler
        # they would add its CPU for moving data, which is not what this demo measures.
        client = cluster.client(direct_to_workers=True)
        try:
            kept = []
            for mode in modes:
                before = ferro_dask.stats(client) if plugin else {}
                work = run_workload(
                    client,
                    process,
                    paths,
                    scheduler_cpu=cluster.scheduler_cpu,
                    label=f"{label} ({MODES[mode]})",
                    progress=progress,
                    mode=mode,
                )
                kept.append(work)
                # Read afterwards in the stock run too (it imports ferropickle.dask there, but
                # the workload is over): it proves the stock scheduler really was stock.
                after = ferro_dask.stats(client)
                out[mode] = RunResult(
                    label=label,
                    n_tasks=n_tasks,
                    wall_s=work.wall_s,
                    scheduler_cpu_s=work.scheduler_cpu_s,
                    results=work.results,
                    scheduler_stats=_stats_delta(before, after),
                )
        finally:
            client.close()
    return out


def message_sizes(process: Callable[[Any], Any]) -> tuple[int, int]:
    """Bytes of one task's ``run_spec`` as the scheduler pickles it: (stock, ferropickle).

    The sample has the shape ``client.map`` gives each task: ``Task(key, process, Path)``.
    """
    from dask._task_spec import Task

    import ferropickle
    from ferropickle.dask._patching import STOCK_DUMPS

    sample = Task("process-0", process, seed_paths(1)[0])
    # distributed's own function, kept before any install: stock even if a caller installed
    # the plugin in this process.
    return len(STOCK_DUMPS(sample)), len(ferropickle.dumps(sample))


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us"


def table(
    stock: RunResult,
    ours: RunResult,
    sizes: tuple[int, int],
    n_workers: int,
    mode: str = "map",
) -> str:
    """The demo's report for one mode: the two runs side by side, with ratios (ours / stock)."""
    same = stock.results == ours.results
    rows = [
        ("scheduler CPU per task", _us(stock.cpu_per_task_s), _us(ours.cpu_per_task_s),
         f"{ours.cpu_per_task_s / stock.cpu_per_task_s:.2f}x"),
        ("scheduler CPU, whole run", f"{stock.scheduler_cpu_s:.2f} s",
         f"{ours.scheduler_cpu_s:.2f} s",
         f"{ours.scheduler_cpu_s / stock.scheduler_cpu_s:.2f}x"),
        ("tasks per second", f"{stock.tasks_per_s:,.0f}", f"{ours.tasks_per_s:,.0f}",
         f"{ours.tasks_per_s / stock.tasks_per_s:.2f}x"),
        ("wall time", f"{stock.wall_s:.1f} s", f"{ours.wall_s:.1f} s",
         f"{ours.wall_s / stock.wall_s:.2f}x"),
        ("bytes per task message", f"{sizes[0]:,}", f"{sizes[1]:,}",
         f"{sizes[1] / sizes[0]:.2f}x"),
        ("results identical", "", "",
         f"yes ({len(ours.results):,}/{len(stock.results):,})" if same else "NO"),
    ]  # fmt: skip
    lines = [
        f"seed workload, {MODES[mode]}: {stock.n_tasks:,} tasks of process(path), process"
        f" defined in __main__; scheduler in its own process (--preload ferropickle.dask in the"
        f" ferropickle run), {n_workers} worker processes that cannot import ferropickle",
        "",
        f"{'':<26} {'stock':>14} {'ferropickle':>14} {'ratio':>12}",
    ]
    lines += [f"{name:<26} {a:>14} {b:>14} {r:>12}" for name, a, b, r in rows]
    s = ours.scheduler_stats
    cpu = ours.scheduler_cpu_s or float("nan")
    dumps_s, loads_s = s.get("dumps_ns", 0) / 1e9, s.get("loads_ns", 0) / 1e9
    n_dumps, n_loads = s.get("dumps_calls", 0), s.get("loads_calls", 0)
    fallbacks = sum(s.get("dumps_fallbacks", {}).values()) + sum(
        s.get("loads_fallbacks", {}).values()
    )
    lines += [
        "",
        f"Inside ferropickle on the plugin run's scheduler (installed={s.get('installed')}): "
        f"{(dumps_s + loads_s) * 1e3:,.0f} ms = {(dumps_s + loads_s) / cpu:.1%} of its CPU",
        f"  dumps: {n_dumps:,} calls, {dumps_s * 1e3:,.1f} ms "
        f"({dumps_s / max(n_dumps, 1) * 1e6:,.1f} us each) = {dumps_s / cpu:.1%}",
        f"  loads: {n_loads:,} calls, {loads_s * 1e3:,.1f} ms = {loads_s / cpu:.1%} (the graph; "
        "includes importing numpy/pandas for the function's globals, which stock pays too)",
        f"  by-value functions written: {s.get('objects_by_value', 0):,};"
        f" fallbacks to distributed's pickle: {fallbacks:,}",
    ]
    if stock.scheduler_stats.get("installed"):
        lines.append("WARNING: the stock run's scheduler had ferropickle installed (check config)")
    return "\n".join(lines)


def main(n_tasks: int, n_workers: int = 2, progress: bool = True) -> int:
    """Runs the demo and prints the report; exit status 1 if the results differ."""
    process = script_function()
    print(
        f"Starting a local cluster twice (scheduler + {n_workers} workers, 127.0.0.1): stock, "
        "then with --preload ferropickle.dask on the scheduler only.",
        flush=True,
    )
    stock, ours = (
        run(label, n_tasks, n_workers=n_workers, plugin=plugin, progress=progress, process=process)
        for label, plugin in (("stock", False), ("ferropickle", True))
    )
    sizes = message_sizes(process)
    for mode in MODES:
        print()
        print(table(stock[mode], ours[mode], sizes, n_workers, mode))
    same = all(stock[mode].results == ours[mode].results for mode in MODES)
    return 0 if same else 1
