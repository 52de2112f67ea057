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
sent with ``serializers=[..., "ferropickle", ...]``; both ends need this module imported
(`check_family` tells which peers lack it).

Settings live in Dask's config under ``ferropickle`` (defaults in ``ferropickle.yaml`` next to
this module; ``DASK_FERROPICKLE__...`` environment variables work) and are read when the plugin
installs. While installed, every ``dumps`` is accounted per task prefix (`stats`, `report`,
Prometheus) and a pickle above ``ferropickle.large-pickle-warning`` logs one warning per
function naming its biggest part (`explain`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import pathlib
import sys
import threading
import time
import types
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import import_module
from pickle import PickleBuffer
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cloudpickle
import dask.config
import distributed
import yaml
from dask._task_spec import DataNode, GraphNode, Task
from dask.utils import format_bytes, key_split, parse_bytes
from distributed.utils import ensure_memoryview

import ferropickle
from ferropickle import _send_once  # send-once: hoists large shared parts out of graphs

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "FAMILY",
    "VERIFIED_VERSIONS",
    "MissingFamilyError",
    "Report",
    "Settings",
    "UnsupportedLayoutWarning",
    "check_family",
    "dask_setup",
    "dask_teardown",
    "dumps",
    "explain",
    "install",
    "installed",
    "loads",
    "local_stats",
    "report",
    "settings",
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
# Settings: the "ferropickle" section of Dask's config
# --------------------------------------------------------------------------------------------

# Registered the way Dask libraries do (dask-jobqueue, dask-kubernetes): the package's YAML as
# defaults, under whatever the user's files and DASK_FERROPICKLE__* variables say.
with open(pathlib.Path(__file__).with_name("ferropickle.yaml")) as _defaults:
    dask.config.update_defaults(yaml.safe_load(_defaults))

_FALSE_WORDS = frozenset({"false", "no", "off", "0", "none", "null", ""})
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})


def _flag(key: str) -> bool:
    """A boolean setting; environment variables arrive as strings ("false", "0", "no", ...)."""
    value = dask.config.get(f"ferropickle.{key}")
    if isinstance(value, str) and value.strip().lower() in _FALSE_WORDS | _TRUE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    if isinstance(value, (bool, int)):
        return bool(value)
    raise ValueError(f"dask config ferropickle.{key} must be true or false, not {value!r}")


def _byte_size(key: str) -> int | None:
    """A byte size ("1 MiB", 1048576), or None when set to false / none / 0."""
    value = dask.config.get(f"ferropickle.{key}")
    if (
        value is None
        or value is False
        or (isinstance(value, str) and value.strip().lower() in _FALSE_WORDS)
    ):
        return None
    size = parse_bytes(value) if isinstance(value, str) else value
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"dask config ferropickle.{key} must be a byte size, not {value!r}")
    return size or None


