"""What is expensive to send: every ``dumps`` counted per task prefix, and a large pickle
explained in the log once per function."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from dask._task_spec import GraphNode
from dask.utils import format_bytes, key_split

from ferropickle.dask._explain import explain, function_name

logger = logging.getLogger("ferropickle.dask")

#: The row of messages that are not graph nodes (plugin registrations, run_on_scheduler
#: results, ...) is named after their type, in parentheses; this one collects task prefixes
#: beyond ``ferropickle.report.max-prefixes``.
OTHER_PREFIX = "(other)"

#: How many task prefixes are counted apart until the plugin installs with its settings.
_MAX_PREFIXES = 1000


@dataclass(slots=True)
class PrefixRow:
    """What one task prefix cost: its ``dumps`` calls, their bytes (in band plus out of band),
    the nanoseconds they took and the largest single pickle."""

    dumps: int = 0
    nbytes: int = 0
    ns: int = 0
    largest: int = 0

    def copy(self) -> PrefixRow:
        return PrefixRow(self.dumps, self.nbytes, self.ns, self.largest)


class Accounting:
    """The per-prefix rows, and which (prefix, function) pairs were already explained.

    Until `configure` applies the settings (when the plugin installs), no pickle is explained
    and the default number of prefixes is counted apart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, PrefixRow] = {}
        # (prefix, function) pairs whose large pickle was already explained in the log.
        self._warned: set[tuple[str, str]] = set()
        self._type_prefixes: dict[type, str] = {}
        self._threshold: float = float("inf")
        self._max_prefixes = _MAX_PREFIXES

    def configure(self, large_pickle_warning: int | None, max_prefixes: int) -> None:
        self._threshold = float("inf") if large_pickle_warning is None else large_pickle_warning
        self._max_prefixes = max_prefixes

    def _prefix_of(self, x: Any) -> str:
        if isinstance(x, GraphNode):
            # lru-cached in dask; the scheduler has already split this key for its TaskState.
            return key_split(x.key)
        tp = type(x)
        name = self._type_prefixes.get(tp)
        if name is None:
            name = self._type_prefixes.setdefault(tp, f"({tp.__qualname__})")
        return name

    def count(self, x: Any, nbytes: int, elapsed_ns: int) -> None:
        """Counts one pickle of ``x`` against its task prefix; explains it if it is large."""
        prefix = self._prefix_of(x)
        with self._lock:
            row = self._rows.get(prefix)
            if row is None:
                if len(self._rows) >= self._max_prefixes:
                    prefix = OTHER_PREFIX
                row = self._rows.setdefault(prefix, PrefixRow())
            row.dumps += 1
            row.nbytes += nbytes
            row.ns += elapsed_ns
            if nbytes > row.largest:
                row.largest = nbytes
        if nbytes >= self._threshold:
            self._warn_large(x, prefix, nbytes)

    def _warn_large(self, x: Any, prefix: str, nbytes: int) -> None:
        who = (prefix, function_name(x))
        with self._lock:
            if who in self._warned:
                return
            self._warned.add(who)
        try:
            culprit = explain(x)
        except Exception as exc:  # the explanation must never break a dumps
            culprit = f"<{type(x).__name__}> (could not look inside: {type(exc).__name__}: {exc})"
        logger.warning(
            "ferropickle: a %s message of task prefix %r pickled to %s (ferropickle."
            "large-pickle-warning: %s); the biggest part is %s. Logged once per function (%s); "
            "ferropickle.dask.report(client) ranks task prefixes by bytes sent.",
            type(x).__name__,
            prefix,
            format_bytes(nbytes),
            format_bytes(int(self._threshold)),
            culprit,
            who[1],
        )

    def rows(self) -> list[tuple[str, PrefixRow]]:
        """A copy of every row, in the order the prefixes were first seen."""
        with self._lock:
            return [(prefix, row.copy()) for prefix, row in self._rows.items()]

    def reset(self) -> None:
        """Forgets every row and every explained pickle."""
        with self._lock:
            self._rows.clear()
            self._warned.clear()
