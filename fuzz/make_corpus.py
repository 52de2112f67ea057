"""Writes the seed corpus of ``fuzz_loads.py``: pickles of varied plain data at every protocol;
with ``--dumps``, of ``fuzz_dumps.py``: random programs (each byte is a decision of the
generator) long enough to define several names and steps, so libFuzzer starts from programs of
a useful size rather than growing them from one byte.

python fuzz/make_corpus.py [DIR]            # DIR defaults to fuzz/corpus
python fuzz/make_corpus.py --dumps DIR
"""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import random
import sys

SEEDS = [
    0,
    1,
    -1,
    255,
    65535,
    2**31,
    -(2**31) - 1,
    2**63,
    2**100,
    -(2**200),
    0.5,
    float("inf"),
    -0.0,
    "",
    "a",
    "ab\u20ac",
    "\udc80",
    "x" * 300,
    b"",
    b"xy",
    b"z" * 300,
    bytearray(b"ba"),
    (),
    (1,),
    (1, 2),
    (1, 2, 3),
    (1, 2, 3, 4),
    [],
    [1],
    [1, [2, [3]]],
    {},
    {"a": 1, "b": [2]},
    set(),
    {1, 2},
    frozenset(),
    frozenset({"f"}),
    None,
    True,
    False,
    [("s",)] * 3,
]


def dumps_seeds(out: pathlib.Path) -> None:
    rng = random.Random(0)
    for _ in range(64):
        data = rng.randbytes(rng.randrange(64, 256))
        (out / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def main() -> None:
    args = sys.argv[1:]
    dumps = args[:1] == ["--dumps"]
    if dumps:
        args = args[1:]
    default = pathlib.Path(__file__).parent / "corpus"
    out = pathlib.Path(args[0]) if args else default
    out.mkdir(parents=True, exist_ok=True)
    if dumps:
        dumps_seeds(out)
        return
    shared: list = [1, "two"]
    for obj in [*SEEDS, [shared, shared], {"k": shared, "j": shared}]:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            data = pickle.dumps(obj, protocol)
            (out / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


if __name__ == "__main__":
    main()
