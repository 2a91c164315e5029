"""The op record (OpSpec) and the registry every test, backend and benchmark reads ops from.

A record holds everything about one ggml op: parameters and their kinds, shape rule, NumPy reference, input domain,
error bound, cost, and - written beside it in its family's module - the pinned upstream cases, the Hypothesis
strategy, the perf case, the ggml call and the planted bugs (mutants) its kernels carry. A record that lacks one of
these fails at import.

References compute in float64 and round once to the output type: they give the exact answer that every backend
is measured against, while each record's NMSE bound (upstream's values) says how far a float32 kernel may drift.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..case import Case
from ..tensor import DType, Tensor, is_int
from .ggml_call import GgmlCall

F32, F16, I32 = DType.F32, DType.F16, DType.I32


def f32_bits(x: float) -> int:
    """A float as the int32 word kernels read from their parameter block."""
    return int(np.array([x], dtype=np.float32).view(np.int32)[0])


def f32(x: float) -> float:
    """A float parameter as kernels see it (rounded to float32), so references use the same value."""
    return float(np.float32(x))


# ---- input domains: (rng, numpy shape, input index, params, shapes of all inputs) -> float64 values ---------------
def uniform(lo: float, hi: float):
    return lambda rng, shape, i, p, shapes=None: rng.uniform(lo, hi, shape)


def index_domain(index_src: int, count: Callable):
    """Source `index_src` holds indices in [0, count(shapes)); the others uniform in [-1, 1]."""
    def draw(rng, shape, i, p, shapes=None):
        if i == index_src:
            return rng.integers(0, count(shapes), shape)
        return rng.uniform(-1, 1, shape)
    return draw


# ---- parameter kinds: what each parameter must be, checked once when a node is validated ----------------------------
_NO = object()  # what Kind.accept returns for a value that does not fit


@dataclass(frozen=True)
class Kind:
    """What a parameter takes: `what` for messages; `accept` returns the value in its canonical form (numbers as
    float, ints as int, int lists as tuples), or _NO."""

    what: str
    accept: Callable
    optional: bool = False  # None allowed too


def _number(v):
    return float(v) if is_int(v) or isinstance(v, (float, np.floating)) else _NO


def ints(lo: int, hi: int | None = None) -> Kind:
    hi = lo if hi is None else hi

    def accept(v):
        if not isinstance(v, (list, tuple, np.ndarray)) or not lo <= len(v) <= hi or not all(is_int(x) for x in v):
            return _NO
        return tuple(int(x) for x in v)
    return Kind(f"{lo} ints" if lo == hi else f"{lo} to {hi} ints", accept)


INT = Kind("an int", lambda v: int(v) if is_int(v) else _NO)
NUMBER = Kind("a number (int or float)", _number)
BOOL = Kind("a bool", lambda v: bool(v) if isinstance(v, (bool, np.bool_)) else _NO)
STR = Kind("a string", lambda v: v if isinstance(v, str) else _NO)


def optional(kind: Kind) -> Kind:
    return Kind(f"{kind.what} or None", kind.accept, True)


def kind_of(default) -> Kind | None:
    """A parameter's kind read from its default (None when the default says nothing: declare it in OpSpec.kinds)."""
    if isinstance(default, bool):
        return BOOL
    if is_int(default):
        return INT
    if isinstance(default, float):
        return NUMBER
    if isinstance(default, str):
        return STR
    if isinstance(default, tuple) and default and all(is_int(v) for v in default):
        return ints(len(default))
    return None


class Params(dict):
    """An op's parameters as OpSpec.validate returns them: complete, each of its kind, marked `checked`. Changing
    one clears the mark, so the next prepare() or compute() validates the node again: an edited parameter cannot
    reach a kernel unchecked, while a checked node costs one attribute test."""

    checked = False

    def __init__(self, values=(), checked: bool = False):
        super().__init__(values)
        self.checked = checked


def _unchecking(name: str):
    method = getattr(dict, name)

    def edit(self, *args, **kwargs):
        self.checked = False
        return method(self, *args, **kwargs)
    edit.__name__ = name
    return edit


for _name in ("__setitem__", "__delitem__", "__ior__", "update", "pop", "popitem", "clear", "setdefault"):
    setattr(Params, _name, _unchecking(_name))


# ---- planted bugs -------------------------------------------------------------------------------------------------
# A "slowdown" is no bug: the kernel does its work twice and stays correct, so its tests pass. It measures the
# detection power of the performance comparison (python -m bench calibrate), never the must-be-caught run.
SLOWDOWN = "slowdown"
MUTANT_KINDS = ("stride", "eps", "carry", "broadcast", "off-by-one", "hole", "out-of-bounds", "barrier", "precision",
                "wrong-op", "sign", SLOWDOWN)