def _count(key: str) -> int:
    value = dask.config.get(f"ferropickle.{key}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 1 or isinstance(value, bool):
        raise ValueError(f"dask config ferropickle.{key} must be a positive integer, not {value!r}")
    return number


@dataclass(frozen=True)
class Settings:
    """The plugin's settings, as read from Dask's config (section ``ferropickle``).

    ``enabled`` (``ferropickle.enabled``): whether the preload installs. ``patch_loads``
    (``ferropickle.patch-loads``): whether ``loads`` is replaced too. ``large_pickle_warning``
    (``ferropickle.large-pickle-warning``): bytes from which one pickle logs a warning, or
    ``None`` for never. ``report_top`` (``ferropickle.report.top``): task prefixes listed by
    `stats` and `report`. ``max_prefixes`` (``ferropickle.report.max-prefixes``): task
    prefixes counted separately.
    """

    enabled: bool
    patch_loads: bool
    large_pickle_warning: int | None
    report_top: int
    max_prefixes: int

    @classmethod
    def from_config(cls) -> Settings:
        """Reads ``dask.config`` now; raises ``ValueError`` naming a setting that is invalid."""
        return cls(
            enabled=_flag("enabled"),
            patch_loads=_flag("patch-loads"),
            large_pickle_warning=_byte_size("large-pickle-warning"),
            report_top=_count("report.top"),
            max_prefixes=_count("report.max-prefixes"),
        )


_settings = Settings.from_config()


def settings() -> Settings:
    """The settings in effect: read from Dask's config at import and at each `install`."""
    return _settings


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
# What is expensive to send: per-task-prefix accounting of every dumps
# --------------------------------------------------------------------------------------------

#: The row of messages that are not graph nodes (plugin registrations, run_on_scheduler
#: results, ...) is named after their type, in parentheses; this one collects task prefixes
#: beyond ``ferropickle.report.max-prefixes``.
OTHER_PREFIX = "(other)"

_clock = time.perf_counter_ns
_acct_lock = threading.Lock()
# prefix -> [dumps, bytes (in band + out of band), ns, largest single pickle]
_prefixes: dict[str, list[int]] = {}
# (prefix, function) pairs whose large pickle was already explained in the log.
_warned: set[tuple[str, str]] = set()
_type_prefixes: dict[type, str] = {}
_large_threshold: float = float("inf")
_max_prefixes = 1000


def _apply_settings(new: Settings) -> None:
    global _settings, _large_threshold, _max_prefixes
    _settings = new
    _large_threshold = (
        float("inf") if new.large_pickle_warning is None else new.large_pickle_warning
    )
    _max_prefixes = new.max_prefixes


def _prefix_of(x: Any) -> str:
    if isinstance(x, GraphNode):
        # lru-cached in dask; the scheduler has already split this key for its TaskState.
        return key_split(x.key)
    tp = type(x)
    name = _type_prefixes.get(tp)
    if name is None:
        name = _type_prefixes.setdefault(tp, f"({tp.__qualname__})")
    return name


def _account(x: Any, nbytes: int, start: int) -> None:
    """Counts one pickle of ``x`` against its task prefix; explains it if it is large."""
    elapsed = _clock() - start
    prefix = _prefix_of(x)
    with _acct_lock:
        row = _prefixes.get(prefix)
        if row is None:
            if len(_prefixes) >= _max_prefixes:
                prefix = OTHER_PREFIX
            row = _prefixes.setdefault(prefix, [0, 0, 0, 0])
        row[0] += 1
        row[1] += nbytes
        row[2] += elapsed
        if nbytes > row[3]:
            row[3] = nbytes
    if nbytes >= _large_threshold:
        _warn_large(x, prefix, nbytes)


def _function_name(x: Any) -> str:
    """The function a task runs (through partials), or the message's type."""
    func = x.func if isinstance(x, Task) else x
    while isinstance(func, functools.partial):
        func = func.func
    if isinstance(func, (types.FunctionType, types.BuiltinFunctionType, type)):
        return f"{func.__module__}.{func.__qualname__}"
    return _typename(type(func))


def _warn_large(x: Any, prefix: str, nbytes: int) -> None:
    if isinstance(x, DataNode) and _send_once.is_send_once_key(x.key):  # send-once: the remedy
        return
    who = (prefix, _function_name(x))
    with _acct_lock:
        if who in _warned:
            return
        _warned.add(who)
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
        format_bytes(int(_large_threshold)),
        culprit,
        who[1],
    )


def _prefix_rows() -> list[tuple[str, list[int]]]:
    with _acct_lock:
        return [(prefix, list(row)) for prefix, row in _prefixes.items()]


def _reset_accounting() -> None:
    with _acct_lock:
        _prefixes.clear()
        _warned.clear()


# --------------------------------------------------------------------------------------------
# explain: the path to the biggest part of a pickle
# --------------------------------------------------------------------------------------------

#: Containers with more items than this are described as a whole ("dict of 2,000,000 items"):
#: pickling each item to find the biggest would take as long as the items are many.
_EXPLAIN_MAX_ITEMS = 1000
_EXPLAIN_MAX_DEPTH = 40
#: A part this much larger than its parent's whole pickle is not written inside it (a global of
#: a function pickled by reference): streams differ by their header and framing only.
_EXPLAIN_SLACK = 64


