"""What is expensive to send: every ``dumps`` counted per task prefix, and a large pickle
explained in the log once per function."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dask._task_spec import GraphNode
from dask.utils import format_bytes, key_split

from ferropickle.dask._explain import explain, function_name
from ferropickle.dask._hoist import SentOnceRow
from ferropickle.dask._settings import describe_size

logger = logging.getLogger("ferropickle.dask")

#: The row that collects task prefixes (or message types) beyond
#: ``ferropickle.report.max-prefixes``.
OTHER_PREFIX = "(other)"

#: How many task prefixes are counted apart until the plugin installs with its settings.
_MAX_PREFIXES = 1000


class Reply(dict):  # type: ignore[type-arg]
    """The plugin's own answer to `stats` / `report`, as the scheduler sends it back: not
    counted (asking must not change the numbers asked for), and read by the client as the
    plain ``dict`` it is."""

    def __reduce__(self) -> tuple[type, tuple[dict]]:  # type: ignore[type-arg]
        return (dict, (dict(self),))


@dataclass(slots=True)
class PrefixRow:
    """What one task prefix (or message type) cost: its ``dumps`` calls, their bytes (in band
    plus out of band), the nanoseconds they took and the largest single pickle."""

    dumps: int = 0
    nbytes: int = 0
    ns: int = 0
    largest: int = 0


def total(rows: list[tuple[str, PrefixRow]]) -> PrefixRow:
    """The rows added up (``largest``: the largest of all)."""
    out = PrefixRow()
    for _, row in rows:
        out.dumps += row.dumps
        out.nbytes += row.nbytes
        out.ns += row.ns
        out.largest = max(out.largest, row.largest)
    return out


class Accounting:
    """Per-task-prefix rows for task messages (graph nodes), per-type rows for every other
    message, and which pickles were already explained.

    The two tables are apart: a message that is not a task never takes a task prefix's slot.
    Until `configure` applies the settings (when the plugin installs), no pickle is explained
    and the default number of prefixes is counted apart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, PrefixRow] = {}
        self._messages: dict[str, PrefixRow] = {}
        self._sent_once: dict[str, SentOnceRow] = {}
        # (prefix or type, function) pairs whose large pickle was already explained in the log.
        self._warned: set[tuple[str, str]] = set()
        self._type_names: dict[type, str] = {}
        self._threshold: float = float("inf")
        self._max_prefixes = _MAX_PREFIXES
        #: What send-once did about a large pickle, for its warning (set by the state).
        self.send_once_verdict: Callable[[Any], str] | None = None

    def configure(self, large_pickle_warning: int | None, max_prefixes: int) -> None:
        self._threshold = float("inf") if large_pickle_warning is None else large_pickle_warning
        self._max_prefixes = max_prefixes

    def count(self, x: Any, nbytes: int, elapsed_ns: int) -> None:
        """Counts one pickle of ``x``: against its task prefix if it is a graph node, else
        against its type; explains it if it is large. The plugin's own replies are skipped."""
        if isinstance(x, GraphNode):
            # lru-cached in dask; the scheduler has already split this key for its TaskState.
            name = key_split(x.key)
            table = self._tasks
        else:
            tp = type(x)
            if tp is Reply:
                return
            name = self._type_names.get(tp)
            if name is None:
                name = self._type_names.setdefault(tp, f"({tp.__qualname__})")
            table = self._messages
        with self._lock:
            row = table.get(name)
            if row is None:
                row = table.setdefault(
                    name if len(table) < self._max_prefixes else OTHER_PREFIX, PrefixRow()
                )
            row.dumps += 1
            row.nbytes += nbytes
            row.ns += elapsed_ns
            if nbytes > row.largest:
                row.largest = nbytes
        if nbytes >= self._threshold:
            self._warn_large(x, name, table is self._tasks, nbytes)

    def _warn_large(self, x: Any, name: str, task: bool, nbytes: int) -> None:
        who = (name, function_name(x))
        with self._lock:
            if who in self._warned:
                return
            self._warned.add(who)
        try:
            culprit = explain(x)
        except Exception as exc:  # the explanation must never break a dumps
            culprit = f"<{type(x).__name__}> (could not look inside: {type(exc).__name__}: {exc})"
        verdict = self.send_once_verdict
        logger.warning(
            "ferropickle: a %s message %s pickled to %s (ferropickle.large-pickle-warning: %s); "
            "the biggest part is %s%s. Logged once per function (%s); "
            "ferropickle.dask.report(client) ranks task prefixes by bytes sent.",
            type(x).__name__,
            f"of task prefix {name!r}" if task else "(not a task)",
            format_bytes(nbytes),
            describe_size(int(self._threshold)),
            culprit,
            f"; {verdict(x)}" if task and verdict is not None else "",
            who[1],
        )

    def count_sent_once(self, rows: dict[str, SentOnceRow]) -> None:
        """Adds what send-once did to one graph, per task prefix of the tasks it rewrote."""
        with self._lock:
            for name, add in rows.items():
                row = self._sent_once.get(name)
                if row is None:
                    row = self._sent_once.setdefault(
                        name if len(self._sent_once) < self._max_prefixes else OTHER_PREFIX,
                        SentOnceRow(),
                    )
                row.tasks += add.tasks
                row.parts += add.parts
                row.not_sent_per_task += add.not_sent_per_task
                row.sent_once += add.sent_once

    def sent_once(self) -> list[tuple[str, SentOnceRow]]:
        """A copy of what send-once did per task prefix, in the order first seen."""
        with self._lock:
            return [(prefix, replace(row)) for prefix, row in self._sent_once.items()]

    def tasks(self) -> list[tuple[str, PrefixRow]]:
        """A copy of every task prefix's row, in the order the prefixes were first seen."""
        with self._lock:
            return [(prefix, replace(row)) for prefix, row in self._tasks.items()]

    def messages(self) -> list[tuple[str, PrefixRow]]:
        """A copy of the row of every other message type, ``(dict)``, ``(LLGExpr)``, ..."""
        with self._lock:
            return [(name, replace(row)) for name, row in self._messages.items()]

    def reset(self) -> None:
        """Forgets every row and every explained pickle."""
        with self._lock:
            self._tasks.clear()
            self._messages.clear()
            self._sent_once.clear()
            self._warned.clear()
