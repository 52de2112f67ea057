"""Task functions and scheduler probes for the send-once cluster tests.

The scheduler and the workers import this module (they find this directory on PYTHONPATH), and
the workers cannot import ferropickle: nothing here may import it at module level.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

import numpy as np

#: The first element of the keys send-once adds (``ferropickle.dask._hoist.KEY_PREFIX``).
KEY_PREFIX = "send-once-"


def scale(a: np.ndarray, i: int) -> float:
    return float(a.sum()) + i


def scale_block(block: np.ndarray, a: np.ndarray) -> np.ndarray:
    return block + a[: block.shape[0]]


def bump(a: np.ndarray, i: int) -> float:
    """Mutates its argument: no other task may see that."""
    a[0] += 1
    return float(a[0])


def slow(a: np.ndarray, i: int) -> float:
    time.sleep(0.05)
    return float(a.sum()) + i


def fail_once(a: np.ndarray, i: int, flags: str) -> float:
    """Fails the first time it runs for ``i`` (a file in ``flags`` remembers), then works."""
    flag = pathlib.Path(flags) / f"ran-{i}"
    if not flag.exists():
        flag.touch()
        raise RuntimeError(f"first attempt of {i}")
    return float(a.sum()) + i


def can_import_ferropickle() -> bool:
    try:
        import ferropickle  # noqa: F401
    except ImportError:
        return False
    return True


def is_hoisted(key: Any) -> bool:
    return isinstance(key, tuple) and isinstance(key[0], str) and key[0].startswith(KEY_PREFIX)


def scheduler_hoisted_keys(dask_scheduler: Any) -> list[Any]:
    return [key for key in dask_scheduler.tasks if is_hoisted(key)]


def hoisted_key_holders(dask_scheduler: Any) -> list[str]:
    """The workers that hold a hoisted key in memory."""
    return sorted(
        {
            ws.address
            for ts in dask_scheduler.tasks.values()
            if is_hoisted(ts.key)
            for ws in ts.who_has or ()
        }
    )


def worker_hoisted_keys(dask_worker: Any) -> list[Any]:
    return [key for key in dask_worker.state.tasks if is_hoisted(key)]


def steals(dask_scheduler: Any) -> int:
    """How many tasks work stealing has moved so far."""
    return dask_scheduler.extensions["stealing"].count


def worker_hoisted_data(dask_worker: Any) -> list[Any]:
    return [key for key in dask_worker.data if is_hoisted(key)]


def set_grace(seconds: float, dask_scheduler: Any = None) -> float:
    """Sets how long the scheduler keeps a hoisted key after its last waiting task; returns
    the old value."""
    from ferropickle.dask import _send_once

    old = _send_once.GRACE_S
    _send_once.GRACE_S = seconds
    return old


_sent = [0]


def count_sent_bytes(dask_scheduler: Any) -> int:
    """Bytes the scheduler's TCP comms have written since the first call (which starts the
    count by wrapping ``TCP.write``, whose return value is the bytes it wrote)."""
    from distributed.comm import tcp

    if not getattr(tcp.TCP.write, "_counting", False):
        original = tcp.TCP.write

        async def write(self: Any, *args: Any, **kwargs: Any) -> int:
            n = await original(self, *args, **kwargs)
            _sent[0] += n
            return n

        write._counting = True  # type: ignore[attr-defined]
        tcp.TCP.write = write
    return _sent[0]


def pid() -> int:
    return os.getpid()