def _pickled_size(obj: Any) -> int | None:
    """Bytes of ``obj``'s pickle, out-of-band buffers included; None if it can't be pickled."""
    out_of_band = 0

    def count(buffer: PickleBuffer) -> None:
        nonlocal out_of_band
        out_of_band += memoryview(buffer).nbytes

    try:
        return len(_ferro_dumps(obj, 5, buffer_callback=count)) + out_of_band
    except Exception:
        out_of_band = 0
    try:
        return len(cloudpickle.dumps(obj, protocol=5, buffer_callback=count)) + out_of_band
    except Exception:
        return None


def _short(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _by_value(func: types.FunctionType) -> bool:
    try:
        return not cloudpickle.cloudpickle._should_pickle_by_reference(func)
    except Exception:
        return func.__module__ == "__main__"


_OBJECT_GETSTATE = getattr(object, "__getstate__", None)  # Python 3.11+


def _plain_instance(tp: type) -> bool:
    """Pickled as its ``__dict__`` (the default reduction), so its attributes are its parts."""
    return (
        tp.__reduce_ex__ is object.__reduce_ex__
        and tp.__reduce__ is object.__reduce__
        and getattr(tp, "__getstate__", None) is _OBJECT_GETSTATE
    )


def _parts(node: Any) -> Iterator[tuple[str, Any]]:
    """``(label, part)`` for what ``node``'s pickle is made of, labelled as ferropickle's error
    paths are (``Task.args[0]``, ``partial.func``, ``process.__globals__['TABLE']``)."""
    tp = type(node)
    name = tp.__name__
    if isinstance(node, Task):
        yield f"{name}.func", node.func
        for i, arg in enumerate(node.args):
            yield f"{name}.args[{i}]", arg
        for key, value in node.kwargs.items():
            yield f"{name}.kwargs[{_short(key)}]", value
    elif isinstance(node, DataNode):
        yield f"{name}.value", node.value
    elif isinstance(node, functools.partial):
        yield "partial.func", node.func
        for i, arg in enumerate(node.args):
            yield f"partial.args[{i}]", arg
        for key, value in node.keywords.items():
            yield f"partial.keywords[{_short(key)}]", value
    elif isinstance(node, types.FunctionType):
        if not _by_value(node):
            return
        fname = node.__name__
        namespace = node.__globals__
        for global_name in sorted(cloudpickle.cloudpickle._extract_code_globals(node.__code__)):
            if global_name in namespace:
                yield f"{fname}.__globals__[{global_name!r}]", namespace[global_name]
        for i, default in enumerate(node.__defaults__ or ()):
            yield f"{fname}.__defaults__[{i}]", default
        for key, value in (node.__kwdefaults__ or {}).items():
            yield f"{fname}.__kwdefaults__[{key!r}]", value
        for var, cell in zip(node.__code__.co_freevars, node.__closure__ or (), strict=False):
            try:
                yield f"{fname}.__closure__[{var!r}]", cell.cell_contents
            except ValueError:  # an empty cell
                continue
    elif isinstance(node, dict):
        if len(node) <= _EXPLAIN_MAX_ITEMS:
            for key, value in list(node.items()):
                yield f"{name}[{_short(key)}]", value
    elif isinstance(node, (list, tuple)):
        if len(node) <= _EXPLAIN_MAX_ITEMS:
            for i, item in enumerate(node):
                yield f"{name}[{i}]", item
    elif not isinstance(node, (type, ModuleType, set, frozenset, str, bytes, bytearray)):
        namespace = getattr(node, "__dict__", None)
        if isinstance(namespace, dict) and _plain_instance(tp):
            for attr, value in list(namespace.items()):
                yield f"{name}.{attr}", value


def _describe(obj: Any, size: int) -> str:
    if isinstance(obj, (dict, list, tuple, set, frozenset)):
        return f"{type(obj).__name__} of {len(obj):,} items ({format_bytes(size)})"
    if isinstance(obj, types.FunctionType):
        return f"<function {obj.__qualname__} {format_bytes(size)}>"
    return f"<{type(obj).__name__} {format_bytes(size)}>"


def explain(obj: Any) -> str:
    """Where ``obj``'s pickle spends its bytes: the path to its biggest part, and that part.

    Starting at ``obj``, steps into the part whose own pickle is at least half of the current
    one's, as long as there is one, so the answer names what dominates the size, e.g.
    ``Task.func -> partial.args[0] -> <DataFrame 48.00 MiB>`` or ``Task.func ->
    process.__globals__['TABLE'] -> dict of 2,000,000 items (30.52 MiB)``. The parts of a task
    are its function, arguments and keyword arguments; of a ``partial`` the same; of a function
    pickled by value its globals (those its code reads), defaults and closure; of lists, tuples,
    dicts and plain objects their items and attributes. Sizes count out-of-band buffers.

    Slow by design (it pickles every part it looks at); the plugin calls it only for pickles
    above ``ferropickle.large-pickle-warning``, once per function.
    """
    size = _pickled_size(obj)
    if size is None:
        return f"<{type(obj).__name__}, not picklable>"
    node, path = obj, []
    for _ in range(_EXPLAIN_MAX_DEPTH):
        best: tuple[int, str, Any] | None = None
        for label, part in _parts(node):
            part_size = _pickled_size(part)
            if part_size is None or part_size > size + _EXPLAIN_SLACK:
                continue
            if best is None or part_size > best[0]:
                best = (part_size, label, part)
        if best is None or best[0] * 2 < size:
            break
        size, label, node = best
        path.append(label)
    return " -> ".join([*path, _describe(node, size)])


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
    start = _clock()
    protocol = protocol or _HIGHEST_PROTOCOL
    if buffer_callback is None or protocol < 5:
        try:
            result = _ferro_dumps(x, protocol)
        except Exception as exc:
            failure = exc
        else:
            _account(x, len(result), start)
            return result
    else:
        # Buffers are collected here and passed on only once the whole object has been
        # written: a failed attempt must not leave stray frames in the caller's message.
        buffers: list[PickleBuffer] = []
        try:
            result = _ferro_dumps(x, protocol, buffer_callback=buffers.append)
        except Exception as exc:
            failure = exc
        else:
            nbytes = len(result)
            for buffer in buffers:
                buffer_callback(buffer)
                nbytes += memoryview(buffer).nbytes
            _account(x, nbytes, start)
            return result
    _fell_back("dumps", _typename(type(x)), failure)
    del failure  # don't keep the traceback (and its frames' objects) alive during the retry
    # Outside the `except` block, so an error from distributed is not chained onto ours.
    if buffer_callback is None:
        result = _STOCK_DUMPS(x, buffer_callback=None, protocol=protocol)
        _account(x, len(result), start)
        return result
    out_of_band = 0
    callback = buffer_callback

    def counting(buffer: PickleBuffer) -> Any:
        nonlocal out_of_band
        in_band = callback(buffer)
        if not in_band:
            out_of_band += memoryview(buffer).nbytes
        return in_band

    result = _STOCK_DUMPS(x, buffer_callback=counting, protocol=protocol)
    _account(x, len(result) + out_of_band, start)
    return result


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


def _version() -> str:
    return ferropickle.__version__


def _show_our_logs_like_distributed() -> None:
    """Makes the ``ferropickle`` logger print where distributed's does, unless anyone set up
    logging for it (or for the whole process).

    ``dask scheduler`` / ``dask worker`` give only the ``distributed`` logger a handler (at
    INFO), so our lines would otherwise be dropped below WARNING. A ``logging: {ferropickle:
    ...}`` entry in Dask's config, a handler on the root logger or a level set on ``ferropickle``
    all mean someone chose: then nothing changes.
    """
    ours = logging.getLogger("ferropickle")
    if ours.handlers or ours.level != logging.NOTSET or logging.getLogger().handlers:
        return
    handlers = logging.getLogger("distributed").handlers
    if not handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(dask.config.get("distributed.admin.log-format")))
        handlers = [handler]
    ours.setLevel(logging.INFO)
    for handler in handlers:
        ours.addHandler(handler)