@dataclass(frozen=True)
class Mutant:
    """A realistic bug planted on purpose by one text edit of one kernel source, made in memory when the environment
    variable KBO_MUTANT names it (backends/base.py kernel_text), never to the file. The op's tests on that backend must
    catch it: `python -m cases.mutants` runs them and fails on a survivor. Kind "slowdown" is a correct but slower
    kernel instead, for `python -m bench calibrate`."""

    name: str
    backend: str  # opencl, vulkan or cuda
    find: str  # text that occurs exactly once in the file
    replace: str
    kind: str  # one of MUTANT_KINDS
    bug: str  # the bug it reproduces, with the upstream reference where there is one
    file: str = ""  # the kernel file; default the op family's (<family>.cl, .comp, .cu)

    def __post_init__(self):
        if self.backend not in ("opencl", "vulkan", "cuda") or self.kind not in MUTANT_KINDS or self.find == self.replace:
            raise TypeError(f"mutant {self.name}: backend must be opencl/vulkan/cuda, kind one of {MUTANT_KINDS}, and "
                            f"the edit must change the text")


# ---- the record ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpSpec:
    name: str
    n_src: int
    reference: Callable  # (list of float64/int arrays in numpy shape, params) -> output array
    out: Callable  # (srcs, params) -> (DType, ne), the output of the non in-place form
    params: dict = field(default_factory=dict)  # name -> default
    check: Callable | None = None  # (srcs, params) -> None, raises ValueError
    kernel_params: Callable = lambda srcs, p: []  # op words of the kernel parameter block
    domain: Callable = uniform(-1, 1)
    src_dtypes: tuple = ((F32,),)  # per source (the last entry repeats): the types the op accepts
    nmse: float = 1e-7
    # Bounds for outputs of particular types, where the type's rounding sets the bound (CPY into a quantized type)
    nmse_by_dst: dict = field(default_factory=dict)
    flops: Callable = lambda srcs, dst, p: dst.nelements
    inplace_param: str | None = None  # params[inplace_param] true -> dst is a view of src0
    summary: str = ""
    moved: Callable | None = None  # (srcs, dst, params) -> bytes the op must move, when not all srcs + dst
    # For outputs where several answers are right (index sets, orders among ties): (got, ref, source values,
    # params) -> list of problems; None compares values by NMSE.
    verify: Callable | None = None
    kinds: dict = field(default_factory=dict)  # name -> Kind, for parameters whose default says nothing (None)
    # Sources that hold ids: src index -> (what bounds them, "{n}" standing for the bound; srcs -> n). Every id must lie
    # in [0, n); checked wherever the values are on the host (check_ids), never by a kernel.
    ids: dict = field(default_factory=dict)
    # Results that do not depend on which dim an element sits in (element-wise in flat order): a runtime may merge
    # dims before launch.
    elementwise: bool = False
    # Written beside the record in its family's module (reference/ops/<family>.py); all but mutants are required.
    family: str = ""  # the module's name, which is also its kernels' file name in every backend
    pinned: Callable | None = None  # () -> list[Case]: the upstream cases every backend must pass
    strategy: Callable | None = None  # () -> hypothesis strategy of Cases: drawn shapes, views and values
    perf: Case | None = None  # the large case `bench ops` times
    ggml: GgmlCall | None = None  # how ggml calls it: the ggml backend and the test-backend-ops reproducer
    # Bugs planted on purpose in its kernels, to prove its tests catch them (Mutant, python -m cases.mutants)
    mutants: tuple = ()
    # For ops whose result is a correctly rounded function of its input (unary maps, norms, softmax): the largest
    # relative error an output element may have where |reference| is not tiny (cases/harness.py check_rel_error),
    # besides the NMSE bound, which a few percent of bad small elements pass. None: NMSE only.
    max_rel_error: float | None = None
    param_kinds: dict = field(init=False, repr=False, compare=False, default=None)  # every parameter's Kind

    def __post_init__(self):
        kinds = {name: self.kinds.get(name) or kind_of(default) for name, default in self.params.items()}
        missing = sorted(name for name, kind in kinds.items() if kind is None)
        if missing or set(self.kinds) - set(self.params):
            raise TypeError(f"{self.name}: declare the kind of parameter(s) {missing} in kinds= (their default says "
                            f"nothing), and only of parameters it has")
        object.__setattr__(self, "param_kinds", kinds)
        lacking = [f for f in ("family", "pinned", "strategy", "perf", "ggml") if not getattr(self, f)]
        if lacking:
            raise TypeError(f"{self.name}: its record needs {', '.join(lacking)} (see reference/ops/spec.py)")

    def bound(self, dst: Tensor) -> float:
        """The NMSE bound for an output like `dst`: its type's (nmse_by_dst) or the op's."""
        return self.nmse_by_dst.get(dst.dtype, self.nmse)

    def defaults(self, params: dict) -> dict:
        unknown = set(params) - set(self.params)
        if unknown:
            raise ValueError(f"{self.name} has no parameter(s) {sorted(unknown)}; it takes {sorted(self.params)}")
        return {**self.params, **params}

    def complete(self, params: dict) -> dict:
        """Every parameter, defaults filled in, each checked against its kind and put in canonical form; a wrong one
        is a ValueError naming the op, the parameter and what it takes."""
        full = self.defaults(params)
        for name, kind in self.param_kinds.items():
            value = full[name]
            if value is None and kind.optional:
                continue
            canonical = kind.accept(value)
            if canonical is _NO:
                raise ValueError(f"{self.name} parameter {name} must be {kind.what}, got {value!r} "
                                 f"({type(value).__name__})")
            full[name] = canonical
        return full

    def check_ids(self, srcs: list[Tensor], values: dict, where: str = "") -> None:
        """Refuse ids out of range. `values`: src index -> its values (any integer array) for the id sources whose
        values are known; `where` (a node name) prefixes the message."""
        for i, (what, bound) in self.ids.items():
            if i not in values:
                continue
            v, n = np.asarray(values[i]), bound(srcs)
            if v.size and (v.min() < 0 or v.max() >= n):
                bad = (v < 0) | (v >= n)
                at = tuple(int(x) for x in np.argwhere(bad)[0])
                more = f" ({int(bad.sum())} ids out of range)" if bad.sum() > 1 else ""
                raise ValueError(f"{where + ': ' if where else ''}{self.name}: id {int(v[at])} in src{i} at numpy "
                                 f"index {at} is out of range [0, {n}): {what.format(n=n)}{more}")

    def validate(self, srcs: list[Tensor], params: dict) -> Params:
        """Full parameters after checking them and the sources; raises ValueError with the reason."""
        params = self.complete(params)
        if len(srcs) != self.n_src:
            raise ValueError(f"{self.name} takes {self.n_src} source(s), got {len(srcs)}")
        for i, s in enumerate(srcs):
            allowed = self.src_dtypes[min(i, len(self.src_dtypes) - 1)]
            if s.dtype not in allowed:
                raise ValueError(f"{self.name} src{i} must be {'/'.join(d.label for d in allowed)}, "
                                 f"got {s.dtype.label}")
        if self.check:
            self.check(srcs, params)
        return Params(params, checked=True)

    def bytes(self, srcs: list[Tensor], dst: Tensor, params: dict) -> int:
        if self.moved:
            return self.moved(srcs, dst, params)
        return sum(s.nbytes() for s in srcs) + dst.nbytes()

    def writes_in_place(self, params: dict) -> bool:
        """Whether the op with `params` writes src0 itself (its inplace parameter, e.g. ACC's inplace=True, is set)."""
        return bool(self.inplace_param and params.get(self.inplace_param))

    def output(self, srcs: list[Tensor], params: dict) -> Tensor:
        """The destination descriptor (no buffer): a fresh contiguous tensor, or a view of src0 when in place."""
        if self.writes_in_place(params):
            a = srcs[0]
            return Tensor(a.dtype, a.ne, a.nb, a.offset, a.buffer)
        dtype, ne = self.out(srcs, params)
        return Tensor.new(dtype, ne)


