"""The safety valve's bookkeeping: what ferropickle refused and distributed's own pickle handled,
counted per type and logged once per type."""

from __future__ import annotations

import logging
import threading
from collections import Counter

logger = logging.getLogger("ferropickle.dask")


class Fallbacks:
    """``{direction: {key: count}}`` of messages that went through distributed's own function."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {"dumps": Counter(), "loads": Counter()}

    def count(self, direction: str, key: str, exc: BaseException) -> None:
        """Counts a fallback; logs the first one per (direction, key) so a hot loop can't spam.

        ``key`` is the type name of the object being pickled (dumps), or of the exception
        ferropickle raised (loads, where there is no object yet).
        """
        with self._lock:
            counter = self._counts[direction]
            first = key not in counter
            counter[key] += 1
        if first:
            text = str(exc)
            if len(text) > 500:
                text = text[:500] + "..."
            what = f"pickle a {key}" if direction == "dumps" else "unpickle a message"
            logger.warning(
                "ferropickle could not %s, so distributed's own %s handled it (%s: %s). "
                "Logged once per type; ferropickle.dask.stats() counts every fallback.",
                what,
                direction,
                type(exc).__name__,
                text,
            )

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of the counts: ``{"dumps": {type name: count}, "loads": {...}}``."""
        with self._lock:
            return {direction: dict(counter) for direction, counter in self._counts.items()}
