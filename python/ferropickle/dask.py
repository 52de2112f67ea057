"""Dask distributed integration: make a scheduler (or any dask process) pickle with ferropickle.

Enable it without changing the user's program, as a distributed preload::

    dask scheduler --preload ferropickle.dask
    # or ~/.config/dask/distributed.yaml: {distributed: {scheduler: {preload: [ferropickle.dask]}}}
    # or DASK_DISTRIBUTED__SCHEDULER__PRELOAD=ferropickle.dask
    # workers too (optional): dask worker --preload ferropickle.dask, distributed.worker.preload

or in-process with :func:`install` / :func:`uninstall`.

Installing replaces ``distributed.protocol.pickle.dumps`` / ``loads`` (which every task message,
the ``ToPickle`` path of ``distributed.protocol.core`` and the "pickle" serialization family call
through the module attribute) and the copies that modules such as ``distributed.scheduler`` and
``distributed.client`` imported by name. The replacements are call-compatible, write standard
pickle streams (so workers with nothing installed read them) and fall back to distributed's own
function for any object ferropickle refuses, so a task never fails because of the plugin.

Importing this module also registers the ``"ferropickle"`` serialization family, so data can be
sent with ``serializers=[..., "ferropickle", ...]``; both ends need this module imported.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from importlib import import_module
from pickle import PickleBuffer
from types import ModuleType
from typing import TYPE_CHECKING, Any

import distributed
from distributed.utils import ensure_memoryview

import ferropickle

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "FAMILY",
    "VERIFIED_VERSIONS",
    "UnsupportedLayoutWarning",
    "dask_setup",
    "dask_teardown",
    "dumps",
    "install",
    "installed",
    "loads",
    "local_stats",
    "stats",
    "uninstall",
]

logger = logging.getLogger("ferropickle.dask")

# By module path: `distributed.protocol.serialize` is also the name of a function that
# `distributed.protocol` re-exports, which shadows the submodule as an attribute.
_dpickle = import_module("distributed.protocol.pickle")
_dcore = import_module("distributed.protocol.core")
_dserialize = import_module("distributed.protocol.serialize")

#: The name of the serialization family registered with distributed on import.
FAMILY = "ferropickle"

#: distributed versions whose source this module was checked against. Other versions are
#: installed into only if their layout passes the same checks (see `_layout_problem`).
VERIFIED_VERSIONS = frozenset({"2026.8.0"})

#: Only modules of these packages get their by-name imports of ``dumps``/``loads`` patched: a
#: user module that copied distributed's function keeps what it chose.
_PATCHED_PACKAGES = ("distributed", "dask")

# distributed's own functions, captured before anything here could replace them. They are the
# fallback for every object ferropickle refuses and what `uninstall` puts back.
_STOCK_DUMPS: Callable[..., bytes] = _dpickle.dumps
_STOCK_LOADS: Callable[..., Any] = _dpickle.loads
_HIGHEST_PROTOCOL: int = _dpickle.HIGHEST_PROTOCOL

_ferro_dumps = ferropickle.dumps
_ferro_loads = ferropickle.loads


class UnsupportedLayoutWarning(RuntimeWarning):
    """The installed distributed does not look like one ferropickle.dask knows how to patch.

    Issued by `install` (and so by the preload), which then leaves distributed's stock
    behaviour in place.
    """


# --------------------------------------------------------------------------------------------
# Fallback bookkeeping
# --------------------------------------------------------------------------------------------

_lock = threading.RLock()
_fallbacks: dict[str, Counter[str]] = {"dumps": Counter(), "loads": Counter()}


def _typename(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def _fell_back(direction: str, key: str, exc: BaseException) -> None:
    """Counts a fallback; logs the first one per (direction, key) so a hot loop can't spam.

    ``key`` is the type name of the object being pickled (dumps), or of the exception ferropickle
    raised (loads, where there is no object yet).
    """
    with _lock:
        counter = _fallbacks[direction]
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


# --------------------------------------------------------------------------------------------
# The replacements for distributed.protocol.pickle.dumps / loads
# --------------------------------------------------------------------------------------------


def dumps(
    x: Any,
    *,
    buffer_callback: Callable[[PickleBuffer], Any] | None = None,
    protocol: int | None = _HIGHEST_PROTOCOL,
) -> bytes:
    """``distributed.protocol.pickle.dumps``, written by ferropickle.

    Same signature and semantics as distributed's: protocol 5 by default, and out-of-band
    buffers are handed to ``buffer_callback`` only for protocol 5 (below it they stay in band,
    as distributed does). If ferropickle raises, the object goes through distributed's own
    ``dumps`` instead (counted, logged once per type); out-of-band buffers from the failed
    attempt are dropped, never passed on.
    """
    protocol = protocol or _HIGHEST_PROTOCOL
    if buffer_callback is None or protocol < 5:
        try:
            return _ferro_dumps(x, protocol)
        except Exception as exc:
            failure = exc
    else:
        # Buffers are collected here and passed on only once the whole object has been
        # written: a failed attempt must not leave stray frames in the caller's message.
        buffers: list[PickleBuffer] = []
        try:
            result = _ferro_dumps(x, protocol, buffer_callback=buffers.append)
        except Exception as exc:
            failure = exc
        else:
            for buffer in buffers:
                buffer_callback(buffer)
            return result
    _fell_back("dumps", _typename(type(x)), failure)
    del failure  # don't keep the traceback (and its frames' objects) alive during the retry
    # Outside the `except` block, so an error from distributed is not chained onto ours.
    return _STOCK_DUMPS(x, buffer_callback=buffer_callback, protocol=protocol)


def loads(x: Any, *, buffers: Iterable[Any] = ()) -> Any:
    """``distributed.protocol.pickle.loads``, read by ferropickle.

    If ferropickle raises, distributed's own ``loads`` reads the data instead (counted per
    exception type, logged once); if that fails too, its exception is the one raised.
    """
    if buffers and not isinstance(buffers, (list, tuple)):
        buffers = list(buffers)  # a second attempt needs them again
    try:
        if buffers:
            return _ferro_loads(x, buffers=buffers)
        return _ferro_loads(x)
    except Exception as exc:
        failure = exc
    result = _STOCK_LOADS(x, buffers=buffers)
    _fell_back("loads", type(failure).__name__, failure)
    return result


# --------------------------------------------------------------------------------------------
# The "ferropickle" serialization family (mirrors distributed's "pickle" family)
# --------------------------------------------------------------------------------------------


def _family_dumps(
    x: Any, context: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[Any]]:
    frames: list[Any] = [None]
    writeable: list[bool] = []

    def buffer_callback(buffer: PickleBuffer) -> None:
        view = memoryview(buffer)
        frames.append(view)
        # Recorded so the reader can restore each buffer's writeability, as "pickle" does.
        writeable.append(not view.readonly)

    frames[0] = dumps(
        x,
        buffer_callback=buffer_callback,
        protocol=context.get("pickle-protocol", None) if context else None,
    )
    return {"serializer": FAMILY, "writeable": tuple(writeable)}, frames


def _family_loads(header: dict[str, Any], frames: list[Any]) -> Any:
    buffers = []
    for frame, writeable in zip(frames[1:], header["writeable"], strict=True):
        view = ensure_memoryview(frame)
        if writeable and view.readonly:
            view = memoryview(bytearray(view))  # the sender's buffer was writeable: copy
        elif not writeable and not view.readonly:
            view = view.toreadonly()
        buffers.append(view)
    return loads(frames[0], buffers=buffers)


_dserialize.register_serialization_family(FAMILY, _family_dumps, _family_loads)


# --------------------------------------------------------------------------------------------
# install / uninstall
# --------------------------------------------------------------------------------------------

_installed = False
# Whether `install()` was called directly (as opposed to only through preloads).
_explicit = False
# The servers whose preload installed us; the last one's teardown uninstalls.
_preload_servers: set[int] = set()
# (module, attribute, value before install) for every attribute `install` replaced.
_patches: list[tuple[ModuleType, str, Any]] = []
_collector: Any = None


def _parameters(fn: Callable[..., Any]) -> list[tuple[str, Any]] | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [(p.name, p.kind) for p in params]


_POK = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KW = inspect.Parameter.KEYWORD_ONLY


def _layout_problem() -> str | None:
    """What about the installed distributed does not match the layout verified, if anything."""
    if getattr(_STOCK_DUMPS, "__module__", None) != "distributed.protocol.pickle":
        return "distributed.protocol.pickle.dumps was already replaced before ferropickle.dask"
    if getattr(_STOCK_LOADS, "__module__", None) != "distributed.protocol.pickle":
        return "distributed.protocol.pickle.loads was already replaced before ferropickle.dask"
    if _parameters(_STOCK_DUMPS) != [("x", _POK), ("buffer_callback", _KW), ("protocol", _KW)]:
        return f"distributed.protocol.pickle.dumps has signature {inspect.signature(_STOCK_DUMPS)}"
    if _parameters(_STOCK_LOADS) != [("x", _POK), ("buffers", _KW)]:
        return f"distributed.protocol.pickle.loads has signature {inspect.signature(_STOCK_LOADS)}"
    # Task messages (`ToPickle(run_spec)`) and the "pickle" family reach dumps/loads through
    # the module attribute; if either stopped doing so, patching it would miss them.
    if getattr(_dcore, "pickle", None) is not _dpickle:
        return "distributed.protocol.core no longer uses distributed.protocol.pickle"
    if getattr(_dserialize, "pickle", None) is not _dpickle:
        return "distributed.protocol.serialize no longer uses distributed.protocol.pickle"
    return None


def _package_modules_holding(
    functions: dict[str, Callable[..., Any]],
) -> Iterator[tuple[ModuleType, str]]:
    """(module, name) for each dask/distributed module whose ``name`` is ``functions[name]``."""
    for module_name, module in list(sys.modules.items()):
        if module is _dpickle or module_name.partition(".")[0] not in _PATCHED_PACKAGES:
            continue
        # The namespace itself, not getattr(module, name): a lazy module's `__getattr__` could
        # import things (or fail) just because we looked.
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, function in functions.items():
            if namespace.get(name) is function:
                yield module, name


def _install() -> bool:
    global _installed, _collector
    if _installed:
        return True
    problem = _layout_problem()
    if problem is not None:
        warnings.warn(
            f"ferropickle.dask is not installed: {problem} (distributed "
            f"{distributed.__version__}; verified with {', '.join(sorted(VERIFIED_VERSIONS))}). "
            "Dask keeps its stock pickling.",
            UnsupportedLayoutWarning,
            stacklevel=3,
        )
        return False
    if distributed.__version__ not in VERIFIED_VERSIONS:
        logger.info(
            "ferropickle.dask: distributed %s was not verified (verified: %s), but its layout "
            "matches; installing.",
            distributed.__version__,
            ", ".join(sorted(VERIFIED_VERSIONS)),
        )
    stock = {"dumps": _STOCK_DUMPS, "loads": _STOCK_LOADS}
    # The module attribute first (the ToPickle path and the "pickle" family go through it),
    # then every copy imported by name that is still distributed's own function.
    targets = [(_dpickle, "dumps"), (_dpickle, "loads"), *_package_modules_holding(stock)]
    replacement = {"dumps": dumps, "loads": loads}
    for module, name in targets:
        _patches.append((module, name, getattr(module, name)))
        setattr(module, name, replacement[name])
    _installed = True
    _collector = _register_prometheus()
    logger.info(
        "ferropickle.dask installed (distributed %s): %s",
        distributed.__version__,
        ", ".join(f"{module.__name__}.{name}" for module, name, _ in _patches),
    )
    return True


def install() -> bool:
    """Make this process's pickle-family serialization use ferropickle; idempotent.

    Replaces ``distributed.protocol.pickle.dumps`` / ``loads`` and each copy of them that a
    ``distributed`` or ``dask`` module imported by name. Modules imported later pick up the
    replacement from ``distributed.protocol.pickle`` themselves.

    Returns whether ferropickle is now active. On a distributed whose layout was not verified
    it issues an `UnsupportedLayoutWarning`, changes nothing and returns ``False``.
    """
    global _explicit
    with _lock:
        active = _install()
        _explicit = _explicit or active
        return active


def uninstall() -> None:
    """Put back every attribute `install` replaced, exactly; idempotent.

    Modules that imported the replacement by name after `install` get distributed's function
    back too. The "ferropickle" serialization family stays registered (it is only used when
    asked for by name, and data already sent with it must stay readable).
    """
    global _installed, _explicit, _collector
    with _lock:
        for module, name, original in reversed(_patches):
            if getattr(module, name, None) in (dumps, loads):
                setattr(module, name, original)
        _patches.clear()
        # Modules imported while we were installed copied the replacement by name.
        for module, name in _package_modules_holding({"dumps": dumps, "loads": loads}):
            setattr(module, name, _STOCK_DUMPS if name == "dumps" else _STOCK_LOADS)
        if _collector is not None:
            _unregister_prometheus(_collector)
            _collector = None
        was_installed = _installed
        _installed = _explicit = False
        _preload_servers.clear()
    if was_installed:
        logger.info("ferropickle.dask uninstalled; distributed's pickling is back")


def installed() -> bool:
    """Whether ferropickle is currently installed in this process."""
    return _installed


# --------------------------------------------------------------------------------------------
# Preload hooks (distributed.preloading calls dask_setup(server) once the server has started,
# and dask_teardown(server) when it closes)
# --------------------------------------------------------------------------------------------


def dask_setup(server: Any = None) -> None:
    """Preload entry point: installs ferropickle in the scheduler's (or worker's) process.

    Called by distributed with the ``Scheduler``, ``Worker``, ``Nanny`` or ``Client`` that
    lists ``ferropickle.dask`` as a preload; calling it with no argument is `install`.
    """
    with _lock:
        if server is None:
            install()
        elif _install():
            _preload_servers.add(id(server))


def dask_teardown(server: Any = None) -> None:
    """Preload exit point: uninstalls once the last server that preloaded us has closed.

    Does nothing if `install` was also called directly, which keeps ferropickle until
    `uninstall`.
    """
    with _lock:
        _preload_servers.discard(id(server))
        if not _preload_servers and not _explicit:
            uninstall()


# --------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------


def local_stats() -> dict[str, Any]:
    """This process's `ferropickle.stats()` plus the plugin's own counters.

    Adds ``installed`` (bool), ``dumps_fallbacks`` and ``loads_fallbacks`` (``{type name:
    count}`` of messages that went through distributed's own function instead) and
    ``distributed_version``.
    """
    out: dict[str, Any] = dict(ferropickle.stats())
    with _lock:
        out["installed"] = _installed
        out["dumps_fallbacks"] = dict(_fallbacks["dumps"])
        out["loads_fallbacks"] = dict(_fallbacks["loads"])
    out["distributed_version"] = distributed.__version__
    return out


def stats(client: Client | None = None) -> Any:
    """The scheduler's `local_stats` when given a ``Client``, else this process's.

    The fields are `ferropickle.stats()`'s plus ``installed``, ``dumps_fallbacks``,
    ``loads_fallbacks`` and ``distributed_version``. ``installed`` tells whether the scheduler
    really uses ferropickle. The scheduler needs ferropickle importable (as it does to preload
    it). With an asynchronous client this returns an awaitable.
    """
    if client is None:
        return local_stats()
    return client.run_on_scheduler(local_stats)


# Prometheus: names are ferropickle_<counter>; the scheduler's /metrics endpoint serves the
# default registry, so registering there is enough.
def _is_gauge(key: str, value: object) -> bool:
    """Settings and current sizes go up and down; everything else in stats() only counts up."""
    return isinstance(value, bool) or key.endswith(("_entries", "_max_bytes")) or key == "installed"


class _Collector:
    """Exposes `local_stats` to prometheus_client, read at scrape time."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        current = local_stats()
        for key, value in current.items():
            if isinstance(value, dict) or not isinstance(value, (int, float)):
                continue
            if _is_gauge(key, value):
                name = "ferropickle_dask_installed" if key == "installed" else f"ferropickle_{key}"
                yield GaugeMetricFamily(name, f"ferropickle.stats()['{key}']", value=float(value))
            elif key.endswith("_ns"):
                yield CounterMetricFamily(
                    f"ferropickle_{key[:-3]}_seconds",
                    f"ferropickle.stats()['{key}'] in seconds",
                    value=value / 1e9,
                )
            else:
                yield CounterMetricFamily(
                    f"ferropickle_{key}", f"ferropickle.stats()['{key}']", value=value
                )
        fallbacks = CounterMetricFamily(
            "ferropickle_dask_fallbacks",
            "Messages ferropickle refused that distributed's own pickle handled",
            labels=["direction", "type"],
        )
        for direction in ("dumps", "loads"):
            for typename, count in current[f"{direction}_fallbacks"].items():
                fallbacks.add_metric([direction, typename], count)
        yield fallbacks


def _register_prometheus() -> _Collector | None:
    try:
        from prometheus_client import REGISTRY
    except ImportError:
        return None
    collector = _Collector()
    try:
        REGISTRY.register(collector)
    except ValueError:  # another collector already exposes ferropickle_* in this process
        logger.info("ferropickle.dask: ferropickle_* metrics are already registered")
        return None
    return collector


def _unregister_prometheus(collector: _Collector) -> None:
    from prometheus_client import REGISTRY

    REGISTRY.unregister(collector)
