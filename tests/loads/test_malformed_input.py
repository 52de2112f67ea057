"""ferropickle.loads on truncated, corrupted, hostile and random input.

The contract: a malformed stream raises `ferropickle.UnpicklingError` (a subclass of
`pickle.UnpicklingError`) naming the byte offset; exceptions raised by Python code that the
stream calls propagate as with pickle; nothing ever crashes, hangs, leaks or allocates more
than O(input).
"""

import collections
import datetime
import pickle
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ferropickle

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


class Obj:
    def __init__(self):
        self.a = [1, "two", 3.0]
        self.me = self


def rich_object():
    shared = ["shared", 2**70, -(2**40)]
    return {
        "ints": [0, 1, -1, 300, 70000, 2**31, -(2**63), 2**100],
        "floats": [1.5, float("inf"), -0.0],
        "text": ["", "a", "é€\U0001f600", "x" * 300],
        "bytes": [b"", b"\x00\xff", b"z" * 300],
        "containers": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), {1, 2}, frozenset([3])],
        "shared": [shared, shared, {"s": shared}],
        "objects": [Obj(), collections.OrderedDict(a=1), datetime.date(2020, 1, 2)],
        None: True,
    }


RICH_STREAMS = [pickle.dumps(rich_object(), protocol=p) for p in PROTOCOLS]

# Data-only streams (no GLOBAL/STACK_GLOBAL) for in-process mutation: a mutated stream can
# then only call code by spelling out a whole importable name by chance.
DATA_ONLY = {
    "k": [1, -5, 2**70, 1.25, "text", "é\U0001f600", b"\x00b", (1, (2, 3)), None, True],
    "nested": [[1, [2, [3]]], {"a": {"b": {}}}],
    "set": {1, 2, 3},
    "fs": frozenset({4}),
}
DATA_SEEDS = [pickle.dumps(DATA_ONLY, protocol=p) for p in (3, 4, 5)] + [
    pickle.dumps([1, 2.5, "s", [None, True], {"d": (1,)}], protocol=p) for p in (0, 1)
]


def assert_clean_error(exc):
    """An exception from a malformed stream: an ordinary Exception, located if it is ours."""
    assert isinstance(exc, Exception), repr(exc)
    if isinstance(exc, ferropickle.UnpicklingError):
        assert "(at byte " in str(exc), str(exc)


# ----- truncation ------------------------------------------------------------------------


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_every_truncation_raises_what_pickle_raises(proto):
    """Cut inside an opcode's argument: UnpicklingError ("truncated"); cut between opcodes,
    so that the next opcode can't be read: EOFError ("Ran out of input"), as `load()` says."""
    data = RICH_STREAMS[proto]
    for end in range(len(data)):
        with pytest.raises(Exception) as ours:
            ferropickle.loads(data[:end])
        with pytest.raises(Exception) as theirs:
            pickle.loads(data[:end])
        if type(theirs.value) is pickle.UnpicklingError:
            assert type(ours.value) is ferropickle.UnpicklingError, (end, ours.value)
            assert "truncated" in str(ours.value), (end, str(ours.value))
            assert "(at byte " in str(ours.value)
        else:
            assert type(ours.value) is type(theirs.value) is EOFError, (end, ours.value)
            assert "Ran out of input" in str(ours.value)


def test_empty_input():
    with pytest.raises(EOFError, match="Ran out of input"):
        ferropickle.loads(b"")