def _install(role: str = "process", *, warn: bool = True) -> bool:
    global _installed, _collector
    if _installed:
        return True
    new_settings = Settings.from_config()
    send_once_threshold = _byte_size("send-once.threshold")  # send-once: read before patching
    problem = _layout_problem()
    if problem is not None:
        message = (
            f"ferropickle.dask is not installed: {problem} (distributed "
            f"{distributed.__version__}; verified with {', '.join(sorted(VERIFIED_VERSIONS))}). "
            "Dask keeps its stock pickling."
        )
        if warn:
            warnings.warn(message, UnsupportedLayoutWarning, stacklevel=3)
        else:  # a preload: in the server's log, where its operator looks
            logger.warning(message)
        return False
    verified = distributed.__version__ in VERIFIED_VERSIONS
    if not verified:
        logger.warning(
            "ferropickle.dask: distributed %s was not verified (verified: %s), but its layout "
            "matches; installing.",
            distributed.__version__,
            ", ".join(sorted(VERIFIED_VERSIONS)),
        )
    _apply_settings(new_settings)
    stock = {"dumps": _STOCK_DUMPS}
    if new_settings.patch_loads:
        stock["loads"] = _STOCK_LOADS
    # The module attribute first (the ToPickle path and the "pickle" family go through it),
    # then every copy imported by name that is still distributed's own function.
    targets = [(_dpickle, name) for name in stock]
    targets += _package_modules_holding(stock)
    replacement = {"dumps": dumps, "loads": loads}
    for module, name in targets:
        _patches.append((module, name, getattr(module, name)))
        setattr(module, name, replacement[name])
    _installed = True
    if send_once_threshold is not None:  # send-once: rewrite graphs the scheduler receives
        _send_once.install(send_once_threshold)
    _collector = _register_prometheus()
    threshold = new_settings.large_pickle_warning
    logger.info(
        "ferropickle %s active in this %s (distributed %s%s): %s replaced by ferropickle's; "
        "large-pickle warning %s; per-task-prefix costs in ferropickle.dask.report(client)%s",
        _version(),
        role,
        distributed.__version__,
        "" if verified else ", not verified",
        ", ".join(f"{module.__name__}.{name}" for module, name, _ in _patches),
        "off" if threshold is None else f"from {format_bytes(threshold)}",
        " and /metrics" if _collector is not None else "",
    )
    return True


