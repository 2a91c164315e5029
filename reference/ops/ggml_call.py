"""How an op is called in ggml, as data: one GgmlCall per op, written in its family module, from which both the ggml
backend (backends/ggml: the real ggml CPU op through ggml-python) and the test-backend-ops reproducer
(cases/replay.py: C++ for tests/test-backend-ops.cpp) are rendered, so the two cannot disagree.

`GgmlCall.arguments(op, params)` resolves the call's arguments once: sources and the destination stay markers
(Src, Dst), parameters become Python values (a tuple parameter spreads into its ints), enums become their C names
(Enum). Each side then renders that list: ctypes values and ggml tensors, or C text.

Also here: ggml's layout predicates (src/ggml.c) on our descriptors, for the preconditions each call lists (what
ggml asserts, which would abort the process, or silently misreads).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..tensor import Tensor


@dataclass(frozen=True)
class Src:
    """Source tensor i (the reproducer names them a, b, c, ...)."""

    i: int


@dataclass(frozen=True)
class Dst:
    """The destination tensor the op writes (ggml_cpy's b): ours in the backend, a new tensor in the reproducer."""


@dataclass(frozen=True)
class Param:
    """A parameter, by its kind: an int, a float (C: `1.5f`), a bool, or every int of a tuple (REPEAT's ne)."""

    name: str


@dataclass(frozen=True)
class Enum:
    """A ggml enum named by a string parameter: Enum("GGML_TRI_TYPE_", "type") -> GGML_TRI_TYPE_LOWER."""

    prefix: str
    name: str


@dataclass(frozen=True)
class Lit:
    """A constant argument; `note` names it in the reproducer (`/*max_bias*/ 0.0f`)."""

    value: bool | int | float
    note: str = ""


@dataclass(frozen=True)
class EnumName:
    """A resolved enum argument: its C name (the ggml backend looks the value up in the bindings)."""

    name: str


@dataclass(frozen=True)
class Value:
    """A resolved scalar argument and its C type ("int", "float", "bool"); `note` as Lit's."""

    value: bool | int | float
    ctype: str
    note: str = ""


@dataclass(frozen=True)
class GgmlCall:
    """`fn(ctx, *args)`; `inplace_fn` instead when the node runs in place (ggml_acc_inplace)."""

    fn: str
    args: tuple
    inplace_fn: str | None = None
    # The ggml backend passes these sources through ggml_cont first when ggml_mul_mat cannot take them as they are
    # (a transposed a, rows that are not dense), as llama.cpp's graphs do; the copy is exact.
    staged: tuple = ()
    # ggml's op always writes src0 (ggml_clamp): the ggml backend applies it to a ggml_cont copy.
    writes_src0: bool = False
    # What ggml asserts or silently misreads, for the ggml backend's supports(): (srcs, params) -> failures, each
    # quoting the ggml source.
    rules: Callable = field(default=lambda srcs, params: [])

    def function(self, inplace: bool) -> str:
        if inplace and self.inplace_fn is None:
            raise ValueError(f"{self.fn} has no in-place form")
        return self.inplace_fn if inplace else self.fn

    def arguments(self, kinds: dict, params: dict) -> list:
        """The arguments after ctx: Src/Dst markers, Value and EnumName. `kinds`: the op's param_kinds."""
        from .spec import BOOL, INT, NUMBER

        out = []
        for a in self.args:
            if isinstance(a, (Src, Dst)):
                out.append(a)
            elif isinstance(a, Lit):
                ctype = "bool" if isinstance(a.value, bool) else "float" if isinstance(a.value, float) else "int"
                out.append(Value(a.value, ctype, a.note))
            elif isinstance(a, Enum):
                out.append(EnumName(f"{a.prefix}{params[a.name]}"))
            else:
                kind, value = kinds[a.name], params[a.name]
                if kind is NUMBER:
                    out.append(Value(float(value), "float"))
                elif kind is BOOL:
                    out.append(Value(bool(value), "bool"))
                elif kind is INT or isinstance(value, int):
                    out.append(Value(int(value), "int"))
                else:  # a tuple of ints
                    out += [Value(int(v), "int") for v in value]
        return out


    def c_call(self, kinds: dict, params: dict, inplace: bool, names: list[str], dst: str = "") -> str:
        """The call as C for test-backend-ops: `names` are the sources' variables, `dst` the C expression of the
        destination (a ggml_new_tensor_4d) where the call takes one."""
        text = []
        for a in self.arguments(kinds, params):
            if isinstance(a, Src):
                text.append(names[a.i])
            elif isinstance(a, Dst):
                text.append(dst)
            elif isinstance(a, EnumName):
                text.append(a.name)
            else:
                value = ("true" if a.value else "false") if a.ctype == "bool" else f"{a.value!r}f" \
                    if a.ctype == "float" else str(a.value)
                text.append(f"/*{a.note}*/ {value}" if a.note else value)
        return f"{self.function(inplace)}(ctx, {', '.join(text)})"


# ---- layout predicates, as ggml defines them (src/ggml.c) ------------------------------------------------------------
def contiguous_n(t: Tensor, n: int) -> bool:
    """ggml_is_contiguous_n: dims <= n may be strided (dim 0 must still be dense), dims > n dense; size-1 dims free."""
    size = t.dtype.size
    next_nb = size
    if t.ne[0] != 1 and t.nb[0] != next_nb:
        return False
    next_nb *= t.ne[0] // t.dtype.block  # a quantized row is ne0 / block blocks
    for i in range(1, 4):
        if i > n:
            if t.ne[i] != 1 and t.nb[i] != next_nb:
                return False
            next_nb *= t.ne[i]
        else:
            next_nb = t.ne[i] * t.nb[i]
    return True


def contiguous(t: Tensor) -> bool:  # ggml_is_contiguous
    return contiguous_n(t, 0)


def contiguous_rows(t: Tensor) -> bool:  # ggml_is_contiguous_rows
    return t.ne[0] == 1 or t.nb[0] == t.dtype.size


def padded_1d(t: Tensor) -> bool:  # ggml_is_padded_1d
    return t.nb[0] == t.dtype.size and t.nb[2] == t.nb[1] * t.ne[1] and t.nb[3] == t.nb[2] * t.ne[2]


def dense_nb0(t: Tensor) -> bool:  # the unconditional `nb[0] == sizeof(type)` asserts
    return t.nb[0] == t.dtype.size


def mul_mat_needs_cont(t: Tensor, is_a: bool) -> bool:
    """ggml_mul_mat asserts !ggml_is_transposed(a) (nb0 > nb1); ggml_compute_forward_mul_mat asserts nb00 and nb10
    equal the type size."""
    return t.nb[0] != t.dtype.size or (is_a and t.nb[0] > t.nb[1])


def need(cond: bool, what: str, fails: list) -> None:
    if not cond:
        fails.append(what)


def requires(*conditions: tuple[int, str, Callable, str]) -> Callable:
    """GgmlCall.rules from layout conditions (src index, its name, predicate, what ggml asserts or misreads): each
    one a source fails reads "<what>; <name> is <the source's layout>"."""
    def rules(srcs, params) -> list[str]:
        return [f"{what}; {name} is {srcs[i].describe()}" for i, name, holds, what in conditions if not holds(srcs[i])]
    return rules
