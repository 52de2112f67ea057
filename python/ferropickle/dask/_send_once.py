"""Send it once, on the scheduler: every graph it receives is rewritten by `_hoist` so that a
large part shared by many tasks reaches each worker once, not once per task.

Every graph a client submits becomes tasks in ``distributed.scheduler._materialize_graph``
(called for each ``update_graph``, on the scheduler's offload thread). While installed, this
module wraps that function (`hoist` rewrites the scheduler's own unpickled copy of the graph)
and ``Scheduler._set_priorities`` (a hoisted key gets the best priority of its dependents).

Dask itself then sends the bytes to one worker with the ``DataNode``, lets the others fetch
them peer to peer, spills them and recomputes them if a worker dies; workers need nothing but
Dask. The scheduler keeps each such key wanted (by the pseudo-client `HOLDER`) a few seconds
beyond the last task waiting for it (`GRACE_S`), so the same content submitted again meanwhile
is found by its key (the scheduler keeps the task it has) instead of being sent again.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from importlib import import_module
from typing import Any

from dask.utils import format_bytes
from distributed.core import Status
from tornado.ioloop import PeriodicCallback

from ferropickle.dask._hoist import Hoisted, hoist, is_send_once_key
from ferropickle.dask._state import STATE

logger = logging.getLogger("ferropickle.dask")

_scheduler_module = import_module("distributed.scheduler")

#: The name under which the scheduler wants the hoisted keys (as ``fire-and-forget`` wants the
#: keys of fire-and-forget futures), and of the periodic callback that lets them go.
HOLDER = "ferropickle-send-once"
_SWEEP_MS = 500
#: How long a hoisted key stays in memory once no task waits for it any more (while tasks that
#: depend on it still exist): long enough for the next call of a ``client.submit`` loop to find
#: it, short enough that workers don't keep it along with results that are kept for long.
GRACE_S = 5.0
_CLOSED = (Status.closing, Status.closed, Status.failed)


def _materialize_graph(*args: Any, **kwargs: Any) -> Any:
    original = _original("_materialize_graph")
    dsk, annotations = original(*args, **kwargs)
    threshold = STATE.send_once
    if threshold is None or not dsk:
        return dsk, annotations
    try:
        result = hoist(dsk, threshold, STATE.seen, _known_to_a_scheduler())
    except Exception:  # the graph is still the user's: never fail a submission over this
        logger.exception("ferropickle send-once: could not examine a graph; it is sent as is")
        return dsk, annotations
    if result.rows:
        STATE.accounting.count_sent_once(result.per_prefix)
        # Once per graph that hoists something new; a graph reusing what an earlier one hoisted
        # (each call of a client.submit loop) at debug level, put together only if logged.
        level = logging.INFO if result.new else logging.DEBUG
        if logger.isEnabledFor(level):
            _log(level, result)
    return result.dsk, annotations


def _log(level: int, result: Hoisted) -> None:
    parts = result.parts
    _key, _size, n, path = parts[0]
    tasks = sum(row.tasks for row in result.per_prefix.values())
    prefixes = sorted(result.per_prefix)
    named = ", ".join(prefixes[:3]) + (
        f" and {len(prefixes) - 3} more" if len(prefixes) > 3 else ""
    )
    logger.log(
        level,
        "ferropickle send-once: %d part(s), %s in all, sent once per worker instead of "
        "with each of %d task(s) of %s; largest %s, shared by %d task(s)",
        len(parts),
        format_bytes(result.total),
        tasks,
        named,
        path,
        n,
    )


def _known_to_a_scheduler() -> Callable[[Any], bool]:
    """Whether a scheduler of this process has a task for a key (read from the offload thread:
    dict lookups; a key created or forgotten meanwhile only changes what is hoisted). The
    schedulers are listed once per graph, not once per task."""
    tables = [scheduler.tasks for scheduler in list(_scheduler_module.Scheduler._instances)]
    if len(tables) == 1:
        return tables[0].__contains__
    return lambda key: any(key in tasks for tasks in tables)


def _set_priorities(self: Any, *args: Any, **kwargs: Any) -> None:
    """After the scheduler's own: gives a hoisted key that the client's priorities don't name
    (``client.submit`` and ``client.map`` send priorities for their own keys only) the best
    priority of the tasks that need it, so it runs first (the scheduler requires every task it
    sends to have one), and keeps it wanted while it has dependents (see `_hold`)."""
    _original("_set_priorities")(self, *args, **kwargs)
    tasks = kwargs["tasks"] if "tasks" in kwargs else args[-1]
    ours = []
    for ts in tasks:
        if is_send_once_key(ts.key):
            ours.append(ts.key)
            if ts.priority is None:
                priorities = [dts.priority for dts in ts.dependents if dts.priority is not None]
                if priorities:
                    ts.priority = min(priorities)
    if ours:
        _hold(self, ours)


def _hold(scheduler: Any, keys: list[Any]) -> None:
    """Keeps ``keys`` in memory a little beyond their last waiting task: Dask would release a
    hoisted pickle as soon as the tasks submitted so far had run, and a ``client.submit`` loop
    would then send it again with almost every call. A periodic sweep lets each go once no task
    has waited for it for `GRACE_S` seconds, and at once when its last dependent is forgotten
    (released by its client, cancelled, or cleared by ``client.restart()``)."""
    scheduler.client_desires_keys(keys=keys, client=HOLDER)
    if HOLDER not in scheduler.periodic_callbacks:
        callback = _Sweep(scheduler)
        scheduler.periodic_callbacks[HOLDER] = callback
        callback.start()


class _Sweep(PeriodicCallback):
    """The periodic `_sweep` of one scheduler. A server stops its periodic callbacks when it
    closes, and only then: stopping lets go of the pickles kept for recognition whose keys no
    other scheduler of this process has (a ``LocalCluster`` closed while the plugin stays
    installed must not keep them until `uninstall`). A scheduler plugin's ``close`` would do
    the same, but the scheduler calls every plugin on every transition of every task."""

    def __init__(self, scheduler: Any) -> None:
        super().__init__(functools.partial(_sweep, scheduler, {}), _SWEEP_MS)
        self.scheduler = scheduler

    def stop(self) -> None:
        super().stop()
        others = [
            other
            for other in list(_scheduler_module.Scheduler._instances)
            if other is not self.scheduler and other.status not in _CLOSED
        ]
        STATE.seen.forget_unless(lambda key: any(key in other.tasks for other in others))


def _sweep(scheduler: Any, idle_since: dict[Any, float]) -> None:
    holder = scheduler.clients.get(HOLDER)
    if holder is not None and holder.wants_what:
        now = time.monotonic()
        done = []
        for ts in holder.wants_what:
            if STATE.send_once is None or not ts.dependents:
                done.append(ts.key)
            elif ts.waiters:
                idle_since.pop(ts.key, None)
            elif now - idle_since.setdefault(ts.key, now) >= GRACE_S:
                done.append(ts.key)
        if done:
            for key in done:
                idle_since.pop(key, None)
            scheduler.client_releases_keys(
                keys=done, client=HOLDER, stimulus_id=f"{HOLDER}-release-{time.time()}"
            )
    if len(idle_since) > len(holder.wants_what if holder is not None else ()):
        wanted = {ts.key for ts in holder.wants_what} if holder is not None else set()
        for key in [key for key in idle_since if key not in wanted]:
            del idle_since[key]
    # What the scheduler forgot is sent again if it comes again; the pickle is let go.
    STATE.seen.forget_unless(scheduler.tasks.__contains__)


#: What `install` puts in the place of distributed's functions, by name.
_REPLACEMENTS: dict[str, Any] = {
    "_materialize_graph": _materialize_graph,
    "_set_priorities": _set_priorities,
}


def layout_problem() -> str | None:
    """What about distributed's scheduler does not look as send-once expects, if anything."""
    original = getattr(_scheduler_module, "_materialize_graph", None)
    if not callable(original):
        return "distributed.scheduler._materialize_graph is missing"
    try:
        params = list(inspect.signature(original).parameters)
    except (TypeError, ValueError):
        return "distributed.scheduler._materialize_graph has no signature"
    if params[:1] != ["expr"]:
        return f"distributed.scheduler._materialize_graph takes {params}"
    priorities = getattr(_scheduler_module.Scheduler, "_set_priorities", None)
    if priorities is None or "tasks" not in inspect.signature(priorities).parameters:
        return "distributed.scheduler.Scheduler._set_priorities has changed"
    return None


