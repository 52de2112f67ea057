"""Differential check of ``ferropickle.dumps`` against ``cloudpickle.dumps`` on one input.

An input is a *program*, decoded from the fuzzer's bytes (:class:`Choices`, so libFuzzer's
mutations steer every decision): a module's source (globals of varied values, functions,
closures, lambdas, annotated functions, classes, nested classes, partials, objects whose
``__reduce__`` reads a module global), the kind of module it runs in (``__main__``-like, an
importable module, or one registered with ``cloudpickle.register_pickle_by_value``), an object
built from those names (with shared references), and a sequence of steps: pickle the object, or
change state between calls (rebind a global, a default, a closure cell, ``__qualname__``,
``__module__``, an attribute, a partial's ``__dict__``; re-create a function; register or
unregister the module by value; rename the module; hold one more reference to a value).

At every pickling step, for protocols 4 and 5, with and without ``buffer_callback``:

- ``ferropickle.dumps`` writes the very bytes (and out-of-band buffers) ``cloudpickle.dumps``
  writes, or both raise an exception of the same class (cloudpickle's bytes are C pickle's
  wherever nothing is by value: the same ``_pickle.Pickler``);
- when the bytes differ, ``pickle.loads`` of both is described (:func:`describe`: values,
  types, shared references, functions by code, defaults, closures and the globals they read) to
  tell a difference of bytes from a difference of meaning.

A mismatch raises :class:`Mismatch`, whose message names the program, the step and the
features it used (``tags``), which is how mismatches are classified by defect.
"""

from __future__ import annotations

import functools
import pickle
import sys
import textwrap
import types
import typing

import cloudpickle

import ferropickle

#: The generated module's name, in ``sys.modules`` while a program runs (by reference it must be
#: importable; registering by value needs it there too).
MODULE = "fzm"

PROTOCOLS = (4, 5)


class Mismatch(AssertionError):
    def __init__(self, message: str, tags: set[str]):
        super().__init__(f"{message}\n  features: {sorted(tags)}")
        self.tags = tags


