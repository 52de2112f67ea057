"""What the plugin knows about this process, gathered in one place (`snapshot`) for
`local_stats`, `stats`, the report and the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import distributed

import ferropickle
from ferropickle.dask._accounting import PrefixRow, Reply, total
from ferropickle.dask._hoist import SentOnceRow
from ferropickle.dask._settings import Settings
from ferropickle.dask._state import STATE

if TYPE_CHECKING:
    from distributed import Client

#: What `top_prefixes` can rank by, and the column of `PrefixRow` each means.
SORT_KEYS = {"bytes": "nbytes", "calls": "dumps", "time": "ns", "largest": "largest"}


@dataclass(frozen=True)
class Snapshot:
    """Everything the plugin can tell about this process at one moment."""

    #: `ferropickle.stats()` and `ferropickle.cache_info()`.
    counters: dict[str, Any]
    caches: dict[str, int]
    installed: bool
    #: ``{"dumps": {type name: count}, "loads": {...}}`` of messages distributed's own
    #: function handled.
    fallbacks: dict[str, dict[str, int]]
    settings: Settings
    #: Every task prefix's row (task messages: graph nodes), in the order first seen.
    prefixes: list[tuple[str, PrefixRow]]
    #: The row of every other message type the wrapper pickled (``(dict)``, ...).
    messages: list[tuple[str, PrefixRow]]
    #: The send-once threshold in effect (None: off), and what send-once did per task prefix.
    send_once: int | None
    sent_once: list[tuple[str, SentOnceRow]]
    #: Whether a ``Client`` lives in this process too (a LocalCluster in the user's script):
    #: then its pickles (graphs, run_on_scheduler calls) are among the other messages.
    client_here: bool
    version: str
    distributed_version: str

    @property
    def loads_patched(self) -> bool:
        return self.installed and self.settings.patch_loads


def snapshot() -> Snapshot:
    """The one place that gathers the plugin's state; everything that shows it reads this."""
    try:
        settings = STATE.settings()
    except ValueError:  # a preload refused them; stats must still answer
        settings = Settings.defaults()
    return Snapshot(
        counters=dict(ferropickle.stats()),
        caches=dict(ferropickle.cache_info()),
        installed=STATE.installed,
        fallbacks=STATE.fallbacks.snapshot(),
        settings=settings,
        prefixes=STATE.accounting.tasks(),
        messages=STATE.accounting.messages(),
        send_once=STATE.send_once,
        sent_once=STATE.accounting.sent_once(),
        client_here=any(c.status != "closed" for c in list(distributed.Client._instances)),
        version=ferropickle.__version__,
        distributed_version=distributed.__version__,
    )


def check_sort(sort: str) -> str:
    """The `PrefixRow` column that ``sort`` names; raises ``ValueError`` for anything else."""
    column = SORT_KEYS.get(sort)
    if column is None:
        raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
    return column


def as_dict(row: PrefixRow) -> dict[str, Any]:
    """A row as `stats` shows it: ``{"dumps", "bytes", "seconds", "largest"}``."""
    return {
        "dumps": row.dumps,
        "bytes": row.nbytes,
        "seconds": row.ns / 1e9,
        "largest": row.largest,
    }


def top_prefixes(
    rows: list[tuple[str, PrefixRow]], top: int | None = None, sort: str = "bytes"
) -> dict[str, dict[str, Any]]:
    """The ``top`` rows (all if None) costliest by ``sort``, as ``{prefix: {"dumps",
    "bytes", "seconds", "largest"}}``."""
    column = check_sort(sort)
    ranked = sorted(rows, key=lambda item: getattr(item[1], column), reverse=True)[:top]
    return {prefix: as_dict(row) for prefix, row in ranked}


def sent_once_dict(row: SentOnceRow) -> dict[str, int]:
    """A send-once row as `stats` shows it: ``{"tasks", "parts", "bytes_not_sent_per_task",
    "bytes_sent_once"}``."""
    return {
        "tasks": row.tasks,
        "parts": row.parts,
        "bytes_not_sent_per_task": row.not_sent_per_task,
        "bytes_sent_once": row.sent_once,
    }


def top_sent_once(
    rows: list[tuple[str, SentOnceRow]], top: int | None = None
) -> dict[str, dict[str, int]]:
    """The ``top`` send-once rows (all if None) that kept the most bytes out of task messages."""
    ranked = sorted(rows, key=lambda item: item[1].not_sent_per_task, reverse=True)[:top]
    return {prefix: sent_once_dict(row) for prefix, row in ranked}