@pytest.mark.parametrize(
    ("data", "exc_type", "fragment"),
    [
        (b"\x80\x06.", ValueError, "unsupported pickle protocol: 6"),
        (b"Np-1\n.", ValueError, "negative PUT argument"),
        (b"Iabc\n.", ValueError, "could not convert string to int"),
        (b"I9223372036854775807JUNK\n.", ValueError, "could not convert string to int"),
        (b"Fabc\n.", ValueError, "could not convert string to float"),
        (b"F1e999\n.", OverflowError, ""),
        (b"L12\xc47L\n.", UnicodeDecodeError, ""),
        (b"Lxyz\n.", ValueError, "invalid literal"),
        (b"Va\np-1\n.", ValueError, "negative PUT argument"),
        (b"\x8e" + (2**63).to_bytes(8, "little"), OverflowError, "exceeds system's maximum size"),
        (b"\x8d" + (2**64 - 1).to_bytes(8, "little"), OverflowError, "exceeds system's maximum"),
        (b"\x95" + (2**64 - 1).to_bytes(8, "little"), OverflowError, "FRAME length exceeds"),
        (b"C\x00", ferropickle.UnpicklingError, "truncated"),
        (b"\x80\x05\x96\x00\x00\x00\x00\x00\x00\x00\x00", ferropickle.UnpicklingError, "truncated"),
    ],
    ids=repr,
)
def test_errors_of_the_class_c_pickle_raises(data, exc_type, fragment):
    with pytest.raises(Exception) as ours:
        ferropickle.loads(data)
    with pytest.raises(Exception) as theirs:
        pickle.loads(data)
    assert type(ours.value) is exc_type
    if exc_type is ferropickle.UnpicklingError:
        assert type(theirs.value) is pickle.UnpicklingError
    else:
        assert type(theirs.value) is exc_type
    assert fragment in str(ours.value)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"I0\t\n.", 0),  # not False: only a two-character line is a bool
        (b"I1 \n.", 1),
        (b"I00\n.", False),
        (b"I01\n.", True),
        (b"I9223372036854775808\n.", 2**63),
        (b"I-9223372036854775809\n.", -(2**63) - 1),
        (b"I12\x00junk\n.", 12),
        (b"I  +7  \n.", 7),
    ],
    ids=repr,
)
def test_text_int_as_load_int_reads_it(data, value):
    ours, theirs = ferropickle.loads(data), pickle.loads(data)
    assert (type(ours), ours) == (type(theirs), theirs) == (type(value), value)


#: Text INT/LONG literals whose meaning changed: CPython 3.14 reads them in base 10 (before:
#: base 0, so "0x1f" was hex and, in INT's C `strtol`, "010" octal); 3.15 reads only "00" and
#: "01" as False/True (before: any two characters reading 0 or 1). Before 3.14, 3.14, 3.15+.
TEXT_INT_BY_VERSION = [
    (b"I0x1f\n.", 31, ValueError, ValueError),
    (b"I-0x1f\n.", -31, ValueError, ValueError),
    (b"I0b1\n.", 1, ValueError, ValueError),
    (b"I010\n.", 8, 10, 10),
    (b"I-010\n.", -8, -10, -10),
    (b"I01\t\n.", ValueError, 1, 1),
    (b"I099999999999999999999\n.", ValueError, 99999999999999999999, 99999999999999999999),
    (b"I 1\n.", True, True, 1),
    (b"I-0\n.", False, False, 0),
    (b"I+0\n.", False, False, 0),
    (b"L010\n.", ValueError, 10, 10),
    (b"L010L\n.", ValueError, 10, 10),
    (b"L0x1f\n.", 31, ValueError, ValueError),
]


@pytest.mark.parametrize(
    ("data", "before_314", "on_314", "since_315"), TEXT_INT_BY_VERSION, ids=repr
)
def test_text_int_literals_read_as_this_interpreter_reads_them(data, before_314, on_314, since_315):
    expected = (
        since_315
        if sys.version_info >= (3, 15)
        else on_314
        if sys.version_info >= (3, 14)
        else before_314
    )
    if expected is ValueError:
        with pytest.raises(ValueError) as ours:
            ferropickle.loads(data)
        with pytest.raises(ValueError) as theirs:
            pickle.loads(data)
        assert str(ours.value) == str(theirs.value)
    else:
        ours, theirs = ferropickle.loads(data), pickle.loads(data)
        assert (type(ours), ours) == (type(theirs), theirs) == (type(expected), expected)