def install() -> bool:
    """Make this process's pickle-family serialization use ferropickle; idempotent.

    Replaces ``distributed.protocol.pickle.dumps`` / ``loads`` and each copy of them that a
    ``distributed`` or ``dask`` module imported by name. Modules imported later pick up the
    replacement from ``distributed.protocol.pickle`` themselves.

    Reads the ``ferropickle`` section of Dask's config (see `Settings`): with
    ``ferropickle.patch-loads: false`` only ``dumps`` is replaced. ``ferropickle.enabled`` is
    for the preload only; calling this installs regardless.

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
        _send_once.uninstall()  # send-once
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
    lists ``ferropickle.dask`` as a preload; calling it with no argument is `install`. Honours
    ``ferropickle.enabled`` in Dask's config, and logs one line saying what it did (through
    distributed's log handler unless logging for ``ferropickle`` was set up otherwise).
    """
    with _lock:
        if server is None:
            install()
            return
        role = type(server).__name__.lower()
        _show_our_logs_like_distributed()
        if not _flag("enabled"):
            logger.info(
                "ferropickle.dask preload in this %s: not installed, dask config "
                "ferropickle.enabled is false; Dask keeps its stock pickling",
                role,
            )
        elif _install(role, warn=False):
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
# Stats and the report
# --------------------------------------------------------------------------------------------

_SORT_KEYS = {"bytes": 1, "calls": 0, "time": 2, "largest": 3}