def local_stats() -> dict[str, Any]:
    """This process's `ferropickle.stats()` plus the plugin's own counters.

    Adds ``installed`` (bool), ``dumps_fallbacks`` and ``loads_fallbacks`` (``{type name:
    count}`` of messages that went through distributed's own function instead),
    ``distributed_version``, ``version`` (ferropickle's), ``large_pickle_warning`` (bytes, or
    ``None``), ``task_prefixes``: the ``ferropickle.report.top`` task prefixes that sent the
    most bytes, as ``{prefix: {"dumps", "bytes", "seconds", "largest"}}``, costliest first
    (bytes count out-of-band buffers; ``largest`` is the biggest single pickle),
    ``task_messages``: the same four for every task message (graph node) the plugin pickled,
    all prefixes together (what `report` and the ``task_prefix_*`` metrics add up to), and
    ``other_messages``: ``{"(type)": {...}}`` for the messages that are not tasks (the
    plugin's own stats/report replies are not counted anywhere), and ``send_once``:
    ``{"threshold": bytes or None (off), "task_prefixes": {prefix: {"tasks", "parts",
    "bytes_not_sent_per_task", "bytes_sent_once"}}}``, per task prefix whose tasks send-once
    rewrote (the ``ferropickle.report.top`` that kept the most bytes out of their messages):
    the tasks rewritten, the parts replaced by a reference, the pickled size of those parts
    summed over the tasks (what the task messages no longer carry) and the bytes of the pickles
    put in the graphs instead (each content once while the cluster holds it). The hoisted
    pickles themselves are task messages of the prefix ``send-once``.

    ``dumps_calls``, ``dumps_bytes`` and the other counters of `ferropickle.stats()` count
    every call of ``ferropickle.dumps`` in the process, the plugin's or not (sizing pickles
    of `explain`, direct calls), and in-band bytes only.
    """
    now = snapshot()
    out: dict[str, Any] = dict(now.counters)
    out["installed"] = now.installed
    out["dumps_fallbacks"] = now.fallbacks["dumps"]
    out["loads_fallbacks"] = now.fallbacks["loads"]
    out["distributed_version"] = now.distributed_version
    out["version"] = now.version
    out["large_pickle_warning"] = now.settings.large_pickle_warning
    out["task_prefixes"] = top_prefixes(now.prefixes, now.settings.report_top)
    out["task_messages"] = as_dict(total(now.prefixes))
    out["other_messages"] = top_prefixes(now.messages)
    out["send_once"] = {
        "threshold": now.send_once,
        "task_prefixes": top_sent_once(now.sent_once, now.settings.report_top),
    }
    return out


def stats_reply() -> Reply:
    """`local_stats` as the scheduler answers `stats` (not counted by the accounting)."""
    return Reply(local_stats())


def on_scheduler(client: Client, function: Callable[..., Any], *args: Any) -> Any:
    """``client.run_on_scheduler(function, *args)``; a scheduler that cannot import
    ferropickle raises a ``RuntimeError`` that says so and how to enable it, not a bare
    ``ModuleNotFoundError``. With an asynchronous client, an awaitable."""

    def missing(exc: BaseException) -> BaseException:
        if not (isinstance(exc, ImportError) and "ferropickle" in str(exc)):
            return exc
        return RuntimeError(
            f"the scheduler at {client.scheduler.address} does not have ferropickle "
            f"({type(exc).__name__}: {exc}): install ferropickle in the scheduler's environment "
            "and start the scheduler with --preload ferropickle.dask (or "
            "DASK_DISTRIBUTED__SCHEDULER__PRELOAD=ferropickle.dask); its counters are read there"
        )

    try:
        result = client.run_on_scheduler(function, *args)
    except ImportError as exc:
        raise missing(exc) from exc
    if not getattr(client, "asynchronous", False):
        return result

    async def checked() -> Any:
        try:
            return await result
        except ImportError as exc:
            raise missing(exc) from exc

    return checked()


def stats(client: Client | None = None) -> Any:
    """The scheduler's `local_stats` when given a ``Client``, else this process's.

    The fields are `ferropickle.stats()`'s plus ``installed``, ``dumps_fallbacks``,
    ``loads_fallbacks``, ``distributed_version``, ``version``, ``large_pickle_warning``,
    ``task_prefixes``, ``task_messages``, ``other_messages`` and ``send_once`` (see
    `local_stats`). ``installed`` tells whether the scheduler really uses ferropickle. The
    scheduler needs ferropickle importable (as it does to preload it): without it this raises
    a ``RuntimeError`` saying so. With an asynchronous client this returns an awaitable.
    """
    if client is None:
        return local_stats()
    return on_scheduler(client, stats_reply)