REGISTRY: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    REGISTRY[spec.name] = spec
    return spec


def get_op(name: str) -> OpSpec:
    try:
        return REGISTRY[name.upper()]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(sorted(REGISTRY))}") from None


def mutants() -> dict[str, tuple[OpSpec, "Mutant"]]:
    """Every registered mutant by name, with its op."""
    found: dict[str, tuple[OpSpec, Mutant]] = {}
    for op in REGISTRY.values():
        for m in op.mutants:
            if m.name in found:
                raise TypeError(f"mutant name {m.name} is used twice ({found[m.name][0].name}, {op.name})")
            found[m.name] = (op, m)
    return found


def mutant_file(op: OpSpec, m: "Mutant", suffix: str) -> str:
    """The kernel file a mutant edits: its own, or its op family's with the backend's suffix (.cl, .comp, .cu)."""
    return m.file or f"{op.family}{suffix}"


# bench ops times each op on its record's perf case; memory-bound ops move >= 16 MiB per operand: ne of 4 Mi f32.
PERF_NE = (4096, 1024)


def same_shape(srcs, p):
    return srcs[0].dtype, srcs[0].ne


def check_square(srcs, p):
    if srcs[0].ne[0] != srcs[0].ne[1]:
        raise ValueError(f"{srcs[0].describe()} must be square in ne0, ne1")