def _top_prefixes(top: int, sort: str = "bytes") -> dict[str, dict[str, Any]]:
    column = _SORT_KEYS.get(sort)
    if column is None:
        raise ValueError(f"sort must be one of {', '.join(_SORT_KEYS)}, not {sort!r}")
    rows = sorted(_prefix_rows(), key=lambda item: item[1][column], reverse=True)[:top]
    return {
        prefix: {"dumps": n, "bytes": nbytes, "seconds": ns / 1e9, "largest": largest}
        for prefix, (n, nbytes, ns, largest) in rows
    }


def local_stats() -> dict[str, Any]:
    """This process's `ferropickle.stats()` plus the plugin's own counters.

    Adds ``installed`` (bool), ``dumps_fallbacks`` and ``loads_fallbacks`` (``{type name:
    count}`` of messages that went through distributed's own function instead),
    ``distributed_version``, ``version`` (ferropickle's), ``large_pickle_warning`` (bytes, or
    ``None``) and ``task_prefixes``: the ``ferropickle.report.top`` task prefixes that sent the
    most bytes, as ``{prefix: {"dumps", "bytes", "seconds", "largest"}}``, costliest first
    (bytes count out-of-band buffers; ``largest`` is the biggest single pickle).
    """
    out: dict[str, Any] = dict(ferropickle.stats())
    with _lock:
        out["installed"] = _installed
        out["dumps_fallbacks"] = dict(_fallbacks["dumps"])
        out["loads_fallbacks"] = dict(_fallbacks["loads"])
    out["distributed_version"] = distributed.__version__
    out["version"] = _version()
    out["large_pickle_warning"] = _settings.large_pickle_warning
    out["task_prefixes"] = _top_prefixes(_settings.report_top)
    return out


def stats(client: Client | None = None) -> Any:
    """The scheduler's `local_stats` when given a ``Client``, else this process's.

    The fields are `ferropickle.stats()`'s plus ``installed``, ``dumps_fallbacks``,
    ``loads_fallbacks``, ``distributed_version``, ``version``, ``large_pickle_warning`` and
    ``task_prefixes``. ``installed`` tells whether the scheduler really uses ferropickle. The
    scheduler needs ferropickle importable (as it does to preload it). With an asynchronous
    client this returns an awaitable.
    """
    if client is None:
        return local_stats()
    return client.run_on_scheduler(local_stats)


class Report(str):
    """The text of `report`; shown as the table itself (not a quoted string) at a prompt."""

    def __repr__(self) -> str:
        return str(self)


def _report_rows(top: int | None, sort: str) -> dict[str, Any]:
    """Runs where the counters are (the scheduler): the rows and totals `report` prints."""
    rows = _prefix_rows()
    limit = _settings.report_top if top is None else top
    return {
        "installed": _installed,
        "prefixes": len(rows),
        "dumps": sum(row[0] for _, row in rows),
        "bytes": sum(row[1] for _, row in rows),
        "seconds": sum(row[2] for _, row in rows) / 1e9,
        "top": _top_prefixes(limit, sort),
        "large_pickle_warning": _settings.large_pickle_warning,
    }


