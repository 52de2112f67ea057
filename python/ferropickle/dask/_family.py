"""The ``"ferropickle"`` serialization family (mirrors distributed's ``"pickle"`` family), and
`check_family`, which tells which peers cannot read it."""

from __future__ import annotations

from importlib import import_module
from pickle import PickleBuffer
from typing import TYPE_CHECKING, Any

from distributed.utils import ensure_memoryview

from ferropickle.dask._patching import dserialize
from ferropickle.dask._wrappers import dumps, loads

if TYPE_CHECKING:
    from distributed import Client

#: The name of the serialization family that the preload and `install` register.
FAMILY = "ferropickle"


def _family_dumps(
    x: Any, context: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[Any]]:
    frames: list[Any] = [None]
    writeable: list[bool] = []

    def buffer_callback(buffer: PickleBuffer) -> None:
        view = memoryview(buffer)
        frames.append(view)
        # Recorded so the reader can restore each buffer's writeability, as "pickle" does.
        writeable.append(not view.readonly)

    frames[0] = dumps(
        x,
        buffer_callback=buffer_callback,
        protocol=context.get("pickle-protocol", None) if context else None,
    )
    return {"serializer": FAMILY, "writeable": tuple(writeable)}, frames


def _family_loads(header: dict[str, Any], frames: list[Any]) -> Any:
    buffers = []
    for frame, writeable in zip(frames[1:], header["writeable"], strict=True):
        view = ensure_memoryview(frame)
        if writeable and view.readonly:
            view = memoryview(bytearray(view))  # the sender's buffer was writeable: copy
        elif not writeable and not view.readonly:
            view = view.toreadonly()
        buffers.append(view)
    return loads(frames[0], buffers=buffers)


def register_family() -> None:
    """Registers the ``"ferropickle"`` serialization family in this process; idempotent.

    Every preload of ``ferropickle.dask`` (enabled or not) and `install` do it; a process that
    only sends data with ``serializers=[..., "ferropickle", ...]`` calls it itself.
    """
    dserialize.register_serialization_family(FAMILY, _family_dumps, _family_loads)


class MissingFamilyError(RuntimeError):
    """A scheduler or worker cannot read the ``"ferropickle"`` serialization family."""


def check_family(client: Client) -> None:
    """Raises `MissingFamilyError` naming the scheduler / workers that lack the family.

    Only for data sent with the ``"ferropickle"`` serialization family: task messages that a
    ferropickle scheduler writes need nothing on the workers, so in a scheduler-only
    deployment this raises and nothing is wrong.

    distributed gives a sender no way to know what its peer can read: data sent with
    ``serializers=[..., "ferropickle"]`` to a process that has not registered it (with the
    ``ferropickle.dask`` preload, `install` or `register_family`) fails there with a bare
    ``KeyError('ferropickle')``. Call this once after connecting (and after workers join) to
    fail early with a message that says what to do.
    """
    # A lambda is pickled by value: a peer without ferropickle can answer, and asking does
    # not make it import ferropickle.
    probe = lambda: "ferropickle" in import_module("distributed.protocol.serialize").families  # noqa: E731
    missing = [] if client.run_on_scheduler(probe) else ["the scheduler"]
    missing += sorted(address for address, has in client.run(probe).items() if not has)
    if missing:
        raise MissingFamilyError(
            f"{', '.join(missing)} cannot read the 'ferropickle' serialization family (the "
            "receiving process raises KeyError('ferropickle')). This matters only for data "
            "sent with serializers=[..., 'ferropickle']: task messages from a ferropickle "
            "scheduler need nothing on the workers. To use the family, preload it there "
            "(dask worker --preload ferropickle.dask, or DASK_DISTRIBUTED__WORKER__PRELOAD="
            "ferropickle.dask; the scheduler's --preload), or send with the 'pickle' family: "
            "ferropickle writes standard pickle, so a stock peer reads it through 'pickle'."
        )
