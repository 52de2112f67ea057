"""Protocols 0-3, which nobody sends to Dask: written by cloudpickle's pickler rather than by a
second native writer, with ferropickle's contract kept where ``cloudpickle.dumps`` differs:

* a class whose metaclass has a ``copyreg`` reducer is reduced by it, as ``pickle`` does
  (cloudpickle's ``reducer_override`` claims every class first);
* runaway recursion stays a ``RecursionError`` for ``dumps`` to report as
  ``PicklingRecursionError`` (``cloudpickle.Pickler.dump`` would turn it into a plain
  ``PicklingError``).
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any

import cloudpickle


class _Pickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type) and type(obj) in copyreg.dispatch_table:
            return NotImplemented  # the dispatch table's reducer, as in `save()`
        return super().reducer_override(obj)


def dumps(obj: Any, protocol: int) -> bytes:
    """``obj`` pickled at ``protocol`` (0-3) as ``cloudpickle.dumps`` would, but see above."""
    buf = io.BytesIO()
    pickle.Pickler.dump(_Pickler(buf, protocol), obj)
    return buf.getvalue()