def _format_report(data: dict[str, Any], sort: str, where: str) -> Report:
    def us(seconds: float) -> str:
        return f"{seconds * 1e6:,.1f} us"

    header = (
        f"ferropickle in {where}: {'installed' if data['installed'] else 'NOT installed'}; "
        f"{data['dumps']:,} dumps, {format_bytes(data['bytes'])}, "
        f"{data['seconds'] * 1e3:,.1f} ms in {data['prefixes']:,} task prefixes"
    )
    top = data["top"]
    if not top:
        return Report(header + "\n(nothing pickled yet)")
    columns = ("task prefix", "dumps", "bytes", "bytes/dumps", "largest", "time", "time/dumps")
    table = [
        (
            prefix,
            f"{row['dumps']:,}",
            format_bytes(row["bytes"]),
            format_bytes(row["bytes"] // max(row["dumps"], 1)),
            format_bytes(row["largest"]),
            f"{row['seconds'] * 1e3:,.1f} ms",
            us(row["seconds"] / max(row["dumps"], 1)),
        )
        for prefix, row in top.items()
    ]
    width = max(len(columns[0]), *(len(row[0]) for row in table))
    lines = [
        header,
        f"top {len(top)} by {sort}"
        + (
            f"; pickles from {format_bytes(data['large_pickle_warning'])} are explained in the log"
            if data["large_pickle_warning"] is not None
            else ""
        ),
        "",
        f"{columns[0]:<{width}}" + "".join(f" {c:>12}" for c in columns[1:]),
    ]
    lines += [f"{row[0]:<{width}}" + "".join(f" {c:>12}" for c in row[1:]) for row in table]
    return Report("\n".join(lines))


def report(client: Client | None = None, *, top: int | None = None, sort: str = "bytes") -> Any:
    """A table of what the scheduler spent pickling, per task prefix (the key's name part).

    For each of the ``top`` (default ``ferropickle.report.top``) prefixes that cost the most
    by ``sort`` (``"bytes"``, ``"time"``, ``"calls"`` or ``"largest"``): how many messages
    ferropickle wrote, their bytes (out-of-band buffers included), the largest single one and
    the time spent. Messages that are not graph nodes are listed under their type in
    parentheses. With no client, this process's counters. Returns a `Report` (a ``str``); with
    an asynchronous client, an awaitable of it.
    """
    if sort not in _SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(_SORT_KEYS)}, not {sort!r}")
    if top is not None and top < 1:
        raise ValueError(f"top must be at least 1, not {top}")
    if client is None:
        return _format_report(_report_rows(top, sort), sort, "this process")
    where = f"the scheduler at {client.scheduler.address}"
    rows = client.run_on_scheduler(_report_rows, top, sort)
    if getattr(client, "asynchronous", False):

        async def formatted() -> Report:
            return _format_report(await rows, sort, where)

        return formatted()
    return _format_report(rows, sort, where)


# --------------------------------------------------------------------------------------------
# The "ferropickle" family on peers
# --------------------------------------------------------------------------------------------


class MissingFamilyError(RuntimeError):
    """A scheduler or worker cannot read the ``"ferropickle"`` serialization family."""


def check_family(client: Client) -> None:
    """Raises `MissingFamilyError` naming the scheduler / workers that lack the family.

    distributed gives a sender no way to know what its peer can read: data sent with
    ``serializers=[..., "ferropickle"]`` to a process that has not imported
    ``ferropickle.dask`` fails there with a bare ``KeyError('ferropickle')``. Call this once
    after connecting (and after workers join) to fail early with a message that says what to do.
    """
    # A lambda is pickled by value: asking a peer must not make it import ferropickle (which
    # would register the family and answer yes).
    probe = lambda: "ferropickle" in import_module("distributed.protocol.serialize").families  # noqa: E731
    missing = [] if client.run_on_scheduler(probe) else ["the scheduler"]
    missing += sorted(address for address, has in client.run(probe).items() if not has)
    if missing:
        raise MissingFamilyError(
            f"{', '.join(missing)} cannot read the 'ferropickle' serialization family (the "
            "receiving process raises KeyError('ferropickle')). Preload it there "
            "(dask worker --preload ferropickle.dask, or DASK_DISTRIBUTED__WORKER__PRELOAD="
            "ferropickle.dask; the scheduler's --preload), or send with the 'pickle' family: "
            "ferropickle writes standard pickle, so a stock peer reads it through 'pickle'."
        )


# --------------------------------------------------------------------------------------------
# Prometheus
# --------------------------------------------------------------------------------------------

