"""Type stubs and reference documentation for ferropickle's compiled core."""

from collections.abc import Callable, Iterable
from pickle import PickleBuffer
from pickle import PicklingError as _StdPicklingError
from pickle import UnpicklingError as _StdUnpicklingError
from typing import Any

from typing_extensions import Buffer

__all__ = [
    "DEFAULT_PROTOCOL",
    "HIGHEST_PROTOCOL",
    "PicklingError",
    "PicklingRecursionError",
    "UnpicklingError",
    "__version__",
    "cache_clear",
    "cache_info",
    "dumps",
    "loads",
    "stats",
]

__version__: str
"""This build's version (the crate's, from ``Cargo.toml``; the package metadata has the same)."""

HIGHEST_PROTOCOL: int
"""The highest protocol written and read: 5."""

DEFAULT_PROTOCOL: int
"""The protocol `dumps` writes when none is given: 5 (as cloudpickle and Dask use)."""

class PicklingError(_StdPicklingError):
    """An object could not be pickled, where ``pickle`` raises ``pickle.PicklingError`` too
    (``Can't pickle local object ...``, a malformed ``__reduce__`` result, ...).

    Every exception ``dumps`` raises (this one, or the ``TypeError``, ``ValueError``, ...
    that the object's own code raised, which keeps its type) carries a note saying where the
    object sits, e.g. ``when pickling Task.args[0] -> dict['conn'] -> socket``.
    """

class PicklingRecursionError(PicklingError, RecursionError):
    """Pickling needed deeper nesting than ``sys.getrecursionlimit()`` or the thread's native
    stack allows. Both a ``RecursionError`` (what ``pickle`` raises) and a
    ``pickle.PicklingError`` (what cloudpickle raises); the original error, if one was met, is
    ``__cause__``.
    """

class UnpicklingError(_StdUnpicklingError):
    """A pickle stream was malformed or truncated; the message names the byte offset."""

def dumps(
    obj: Any,
    protocol: int | None = None,
    *,
    buffer_callback: Callable[[PickleBuffer], Any] | None = None,
) -> bytes:
    """Pickle ``obj`` to a standard pickle stream that stock ``pickle.loads`` can read.

    Call-compatible with ``pickle.dumps``, ``cloudpickle.dumps`` and
    ``distributed.protocol.pickle.dumps``.

    * ``protocol``: 4 or 5 are written natively; ``None`` or a negative value means 5; 0-3 are
      delegated to ``cloudpickle.dumps``; above 5 raises ``ValueError``.
    * ``buffer_callback``: PEP 574 out-of-band buffers, exactly as ``pickle``: each
      ``PickleBuffer`` is passed to it and goes out of band unless it returns a true value.
      Needs protocol 5.

    Functions and classes that can't be imported by name where the stream is loaded (defined in
    ``__main__``, in a module registered with ``cloudpickle.register_pickle_by_value``, locally
    or dynamically) are pickled by value with cloudpickle's reduction, inline in the same
    stream: what ``cloudpickle.dumps`` would write, read from the function at this call (its
    current globals, defaults, closure and attributes). The reader needs cloudpickle
    installed, as for any cloudpickle stream.

    Raises what ``pickle.dumps`` raises for an unpicklable object (the object's own
    ``TypeError``, ``ValueError``, ... unchanged, or ``PicklingError``), with a note naming where
    it sits; ``PicklingRecursionError`` for nesting deeper than ``sys.getrecursionlimit()`` or
    than the thread's native stack allows.
    """

def loads(
    data: Buffer,
    /,
    *,
    fix_imports: bool = True,
    encoding: str = "ASCII",
    errors: str = "strict",
    buffers: Iterable[Any] | None = None,
) -> Any:
    """Rebuild the object a pickle stream describes.

    Reads any standard pickle stream (protocols 0-5, from ``pickle``, ``cloudpickle`` or
    ``dumps``), from any bytes-like object, without copying it. The keyword arguments mean what
    they mean for ``pickle.loads``. Malformed or truncated data raises ``UnpicklingError`` with
    the byte offset; memory use is bounded by the input's size whatever it claims.
    """

def cache_info() -> dict[str, Any]:
    """What ``dumps`` remembers between calls; none of it can change what a stream says.

    Keys: ``globals`` (by-reference/by-value decisions for live functions, classes and
    builtins, each re-checked on use against where its name points now) and ``code_objects``
    (distinct code objects whose global names, as cloudpickle's ``_extract_code_globals``
    finds them, are known: a code object is immutable, and the submodules it reaches are
    looked up again whenever ``sys.modules`` has changed), ``submodule_scans`` (how many
    times those submodules were looked up because ``sys.modules`` had changed or the code was
    new; a count since the process started, not cleared by ``cache_clear``), and
    ``code_segments`` (live code objects, met by two or more ``dumps``, whose encoded
    ``_code_reduce`` arguments are kept and copied into later streams when none of the objects
    they memoize is in that stream's memo yet; each goes when its code object is freed).
    """

def cache_clear() -> None:
    """Forgets what ``cache_info()`` counts (only a speed-up: streams stay the same)."""

def stats(*, reset: bool = False) -> dict[str, Any]:
    """Process-wide counters, and which native writers are active.

    ``dumps_calls``, ``dumps_errors``, ``dumps_bytes``, ``dumps_ns`` (time inside ``dumps``),
    ``objects_native`` (written without calling Python code), ``objects_reduced`` (through
    ``__reduce_ex__`` or a reducer), ``objects_by_value`` (by-value functions and classes),
    ``loads_calls``, ``loads_errors``, ``loads_bytes``, ``loads_ns``: ints. ``reset=True``
    zeroes them after reading them. The two times are estimates: one call in 8, picked at
    random, is timed and counts 8 times (reading the clock on every call would cost a tenth of
    a small ``dumps``), so they are close over many calls, not for one; the other counters are
    exact.

    ``native_writers`` is ``{"path": bool, "partial": bool, "dask": bool}``: whether this
    Python's layout of ``pathlib`` paths, ``functools.partial`` and dask's graph nodes was
    recognised (checked once against each type's own ``__reduce_ex__``), so that they are
    written from their fields. A layout not recognised (a newer CPython or dask) is ``False``,
    and its objects go through ``__reduce_ex__``, with the same stream. ``dask`` stays
    ``False`` until someone imports ``dask._task_spec``: ferropickle never imports dask.
    """
