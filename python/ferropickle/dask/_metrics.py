"""Prometheus: the plugin's counters at the scheduler's ``/metrics``, read from `snapshot` at
scrape time (the metrics never own any state)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import dask.config

from ferropickle.dask._accounting import PrefixRow
from ferropickle.dask._hoist import SentOnceRow
from ferropickle.dask._stats import snapshot

logger = logging.getLogger("ferropickle.dask")

_EVERY_CALL = (
    "every call in this process, the plugin's messages and any other (explain's sizing, direct "
    "calls)"
)
#: What each counter of `ferropickle.stats()` counts, as its help text says.
_COUNTER_HELP = {
    "dumps_calls": f"Calls of ferropickle.dumps: {_EVERY_CALL}; the plugin's messages alone "
    "are the task_prefix_* and other_message_* metrics",
    "dumps_errors": "Calls of ferropickle.dumps that raised (for the plugin's messages, "
    "distributed's own dumps then wrote them: see fallbacks)",
    "dumps_bytes": f"Bytes ferropickle.dumps returned, in band only: {_EVERY_CALL}",
    "dumps_ns": f"Time spent inside ferropickle.dumps (estimated: one call in 8, picked at "
    f"random, is timed and counts 8 times): {_EVERY_CALL}",
    "objects_native": "Objects ferropickle.dumps wrote natively, without calling Python code",
    "objects_reduced": "Objects ferropickle.dumps wrote through __reduce_ex__ or a reducer",
    "objects_by_value": "Functions and classes ferropickle.dumps pickled by value",
    "loads_calls": "Calls of ferropickle.loads in this process",
    "loads_errors": "Calls of ferropickle.loads that raised (for the plugin's messages, "
    "distributed's own loads then read them: see fallbacks)",
    "loads_bytes": "Bytes of pickle streams ferropickle.loads read",
    "loads_ns": "Time spent inside ferropickle.loads (estimated: one call in 8, picked at random, "
    "is timed and counts 8 times)",
}
_CACHE_HELP = {
    "globals": "By-reference/by-value decisions ferropickle.dumps remembers for live objects",
    "code_objects": "Code objects whose global names ferropickle.dumps remembers",
    "code_segments": "Code objects whose encoded arguments ferropickle.dumps keeps",
}


class _Collector:
    """Exposes the plugin's state to prometheus_client, read at scrape time.

    Names are ``<namespace>_ferropickle_*``, with distributed's
    ``distributed.dashboard.prometheus.namespace`` (``dask`` by default), so they sit next to
    ``<namespace>_scheduler_*``.
    """

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = snapshot()
        namespace = dask.config.get("distributed.dashboard.prometheus.namespace", "dask")
        base = f"{namespace}_ferropickle" if namespace else "ferropickle"
        info = GaugeMetricFamily(
            f"{base}_info",
            "Always 1; labels: ferropickle's and distributed's versions",
            labels=["version", "distributed_version"],
        )
        info.add_metric([now.version, now.distributed_version], 1)
        yield info
        yield GaugeMetricFamily(
            f"{base}_installed",
            "1 while ferropickle.dask replaces distributed's pickle dumps in this process",
            value=float(now.installed),
        )
        yield GaugeMetricFamily(
            f"{base}_loads_patched",
            "1 while ferropickle.dask replaces distributed's pickle loads too "
            "(setting ferropickle.patch-loads)",
            value=float(now.loads_patched),
        )
        threshold = now.settings.large_pickle_warning
        yield GaugeMetricFamily(
            f"{base}_large_pickle_warning_bytes",
            "Setting ferropickle.large-pickle-warning: a single pickle this large logs a "
            "warning naming its biggest part (0: off)",
            value=float(threshold or 0),
        )
        yield GaugeMetricFamily(
            f"{base}_send_once_threshold_bytes",
            "Setting ferropickle.send-once.threshold in effect: a part shared by tasks whose "
            "pickle is this large is pickled once and sent once per worker (0: off)",
            value=float(now.send_once or 0),
        )
        for key, value in now.counters.items():
            help_text = _COUNTER_HELP.get(key, f"ferropickle.stats()[{key!r}]")
            if key == "native_writers":
                writers = GaugeMetricFamily(
                    f"{base}_native_writer",
                    "Whether ferropickle's native writer for this type is active on this "
                    "Python (1), or the type goes through __reduce_ex__ (0)",
                    labels=["writer"],
                )
                for writer, active in value.items():
                    writers.add_metric([writer], float(active))
                yield writers
                continue
            if not isinstance(value, int):
                continue
            if key.endswith("_ns"):
                yield CounterMetricFamily(
                    f"{base}_{key[:-3]}_seconds", help_text, value=value / 1e9
                )
            else:
                yield CounterMetricFamily(f"{base}_{key}", help_text, value=value)
        for key, value in now.caches.items():
            yield GaugeMetricFamily(
                f"{base}_cache_{key}_entries",
                _CACHE_HELP.get(key, f"ferropickle.cache_info()[{key!r}]") + " (current size)",
                value=float(value),
            )
        fallbacks = CounterMetricFamily(
            f"{base}_fallbacks",
            "Messages ferropickle refused that distributed's own pickle handled, by type",
            labels=["direction", "type"],
        )
        for direction, counts in now.fallbacks.items():
            for typename, count in counts.items():
                fallbacks.add_metric([direction, typename], count)
        yield fallbacks
        yield from _rows(
            base,
            "task_prefix",
            "task messages (graph nodes) the plugin pickled, by task prefix",
            "task_prefix_name",
            now.prefixes,
        )
        yield from _rows(
            base,
            "other_message",
            "messages that are not tasks the plugin pickled, by type (its own stats/report "
            "replies are not counted)",
            "message_type",
            now.messages,
        )
        yield from _send_once_rows(base, now.sent_once)


def _rows(
    base: str, name: str, what: str, label: str, rows: list[tuple[str, PrefixRow]]
) -> Iterator[Any]:
    """The dumps, bytes and seconds counters of one table of the accounting."""
    from prometheus_client.core import CounterMetricFamily

    columns = (
        ("dumps", f"Pickles of {what}", "dumps", 1),
        (
            "dumps_bytes",
            f"Bytes of pickles of {what}, out-of-band buffers included",
            "nbytes",
            1,
        ),
        ("dumps_seconds", f"Time spent pickling {what}", "ns", 1e-9),
    )
    for suffix, help_text, column, scale in columns:
        family = CounterMetricFamily(f"{base}_{name}_{suffix}", help_text, labels=[label])
        for key, row in rows:
            family.add_metric([key], getattr(row, column) * scale)
        yield family


#: The send-once counters, by task prefix of the tasks rewritten: (suffix, help, column).
_SEND_ONCE = (
    (
        "tasks",
        "Tasks send-once rewrote so that a large part they shared is read from a key sent "
        "once per worker instead of carried in their own message, by task prefix",
        "tasks",
    ),
    (
        "parts",
        "Parts of tasks send-once replaced by a reference to a key sent once per worker (a "
        "task with two such parts counts two), by task prefix",
        "parts",
    ),
    (
        "bytes_not_sent_per_task",
        "Bytes the task messages no longer carry because send-once replaced a shared part by "
        "a reference: the pickled size of each replaced part, summed over the tasks, by task "
        "prefix",
        "not_sent_per_task",
    ),
    (
        "bytes_sent_once",
        "Bytes of the pickles send-once put in the graphs instead of the replaced parts, each "
        "content once while the cluster holds it (Dask sends it to one worker, the others "
        "fetch it from there), by task prefix of the first task that read it",
        "sent_once",
    ),
)


def _send_once_rows(base: str, rows: list[tuple[str, SentOnceRow]]) -> Iterator[Any]:
    """What send-once did, per task prefix (`stats`' ``send_once`` and the report's table)."""
    from prometheus_client.core import CounterMetricFamily

    for suffix, help_text, column in _SEND_ONCE:
        family = CounterMetricFamily(
            f"{base}_send_once_{suffix}", help_text, labels=["task_prefix_name"]
        )
        for key, row in rows:
            family.add_metric([key], getattr(row, column))
        yield family


def register_prometheus() -> _Collector | None:
    try:
        from prometheus_client import REGISTRY
    except ImportError:
        return None
    collector = _Collector()
    try:
        REGISTRY.register(collector)
    except ValueError:  # another collector already exposes these names in this process
        logger.info("ferropickle.dask: ferropickle metrics are already registered")
        return None
    return collector


def unregister_prometheus(collector: _Collector) -> None:
    from prometheus_client import REGISTRY

    REGISTRY.unregister(collector)