#: Frames whose opcodes or arguments cross the frame's end, and a frame that begins inside
#: another; and what stays valid (a frame header that exactly ends the open frame, an
#: argument that starts right after a frame, data after STOP inside a frame).
FRAME_CASES = [
    b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00Vhelloworld\n.",
    b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00X\x0a\x00\x00\x00helloworld.",
    b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00C\x0ahelloworld.",
    b"\x80\x04\x95\x09\x00\x00\x00\x00\x00\x00\x00cbuiltins\nprint\n.",
    b"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00NI1\n.",
    b"\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00N\x95\x00\x00\x00\x00\x00\x00\x00\x00NN.",
    b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00N\x95\x01\x00\x00\x00\x00\x00\x00\x00N.",
    b"\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00N\x95\x00\x00\x00\x00\x00\x00\x00\x00N.",
    b"\x80\x04\x95\x01\x00\x00\x00\x00\x00\x00\x00K\x05.",
    b"\x80\x04\x95\x01\x00\x00\x00\x00\x00\x00\x00I1\n.",
    b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00N.N",
    b"\x80\x04\x95\x01\x00\x00\x00\x00\x00\x00\x00N\x95\x01\x00\x00\x00\x00\x00\x00\x00.",
]


@pytest.mark.parametrize("data", FRAME_CASES, ids=repr)
def test_frame_boundaries_as_this_interpreter_keeps_them(data):
    """Since CPython 3.14.10 (and in 3.15) no opcode or argument may cross a frame's end and no
    frame begin inside another; earlier, frames of in-memory data were not enforced. Ours
    does what the running interpreter does."""
    try:
        expected = pickle.loads(data)
    except pickle.UnpicklingError as e:
        with pytest.raises(ferropickle.UnpicklingError) as ours:
            ferropickle.loads(data)
        assert str(e) in str(ours.value)
    else:
        assert ferropickle.loads(data) == expected


@pytest.mark.skipif(sys.version_info < (3, 14, 10), reason="enforced since CPython 3.14.10")
def test_a_frame_crossing_read_is_rejected():
    with pytest.raises(ferropickle.UnpicklingError, match="pickle exhausted before end of frame"):
        ferropickle.loads(FRAME_CASES[0])
    with pytest.raises(ferropickle.UnpicklingError, match="new frame before end of current"):
        ferropickle.loads(FRAME_CASES[5])


# ----- specific malformations and their messages -----------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment", "offset"),
    [
        (b"\x80\x05K", "BININT1: pickle data was truncated", 2),
        (b"\x80\x05\x8c\x05abc", "SHORT_BINUNICODE: pickle data was truncated", 2),
        (b"\x80\x05\xff.", "invalid load key, '\\xff'.", 2),
        (b"N\x00.", "invalid load key, '\\x00'.", 1),
        (b"0.", "unpickling stack underflow", 0),
        (b"(0.", "unpickling stack underflow", 2),
        (b"N(0.", None, None),
        (b"(\x85.", "unexpected MARK found", 1),
        (b"NNt.", "could not find MARK", 2),
        (b"NNu.", "could not find MARK", 2),
        (b"}(Nu.", "odd number of items for SETITEMS", 3),
        (b"(Nd.", "odd number of items for DICT", 2),
        (b"Nh\x11.", "Memo value not found at index 17", 1),
        (b"Nj\x00\x00\x01\x00.", "Memo value not found at index 65536", 1),
        (b"Ng5\n.", "Memo value not found at index 5", 1),
        (b"\x8b\xff\xff\xff\xff", "LONG pickle has negative byte count", 0),
        (b"T\xfe\xff\xff\xff", "BINSTRING pickle has negative byte count", 0),
        (b"K\x01K\x02\x93.", "STACK_GLOBAL requires str", 4),
        (b"S'abc\n.", "the STRING opcode argument must be quoted", 0),
        (b"P1\n.", "no persistent_load function", 0),
        (b"NQ.", "no persistent_load function", 1),
        (b"\x80\x05\x97.", "no *buffers* argument was given", 2),
        (b"\x82\x00.", "EXT specifies code <= 0", 0),
        (b"NN\x81.", "NEWOBJ: class argument must be a type, not NoneType", 2),
        (b"N.", None, None),
    ],
)
def test_error_messages(data, fragment, offset):
    if fragment is None:
        assert ferropickle.loads(data) is None
        return
    with pytest.raises(ferropickle.UnpicklingError) as info:
        ferropickle.loads(data)
    message = str(info.value)
    assert fragment in message
    assert message.endswith(f"(at byte {offset})"), message


