"""Send it once, the graph rewrite: a large part shared by many tasks of a graph becomes one
``DataNode`` holding its pickle, which the tasks depend on.

* a *part* of a task (or of a task inside a fused subgraph, ``Task.fuse``) is a top-level
  argument or keyword argument of a ``Task``, an argument or keyword of the
  ``functools.partial`` that is its function, or its function (or the partial's) when
  ``cloudpickle`` would pickle it by value (its pickle then holds the globals its code reads,
  its defaults and its closure);
* a part whose pickle (``ferropickle.dumps``) is at least the threshold, and that is the very
  same object in two or more tasks of the graph (or whose pickle was already seen in a recent
  graph: a ``client.submit`` loop sends a new copy each time), is pickled **once** and put in
  the graph as a ``DataNode`` holding those bytes, under a key named by their SHA-256 digest;
* each task that held the part gets ``Task(None, pickle.loads, TaskRef(key))`` in its place, so
  it depends on that key and rebuilds its own copy of the part with the standard library's
  ``pickle.loads`` (a replaced function is called through ``dask.utils.apply``).

What is *not* hoisted, so that every task means what it meant: a part that appears twice in
the same task, or that shares an object with another part of the same task (a hoisted copy
would no longer be the same object as the rest of the task's); a ``partial`` with attributes,
a subclass or a graph node among its arguments; the function of a coroutine task; parts that
ferropickle cannot pickle (Dask's own pickling then reports the error as usual).

This module only rewrites graphs; `ferropickle.dask._send_once` applies it to what the
scheduler receives and keeps the hoisted keys on the cluster.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import pickle
import threading
import types
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
from dask._task_spec import DataNode, Dict, GraphNode, Task, TaskRef, Tuple, _execute_subgraph
from dask.sizeof import sizeof
from dask.utils import apply, format_bytes, key_split

import ferropickle

#: The first element of every key this module adds to a graph: ``(f"{KEY_PREFIX}-{digest}", 0)``.
#: A tuple key puts each content in a task group of its own (``key_split_group`` keeps the
#: first element whole), so the tasks that depend on it keep the scheduling of root tasks.
KEY_PREFIX = "send-once"

#: How many fingerprints of large parts seen in recent graphs are remembered (an int each,
#: never the parts): a part seen again is hoisted even when only one task of its graph holds it.
_RECENT = 4096
#: A fingerprint reads this many bytes at each end of the pickle and of each of its buffers,
#: and _FP_SAMPLES single bytes evenly spaced in between (one strided slice): enough to tell
#: contents apart in practice, and only ever a hint (a match is confirmed by comparing whole
#: pickles), so it reads little: it is taken of every large part of every graph, a submit
#: loop's included.
_FP_EDGE = 512
_FP_SAMPLES = 256

_ATOMS = (int, float, complex, bool, str, bytes, type(None))

# Why a large part stayed in its task, as the large-pickle warning says it.
ONE_HOLDER = (
    "send-once left it in the task: only this task of its graph holds it and no recent graph "
    "had the same content"
)
TWICE = "send-once left it in the task: the task holds it twice (one copy must serve both)"
SHARES_OBJECTS = (
    "send-once left it in the task: it shares objects with the rest of the task, which a "
    "copy of its own would split"
)
ALREADY_THERE = (
    "send-once left it in the task: the scheduler already had a task of that key, and keeps it"
)


def is_send_once_key(key: Any) -> bool:
    """Whether ``key`` is one this module put in a graph."""
    return (
        type(key) is tuple
        and len(key) == 2
        and isinstance(key[0], str)
        and key[0].startswith(KEY_PREFIX + "-")
    )


# --------------------------------------------------------------------------------------------
# Finding the parts of a task
# --------------------------------------------------------------------------------------------


def _by_value(func: types.FunctionType) -> bool:
    """Whether cloudpickle (so distributed) pickles ``func`` by value, globals and all."""
    try:
        return not cloudpickle.cloudpickle._should_pickle_by_reference(func)
    except Exception:
        return func.__module__ == "__main__"


def _is_coroutine(func: Any) -> bool:
    if type(func) is types.BuiltinFunctionType:  # ``operator.getitem``: no code, no marker
        return False
    target = func.func if isinstance(func, functools.partial) else func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(func)


def _rewritable_partial(func: Any) -> bool:
    """A partial that a ``Task(None, functools.partial, ...)`` rebuilds exactly."""
    return (
        type(func) is functools.partial
        and not getattr(func, "__dict__", None)
        and "_data_producer" not in func.keywords
        and not any(isinstance(a, (GraphNode, TaskRef)) for a in func.args)
        and not any(isinstance(v, (GraphNode, TaskRef)) for v in func.keywords.values())
    )


# A site is where a part sits in its task: ("arg", i), ("kwarg", name), ("func",),
# ("partial.func",), ("partial.arg", i), ("partial.kwarg", name).
Site = tuple[Any, ...]


def _label(site: Site) -> str:
    """The path of a site as ferropickle's error paths and ``explain`` write it."""
    kind = site[0]
    if kind == "arg":
        return f"Task.args[{site[1]}]"
    if kind == "kwarg":
        return f"Task.kwargs[{site[1]!r}]"
    if kind == "func":
        return "Task.func"
    if kind == "partial.func":
        return "Task.func -> partial.func"
    if kind == "partial.arg":
        return f"Task.func -> partial.args[{site[1]}]"
    return f"Task.func -> partial.keywords[{site[1]!r}]"


