"""The ``"ferropickle"`` serialization family in this process (`check_family` against real
peers is in ``cluster/test_scheduler_preload.py``)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from distributed.protocol.serialize import deserialize, serialize
from plugin_support import FailsFirstTime

import ferropickle.dask as ferro_dask


@pytest.fixture(autouse=True)
def registered() -> None:
    """This process sends and receives with the family: registered as the preload does."""
    ferro_dask.register_family()


@pytest.mark.parametrize("writeable", [True, False])
def test_family_round_trips_out_of_band_frames_with_their_writeable_flag(writeable):
    array = np.arange(100.0)
    array.flags.writeable = writeable
    header, frames = serialize(array, serializers=["ferropickle"], on_error="raise")
    assert header["serializer"] == "ferropickle"
    assert header["writeable"] == (writeable,)
    assert len(frames) == 2
    out = deserialize(header, [bytes(f) for f in frames])  # as if received: read-only bytes
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable == writeable


def test_family_output_is_what_the_pickle_family_would_read():
    obj = {"paths": [pathlib.Path("/a"), pathlib.Path("/b")], "n": 3}
    header, frames = serialize(obj, serializers=["ferropickle"], on_error="raise")
    header["serializer"] = "pickle"
    assert deserialize(header, frames) == obj


def test_family_falls_back_for_objects_ferropickle_refuses():
    header, frames = serialize(FailsFirstTime(8), serializers=["ferropickle"], on_error="raise")
    assert deserialize(header, frames).value == 8
