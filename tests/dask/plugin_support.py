"""What the ``ferropickle.dask`` tests share: handles on distributed's functions, the objects
the tests send (importable by name, so real worker processes can rebuild them when this
directory is on their ``PYTHONPATH``) and user-script functions.
"""

from __future__ import annotations

import importlib
import os
import pathlib
from typing import Any

import distributed.client
import distributed.diagnostics.plugin
import distributed.diagnostics.progressbar
import distributed.scheduler
import distributed.shuffle._scheduler_plugin
from distributed.protocol.serialize import dask_deserialize, dask_serialize

import ferropickle.dask as ferro_dask
from ferropickle.dask import _patching

dpickle = importlib.import_module("distributed.protocol.pickle")
dcore = importlib.import_module("distributed.protocol.core")

TIMEOUT = 120

#: Every attribute `install` must replace in distributed 2026.8.0 (found by grepping its source
#: for ``from distributed.protocol.pickle import``), as (module, name).
BY_NAME = [
    (distributed.scheduler, "dumps"),
    (distributed.scheduler, "loads"),
    (distributed.client, "dumps"),
    (distributed.client, "loads"),
    (distributed.shuffle._scheduler_plugin, "dumps"),
    (distributed.diagnostics.plugin, "dumps"),
    (distributed.diagnostics.progressbar, "dumps"),
]
STOCK = {"dumps": _patching.STOCK_DUMPS, "loads": _patching.STOCK_LOADS}

#: For processes that must import this module (to rebuild `Opaque`).
SUBPROCESS_ENV = {
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
    )
}


def assert_stock() -> None:
    """distributed's own functions everywhere `install` patches, and the plugin off."""
    assert dpickle.dumps is STOCK["dumps"]
    assert dpickle.loads is STOCK["loads"]
    for module, name in BY_NAME:
        assert getattr(module, name) is STOCK[name], f"{module.__name__}.{name}"
    assert not ferro_dask.installed()


def script(source: str, name: str) -> Any:
    """A function defined as in a user's script (``__main__``), so it is pickled by value."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<script>", "exec"), namespace)
    return namespace[name]


class Opaque:
    """Refuses pickle; travels only through a ``dask_serialize`` registration.

    Stock ``distributed.protocol.pickle.dumps`` handles it (its ``_DaskPickler`` consults
    ``dask_serialize``); ferropickle does not, so the plugin must fall back for it.
    """

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("Opaque objects only travel through dask_serialize")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


@dask_serialize.register(Opaque)
def _serialize_opaque(obj: Opaque) -> tuple[dict[str, Any], list[bytes]]:
    return {"value": obj.value}, []


@dask_deserialize.register(Opaque)
def _deserialize_opaque(header: dict[str, Any], frames: list[bytes]) -> Opaque:
    return Opaque(header["value"])


def echo(x: Any) -> Any:
    """By reference (the workers import this module): stock pickle must manage the message,
    as it can't for a lambda next to an `Opaque`."""
    return x


class FailsFirstTime:
    """``__reduce_ex__`` raises on its first call only: ferropickle (first) is refused, and
    distributed's own attempt (second) succeeds."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.calls = 0

    def __reduce_ex__(self, protocol: object) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise TypeError("refused once")
        return (type(self), (self.value,))