def _func_parts(func: Any) -> list[tuple[Site, Any, bool]]:
    """``(site, part, may_be_hoisted)`` for a task's function: itself, or a partial's parts."""
    func_rewritable = not _is_coroutine(func)
    if func_rewritable and _rewritable_partial(func):
        inner = func.func
        found: list[tuple[Site, Any, bool]] = [
            (("partial.func",), inner, isinstance(inner, types.FunctionType) and _by_value(inner))
        ]
        for i, arg in enumerate(func.args):
            if not isinstance(arg, _ATOMS):
                found.append((("partial.arg", i), arg, True))
        for name, value in func.keywords.items():
            if not isinstance(value, _ATOMS):
                found.append((("partial.kwarg", name), value, True))
        return found
    hoistable = func_rewritable and isinstance(func, types.FunctionType) and _by_value(func)
    return [(("func",), func, hoistable)]


def _parts(
    task: Task, func_parts: dict[int, list[tuple[Site, Any, bool]]] | None = None
) -> list[tuple[Site, Any, bool]]:
    """``(site, part, may_be_hoisted)`` for every part of ``task`` that has an identity worth
    guarding (atoms and references are left out). ``func_parts`` caches the analysis of each
    function by its id: the tasks of a graph mostly share theirs."""
    func = task.func
    if func_parts is None:
        found = _func_parts(func)
    else:
        found = func_parts.get(id(func))  # type: ignore[assignment]
        if found is None:
            found = func_parts[id(func)] = _func_parts(func)
    if "_data_producer" in task.kwargs:  # Task() would take it for its own flag
        found = [(site, obj, False) for site, obj, _may in found]
    else:
        found = list(found)
    for i, arg in enumerate(task.args):
        if isinstance(arg, (TaskRef, *_ATOMS)):
            continue
        found.append((("arg", i), arg, not isinstance(arg, GraphNode)))
    for name, value in task.kwargs.items():
        if isinstance(value, (TaskRef, *_ATOMS)):
            continue
        found.append((("kwarg", name), value, not isinstance(value, GraphNode)))
    return found


# --------------------------------------------------------------------------------------------
# Identity: which objects a pickle of a part contains
# --------------------------------------------------------------------------------------------


class _Sink:
    """A file that forgets what is written (only the pickler's memo is wanted)."""

    def write(self, data: Any) -> int:
        return len(data)