def _original(name: str) -> Any:
    for _owner, patched, original in STATE.send_once_patches:
        if patched == name:
            return original
    # Uninstalled while a call was under way: distributed's own is in place again.
    owner = _scheduler_module if name == "_materialize_graph" else _scheduler_module.Scheduler
    return getattr(owner, name)


def install(threshold: int) -> bool:
    """Hoists parts of at least ``threshold`` bytes out of every graph this process's scheduler
    receives; returns whether that is now the case (False, with a warning in the log, if the
    installed distributed is not laid out as this module expects). Idempotent; a new threshold
    replaces the old. Called by the plugin's install (with ``STATE.lock`` held)."""
    if not STATE.send_once_patches:
        problem = layout_problem()
        if problem is not None:
            logger.warning("ferropickle send-once is off: %s", problem)
            return False
        scheduler_class = _scheduler_module.Scheduler
        STATE.send_once_patches = [
            (_scheduler_module, "_materialize_graph", _scheduler_module._materialize_graph),
            (scheduler_class, "_set_priorities", scheduler_class._set_priorities),
        ]
        for owner, name, _original in STATE.send_once_patches:
            setattr(owner, name, _REPLACEMENTS[name])
    STATE.send_once = threshold
    return True


def uninstall() -> None:
    """Puts distributed's functions back; idempotent. Graphs already rewritten keep their
    hoisted keys, which Dask releases with their last dependent as usual."""
    for owner, name, original in reversed(STATE.send_once_patches):
        if owner.__dict__.get(name) is _REPLACEMENTS[name]:
            setattr(owner, name, original)
    STATE.send_once_patches = []
    STATE.send_once = None
    STATE.seen.clear()
