"""Make ``cloudpickle.dumps`` (and ``dump``) write with ``ferropickle.dumps``, in every process.

Used by ``cloudpickle_suite.py``, which copies this file next to a two-line ``sitecustomize.py``
in a temporary directory that is on ``PYTHONPATH`` for the test run *and* for every child Python
that cloudpickle's tests start (their ``testutils._make_cwd_env`` overwrites ``PYTHONPATH`` with
that directory, so a shim elsewhere would be lost in the children).

Nothing happens unless ``FERROPICKLE_CONFORMANCE_SWAP=1``. Then a one-shot import hook waits for
``import cloudpickle``; right after cloudpickle's own module has run, it

1. calls ``ferropickle.dumps(0)`` once, so ferropickle's lookup table captures cloudpickle's
   *stock* ``dumps`` (its fallback for by-value objects) before anything is replaced; without
   this ferropickle would later call itself;
2. replaces ``dumps`` and ``dump`` in ``cloudpickle`` and ``cloudpickle.cloudpickle`` (the
   ``cloudpickle_fast`` shim forwards to the latter). ``dumps`` becomes ``ferropickle.dumps``
   itself, so call-signature differences show up; ``dump`` becomes a wrapper writing
   ``ferropickle.dumps(...)`` to the file. ``Pickler``/``CloudPickler`` stay stock.

A process that never imports cloudpickle never imports ferropickle either, so children of the
tests see the same ``sys.modules`` they would see stock.

It is also a pytest plugin (``-p cloudpickle_swap``): it adds a header line saying whether the
swap is active, and fails the session early if it was requested but is not in place
(PYTEST_DONT_REWRITE: sitecustomize imported it before pytest could rewrite its asserts).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

ENV_VAR = "FERROPICKLE_CONFORMANCE_SWAP"
_TARGET = "cloudpickle"


def requested() -> bool:
    return os.environ.get(ENV_VAR) == "1"


def _ferro_dump(
    obj: Any, file: Any, protocol: int | None = None, buffer_callback: Any = None
) -> None:
    """``cloudpickle.dump`` written with ``ferropickle.dumps``."""
    import ferropickle

    file.write(ferropickle.dumps(obj, protocol, buffer_callback=buffer_callback))


def swap(cloudpickle: ModuleType) -> None:
    """Replace cloudpickle's ``dumps``/``dump`` by ferropickle's (idempotent)."""
    import ferropickle

    impl = sys.modules["cloudpickle.cloudpickle"]
    if cloudpickle.dumps is ferropickle.dumps:
        return
    # Initialise ferropickle's lookup table while cloudpickle.dumps is still cloudpickle's own:
    # the table keeps that function as the fallback for by-value objects.
    ferropickle.dumps(0)
    for module in (cloudpickle, impl):
        module.dumps = ferropickle.dumps
        module.dump = _ferro_dump


def active() -> bool:
    """Whether this process's cloudpickle writes with ferropickle."""
    cloudpickle = sys.modules.get(_TARGET)
    ferropickle = sys.modules.get("ferropickle")
    return (
        cloudpickle is not None
        and ferropickle is not None
        and cloudpickle.dumps is ferropickle.dumps
        and sys.modules["cloudpickle.cloudpickle"].dumps is ferropickle.dumps
    )


class _SwappingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        swap(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``cloudpickle`` with the normal machinery, then wraps its loader (one shot)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # the other finders, as a normal import
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _SwappingLoader(spec.loader)
        return spec


def install_hook() -> None:
    """Swap as soon as cloudpickle is imported (at once if it already is)."""
    if _TARGET in sys.modules:
        swap(sys.modules[_TARGET])
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


# pytest plugin hooks ------------------------------------------------------------------------


def pytest_configure(config: Any) -> None:
    if requested():
        import cloudpickle

        if not active():
            raise RuntimeError(
                f"{ENV_VAR}=1 but cloudpickle.dumps is {cloudpickle.dumps!r}: "
                "the sitecustomize shim did not run"
            )


def pytest_report_header(config: Any) -> list[str]:
    import cloudpickle

    state = "stock"
    if active():
        state = "ferropickle.dumps (swapped)"
    return [f"cloudpickle {cloudpickle.__version__} from {cloudpickle.__file__}; dumps: {state}"]