def _identity_free(obj: Any) -> bool:
    """Objects whose identity no task can observe across a pickle: immutable atoms, and what is
    pickled by reference (modules, classes, importable functions), which is the same object on
    both sides."""
    if isinstance(obj, (*_ATOMS, type, types.ModuleType)):
        return True
    if isinstance(obj, types.BuiltinFunctionType):
        # ``len`` or ``operator.getitem``, not ``some_list.append`` (pickled with its list).
        return isinstance(obj.__self__, (types.ModuleType, type(None)))
    return isinstance(obj, types.FunctionType) and not _by_value(obj)


@dataclass
class _Reach:
    """The ids of the objects a part's pickle writes, kept with the memo that holds them alive
    (so no id can be reused by another object while the graph is examined)."""

    ids: frozenset[int] | None  # None: unknown (cloudpickle could not pickle it)
    memo: Any


def _reach(obj: Any) -> _Reach:
    pickler = cloudpickle.Pickler(_Sink(), protocol=5, buffer_callback=lambda _buffer: None)
    try:
        pickler.dump(obj)
    except Exception:
        # What it reaches can't be told: it counts as sharing with everything (see `overlap`).
        return _Reach(None, obj)
    memo = pickler.memo.copy()
    ids = {id(obj)}
    for _index, member in memo.values():
        if _identity_free(member):
            continue
        ids.add(id(member))
        if isinstance(member, types.FunctionType):
            # Functions of one module pickled in one stream share one globals dict when loaded.
            ids.add(id(member.__globals__))
    if isinstance(obj, types.FunctionType):
        ids.add(id(obj.__globals__))
    return _Reach(frozenset(ids), memo)


# --------------------------------------------------------------------------------------------
# The rewrite of one graph
# --------------------------------------------------------------------------------------------


@dataclass
class _Part:
    """One distinct object that may be hoisted, with the tasks and sites holding it."""

    obj: Any
    sites: list[tuple[Any, Any]] = field(default_factory=list)
    data: bytes | None = None
    key: tuple[str, int] | None = None
    #: Whether no earlier graph had it hoisted.
    new: bool = True
    #: Its fingerprint and what `Seen` keeps of it, once some task does read it by its key.
    known: tuple[int, _Known] | None = None


@dataclass(slots=True)
class SentOnceRow:
    """What send-once did for the tasks of one task prefix: the ``tasks`` it rewrote, the
    ``parts`` of them it replaced by a reference, ``not_sent_per_task`` (the pickled size of
    those parts summed over the tasks: the bytes their own messages no longer carry) and
    ``sent_once`` (the bytes of the pickles put in the graphs instead, each content once while
    the cluster holds it: Dask sends it to one worker, the others fetch it from there)."""

    tasks: int = 0
    parts: int = 0
    not_sent_per_task: int = 0
    sent_once: int = 0


@dataclass
class Hoisted:
    """What `hoist` did to one graph."""

    #: The graph, rewritten (the same dict object, updated in place).
    dsk: dict[Any, Any]
    #: One row per key added, largest first: (key, bytes of the pickle, number of tasks that
    #: now depend on it, where its first site is: (inner keys, site, part)).
    rows: list[tuple[tuple[str, int], int, int, tuple[Path, Site, Any]]]
    #: How many of those keys no earlier graph had.
    new: int
    #: Per task prefix of the rewritten tasks: what was done for them.
    per_prefix: dict[str, SentOnceRow]

    @property
    def parts(self) -> list[tuple[tuple[str, int], int, int, str]]:
        """The rows with the path of each first site written out (for the log: a submit loop's
        graphs, logged at debug level, need not pay for the text)."""
        return [(key, size, n, _path_text(*first, size)) for key, size, n, first in self.rows]

    @property
    def total(self) -> int:
        return sum(size for _key, size, _n, _first in self.rows)


def _dumps(obj: Any) -> bytes | None:
    try:
        return ferropickle.dumps(obj, 5)
    except Exception:
        return None


def digest_key(data: bytes) -> tuple[str, tuple[str, int]]:
    digest = hashlib.sha256(data).hexdigest()[:32]
    return digest, (f"{KEY_PREFIX}-{digest}", 0)


