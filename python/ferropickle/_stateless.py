"""Which rebuilt by-value functions ``loads`` may share between messages.

``ferropickle.loads`` reuses the function a fragment rebuilt last time instead of rebuilding it
(see ``rust/rebuilt.rs``). Stock ``pickle.loads`` gives every message a fresh copy, with its own
globals, closure cells and defaults, so sharing is only invisible when the function can't carry
state from one call to the next. This module decides that, once per fragment, conservatively:
anything it can't prove harmless is rebuilt per message as usual.
"""

from __future__ import annotations

import dis
import sys
import types
from typing import Any

import cloudpickle

_WRITES_GLOBAL = {"STORE_GLOBAL", "DELETE_GLOBAL"}
_WRITES_CELL = {"STORE_DEREF", "DELETE_DEREF"}
_WRITES_ATTR = {"STORE_ATTR", "DELETE_ATTR"}
# Loads of objects that outlive a call: an attribute store right after one of these mutates a
# shared object (`f.calls = n` is `LOAD_GLOBAL f; STORE_ATTR calls`).
_LOADS_SHARED = {"LOAD_GLOBAL", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_NAME"}
# Names that reach a namespace or an object's attributes indirectly.
_INDIRECT_WRITERS = {"globals", "vars", "setattr", "delattr", "exec", "eval", "__dict__"}
_IMMUTABLE_ATOMS = (type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis))


def is_stateless(obj: Any) -> bool:
    """Whether sharing ``obj`` (a rebuilt by-value function) between loads can't be observed.

    A function qualifies when it has no
    ``__dict__`` entries, never rebinds a global or a closure cell, and every default, closure
    value and global it reads is immutable, a module, a class, a builtin or a function that
    qualifies in turn.
    """
    if not isinstance(obj, types.FunctionType):
        return False
    return _function_ok(obj, set())


def _function_ok(func: types.FunctionType, seen: set[int]) -> bool:
    if id(func) in seen:
        return True
    seen.add(id(func))
    if func.__dict__:
        return False
    code = func.__code__
    codes = list(_code_objects(code))
    for c in codes:
        if _INDIRECT_WRITERS.intersection(c.co_names):
            return False
        previous = None
        for ins in dis.get_instructions(c):
            if ins.opname in _WRITES_GLOBAL:
                return False
            if ins.opname in _WRITES_CELL and ins.argval in code.co_freevars:
                return False
            if ins.opname in _WRITES_ATTR and previous in _LOADS_SHARED:
                return False
            if ins.opname not in {"CACHE", "EXTENDED_ARG"}:
                previous = ins.opname
    values: list[Any] = list(func.__defaults__ or ())
    values += list((func.__kwdefaults__ or {}).values())
    values += [cell.cell_contents for cell in func.__closure__ or () if _cell_is_set(cell)]
    names = {name for c in codes for name in c.co_names}
    values += [func.__globals__[name] for name in names if name in func.__globals__]
    return all(_value_ok(v, seen) for v in values)


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _importable(cls: type) -> bool:
    """Whether ``cls`` is reached by name from its module (so pickled by reference, and the
    very same class object in every load), as opposed to rebuilt by value."""
    module_name = getattr(cls, "__module__", None)
    if not module_name or module_name == "__main__":
        return False
    registered = cloudpickle.list_registry_pickle_by_value()
    parts = module_name.split(".")
    if any(".".join(parts[:i]) in registered for i in range(1, len(parts) + 1)):
        return False
    found: Any = sys.modules.get(module_name)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is cls


def _cell_is_set(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises ValueError
    except ValueError:
        return False
    return True


def _value_ok(value: Any, seen: set[int]) -> bool:
    if isinstance(value, _IMMUTABLE_ATOMS):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_value_ok(v, seen) for v in value)
    if isinstance(value, (types.ModuleType, types.BuiltinFunctionType)):
        return True
    if isinstance(value, type):
        return _importable(value)
    if isinstance(value, types.FunctionType):
        return _function_ok(value, seen)
    return False