#: What each counter of `ferropickle.stats()` counts, as its help text says.
_COUNTER_HELP = {
    "dumps_calls": "Calls of ferropickle.dumps in this process (one per task message sent)",
    "dumps_errors": "ferropickle.dumps calls that raised (the plugin then used distributed's)",
    "dumps_bytes": "Bytes of pickle streams ferropickle.dumps wrote (in band)",
    "dumps_ns": "Time spent inside ferropickle.dumps",
    "objects_native": "Objects ferropickle.dumps wrote natively, without calling Python code",
    "objects_reduced": "Objects ferropickle.dumps wrote through __reduce_ex__ or a reducer",
    "objects_by_value": "Functions and classes ferropickle.dumps pickled by value",
    "loads_calls": "Calls of ferropickle.loads in this process",
    "loads_errors": "ferropickle.loads calls that raised (the plugin then used distributed's)",
    "loads_bytes": "Bytes of pickle streams ferropickle.loads read",
    "loads_ns": "Time spent inside ferropickle.loads",
}
_CACHE_HELP = {
    "globals": "By-reference/by-value decisions ferropickle.dumps remembers for live objects",
    "code_objects": "Code objects whose global names ferropickle.dumps remembers",
}


class _Collector:
    """Exposes the plugin's state to prometheus_client, read at scrape time.

    Names are ``<namespace>_ferropickle_*``, with distributed's
    ``distributed.dashboard.prometheus.namespace`` (``dask`` by default), so they sit next to
    ``<namespace>_scheduler_*``.
    """

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        namespace = dask.config.get("distributed.dashboard.prometheus.namespace", "dask")
        base = f"{namespace}_ferropickle" if namespace else "ferropickle"
        info = GaugeMetricFamily(
            f"{base}_info",
            "Always 1; labels: ferropickle's and distributed's versions",
            labels=["version", "distributed_version"],
        )
        info.add_metric([_version(), distributed.__version__], 1)
        yield info
        yield GaugeMetricFamily(
            f"{base}_installed",
            "1 while ferropickle.dask replaces distributed's pickle dumps in this process",
            value=float(_installed),
        )
        yield GaugeMetricFamily(
            f"{base}_loads_patched",
            "1 while ferropickle.dask replaces distributed's pickle loads too "
            "(setting ferropickle.patch-loads)",
            value=float(_installed and _settings.patch_loads),
        )
        threshold = _settings.large_pickle_warning
        yield GaugeMetricFamily(
            f"{base}_large_pickle_warning_bytes",
            "Setting ferropickle.large-pickle-warning: a single pickle this large logs a "
            "warning naming its biggest part (0: off)",
            value=float(threshold or 0),
        )
        for key, value in ferropickle.stats().items():
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
        for key, value in ferropickle.cache_info().items():
            yield GaugeMetricFamily(
                f"{base}_cache_{key}_entries",
                _CACHE_HELP.get(key, f"ferropickle.cache_info()[{key!r}]") + " (current size)",
                value=float(value),
            )
        with _lock:
            fallback_counts = {d: dict(c) for d, c in _fallbacks.items()}
        fallbacks = CounterMetricFamily(
            f"{base}_fallbacks",
            "Messages ferropickle refused that distributed's own pickle handled, by type",
            labels=["direction", "type"],
        )
        for direction, counts in fallback_counts.items():
            for typename, count in counts.items():
                fallbacks.add_metric([direction, typename], count)
        yield fallbacks
        per_prefix = [
            (
                CounterMetricFamily(
                    f"{base}_task_prefix_dumps",
                    "Messages pickled by ferropickle.dask's dumps, by task prefix",
                    labels=["task_prefix_name"],
                ),
                0,
                1,
            ),
            (
                CounterMetricFamily(
                    f"{base}_task_prefix_dumps_bytes",
                    "Bytes pickled by ferropickle.dask's dumps (out-of-band buffers included), "
                    "by task prefix",
                    labels=["task_prefix_name"],
                ),
                1,
                1,
            ),
            (
                CounterMetricFamily(
                    f"{base}_task_prefix_dumps_seconds",
                    "Time spent in ferropickle.dask's dumps, by task prefix",
                    labels=["task_prefix_name"],
                ),
                2,
                1e-9,
            ),
        ]
        rows = _prefix_rows()
        for family, column, scale in per_prefix:
            for prefix, row in rows:
                family.add_metric([prefix], row[column] * scale)
            yield family


def _register_prometheus() -> _Collector | None:
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


def _unregister_prometheus(collector: _Collector) -> None:
    from prometheus_client import REGISTRY

    REGISTRY.unregister(collector)