class Choices:
    """The fuzzer's bytes as a stream of decisions, one byte each (0 once they run out): a
    mutated byte changes one decision, and libFuzzer's comparison tracing sees each."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def below(self, n: int) -> int:
        if self.pos >= len(self.data):
            return 0
        byte = self.data[self.pos]
        self.pos += 1
        return byte % n

    def pick(self, options):
        return options[self.below(len(options))]

    def chance(self, percent: int) -> bool:
        return self.below(100) < percent


# ---------------------------------------------------------------------------------------------
# The program
# ---------------------------------------------------------------------------------------------

#: Leaf values, as source, and the features they exercise.
LEAVES = [
    ("0", ""),
    ("-7", ""),
    ("2 ** 70", ""),
    ("1.5", ""),
    ("'s'", ""),
    ("'x' * 3", "fresh-str"),
    ("b'xy'", ""),
    ("None", ""),
    ("True", ""),
    ("tuple(['a', 'b'])", "fresh-tuple"),
    ("frozenset({3, 5})", "frozenset"),
    ("(frozenset({3, 5}), None)", "frozenset"),
    ("[1, 2]", ""),
    ("{'a': 1}", ""),
    ("bytearray(b'ab')", ""),
    ("range(3)", ""),
    ("list[int]", "builtin-type"),
    ("int | None", "builtin-type"),
    ("types.SimpleNamespace(a=1)", "builtin-type"),
    ("types.GenericAlias", "builtin-type"),
    ("np.arange(4, dtype='int64')", "numpy"),
    ("np.zeros((2, 3))", "numpy"),
    ("pathlib.PurePosixPath('a/b')", ""),
    ("functools.partial(max, 1)", "partial"),
    ("max", ""),
    ("math.pi", ""),
]


class Program:
    """Source and names of one generated module, and the steps run against it."""

    def __init__(self, c: Choices):
        self.c = c
        self.tags: set[str] = set()
        self.lines = ["import functools, math, pathlib, types", "import numpy as np"]
        self.globals: list[str] = []
        self.functions: list[str] = []  # plain functions (defaults, re-creation)
        self.closures: list[str] = []
        self.classes: list[str] = []
        self.partials: list[str] = []
        self.objects: list[str] = []  # any name worth pickling
        self.sources: dict[str, str] = {}  # a function's def, to re-create it

    def value(self, depth: int = 0) -> str:
        if depth < 2 and self.c.chance(20):
            parts = [self.value(depth + 1) for _ in range(1 + self.c.below(3))]
            shape = self.c.below(3)
            if shape == 0:
                return "(" + ", ".join(parts) + ",)"
            if shape == 1:
                return "[" + ", ".join(parts) + "]"
            return "{" + ", ".join(f"'k{i}': {p}" for i, p in enumerate(parts)) + "}"
        if self.globals and self.c.chance(15):
            return self.c.pick(self.globals)
        source, tag = self.c.pick(LEAVES)
        if tag:
            self.tags.add(tag)
        return source

    def global_name(self) -> str:
        return self.c.pick(self.globals) if self.globals else "None"

    def body(self, depth: int) -> str:
        """An expression a function returns: globals, other functions, its argument."""
        options = [
            lambda: "x",
            lambda: self.global_name(),
            lambda: f"({self.global_name()}, x)",
            lambda: f"len(str({self.global_name()}))",
        ]
        if self.functions and depth < 1:
            options.append(lambda: f"{self.c.pick(self.functions)}(x)")
        if self.classes:
            options.append(lambda: f"{self.c.pick(self.classes)}")
        return self.c.pick(options)()

    def define(self, i: int) -> None:
        kind = self.c.below(10)
        if kind <= 2 or not self.globals:
            name = f"G{i}"
            self.lines.append(f"{name} = {self.value()}")
            self.globals.append(name)
            self.objects.append(name)
        elif kind == 3:
            name = f"f{i}"
            source = f"def {name}(x={self.value()}):\n    return {self.body(0)}"
            self.sources[name] = source
            self.lines.append(source)
            self.functions.append(name)
            self.objects.append(name)
        elif kind == 4:
            name = f"L{i}"
            self.lines.append(f"{name} = lambda x={self.value()}: {self.body(0)}")
            self.functions.append(name)
            self.objects.append(name)
            self.tags.add("lambda")
        elif kind == 5:
            name = f"C{i}"
            self.lines.append(
                f"def _make{i}(v):\n    def inner(x=0):\n        return (v, {self.body(0)})\n"
                f"    return inner\n{name} = _make{i}({self.value()})"
            )
            self.closures.append(name)
            self.objects.append(name)
            self.tags.add("closure")
        elif kind == 6:
            name = f"A{i}"
            annotation = self.c.pick(["list[int]", "int | None", "dict[str, tuple[int, ...]]"])
            source = f"def {name}(x: {annotation}) -> {annotation}:\n    return {self.body(0)}"
            self.sources[name] = source
            self.lines.append(source)
            self.functions.append(name)
            self.objects.append(name)
            self.tags.add("builtin-type")
        elif kind == 7:
            name = f"K{i}"
            self.lines.append(
                f"class {name}:\n    attr = {self.value()}\n"
                f"    def meth(self, x=1):\n        return {self.body(1)}\n"
                f"    class Inner:\n        pass\n"
                f"{name}_obj = {name}()\n{name}_obj.state = {self.value()}"
            )
            self.classes.append(name)
            self.objects += [name, f"{name}_obj", f"{name}.Inner", f"{name}.meth"]
            self.tags.add("class")
        elif kind == 8 and self.functions:
            name = f"P{i}"
            self.lines.append(
                f"{name} = functools.partial({self.c.pick(self.functions)}, {self.value()})"
            )
            self.partials.append(name)
            self.objects.append(name)
            self.tags.add("partial")
        else:
            # An object whose reduction reads a global again (through a table or by name):
            # the pickler meets that value twice, once in the table and once in the reduction.
            name = f"R{i}"
            target = self.global_name()
            by_name = self.c.chance(30)
            reduction = f"{target!r}" if by_name else "(tuple, (self.table[self.key],))"
            if by_name:
                self.tags.add("reduce-name")
            self.lines.append(
                f"class Later{i}:\n    def __init__(self, table, key):\n"
                f"        self.table, self.key = table, key\n"
                f"    def __reduce__(self):\n        return {reduction}\n"
                f"table{i} = {{'t': {target}}}\n"
                f"table{i}['l'] = Later{i}(table{i}, 't')\n{name} = table{i}"
            )
            self.objects.append(name)
            self.tags.add("reduce")

    def target(self) -> str:
        """The object pickled: some names, some repeated (shared references)."""
        names = [self.c.pick(self.objects) for _ in range(1 + self.c.below(4))]
        if self.c.chance(30):
            names.append(names[0])
            self.tags.add("shared")
        shape = self.c.below(4)
        if shape == 0:
            return names[0]
        if shape == 1:
            return "[" + ", ".join(names) + "]"
        if shape == 2:
            return "{" + ", ".join(f"'{n}': {n}" for n in names) + "}"
        self.tags.add("namespace")
        return "[{" + ", ".join(f"'{n}': {n}" for n in names) + "}, " + names[-1] + "]"

    def code_sharing(self, target: str) -> str:
        """`target` with objects of a function's code object beside it (its names, constants,
        bytecode, or a second function on the same code object), before or after it: the
        pickler memoizes them by identity, so the function's code must then refer to the
        earlier ones, and later ones to the code's."""
        how = self.c.below(7)
        if how == 0 or not self.functions:
            return target
        f = self.c.pick(self.functions)
        self.tags.add("code-shared")
        parts = {
            1: f"{f}.__code__.co_names",
            2: f"{f}.__code__.co_consts",
            3: f"{f}.__code__.co_code",
            4: f"list({f}.__code__.co_varnames)",
            5: f"types.FunctionType({f}.__code__, {f}.__globals__, 'twin', {f}.__defaults__)",
            6: f"[{f}.__code__.co_name, {f}.__code__.co_filename, {f}.__code__.co_linetable]",
        }[how]
        return f"[{parts}, {target}, {f}]" if self.c.chance(50) else f"[{target}, {f}, {parts}]"

    def frame_padding(self, target: str) -> str:
        """`target` after fillers sized so that a 64 KiB frame mark (the first, or the second)
        falls inside the target's own opcodes (see :func:`frame_padded`): `pickle` ends a frame
        at the first object it saves past the mark, which includes the objects a reduction
        builds for the stream alone (a function's state, a code object's argument tuple)."""
        mark = self.c.below(3)
        if mark == 0:
            return target
        self.tags.add("frame-mark")
        return f"{frame_padded.__name__}({target}, {self.c.below(256)}, {mark})"

    def change(self) -> str:
        """A statement run in the module between two pickling steps."""
        c = self.c
        options = [lambda: ("rebind", f"{self.global_name()} = {self.value()}")]
        if self.functions:
            f = lambda: c.pick(self.functions)  # noqa: E731 (a choice made when called)
            options += [
                lambda: ("defaults", f"{f()}.__defaults__ = ({self.value()},)"),
                lambda: ("qualname", f"{f()}.__qualname__ = 'a.{f()}'"),
                lambda: ("module-main", f"{f()}.__module__ = '__main__'"),
                lambda: ("module-none", f"{f()}.__module__ = None"),
                lambda: ("attribute", f"{f()}.attr = {self.value()}"),
            ]
        if self.sources:
            options.append(lambda: ("recreate", self.sources[c.pick(sorted(self.sources))]))
        if self.closures:
            options.append(
                lambda: (
                    "cell",
                    f"{c.pick(self.closures)}.__closure__[0].cell_contents = {self.value()}",
                )
            )
        if self.classes:
            k = lambda: c.pick(self.classes)  # noqa: E731
            options += [
                lambda: ("qualname", f"{k()}.__qualname__ = 'a.{k()}'"),
                lambda: ("module-main", f"{k()}.__module__ = '__main__'"),
                lambda: ("attribute", f"{k()}.attr = {self.value()}"),
            ]
        if self.partials:
            p = lambda: c.pick(self.partials)  # noqa: E731
            options += [
                lambda: ("partial-dict", f"vars({p()})"),
                lambda: ("partial-dict", f"{p()}.extra = 1\ndel {p()}.extra"),
                lambda: ("partial-dict", f"{p()}.extra = {self.value()}"),
            ]
        options += [
            lambda: ("register", "@register"),
            lambda: ("unregister", "@unregister"),
            lambda: ("module-renamed", "__name__ = 'renamed'"),
            lambda: ("extra-ref", f"_held = [{self.global_name()}]"),
        ]
        tag, statement = c.pick(options)()
        self.tags.add(tag)
        return statement


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------


