"""`explain`: the path to the biggest part of a pickle, for the large-pickle warning and for
anyone asking why a message is big."""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator
from pickle import PickleBuffer
from types import ModuleType
from typing import Any

import cloudpickle
from dask._task_spec import DataNode, Task
from dask.utils import format_bytes

import ferropickle

_ferro_dumps = ferropickle.dumps

#: Containers with more items than this are described as a whole ("dict of 2,000,000 items"):
#: pickling each item to find the biggest would take as long as the items are many.
MAX_ITEMS = 1000
_MAX_DEPTH = 40
#: A part this much larger than its parent's whole pickle is not written inside it (a global of
#: a function pickled by reference): streams differ by their header and framing only.
_SLACK = 64


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
        if len(node) <= MAX_ITEMS:
            for key, value in list(node.items()):
                yield f"{name}[{_short(key)}]", value
    elif isinstance(node, (list, tuple)):
        if len(node) <= MAX_ITEMS:
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
    for _ in range(_MAX_DEPTH):
        best: tuple[int, str, Any] | None = None
        for label, part in _parts(node):
            part_size = _pickled_size(part)
            if part_size is None or part_size > size + _SLACK:
                continue
            if best is None or part_size > best[0]:
                best = (part_size, label, part)
        if best is None or best[0] * 2 < size:
            break
        size, label, node = best
        path.append(label)
    return " -> ".join([*path, _describe(node, size)])


def function_name(x: Any) -> str:
    """The function a task runs (through partials), or the message's type, as
    ``module.qualname``."""
    func = x.func if isinstance(x, Task) else x
    while isinstance(func, functools.partial):
        func = func.func
    if not isinstance(func, (types.FunctionType, types.BuiltinFunctionType, type)):
        func = type(func)
    return f"{func.__module__}.{func.__qualname__}"