def test_not_enough_buffers():
    data = pickle.dumps(
        [pickle.PickleBuffer(b"a"), pickle.PickleBuffer(b"b")],
        protocol=5,
        buffer_callback=[].append,
    )
    with pytest.raises(ferropickle.UnpicklingError, match="not enough out-of-band buffers"):
        ferropickle.loads(data, buffers=[b"a"])


def test_python_errors_propagate_like_pickle():
    # CPython 3.14 raises getattr's own error, and names a dotted path it can't follow.
    new = sys.version_info >= (3, 14)
    nope = "has no attribute 'nope'" if new else "Can't get attribute 'nope'"
    local = "Can't resolve path 'a.<locals>.b'" if new else "local attribute"
    cases = [
        (b"\x80\x04\x8c\x04math\x8c\x04nope\x93.", AttributeError, nope),
        (b"\x80\x02cmath\nnope\n.", AttributeError, nope),
        (b"cno_such_module_xyz\nf\n.", ModuleNotFoundError, "no_such_module_xyz"),
        (b"\x80\x04\x8c\x04math\x8c\x0ca.<locals>.b\x93.", AttributeError, local),
        (b"\x80\x04\x8c\x04math\x8c\x06pi.foo\x93.", AttributeError, "pi.foo"),
        (b"]N)R.", TypeError, "not callable"),
        (b"cbuiltins\nint\n]R.", TypeError, "argument list must be a tuple"),
        (b"\x80\x02cbuiltins\nint\n(K\x01K\x02K\x03tR.", TypeError, "int"),
        (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", UnicodeDecodeError, "utf-8"),
        (b"\x82\x07.", ValueError, "unregistered extension code 7"),
    ]
    for data, exc_type, fragment in cases:
        with pytest.raises(Exception) as ours:
            ferropickle.loads(data)
        with pytest.raises(Exception) as theirs:
            pickle.loads(data)
        assert isinstance(ours.value, exc_type), (data, ours.value)
        assert fragment in str(ours.value), (data, str(ours.value))
        if exc_type is not ferropickle.UnpicklingError:
            assert type(ours.value) is type(theirs.value)
            assert str(ours.value) == str(theirs.value)


def test_str_and_other_non_buffers_raise_type_error():
    with pytest.raises(TypeError, match="a bytes-like object is required, not 'str'"):
        ferropickle.loads("N.")
    with pytest.raises(TypeError):
        ferropickle.loads(42)
    with pytest.raises(TypeError):
        ferropickle.loads(pickle.dumps(1), buffers=42)


# ----- hostile sizes and memo indices ----------------------------------------------------

HUGE = (2**62).to_bytes(8, "little")
HOSTILE_SIZE_STREAMS = [
    b"\x80\x05\x8e" + HUGE + b"abc",  # BINBYTES8
    b"\x80\x05\x8d" + HUGE + b"abc",  # BINUNICODE8
    b"\x80\x05\x96" + HUGE + b"abc",  # BYTEARRAY8
    b"\x80\x05\x95" + HUGE + b"N.",  # FRAME
    b"\x80\x05\x8b\xff\xff\xff\x7f" + b"\x01" * 10,  # LONG4
    b"\x80\x05X\xff\xff\xff\xff" + b"a" * 10,  # BINUNICODE
    b"\x80\x05B\xff\xff\xff\xff" + b"a" * 10,  # BINBYTES
    b"\x80\x05T\xff\xff\xff\x7f" + b"a" * 10,  # BINSTRING
    b"\x80\x05Nr\xf0\xff\xff\xff0j\xf0\xff\xff\xffj\x00\x00\x00\x00.",  # sparse memo, then miss
]


@pytest.mark.parametrize("data", HOSTILE_SIZE_STREAMS)
def test_hostile_sizes_raise_promptly(data):
    with pytest.raises(ferropickle.UnpicklingError) as info:
        ferropickle.loads(data)
    assert "(at byte " in str(info.value)


def test_sparse_memo_indices_work_like_pickle():
    # (pickle.loads itself tries to allocate a 32 GiB memo table for this one.)
    assert ferropickle.loads(b"\x80\x05Nr\xf0\xff\xff\xff0j\xf0\xff\xff\xff.") is None
    for data in (
        b"\x80\x05K\x07r\x05\x00\x00\x00\x94\x85h\x01h\x05\x87.",
        b"\x80\x05K\x01\x94K\x02r\x01\x00\x00\x00K\x03\x94h\x00h\x01h\x02\x87.",
        b"K\x01p3\nK\x02p1\ng3\ng1\n\x86.",
    ):
        assert ferropickle.loads(data) == pickle.loads(data)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import ferropickle
    streams = {streams!r}
    ferropickle.loads(b"N.")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(200):
        for data in streams:
            try:
                ferropickle.loads(data)
            except ferropickle.UnpicklingError:
                pass
    # 300,000 distinct sparse memo indices cost one hash entry each, not 4 GiB of slots.
    sparse = b"\\x80\\x05N" + b"".join(
        b"r" + (0xFFFFFFF0 - 7 * i).to_bytes(4, "little") for i in range(300_000)
    ) + b"."
    assert ferropickle.loads(sparse) is None
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(after - before)
    """
)


def test_hostile_sizes_do_not_allocate():
    script = MEMORY_SCRIPT.format(streams=HOSTILE_SIZE_STREAMS)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    growth_kib = int(out.stdout.strip())
    assert growth_kib < 64 * 1024, f"max RSS grew by {growth_kib} KiB"


# ----- mutation and random input ---------------------------------------------------------


def mutate(data, ops):
    buf = bytearray(data)
    for kind, pos, value in ops:
        if not buf:
            buf.append(value)
            continue
        i = pos % len(buf)
        if kind == "flip":
            buf[i] ^= 1 << (value % 8)
        elif kind == "set":
            buf[i] = value
        elif kind == "insert":
            buf.insert(i, value)
        elif kind == "delete":
            del buf[i]
        else:
            del buf[i:]
    return bytes(buf)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
        st.integers(min_value=0, max_value=10_000),
        st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(min_value=0, max_value=255),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(seed=st.sampled_from(DATA_SEEDS), ops=mutations)
def test_mutated_streams_fail_cleanly(seed, ops):
    data = mutate(seed, ops)
    try:
        ferropickle.loads(data)
    except Exception as exc:
        assert_clean_error(exc)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_fail_cleanly(data):
    try:
        ferropickle.loads(data)
    except Exception as exc:
        assert_clean_error(exc)


# The batch below runs in a child process so that a crash (segfault, abort, stack overflow)
# shows up as a non-zero return code instead of killing the test run. An audit hook limits
# find_class to a few harmless globals: a mutated stream must not be able to call arbitrary
# code (e.g. allocate gigabytes through bytearray(2**31)).
BATCH_SCRIPT = textwrap.dedent(
    r"""
    import collections, datetime, pickle, random, sys
    import ferropickle

    ALLOWED = {
        ("collections", "OrderedDict"), ("datetime", "date"), ("copyreg", "_reconstructor"),
        ("builtins", "object"), ("builtins", "set"), ("builtins", "frozenset"),
        ("__builtin__", "set"), ("__builtin__", "frozenset"), ("__builtin__", "object"),
        ("copy_reg", "_reconstructor"), ("__main__", "Obj"),
    }

    def hook(event, args):
        if event == "pickle.find_class" and tuple(args) not in ALLOWED:
            raise RuntimeError("blocked global")

    class Obj:
        def __init__(self):
            self.a = [1, "two", 3.0]
            self.me = self

    shared = ["shared", 2**70, -(2**40)]
    objs = [
        {
            "ints": [0, 1, -1, 300, 70000, 2**31, -(2**63), 2**100],
            "floats": [1.5, float("inf"), -0.0],
            "text": ["", "a", "\u00e9\u20ac\U0001f600", "x" * 300],
            "bytes": [b"", b"\x00\xff", b"z" * 300],
            "containers": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), {1, 2}, frozenset([3])],
            "shared": [shared, shared, {"s": shared}],
            None: True,
        },
        [Obj(), Obj(), collections.OrderedDict(a=1), datetime.date(2020, 1, 2)],
    ]
    seeds = [pickle.dumps(o, protocol=p) for o in objs for p in range(6)]
    sys.addaudithook(hook)
    rng = random.Random(SEED)
    counts = collections.Counter()
    for i in range(COUNT):
        if i % 10 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        else:
            buf = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(buf) + 1)
                kind = rng.random()
                if kind < 0.4 and pos < len(buf):
                    buf[pos] ^= 1 << rng.randrange(8)
                elif kind < 0.6 and pos < len(buf):
                    buf[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
                elif kind < 0.8:
                    buf.insert(pos, rng.randrange(256))
                elif kind < 0.9:
                    del buf[pos:pos + 1]
                else:
                    del buf[pos:]
            data = bytes(buf)
        try:
            ferropickle.loads(data)
            counts["ok"] += 1
        except ferropickle.UnpicklingError as exc:
            assert "(at byte " in str(exc), str(exc)
            counts["UnpicklingError"] += 1
        except Exception as exc:
            counts[type(exc).__name__] += 1
    print(sum(counts.values()), dict(counts))
    """
)


@pytest.mark.parametrize("seed", [1234, 5678])
def test_mutation_batch_in_subprocess(seed):
    count = 20_000
    script = BATCH_SCRIPT.replace("SEED", str(seed)).replace("COUNT", str(count))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[0] == str(count), out.stdout


# ----- no leaks on the error path --------------------------------------------------------

LEAK_SCRIPT = textwrap.dedent(
    """
    import pickle
    import ferropickle

    def rss_kib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4

    rich = pickle.dumps({{"l": [str(i) for i in range(200)], "d": {{i: (i,) for i in range(50)}},
                         "b": b"x" * 1000}}, protocol={proto})
    streams = [
        rich[: len(rich) * 9 // 10],  # truncated with a full stack and memo
        rich[:-1] + b"\\xff",  # invalid opcode instead of STOP
        b"\\x80\\x04]\\x94(K\\x01\\x8c\\x03abc\\x94cbuiltins\\nint\\n]R.",  # TypeError in REDUCE
        b"\\x80\\x04]\\x94(K\\x01\\x8c\\x03abc\\x94\\x8c\\x04math\\x8c\\x04nope\\x93.",
        rich,  # and the success path
    ]

    def run(n):
        for _ in range(n):
            for data in streams:
                try:
                    ferropickle.loads(data)
                except Exception:
                    pass

    run(2000)
    start = rss_kib()
    run(20000)
    print(rss_kib() - start)
    """
)


@pytest.mark.parametrize("proto", [0, 5])
def test_error_path_does_not_leak(proto):
    out = subprocess.run(
        [sys.executable, "-c", LEAK_SCRIPT.format(proto=proto)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    growth_kib = int(out.stdout.strip())
    assert growth_kib < 2048, f"RSS grew by {growth_kib} KiB over 20,000 failing loads"


@pytest.mark.parametrize(
    "data",
    [b"N(e.", b"N(\x90.", b"]N(e.", b"N(u.", b"N(Ne.", b"N(N\x90.", b"](e.", b"\x8f(\x90."],
    ids=repr,
)
def test_an_empty_batch_on_a_wrong_target_as_this_interpreter_sees_it(data):
    """Since CPython 3.15 an empty APPENDS or ADDITEMS still looks up the target's `append`
    (or calls its `extend`) or `add`: on None that is an AttributeError; before, nothing."""
    try:
        expected = pickle.loads(data)
    except AttributeError as e:
        with pytest.raises(AttributeError) as ours:
            ferropickle.loads(data)
        assert str(ours.value) == str(e)
    else:
        assert ferropickle.loads(data) == expected