#: Where a pickler ends a frame: at the first object it saves once the frame holds this much.
FRAME_SIZE_TARGET = 64 * 1024


def frame_padded(obj, fraction: int, mark: int) -> list:
    """`[*fillers, obj]`, a bytes and a str (each below a frame's size, so each sits in a frame)
    sized so that frame mark `mark` (1 or 2) falls `fraction`/256 of the way into `obj`'s
    opcodes, as far as `obj`'s own protocol 5 stream tells. For the second mark, two fillers of
    32 KiB first make the first frame end at a place that does not depend on `obj`."""
    try:
        size = len(cloudpickle.dumps(obj, PROTOCOLS[-1])) - 12  # PROTO, FRAME, STOP
    except Exception:  # compared as an error: any place will do
        size = 0
    into = max(size, 0) * fraction // 256
    half_frame = FRAME_SIZE_TARGET // 2
    fixed = [b"a" * half_frame, "b" * half_frame] if mark == 2 else []
    # What the frame holds before `obj` besides the fillers' own bytes: each filler's 5-byte
    # header and MEMOIZE, and in the first frame the list's EMPTY_LIST MEMOIZE MARK.
    overhead = 12 if mark == 2 else 15
    pad = max(FRAME_SIZE_TARGET - overhead - into, 600)
    return [*fixed, b"x" * (pad // 2), "y" * (pad - pad // 2), obj]


def pickled(dumps, obj, protocol: int, out_of_band: bool):
    """(bytes, raw buffers) or the exception's class."""
    buffers: list = []
    try:
        if out_of_band:
            data = dumps(obj, protocol, buffer_callback=buffers.append)
        else:
            data = dumps(obj, protocol)
    except RecursionError:
        return RecursionError
    except pickle.PicklingError:
        # ferropickle's PicklingError subclasses pickle's: the class the caller catches.
        return pickle.PicklingError
    except Exception as e:
        return type(e)
    return data, [bytes(b.raw()) for b in buffers]


def describe(obj, seen: dict | None = None, depth: int = 0):
    """A comparable account of an unpickled object: values and types, shared references (by
    first-seen index), functions by their code, defaults, closure and the globals they read."""
    if seen is None:
        seen = {}
    if depth > 30:
        return "..."
    if id(obj) in seen:
        return ("ref", seen[id(obj)])
    seen[id(obj)] = len(seen)

    def d(x):
        return describe(x, seen, depth + 1)

    kind = type(obj)
    if obj is None or kind in (int, float, bool, str, bytes, bytearray, range, complex):
        return (kind.__name__, repr(obj))
    if kind in (tuple, list):
        return (kind.__name__, [d(x) for x in obj])
    if kind in (set, frozenset):
        return (kind.__name__, sorted(repr(x) for x in obj))
    if kind is dict:
        return ("dict", [(repr(k), d(v)) for k, v in obj.items()])
    if kind is types.FunctionType:
        code = obj.__code__
        used = {n: d(obj.__globals__[n]) for n in code.co_names if n in obj.__globals__}
        cells = [d(cell.cell_contents) for cell in obj.__closure__ or ()]
        return (
            "function",
            obj.__module__,
            obj.__qualname__,
            code.co_code,
            d(obj.__defaults__),
            d(obj.__kwdefaults__),
            cells,
            used,
            d(dict(obj.__dict__)),
        )
    if kind is functools.partial:
        return ("partial", d(obj.func), d(obj.args), d(obj.keywords), d(vars(obj)))
    if isinstance(obj, type):
        state = {k: d(v) for k, v in vars(obj).items() if not k.startswith("__")}
        return ("class", obj.__module__, obj.__qualname__, state)
    if kind is types.ModuleType:
        return ("module", obj.__name__)
    if kind.__module__ == "numpy" and kind.__name__ == "ndarray":
        return ("ndarray", str(obj.dtype), obj.shape, obj.tobytes())
    if hasattr(obj, "__dict__") and not callable(obj):
        return (d(kind), d(dict(vars(obj))))
    return (kind.__name__, repr(obj))


def loaded(data, buffers):
    try:
        return describe(pickle.loads(data, buffers=buffers))
    except Exception as e:
        return ("exception", type(e).__name__)


#: What only a by-value stream of cloudpickle's holds (a function, class or module rebuilt).
BY_VALUE = (
    b"_make_function",
    b"_make_skeleton_class",
    b"_make_skeleton_enum",
    b"dynamic_subimport",
    b"_make_empty_cell",
    b"_make_cell",
)


def reference(obj, protocol: int, out_of_band: bool):
    """What ferropickle must write: cloudpickle's stream where something is by value, else
    pickle's (for whom cloudpickle writes a few builtin types differently)."""
    theirs = pickled(cloudpickle.dumps, obj, protocol, out_of_band)
    if not isinstance(theirs, type) and any(m in theirs[0] for m in BY_VALUE):
        return "cloudpickle", theirs
    plain = pickled(pickle.dumps, obj, protocol, out_of_band)
    if not isinstance(plain, type):
        return "pickle", plain
    return "cloudpickle", theirs


def compare(obj, where: str, tags: set[str], dumps=ferropickle.dumps) -> int:
    """Compares `dumps` (ferropickle's) with the reference on `obj` at every protocol and
    buffer mode; returns the number of comparisons. Raises Mismatch."""
    # Pickling can change what it pickles: copyreg caches a class's ``__slotnames__`` in the
    # class the first time an instance is reduced, and a by-value class's dict is written as it
    # is. Pickle once first, so both picklers see the state that settles.
    pickled(cloudpickle.dumps, obj, PROTOCOLS[-1], False)
    count = 0
    for protocol in PROTOCOLS:
        for out_of_band in (False, True) if protocol >= 5 else (False,):
            name, theirs = reference(obj, protocol, out_of_band)
            ours = pickled(dumps, obj, protocol, out_of_band)
            count += 1
            if theirs == ours:
                continue
            mode = f"protocol {protocol}" + (" with buffer_callback" if out_of_band else "")
            if isinstance(theirs, type) or isinstance(ours, type):
                raise Mismatch(f"{where}, {mode}: {name} {theirs!r}, ours {ours!r}", tags)
            same = loaded(*theirs) == loaded(*ours)
            meaning = "same meaning" if same else "DIFFERENT MEANING"
            raise Mismatch(
                f"{where}, {mode}: bytes differ ({meaning})\n"
                f"  {name:<11} {theirs[0]!r}\n  ours        {ours[0]!r}",
                tags | {"bytes" if same else "meaning"},
            )
    return count


class Generated(typing.NamedTuple):
    source: str
    kind: str  # "main", "module" or "by-value"
    steps: list[str]  # "@dump", "@register", "@unregister" or a statement
    step_tags: list[set[str]]  # the features each step adds when it runs
    target: str  # the expression pickled
    tags: set[str]  # the features of the module and the target


def generate(data: bytes) -> Generated:
    """The program `data` encodes (the order of decisions is the replay format of
    ``fuzz/found/dumps/``: keep it)."""
    c = Choices(data)
    program = Program(c)
    for i in range(1 + c.below(6)):
        program.define(i)
    kind = c.pick(["main", "module", "by-value"])
    program.tags.add(f"in-{kind}")
    # A step's features count from when it runs: a mismatch is filed under what ran before it.
    steps, step_tags = ["@dump"], [set()]
    for _ in range(c.below(4)):
        before = set(program.tags)
        steps += [program.change(), "@dump"]
        step_tags += [program.tags - before, set()]
        program.tags = before
    target = program.target()
    # Decided last, 0 (what a saved find that runs out of bytes reads) leaving the target as it
    # was: the finds saved before this decision existed replay unchanged.
    target = program.code_sharing(target)
    # The same for this one, decided after it.
    target = program.frame_padding(target)
    return Generated("\n".join(program.lines), kind, steps, step_tags, target, program.tags)


def run(data: bytes) -> int:
    """Generates the program `data` encodes and runs it; returns the number of comparisons.
    Raises Mismatch when ferropickle and cloudpickle disagree."""
    source, kind, steps, step_tags, target, tags = generate(data)

    module = types.ModuleType(MODULE)
    namespace = module.__dict__
    if kind == "main":
        namespace["__name__"] = "__main__"
    ferropickle.cache_clear()
    sys.modules[MODULE] = module
    try:
        if kind == "by-value":
            cloudpickle.register_pickle_by_value(module)
        exec(compile(source, f"<{MODULE}>", "exec"), namespace)
        count = 0
        for n, step in enumerate(steps):
            tags |= step_tags[n]
            where = f"step {n} of\n{textwrap.indent(source, '    ')}\n  steps {steps}"
            where += f"\n  object {target}"
            if step == "@dump":
                obj = eval(target, namespace, {frame_padded.__name__: frame_padded})
                count += compare(obj, where, set(tags))
            elif step in ("@register", "@unregister"):
                if kind == "main":
                    continue
                try:
                    if step == "@register":
                        cloudpickle.register_pickle_by_value(module)
                    else:
                        cloudpickle.unregister_pickle_by_value(module)
                except ValueError:  # already (un)registered, or renamed away from sys.modules
                    pass
            else:
                try:
                    exec(step, namespace)
                except Exception:  # e.g. a __qualname__ a lambda's code can't take: skip it
                    pass
        return count
    finally:
        namespace["__name__"] = MODULE
        if MODULE in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.unregister_pickle_by_value(module)
        sys.modules.pop(MODULE, None)
        ferropickle.cache_clear()


def check(data: bytes) -> None:
    run(data)


#: The defect classes a mismatch is filed under, first match wins: (class, features that
#: suggest it). A guess from what the program used, not a proof: a reduced reproducer says more.
CLASSES = [
    ("frame-boundary", {"frame-mark"}),
    ("builtin-type-by-name", {"builtin-type"}),
    ("module-none", {"module-none"}),
    ("renamed-by-value-module", {"module-renamed"}),
    ("partial-empty-dict", {"partial-dict"}),
    ("stale-by-reference", {"qualname", "module-main", "reduce-name"}),
    ("memo-refcount", {"fresh-tuple", "fresh-str", "frozenset", "reduce"}),
]


def classify(tags: set[str]) -> str:
    for name, features in CLASSES:
        if tags & features:
            return name
    return "unclassified"
