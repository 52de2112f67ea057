"""The distributed internals the plugin replaces: handles on them, the check that they still look
as verified, and the patching that puts our functions in their place and back."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from importlib import import_module
from types import ModuleType
from typing import Any, NamedTuple

# By module path: `distributed.protocol.serialize` is also the name of a function that
# `distributed.protocol` re-exports, which shadows the submodule as an attribute.
dpickle = import_module("distributed.protocol.pickle")
dcore = import_module("distributed.protocol.core")
dserialize = import_module("distributed.protocol.serialize")

#: The (dask, distributed) release pairs CI runs the plugin's tests against (`.ci/run` reads
#: this set, and pyproject's extras are bounded to its range). Any other combination is
#: installed into only if its layout passes the same checks (see `layout_problem`), with a
#: warning naming both versions.
VERIFIED_VERSIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("2025.7.0", "2025.7.0"),
        ("2025.12.0", "2025.12.0"),
        ("2026.3.0", "2026.3.0"),
        ("2026.7.1", "2026.7.1"),
        ("2026.8.0", "2026.8.0"),
    }
)

#: Only modules of these packages get their by-name imports of ``dumps``/``loads`` patched: a
#: user module that copied distributed's function keeps what it chose.
PATCHED_PACKAGES = ("distributed", "dask")

# distributed's own functions, captured before anything here could replace them. They are the
# fallback for every object ferropickle refuses and what `restore` puts back.
STOCK_DUMPS: Callable[..., bytes] = dpickle.dumps
STOCK_LOADS: Callable[..., Any] = dpickle.loads
HIGHEST_PROTOCOL: int = dpickle.HIGHEST_PROTOCOL


class UnsupportedLayoutWarning(RuntimeWarning):
    """The installed distributed does not look like one ferropickle.dask knows how to patch.

    Issued by `install` (and so by the preload), which then leaves distributed's stock
    behaviour in place.
    """


class Patch(NamedTuple):
    """One attribute `patch` replaced, and what it held before."""

    module: ModuleType
    name: str
    original: Any


def _parameters(fn: Callable[..., Any]) -> list[tuple[str, Any]] | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [(p.name, p.kind) for p in params]


_POK = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KW = inspect.Parameter.KEYWORD_ONLY


def layout_problem() -> str | None:
    """What about the installed distributed does not match the layout verified, if anything."""
    if getattr(STOCK_DUMPS, "__module__", None) != "distributed.protocol.pickle":
        return "distributed.protocol.pickle.dumps was already replaced before ferropickle.dask"
    if getattr(STOCK_LOADS, "__module__", None) != "distributed.protocol.pickle":
        return "distributed.protocol.pickle.loads was already replaced before ferropickle.dask"
    if _parameters(STOCK_DUMPS) != [("x", _POK), ("buffer_callback", _KW), ("protocol", _KW)]:
        return f"distributed.protocol.pickle.dumps has signature {inspect.signature(STOCK_DUMPS)}"
    if _parameters(STOCK_LOADS) != [("x", _POK), ("buffers", _KW)]:
        return f"distributed.protocol.pickle.loads has signature {inspect.signature(STOCK_LOADS)}"
    # Task messages (`ToPickle(run_spec)`) and the "pickle" family reach dumps/loads through
    # the module attribute; if either stopped doing so, patching it would miss them.
    if getattr(dcore, "pickle", None) is not dpickle:
        return "distributed.protocol.core no longer uses distributed.protocol.pickle"
    if getattr(dserialize, "pickle", None) is not dpickle:
        return "distributed.protocol.serialize no longer uses distributed.protocol.pickle"
    return None


def _package_modules_holding(
    functions: dict[str, Callable[..., Any]],
) -> Iterator[tuple[ModuleType, str]]:
    """(module, name) for each dask/distributed module whose ``name`` is ``functions[name]``."""
    for module_name, module in list(sys.modules.items()):
        if module is dpickle or module_name.partition(".")[0] not in PATCHED_PACKAGES:
            continue
        # The namespace itself, not getattr(module, name): a lazy module's `__getattr__` could
        # import things (or fail) just because we looked.
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, function in functions.items():
            if namespace.get(name) is function:
                yield module, name


def _stock(name: str) -> Callable[..., Any]:
    return STOCK_DUMPS if name == "dumps" else STOCK_LOADS


def patch(replacements: dict[str, Callable[..., Any]]) -> list[Patch]:
    """Puts ``replacements`` (``{"dumps": ..., "loads": ...}``, either or both) in the place of
    distributed's functions; returns what it replaced, for `restore`.

    The module attribute first (the ToPickle path and the "pickle" family go through it), then
    every copy a dask or distributed module imported by name that is still distributed's own
    function. Modules imported later pick up the replacement from the module attribute.
    """
    targets = [(dpickle, name) for name in replacements]
    targets += _package_modules_holding({name: _stock(name) for name in replacements})
    patches = []
    for module, name in targets:
        patches.append(Patch(module, name, getattr(module, name)))
        setattr(module, name, replacements[name])
    return patches


def restore(patches: list[Patch], replacements: dict[str, Callable[..., Any]]) -> None:
    """Puts back exactly what `patch` replaced, and distributed's function wherever a module
    imported one of ``replacements`` by name while they were in place."""
    ours = tuple(replacements.values())
    for module, name, original in reversed(patches):
        if getattr(module, name, None) in ours:
            setattr(module, name, original)
    for module, name in _package_modules_holding(replacements):
        setattr(module, name, _stock(name))