def _fingerprint(views: list[memoryview]) -> int:
    """A cheap hash of a pickle and its buffers: their sizes, their edges and samples between.
    Python's own hash of those bytes (SipHash, 64 bits, seeded per process): a fingerprint
    never leaves the process, and two contents that share one only lose a recognition or
    gain a hoist (`_same` compares whole pickles); a cryptographic hash costs more than the
    rest of the fingerprint together."""
    pieces: list[Any] = []
    for view in views:
        n = view.nbytes
        pieces.append(n.to_bytes(8, "little"))
        if n <= 4 * _FP_EDGE:
            pieces.append(view)
            continue
        pieces.append(view[:_FP_EDGE])
        pieces.append(view[:: n // _FP_SAMPLES].tobytes())
        pieces.append(view[n - _FP_EDGE :])
    return hash(b"".join(pieces))


@dataclass(frozen=True)
class _Known:
    """A hoisted pickle, as the scheduler's DataNode holds it (``data``, not copied), and how
    to recognise its content without writing it again: its pickle with the buffers out of band
    (``stream``) and where each buffer's bytes lie in ``data`` (None if they were not found)."""

    key: tuple[str, int]
    data: bytes
    stream: bytes
    offsets: tuple[int, ...] | None


class Seen:
    """What recent graphs had, across graphs: fingerprints of their large parts (an int each,
    never the parts), and the pickles hoisted while the scheduler still has their key (the
    very bytes objects the scheduler's DataNodes hold, not copies), so that the same content in
    a later graph is recognised by comparing pickles without hashing them again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._known: dict[int, _Known] = {}
        self._why_not: OrderedDict[Any, str] = OrderedDict()

    def note(self, key: Any, reason: str) -> None:
        """Records why a large part of the task ``key`` stayed in it (for the large-pickle
        warning; the last `_RECENT` tasks)."""
        with self._lock:
            self._why_not[key] = reason
            while len(self._why_not) > _RECENT:
                self._why_not.popitem(last=False)

    def why_not(self, key: Any) -> str | None:
        """Why a large part of the task ``key`` was not hoisted, if `hoist` noted it."""
        with self._lock:
            return self._why_not.get(key)

    def remember(self, fingerprint: int) -> bool:
        """Records ``fingerprint`` as seen; returns whether it had been seen before."""
        with self._lock:
            seen = fingerprint in self._recent
            self._recent[fingerprint] = None
            self._recent.move_to_end(fingerprint)
            while len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        return seen

    def known(self, fingerprint: int) -> _Known | None:
        with self._lock:
            return self._known.get(fingerprint)

    def add(self, fingerprint: int, entry: _Known) -> None:
        with self._lock:
            self._known[fingerprint] = entry
            if len(self._known) > _RECENT:
                del self._known[next(iter(self._known))]

    def forget_unless(self, kept: Callable[[Any], bool]) -> None:
        """Lets go of the pickles whose key ``kept`` says is gone (the scheduler forgot it:
        the same content coming again is sent again)."""
        with self._lock:
            if self._known:
                for fingerprint, entry in list(self._known.items()):
                    if not kept(entry.key):
                        del self._known[fingerprint]

    def holds(self) -> int:
        """How many hoisted pickles are kept for recognition."""
        with self._lock:
            return len(self._known)

    def clear(self) -> None:
        with self._lock:
            self._recent.clear()
            self._known.clear()
            self._why_not.clear()


def _locate(data: bytes, buffers: list[memoryview]) -> tuple[int, ...] | None:
    """Where each buffer's bytes lie in ``data``, the same pickle written with them in band
    (each as its BYTES8/BYTEARRAY8 payload, in order); None where one is not found whole."""
    offsets = []
    start = 0
    for view in buffers:
        at = data.find(view[:64], start)
        while at != -1 and not data.startswith(view, at):
            at = data.find(view[:64], at + 1)
        if at == -1:
            return None
        offsets.append(at)
        start = at + view.nbytes
    return tuple(offsets)


def _same(known: _Known, stream: bytes, buffers: list[memoryview], obj: Any) -> bytes | None:
    """``known.data`` if ``obj`` (written as ``stream`` and ``buffers``) pickles to it; None if
    not. The same stream with the same buffers makes the same pickle, so with the offsets this
    compares memory in place (``bytes.startswith`` takes a buffer) without writing a copy."""
    if known.offsets is not None:
        if stream != known.stream or len(buffers) != len(known.offsets):
            return None
        if all(known.data.startswith(v, at) for v, at in zip(buffers, known.offsets, strict=True)):
            return known.data
        return None
    data = stream if not buffers else _dumps(obj)
    return known.data if data == known.data else None


def _choose(parts: dict[int, _Part], threshold: int, seen: Seen) -> None:
    """Pickles the candidates worth it and gives each a key; the others get ``key=None``.

    The first pickle is written with its buffers out of band (an array's data is not copied),
    which gives the size and a fingerprint. A part whose fingerprint names a key hoisted
    earlier, and whose content equals that key's, reuses the key; one shared by two tasks or
    more, or seen in a recent graph, gets a new key named by the SHA-256 of its pickle."""
    for part in parts.values():
        tasks = {id(task) for task, _where in part.sites}
        shared = len(tasks) >= 2
        obj = part.obj
        if not shared and not isinstance(obj, types.FunctionType):
            # A single holder is only worth hoisting if the same content comes again; ask
            # sizeof first so that small arguments are not pickled twice.
            try:
                if sizeof(obj) < threshold // 4:
                    continue
            except Exception:
                continue
        pickled: list[pickle.PickleBuffer] = []
        try:
            stream = ferropickle.dumps(obj, 5, buffer_callback=pickled.append)
            buffers = [buffer.raw() for buffer in pickled]
        except Exception:
            continue
        if len(stream) + sum(view.nbytes for view in buffers) < threshold:
            continue
        fingerprint = _fingerprint([memoryview(stream), *buffers])
        known = seen.known(fingerprint)
        if known is not None:
            data = _same(known, stream, buffers, obj)
            if data is not None:
                part.key, part.data, part.new = known.key, data, False
                continue
        if not (shared or seen.remember(fingerprint)):
            for task, _where in part.sites:
                seen.note(task.key, ONE_HOLDER)
            continue
        # Without buffers the first pickle was the whole one already.
        data = stream if not buffers else _dumps(obj)
        if data is None:
            continue
        part.key = digest_key(data)[1]
        part.data = data
        # Kept for recognition only once a task reads it by its key (see `hoist`): a part no
        # task ends up reading must not keep its pickle alive.
        part.known = (
            fingerprint,
            _Known(part.key, data, stream, _locate(data, buffers) if buffers else ()),
        )


def _key_of(part: _Part) -> tuple[str, int]:
    assert part.key is not None
    return part.key


@functools.lru_cache(maxsize=1024)
def _loader(key: tuple[str, int]) -> Task:
    # Every task rebuilds its own copy: no task sees what another did to its object (one node
    # serves them all: a task node is evaluated afresh by each task that holds it).
    return Task(None, pickle.loads, TaskRef(key))


def _container(values: tuple[Any, ...] | dict[str, Any]) -> Any:
    """Plain containers unless a value is a graph node, which only a node container evaluates."""
    items = values.values() if isinstance(values, dict) else values
    if any(isinstance(v, (GraphNode, TaskRef)) for v in items):
        return Dict(values) if isinstance(values, dict) else Tuple(*values)
    return values


def _rewrite(
    task: Task, replace: dict[Site, tuple[str, int]], nodes: dict[Any, Any] | None = None
) -> Task:
    """``task`` with each site in ``replace`` read from its key. ``nodes`` caches the nodes
    that replace a function (the same for every task sharing a partial), so that a graph's
    tasks share them as they shared the partial."""
    nodes = {} if nodes is None else nodes
    args = tuple(
        _loader(replace[("arg", i)]) if ("arg", i) in replace else arg
        for i, arg in enumerate(task.args)
    )
    kwargs = {
        name: _loader(replace[("kwarg", name)]) if ("kwarg", name) in replace else value
        for name, value in task.kwargs.items()
    }
    producer = task.data_producer
    func: Any = task.func
    if not any(site[0] not in ("arg", "kwarg") for site in replace):
        return Task(task.key, func, *args, _data_producer=producer, **kwargs)
    cache_key = (
        id(func),
        frozenset(item for item in replace.items() if item[0][0] not in ("arg", "kwarg")),
    )
    func_node = nodes.get(cache_key)
    if func_node is None:
        if ("func",) in replace:
            func_node = _loader(replace[("func",)])
        else:
            inner = func.func
            if ("partial.func",) in replace:
                inner = _loader(replace[("partial.func",)])
            pargs = [
                _loader(replace[("partial.arg", i)]) if ("partial.arg", i) in replace else arg
                for i, arg in enumerate(func.args)
            ]
            pkwargs = {
                name: (
                    _loader(replace[("partial.kwarg", name)])
                    if ("partial.kwarg", name) in replace
                    else value
                )
                for name, value in func.keywords.items()
            }
            func_node = Task(None, functools.partial, inner, *pargs, **pkwargs)  # type: ignore[arg-type]
        nodes[cache_key] = func_node
    return Task(
        task.key,
        apply,
        func_node,
        _container(args),
        _container(kwargs),
        _data_producer=producer,
    )


#: Fused subgraphs nest (``Task.fuse`` of tasks that are fused already); deeper ones are left.
_MAX_NESTING = 8

# Where a unit sits in its node: the inner keys leading to it through fused subgraphs (empty for
# the node itself).
Path = tuple[Any, ...]


def _units(node: Any, depth: int = 0) -> list[tuple[Path, Task]]:
    """The tasks whose parts are examined for one node of the graph, each with its path inside
    the node: the node itself if it is a plain task, else the tasks of the fused subgraph it
    runs (what ``Task.fuse`` builds: ``_execute_subgraph(inner_dsk, outkey, inkeys, *deps)``),
    through nested subgraphs."""
    if type(node) is not Task or node.func is apply:
        return []
    if node.func is not _execute_subgraph:
        return [((), node)]
    args = node.args
    if depth >= _MAX_NESTING or len(args) < 3:
        return []
    if type(args[0]) is not dict or not isinstance(args[2], tuple):
        return []
    units = []
    for key, inner in args[0].items():
        inner_units = _units(inner, depth + 1)
        if not inner_units:
            # An inner node that is not examined (a DataNode, an Alias, an ``apply`` task, a
            # subgraph nested too deep) may hold the very object a sibling would have hoisted:
            # the whole subgraph is left as sent, so no identity inside it is split.
            return []
        units += [((key, *path), unit) for path, unit in inner_units]
    return units


def _short(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _rewrite_node(
    node: Task, replace: dict[tuple[Path, Site], tuple[str, int]], nodes: dict[Any, Any]
) -> Task:
    if node.func is not _execute_subgraph:
        return _rewrite(node, {site: key for (_path, site), key in replace.items()}, nodes)
    inner_dsk, outkey, inkeys, *dependencies = node.args
    inner_dsk = dict(inner_dsk)
    by_name: dict[Any, dict[tuple[Path, Site], tuple[str, int]]] = {}
    for (path, site), key in replace.items():
        by_name.setdefault(path[0], {})[(path[1:], site)] = key
    needed: dict[tuple[str, int], None] = {}
    for name, mine in by_name.items():
        inner_dsk[name] = _rewrite_node(inner_dsk[name], mine, nodes)
        needed.update(dict.fromkeys(mine.values()))
    # The subgraph reads a hoisted key like its other inputs: named in inkeys, passed as a
    # dependency of the fused task.
    added = tuple(key for key in needed if key not in inkeys)
    return Task(
        node.key,
        _execute_subgraph,
        inner_dsk,
        outkey,
        (*inkeys, *added),
        *dependencies,
        *(TaskRef(key) for key in added),
        _data_producer=node.data_producer,
    )


def hoist(
    dsk: dict[Any, Any],
    threshold: int,
    seen: Seen,
    existing: Callable[[Any], bool] | None = None,
) -> Hoisted:
    """Rewrites ``dsk`` (a materialized graph: key -> ``GraphNode``) in place so that each part
    worth it is sent once; see the module's docstring for the rules. ``seen`` is what earlier
    graphs had (`Seen`), updated with this one's large parts. A node whose key
    ``existing`` says the scheduler has already is left as it is: the scheduler keeps the task
    it has (and would take different dependencies for a different task)."""
    parts: dict[int, _Part] = {}
    func_parts: dict[int, list[tuple[Site, Any, bool]]] = {}
    # Per node of the graph: its units and every part found in them, as
    # ((path of the unit, site), part, may be hoisted).
    holders: list[tuple[Task, list[tuple[tuple[Path, Site], Any, bool]]]]
    holders = []
    for node in dsk.values():
        units = _units(node)
        if not units:
            continue
        if existing is not None and existing(node.key):
            seen.note(node.key, ALREADY_THERE)
            continue
        found = [
            ((path, site), obj, may)
            for path, unit in units
            for site, obj, may in _parts(unit, func_parts)
        ]
        hoistable = False
        for where, obj, may in found:
            if may:
                hoistable = True
                part = parts.get(id(obj))
                if part is None:
                    part = parts[id(obj)] = _Part(obj)
                part.sites.append((node, where))
        if hoistable:
            holders.append((node, found))
    if not parts:
        return Hoisted(dsk, [], 0, {})
    _choose(parts, threshold, seen)
    chosen = {ident: part for ident, part in parts.items() if part.key is not None}
    if not chosen:
        return Hoisted(dsk, [], 0, {})

    reaches: dict[int, _Reach] = {}
    # What the graph holds is alive while it is examined: ids are stable keys of these caches.
    free: dict[int, bool] = {}

    def identity_free(obj: Any) -> bool:
        result = free.get(id(obj))
        if result is None:
            result = free[id(obj)] = _identity_free(obj)
        return result

    def reach(obj: Any) -> frozenset[int] | None:
        if identity_free(obj):
            return frozenset()
        known = reaches.get(id(obj))
        if known is None:
            known = reaches[id(obj)] = _reach(obj)
        return known.ids

    overlaps: dict[tuple[int, int], bool] = {}

    def overlap(a: Any, b: Any) -> bool:
        if identity_free(b) or identity_free(a):  # without pickling either
            return False
        pair = (id(a), id(b))
        result = overlaps.get(pair)
        if result is None:
            ra, rb = reach(a), reach(b)
            # A part whose reach is unknown may share anything: it stays in its task.
            result = overlaps[pair] = ra is None or rb is None or not ra.isdisjoint(rb)
        return result

    used: dict[int, int] = {}
    nodes: dict[Any, Any] = {}
    per_prefix: dict[str, SentOnceRow] = {}
    first_site: dict[int, tuple[Path, Site, Any]] = {}
    sent: set[Any] = set()

    def decide(found: list[tuple[tuple[Path, Site], Any, bool]]) -> tuple[list[int], str | None]:
        # Identity is kept per node: what one pickle (one task message) holds is one object on
        # the worker, so a hoisted part must be the only place the node holds it, and share
        # no object with the rest of the node. Returns the positions in ``found`` of the parts
        # kept, and why one was not.
        counts: dict[int, int] = {}
        for _where, obj, _may in found:
            counts[id(obj)] = counts.get(id(obj), 0) + 1
        why_not = None
        if any(may and id(obj) in chosen and counts[id(obj)] > 1 for _w, obj, may in found):
            why_not = TWICE
        hoisted = [
            i
            for i, (_where, obj, may) in enumerate(found)
            if may and id(obj) in chosen and counts[id(obj)] == 1
        ]
        if not hoisted:
            return [], why_not
        rest = [obj for i, (_where, obj, _may) in enumerate(found) if i not in hoisted]
        keep = []
        for i in hoisted:
            obj = found[i][1]
            if any(overlap(obj, other) for other in rest) or any(
                found[j][1] is not obj and overlap(obj, found[j][1]) for j in hoisted
            ):
                why_not = SHARES_OBJECTS
                continue
            keep.append(i)
        return keep, why_not

    # The tasks of a map hold the same parts at the same places: decide once per such shape.
    # A decision depends only on which object is where (and may be hoisted), so the shape names
    # places by position: the tasks of a fused map (whose inner keys differ) share it too.
    decisions: dict[tuple[Any, ...], tuple[list[int], str | None]] = {}
    for node, found in holders:
        shape = tuple((where[1], id(obj), may) for where, obj, may in found)
        decided = decisions.get(shape)
        if decided is None:
            decided = decisions[shape] = decide(found)
        kept, why_not = decided
        if why_not is not None:
            seen.note(node.key, why_not)
        if not kept:
            continue
        keep = [(found[i][0], found[i][1]) for i in kept]
        replace = {where: _key_of(chosen[id(obj)]) for where, obj in keep}
        dsk[node.key] = _rewrite_node(node, replace, nodes)
        counts_row = per_prefix.setdefault(key_split(node.key), SentOnceRow())
        counts_row.tasks += 1
        for (path, site), obj in keep:
            ident = id(obj)
            size = len(chosen[ident].data or b"")
            if ident not in used:
                first_site[ident] = (path, site, obj)
                # Once per content new to the cluster (a key the scheduler has already is not
                # sent again), against the prefix of the first task that reads it.
                if chosen[ident].new and chosen[ident].key not in sent:
                    sent.add(chosen[ident].key)
                    counts_row.sent_once += size
            used[ident] = used.get(ident, 0) + 1
            counts_row.parts += 1
            counts_row.not_sent_per_task += size

    # Equal content in two objects is one key: one row, the tasks of both counted.
    rows: dict[tuple[str, int], list[Any]] = {}
    new = 0
    for ident, n in used.items():
        part = chosen[ident]
        assert part.key is not None and part.data is not None
        if part.known is not None:
            seen.add(*part.known)
        row = rows.get(part.key)
        if row is None:
            dsk[part.key] = DataNode(part.key, part.data)
            rows[part.key] = [part.key, len(part.data), n, first_site[ident]]
            new += part.new
        else:
            row[2] += n
    ordered = sorted((tuple(row) for row in rows.values()), key=lambda row: row[1], reverse=True)
    return Hoisted(dsk, ordered, new, per_prefix)  # type: ignore[arg-type]


def _path_text(path: Path, site: Site, obj: Any, size: int) -> str:
    inside = "".join(f"Task.args[0][{_short(name)}] -> " for name in path)
    return f"{inside}{_label(site)} -> {_describe(obj, size)}"


def _describe(obj: Any, size: int) -> str:
    if isinstance(obj, types.FunctionType):
        return f"<function {obj.__qualname__} {format_bytes(size)}>"
    return f"<{type(obj).__name__} {format_bytes(size)}>"


def verdict(x: Any, threshold: int | None, seen: Seen) -> str:
    """What send-once did about the large pickle of ``x`` (a message being pickled), for the
    large-pickle warning."""
    if isinstance(x, DataNode) and is_send_once_key(x.key):
        return (
            "it is a part shared by tasks that send-once pickled once: it is sent once per "
            "worker, and the tasks' own messages carry only a reference to it"
        )
    if threshold is None:
        return "send-once is off (ferropickle.send-once.threshold: false)"
    if isinstance(x, GraphNode):
        noted = seen.why_not(x.key)
        if noted is not None:
            return noted
    return (
        "send-once left it in the task: it hoists only a task's arguments, a partial's "
        "arguments and keywords, and functions pickled by value, from "
        f"{format_bytes(threshold)} (ferropickle.send-once.threshold), shared by two tasks "
        "or more or seen in a recent graph"
    )
