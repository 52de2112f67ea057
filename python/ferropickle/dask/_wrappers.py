"""The replacements for ``distributed.protocol.pickle.dumps`` / ``loads``: ferropickle first,
distributed's own function for whatever ferropickle refuses, every ``dumps`` accounted once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pickle import PickleBuffer
from typing import Any

import ferropickle
from ferropickle.dask._patching import HIGHEST_PROTOCOL, STOCK_DUMPS, STOCK_LOADS
from ferropickle.dask._state import STATE

_ferro_dumps = ferropickle.dumps
_ferro_loads = ferropickle.loads
_clock = time.perf_counter_ns
# Bound once: the hot path looks up nothing else.
_account = STATE.accounting.count
_fallbacks = STATE.fallbacks


def dumps(
    x: Any,
    *,
    buffer_callback: Callable[[PickleBuffer], Any] | None = None,
    protocol: int | None = HIGHEST_PROTOCOL,
) -> bytes:
    """``distributed.protocol.pickle.dumps``, written by ferropickle.

    Same signature and semantics as distributed's: protocol 5 by default, and out-of-band
    buffers are handed to ``buffer_callback`` only for protocol 5 (below it they stay in band,
    as distributed does). If ferropickle raises, the object goes through distributed's own
    ``dumps`` instead (counted, logged once per type); out-of-band buffers from the failed
    attempt are dropped, never passed on.
    """
    start = _clock()
    protocol = protocol or HIGHEST_PROTOCOL
    # Buffers are collected here and passed on only once the whole object has been written: a
    # failed attempt must not leave stray frames in the caller's message.
    buffers: list[PickleBuffer] | None = None if buffer_callback is None or protocol < 5 else []
    try:
        if buffers is None:
            result = _ferro_dumps(x, protocol)
        else:
            result = _ferro_dumps(x, protocol, buffer_callback=buffers.append)
    except Exception as exc:
        _fallbacks.count("dumps", f"{type(x).__module__}.{type(x).__qualname__}", exc)
        refused = True
    else:
        refused = False
    # Outside the `except` block, so an error from distributed is not chained onto ours (and
    # our traceback, with its frames' objects, is not kept alive during the retry).
    if refused:
        result, nbytes = _stock_dumps(x, buffer_callback, protocol)
    else:
        nbytes = len(result)
        if buffers:
            for buffer in buffers:
                buffer_callback(buffer)  # type: ignore[misc]  # set whenever buffers is
                nbytes += memoryview(buffer).nbytes
    _account(x, nbytes, _clock() - start)
    return result


def _stock_dumps(
    x: Any, buffer_callback: Callable[[PickleBuffer], Any] | None, protocol: int
) -> tuple[bytes, int]:
    """distributed's own ``dumps`` of ``x``, and its bytes with the out-of-band buffers."""
    if buffer_callback is None:
        result = STOCK_DUMPS(x, buffer_callback=None, protocol=protocol)
        return result, len(result)
    out_of_band = 0
    callback = buffer_callback

    def counting(buffer: PickleBuffer) -> Any:
        nonlocal out_of_band
        in_band = callback(buffer)
        if not in_band:
            out_of_band += memoryview(buffer).nbytes
        return in_band

    result = STOCK_DUMPS(x, buffer_callback=counting, protocol=protocol)
    return result, len(result) + out_of_band


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
    result = STOCK_LOADS(x, buffers=buffers)
    _fallbacks.count("loads", type(failure).__name__, failure)
    return result
