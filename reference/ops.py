"""The op registry: one record per ggml op, with its parameters, shape rule, NumPy reference, input domain, error
bound, cost and the upstream cases it must pass. Every test, backend and benchmark reads ops from here.

References compute in float64 and round once to the output type: they give the exact answer that every backend
is measured against, while each record's NMSE bound (upstream's values) says how far a float32 kernel may drift.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .tensor import DType, Tensor, contiguous_strides, is_int

F32, F16, I32 = DType.F32, DType.F16, DType.I32

# TRI keeps element (col i0, row i1) when this holds.
TRI_TYPES = {"LOWER": 0, "LOWER_DIAG": 1, "UPPER": 2, "UPPER_DIAG": 3}
_TRI_KEEP = {
    "LOWER": lambda c, r: c < r,
    "LOWER_DIAG": lambda c, r: c <= r,
    "UPPER": lambda c, r: c > r,
    "UPPER_DIAG": lambda c, r: c >= r,
}


def f32_bits(x: float) -> int:
    """A float as the int32 word kernels read from their parameter block."""
    return int(np.array([x], dtype=np.float32).view(np.int32)[0])


def f32(x: float) -> float:
    """A float parameter as kernels see it (rounded to float32), so references use the same value."""
    return float(np.float32(x))


# ---- input domains: (rng, numpy shape, input index, params, shapes of all inputs) -> float64 values ---------------
def uniform(lo: float, hi: float):
    return lambda rng, shape, i, p, shapes=None: rng.uniform(lo, hi, shape)


def _solve_tri_domain(rng, shape, i, p, shapes=None):
    if i == 1:  # right-hand sides
        return rng.uniform(-1, 1, shape)
    n = shape[-1]
    # Lower part scaled by 1/sqrt(n) so forward substitution stays well conditioned (KDA's I + Akk is like this);
    # the upper part is garbage the kernel must never read.
    a = rng.uniform(-1, 1, shape) / np.sqrt(n)
    idx = np.arange(n)
    a[..., idx, idx] = rng.uniform(0.1, 1.0, shape[:-1])
    return a


def _binary_domain(op: str):
    def draw(rng, shape, i, p, shapes=None):
        if op == "DIV" and i == 1:  # keep divisors away from zero
            return rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
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


def _ints(lo: int, hi: int | None = None) -> Kind:
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
        return _ints(len(default))
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
    param_kinds: dict = field(init=False, repr=False, compare=False, default=None)  # every parameter's Kind

    def __post_init__(self):
        kinds = {name: self.kinds.get(name) or kind_of(default) for name, default in self.params.items()}
        missing = sorted(name for name, kind in kinds.items() if kind is None)
        if missing or set(self.kinds) - set(self.params):
            raise TypeError(f"{self.name}: declare the kind of parameter(s) {missing} in kinds= (their default says "
                            f"nothing), and only of parameters it has")
        object.__setattr__(self, "param_kinds", kinds)

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
                raise ValueError(f"{self.name} src{i} must be {'/'.join(d.label for d in allowed)}, got {s.dtype.label}")
        if self.check:
            self.check(srcs, params)
        return Params(params, checked=True)

    def bytes(self, srcs: list[Tensor], dst: Tensor, params: dict) -> int:
        if self.moved:
            return self.moved(srcs, dst, params)
        return sum(s.nbytes() for s in srcs) + dst.nbytes()

    def output(self, srcs: list[Tensor], params: dict) -> Tensor:
        """The destination descriptor (no buffer): a fresh contiguous tensor, or a view of src0 when in place."""
        if self.inplace_param and params.get(self.inplace_param):
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


def same_shape(srcs, p):
    return srcs[0].dtype, srcs[0].ne


# ---- ACC / SET ----------------------------------------------------------------------------------------------------
def _block_view(a: Tensor, b: Tensor, p: dict) -> Tensor:
    """The region of a that acc/set write: b's shape at byte strides (elsize, nb1, nb2, nb3) from byte `offset`."""
    return Tensor(a.dtype, b.ne, (a.dtype.size, p["nb1"], p["nb2"], p["nb3"]), p["offset"])


def _check_block(srcs, p):
    a, b = srcs
    if a.dtype != b.dtype:
        raise ValueError(f"a and b must share a type, got {a.dtype.label} and {b.dtype.label}")
    if not a.is_contiguous():
        raise ValueError(f"a must be contiguous (ggml asserts it), got {a.describe()}")
    view = _block_view(a, b, p)  # validates alignment and signs
    if view.offset + view.extent() > a.nbytes():
        raise ValueError(f"the block {view.describe()} runs past a ({a.nbytes()} bytes)")
    # Strides must nest (nb1 >= ne0*size, nb2 >= nb1*ne1, nb3 >= nb2*ne2) so a byte of a maps to at most one
    # element of b; kernels decompose an offset by nb3, nb2, nb1 in that order.
    need = a.dtype.size
    for d in range(1, 4):
        need *= b.ne[d - 1]
        if view.nb[d] < need:
            raise ValueError(f"block stride nb{d}={view.nb[d]} is below nb{d - 1}*ne{d - 1}={need}: "
                             f"elements of b would overlap in a")
        need = view.nb[d]


def _block_ref(mode: str):
    def ref(xs, p):
        a, b = xs
        out = np.array(a, dtype=a.dtype if mode == "set" else np.float64, order="C")
        esize = 4  # strides are bytes of the tensor type; ACC/SET take only 4-byte types (f32, i32)
        flat = out.reshape(-1)
        strides = (p["nb3"] // esize, p["nb2"] // esize, p["nb1"] // esize, 1)
        block = np.lib.stride_tricks.as_strided(flat[p["offset"] // esize:], shape=b.shape,
                                                strides=tuple(s * flat.itemsize for s in strides))
        if mode == "acc":
            block += b
        else:
            block[...] = b
        return out
    return ref


def _block_words(srcs, p):
    e = srcs[0].dtype.size
    return [p["nb1"] // e, p["nb2"] // e, p["nb3"] // e, p["offset"] // e]


_BLOCK_PARAMS = {"nb1": None, "nb2": None, "nb3": None, "offset": 0, "inplace": False}
_BYTES = Kind("an int (bytes; required)", INT.accept)
_BLOCK_KINDS = {"nb1": _BYTES, "nb2": _BYTES, "nb3": _BYTES}
register(OpSpec("ACC", 2, _block_ref("acc"), same_shape, dict(_BLOCK_PARAMS), _check_block, _block_words,
                flops=lambda s, d, p: s[1].nelements, inplace_param="inplace", kinds=_BLOCK_KINDS,
                summary="dst = a; dst[offset + i0*4 + i1*nb1 + i2*nb2 + i3*nb3] += b (byte strides)"))
register(OpSpec("SET", 2, _block_ref("set"), same_shape, dict(_BLOCK_PARAMS), _check_block, _block_words,
                domain=uniform(-1000, 1000),  # wide enough that i32 words differ
                src_dtypes=((F32, I32),), flops=lambda s, d, p: 0, inplace_param="inplace", kinds=_BLOCK_KINDS,
                summary="dst = a; dst[offset + i0*4 + i1*nb1 + i2*nb2 + i3*nb3] = b (byte strides)"))


# ---- scans, triangles, fills ----------------------------------------------------------------------------------------
register(OpSpec("CUMSUM", 1, lambda xs, p: np.cumsum(xs[0], axis=-1), same_shape,
                summary="inclusive prefix sum along ne0, per row"))


def _check_square(srcs, p):
    if srcs[0].ne[0] != srcs[0].ne[1]:
        raise ValueError(f"{srcs[0].describe()} must be square in ne0, ne1")


def _check_tri(srcs, p):
    _check_square(srcs, p)
    if p["type"] not in TRI_TYPES:
        raise ValueError(f"TRI type must be one of {list(TRI_TYPES)}, got {p['type']!r}")


def _tri_ref(xs, p):
    n = xs[0].shape[-1]
    c, r = np.meshgrid(np.arange(n), np.arange(n))  # c varies along the last (ne0) axis
    return np.where(_TRI_KEEP[p["type"]](c, r), xs[0], 0.0)


register(OpSpec("TRI", 1, _tri_ref, same_shape, {"type": "LOWER"}, _check_tri,
                lambda s, p: [TRI_TYPES[p["type"]]], flops=lambda s, d, p: 0,
                summary="keep one triangle of each ne0 x ne1 matrix, zero the rest"))
register(OpSpec("FILL", 1, lambda xs, p: np.full(xs[0].shape, f32(p["c"])), same_shape, {"c": 0.0, "inplace": False},
                kernel_params=lambda s, p: [f32_bits(p["c"])], flops=lambda s, d, p: 0, inplace_param="inplace",
                moved=lambda s, d, p: d.nbytes(),  # writes only: the source gives the shape
                summary="every element becomes c (in place: fills a new_tensor, as ggml_fill_inplace)"))


def _check_diag(srcs, p):
    if srcs[0].ne[1] != 1:
        raise ValueError(f"DIAG takes a [n,1,ne2,ne3] tensor, got {srcs[0].describe()}")


def _diag_ref(xs, p):
    x = xs[0]  # (ne3, ne2, 1, n)
    n = x.shape[-1]
    return np.eye(n) * x  # broadcasts row vector x[..., 0, :] over rows, kept on the diagonal


register(OpSpec("DIAG", 1, _diag_ref, lambda s, p: (s[0].dtype, (s[0].ne[0], s[0].ne[0], s[0].ne[2], s[0].ne[3])),
                check=_check_diag, flops=lambda s, d, p: 0, summary="[n,1,a,b] -> [n,n,a,b] diagonal matrices"))


def _check_solve_tri(srcs, p):
    a, b = srcs
    _check_square([a], p)
    if b.ne[1] != a.ne[0] or b.ne[2:] != a.ne[2:]:
        raise ValueError(f"SOLVE_TRI needs A [n,n,b2,b3] and B [k,n,b2,b3], got A {a.describe()}, B {b.describe()}")


def _solve_tri_ref(xs, p):
    a, b = xs
    return np.linalg.solve(np.tril(a), b)


register(OpSpec("SOLVE_TRI", 2, _solve_tri_ref, lambda s, p: (F32, s[1].ne), check=_check_solve_tri,
                domain=_solve_tri_domain,
                flops=lambda s, d, p: s[0].ne[0] * s[0].ne[0] * s[1].ne[0] * s[1].ne[2] * s[1].ne[3],
                summary="X = A^-1 B, A lower triangular with its own diagonal (left, lower, non-unit)"))


# ---- convolution and norms -------------------------------------------------------------------------------------
def _check_ssm_conv(srcs, p):
    sx, c = srcs
    if c.ne[1] != sx.ne[1] or c.ne[0] > sx.ne[0] or c.ne[2] != 1 or c.ne[3] != 1 or sx.ne[3] != 1:
        raise ValueError(f"SSM_CONV needs sx [d_conv-1+n_t, d_inner, n_s] and c [d_conv, d_inner], got "
                         f"sx {sx.describe()}, c {c.describe()}")


def _ssm_conv_ref(xs, p):
    sx, c = xs  # sx (1, n_s, d_inner, L), c (1, 1, d_inner, d_conv)
    d_conv = c.shape[-1]
    n_t = sx.shape[-1] - d_conv + 1
    windows = np.stack([sx[..., i:i + n_t] for i in range(d_conv)], axis=-1)  # (1, n_s, d, n_t, d_conv)
    out = np.einsum("...dti,di->...td", windows, c[0, 0])
    return out  # (1, n_s, n_t, d_inner)


register(OpSpec("SSM_CONV", 2, _ssm_conv_ref,
                lambda s, p: (F32, (s[0].ne[1], s[0].ne[0] - s[1].ne[0] + 1, s[0].ne[2], 1)),
                check=_check_ssm_conv, flops=lambda s, d, p: 2 * s[1].ne[0] * d.nelements,
                summary="causal depthwise conv: x[ch,t,s] = sum_i sx[t+i,ch,s] * c[i,ch]"))


def _l2_ref(xs, p):
    x = xs[0]
    return x / np.maximum(np.sqrt(np.sum(x * x, axis=-1, keepdims=True)), f32(p["eps"]))


def _rms_ref(xs, p):
    x = xs[0]
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f32(p["eps"]))


def _check_eps(srcs, p):
    if not p["eps"] >= 0:
        raise ValueError(f"eps must be >= 0, got {p['eps']}")


register(OpSpec("L2_NORM", 1, _l2_ref, same_shape, {"eps": 1e-6}, _check_eps, lambda s, p: [f32_bits(p["eps"])],
                flops=lambda s, d, p: 3 * d.nelements, summary="x / max(||x||, eps) per row (eps clamps the norm)"))
register(OpSpec("RMS_NORM", 1, _rms_ref, same_shape, {"eps": 1e-5}, _check_eps, lambda s, p: [f32_bits(p["eps"])],
                flops=lambda s, d, p: 3 * d.nelements, summary="x / sqrt(mean(x^2) + eps) per row"))


# ---- element-wise ---------------------------------------------------------------------------------------------------
def _softplus(x):
    with np.errstate(over="ignore"):
        return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _exp(x):
    with np.errstate(over="ignore"):
        return np.exp(x)


_UNARY = {
    "SOFTPLUS": (_softplus, "x > 20 ? x : log(1 + e^x)"),
    "SIGMOID": (_sigmoid, "1 / (1 + e^-x)"),
    "SILU": (lambda x: x * _sigmoid(x), "x / (1 + e^-x)"),
    "EXP": (_exp, "e^x"),
    "NEG": (lambda x: -x, "-x"),
}
for _name, (_fn, _doc) in _UNARY.items():
    register(OpSpec(_name, 1, lambda xs, p, fn=_fn: fn(xs[0]), same_shape, domain=uniform(-150, 150)
                    if _name != "NEG" else uniform(-1, 1), summary=_doc))

register(OpSpec("SCALE", 1, lambda xs, p: xs[0] * f32(p["s"]) + f32(p["b"]), same_shape, {"s": 1.0, "b": 0.0},
                kernel_params=lambda s, p: [f32_bits(p["s"]), f32_bits(p["b"])], summary="x * s + b"))


def _check_repeat(srcs, p):
    a, b = srcs
    if any(bn == 0 or an % bn for an, bn in zip(a.ne, b.ne)):
        raise ValueError(f"b {list(b.ne)} cannot be broadcast to a {list(a.ne)}: each a.ne must be a multiple")


def _binary_ref(fn):
    def ref(xs, p):
        a, b = xs
        return fn(a, np.tile(b, [x // y for x, y in zip(a.shape, b.shape)]))
    return ref


for _name, _fn in {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide}.items():
    register(OpSpec(_name, 2, _binary_ref(_fn), same_shape, check=_check_repeat, domain=_binary_domain(_name),
                    summary=f"a {_name.lower()} b, b repeated over a (ggml_can_repeat)"))


# ---- copies ---------------------------------------------------------------------------------------------------------
def _cpy_out(srcs, p):
    return DType[p["dtype"].upper()], tuple(p["ne"] or srcs[0].ne)


def _check_cpy(srcs, p):
    if p["dtype"].lower() not in ("f32", "f16"):
        raise ValueError(f"CPY writes f32 or f16, not {p['dtype']!r}")
    dtype, ne = _cpy_out(srcs, p)
    if int(np.prod(ne)) != srcs[0].nelements:
        raise ValueError(f"CPY needs as many elements in dst {list(ne)} as in src {list(srcs[0].ne)}")


def _cpy_ref(xs, p):
    return xs[0].reshape(-1)  # rows of ne0 first: the harness reshapes to the destination


register(OpSpec("CPY", 1, _cpy_ref, _cpy_out, {"dtype": "f32", "ne": None}, _check_cpy,
                lambda s, p: [s[0].dtype.code, DType[p["dtype"].upper()].code], src_dtypes=((F32, F16),),
                kinds={"ne": optional(_ints(1, 4))},
                flops=lambda s, d, p: 0, summary="copy with type conversion, element order kept (ggml_cpy)"))
register(OpSpec("CONT", 1, lambda xs, p: xs[0], same_shape, src_dtypes=((F32, F16),),
                kernel_params=lambda s, p: [s[0].dtype.code, s[0].dtype.code], flops=lambda s, d, p: 0,
                summary="a contiguous copy of a view"))


# ---- matrix product, repeat, pad (the chunked delta net's building blocks) -------------------------------------------
def _check_mul_mat(srcs, p):
    a, b = srcs
    if a.ne[0] != b.ne[0] or b.ne[2] % a.ne[2] or b.ne[3] % a.ne[3]:
        raise ValueError(f"MUL_MAT contracts ne0 and broadcasts a over b's ne2/ne3: got a {a.describe()}, "
                         f"b {b.describe()}")


def _mul_mat_ref(xs, p):
    a, b = xs  # numpy (a3, a2, N, K), (b3, b2, M, K)
    a = np.repeat(np.repeat(a, b.shape[0] // a.shape[0], axis=0), b.shape[1] // a.shape[1], axis=1)
    return np.einsum("xynk,xymk->xymn", a, b)


register(OpSpec("MUL_MAT", 2, _mul_mat_ref, lambda s, p: (F32, (s[0].ne[1], s[1].ne[1], s[1].ne[2], s[1].ne[3])),
                check=_check_mul_mat, src_dtypes=((F32, F16), (F32,)), nmse=5e-4,
                flops=lambda s, d, p: 2 * s[0].ne[0] * d.nelements,
                summary="r[n,m] = sum_k a[k,n] b[k,m]; a's ne2/ne3 broadcast over b's (a index = b index / ratio)"))


def _check_repeat_to(srcs, p):
    if any(n % m if m else n for n, m in zip(p["ne"], srcs[0].ne)):
        raise ValueError(f"REPEAT needs a 4-entry ne that is a multiple of {list(srcs[0].ne)}, got {list(p['ne'])}")


register(OpSpec("REPEAT", 1, lambda xs, p: np.tile(xs[0], [n // m for n, m in zip(reversed(p["ne"]), xs[0].shape)]),
                lambda s, p: (s[0].dtype, tuple(p["ne"])), {"ne": None}, _check_repeat_to,
                flops=lambda s, d, p: 0, kinds={"ne": _ints(4)},
                summary="tile a up to ne (each ne a multiple of a's)"))


def _check_pad(srcs, p):
    if any(v < 0 for v in p["pad"]) or len(p["pad"]) != 4:
        raise ValueError(f"PAD takes 4 non-negative pads, got {p['pad']}")


register(OpSpec("PAD", 1, lambda xs, p: np.pad(xs[0], [(0, v) for v in reversed(p["pad"])]),
                lambda s, p: (s[0].dtype, tuple(n + v for n, v in zip(s[0].ne, p["pad"]))), {"pad": (0, 0, 0, 0)},
                _check_pad, lambda s, p: list(p["pad"]), flops=lambda s, d, p: 0,
                summary="zero-pad at the end of each dim"))


# ---- the gated delta net (fused recurrence) ------------------------------------------------------------------------
def _check_gdn(srcs, p):
    q, k, v, g, beta, state = srcs
    S, H, T, n = v.ne
    problems = []
    if q.ne != k.ne or q.ne[0] != S or q.ne[2:] != (T, n) or H % q.ne[1]:
        problems.append(f"q, k must be [S,H_k,T,n] with H % H_k == 0 (q {list(q.ne)}, k {list(k.ne)}, v {list(v.ne)})")
    if g.ne not in ((1, H, T, n), (S, H, T, n)):
        problems.append(f"g must be [1,H,T,n] (GDA) or [S,H,T,n] (KDA), got {list(g.ne)}")
    if beta.ne != (1, H, T, n):
        problems.append(f"beta must be [1,H,T,n], got {list(beta.ne)}")
    if state.ne != (S, S, H, n):
        problems.append(f"state must be [S,S,H,n], got {list(state.ne)}")
    if problems:
        raise ValueError("GATED_DELTA_NET: " + "; ".join(problems))


def gdn_recurrence(q, k, v, g, beta, state):
    """The fused recurrence on NumPy arrays in ggml layout, numpy shapes q,k (n,T,H_k,S), v (n,T,H,S),
    g (n,T,H,1|S), beta (n,T,H,1), state (n,H,S[value j],S[key i]). Returns o (n,T,H,S) and the final state.

    Per token (spec 3.2): decay S by exp(g) along the key dim; delta = (v - S^T k) * beta; S += k delta^T;
    o = S^T q / sqrt(S)."""
    n_seqs, T, H, S = v.shape
    h_k = q.shape[2]
    st = np.array(state, dtype=np.float64).swapaxes(-1, -2)  # (n, H, key, value)
    o = np.zeros(v.shape, dtype=np.float64)
    scale = 1.0 / np.sqrt(S)
    for s in range(n_seqs):
        for h in range(H):
            M = st[s, h]
            for t in range(T):
                kt, qt = k[s, t, h % h_k], q[s, t, h % h_k]
                M *= np.exp(g[s, t, h])[:, None]
                delta = (v[s, t, h] - M.T @ kt) * beta[s, t, h, 0]
                M += np.outer(kt, delta)
                o[s, t, h] = M.T @ qt * scale
    return o, st.swapaxes(-1, -2)


def _gdn_ref(xs, p):
    q, k, v, g, beta, state = (x[...] for x in xs)
    o, st = gdn_recurrence(q, k, v, g, beta, state)
    n, T, H, S = v.shape
    return np.concatenate([o.reshape(n * T, H * S), st.reshape(n * S, H * S)], axis=0)


def _gdn_domain(rng, shape, i, p, shapes=None):
    """Kimi-realistic inputs (upstream-cases.md 2): q, k L2-normalised per head, g in [-20, -1e-4] (log gates),
    beta in [0, 1], v in [-0.3, 5], state in [-1, 1]."""
    if i in (0, 1):
        x = rng.normal(size=shape)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)
    return {2: lambda: rng.uniform(-0.3, 5, shape), 3: lambda: rng.uniform(-20, -1e-4, shape),
            4: lambda: rng.uniform(0, 1, shape), 5: lambda: rng.uniform(-1, 1, shape)}[i]()


register(OpSpec("GATED_DELTA_NET", 6, _gdn_ref,
                lambda s, p: (F32, (s[2].ne[0] * s[2].ne[1], s[2].ne[2] * s[2].ne[3] + s[2].ne[0] * s[2].ne[3])),
                check=_check_gdn, domain=_gdn_domain,
                flops=lambda s, d, p: 6 * s[2].ne[0] * s[2].ne[0] * s[2].ne[1] * s[2].ne[2] * s[2].ne[3],
                summary="gated delta rule over T tokens: output [S*H, T*n] then the final states [S*H, S*n]"))


# ---- the MoE and MLA ops: gathers, expert products, sorting, softmax, concat ----------------------------------------
def _index_domain(index_src: int, count: Callable):
    """Source `index_src` holds indices in [0, count(shapes)); the others uniform in [-1, 1]."""
    def draw(rng, shape, i, p, shapes=None):
        if i == index_src:
            return rng.integers(0, count(shapes), shape)
        return rng.uniform(-1, 1, shape)
    return draw


def _check_get_rows(srcs, p):
    a, ids = srcs
    if a.ne[2] != ids.ne[1] or a.ne[3] != ids.ne[2] or ids.ne[3] != 1:
        raise ValueError(f"GET_ROWS needs a [E,R,n1,n2] and i32 ids [K,n1,n2], got a {a.describe()}, "
                         f"ids {ids.describe()}")


def _get_rows_ref(xs, p):
    a, ids = xs  # numpy (n2, n1, R, E) and (1, n2, n1, K)
    return np.stack([np.stack([a[i2, i1, ids[0, i2, i1]] for i1 in range(a.shape[1])]) for i2 in range(a.shape[0])])


register(OpSpec("GET_ROWS", 2, _get_rows_ref, lambda s, p: (F32, (s[0].ne[0], s[1].ne[0], s[1].ne[1], s[1].ne[2])),
                check=_check_get_rows, src_dtypes=((F32, F16), (I32,)), flops=lambda s, d, p: 0,
                domain=_index_domain(1, lambda shapes: shapes[0][-2]), ids={1: ("a has {n} rows (ne1)",
                                                                               lambda s: s[0].ne[1])},
                summary="r[:, k, i1, i2] = a[:, ids[k, i1, i2], i1, i2] (rows gathered by i32 ids; f32 out)"))


def _check_mul_mat_id(srcs, p):
    w, b, ids = srcs
    k, n, n_exp, _ = w.ne
    if b.ne[0] != k or w.ne[3] != 1 or b.ne[3] != 1 or ids.ne[1] != b.ne[2] or ids.ne[2:] != (1, 1) \
            or ids.ne[0] % b.ne[1]:
        raise ValueError(f"MUL_MAT_ID needs experts [K,N,n_exp], b [K,n_b1,T] and i32 ids [n_used,T] with "
                         f"n_used % n_b1 == 0; got {w.describe()}, {b.describe()}, {ids.describe()}")


def _mul_mat_id_ref(xs, p):
    w, b, ids = xs  # numpy (1, n_exp, N, K), (1, T, n_b1, K), (1, 1, T, n_used)
    T, n_used = ids.shape[2], ids.shape[3]
    out = np.zeros((1, T, n_used, w.shape[2]))
    for t in range(T):
        for e in range(n_used):
            out[0, t, e] = w[0, ids[0, 0, t, e]] @ b[0, t, e % b.shape[2]]
    return out


register(OpSpec("MUL_MAT_ID", 3, _mul_mat_id_ref, lambda s, p: (F32, (s[0].ne[1], s[2].ne[0], s[2].ne[1], 1)),
                check=_check_mul_mat_id, src_dtypes=((F32, F16), (F32,), (I32,)), nmse=5e-4,
                domain=_index_domain(2, lambda shapes: shapes[0][-3]),
                ids={2: ("{n} experts (ne2 of src0)", lambda s: s[0].ne[2])},
                flops=lambda s, d, p: 2 * s[0].ne[0] * d.nelements,
                summary="r[:, e, t] = experts[:, :, ids[e, t]]^T b[:, e % n_b1, t] (ggml_mul_mat_id)"))


def _rows_sorted(got, ref, xs, p):
    """ARGSORT: each row a permutation whose values come out in order (any order among ties is right)."""
    a = xs[0]
    idx = got.astype(np.int64)
    n = a.shape[-1]
    if (np.sort(idx, axis=-1) != np.arange(n)).any():
        return ["a row of the output is not a permutation of 0..ne0-1"]
    vals = np.take_along_axis(a, idx, axis=-1)
    steps = np.diff(vals, axis=-1)
    bad = steps < 0 if p["order"] == "ASC" else steps > 0
    return [f"{int(bad.sum())} neighbouring pairs out of {p['order']} order"] if bad.any() else []


def _top_k_set(got, ref, xs, p):
    """TOP_K: k distinct in-range indices whose values are all >= every value left out (ties at the edge either way)."""
    a = xs[0]
    idx = got.astype(np.int64)
    n = a.shape[-1]
    if (idx < 0).any() or (idx >= n).any():
        return ["an index out of range"]
    if (np.diff(np.sort(idx, axis=-1), axis=-1) == 0).any():
        return ["an index chosen twice in a row"]
    chosen = np.take_along_axis(a, idx, axis=-1)
    mask = np.ones(a.shape, dtype=bool)
    np.put_along_axis(mask, idx, False, axis=-1)
    left_max = np.where(mask, a, -np.inf).max(axis=-1)
    bad = chosen.min(axis=-1) < left_max
    return [f"{int(bad.sum())} row(s) chose a value below one left out"] if bad.any() else []


def _check_order(srcs, p):
    if p["order"] not in ("ASC", "DESC"):
        raise ValueError(f"ARGSORT order must be ASC or DESC, got {p['order']!r}")


def _check_top_k(srcs, p):
    if not 1 <= p["k"] <= srcs[0].ne[0]:
        raise ValueError(f"TOP_K needs 1 <= k <= ne0 ({srcs[0].ne[0]}), got k={p['k']}")


def _tied(rng, shape, i, p, shapes=None):
    """Values on a coarse grid, so rows have ties (as near-tied router scores do)."""
    return rng.integers(-20, 20, shape) / 8.0


register(OpSpec("ARGSORT", 1, lambda xs, p: np.argsort(xs[0] if p["order"] == "ASC" else -xs[0], axis=-1,
                                                         kind="stable"),
                lambda s, p: (I32, s[0].ne), {"order": "ASC"}, _check_order,
                lambda s, p: [0 if p["order"] == "ASC" else 1], domain=_tied, verify=_rows_sorted,
                summary="i32 indices that sort each row (ASC or DESC; ties in any order)"))
register(OpSpec("TOP_K", 1, lambda xs, p: np.argsort(-xs[0], axis=-1, kind="stable")[..., :p["k"]],
                lambda s, p: (I32, (p["k"], *s[0].ne[1:])), {"k": 1}, _check_top_k, lambda s, p: [p["k"]],
                domain=_tied, verify=_top_k_set,
                summary="i32 indices of the k largest of each row (a set: any order, ties at the edge either way)"))


def _check_soft_max(srcs, p):
    a, mask = srcs
    if mask.ne[0] != a.ne[0] or mask.ne[1] < a.ne[1] or a.ne[2] % mask.ne[2] or a.ne[3] % mask.ne[3]:
        raise ValueError(f"SOFT_MAX_EXT needs a mask [ne0, >= ne1, divisor of ne2, divisor of ne3]: a {a.describe()}, "
                         f"mask {mask.describe()}")


def _soft_max_ref(xs, p):
    a, mask = xs
    m = mask[..., :a.shape[-2], :]
    m = np.tile(m, [x // y for x, y in zip(a.shape[:2], m.shape[:2])] + [1, 1])
    with np.errstate(invalid="ignore"):
        z = a * f32(p["scale"]) + m
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)


def _soft_max_domain(rng, shape, i, p, shapes=None):
    """Scores in [-1, 1]; the mask mixes finite values and -inf (a causal mask's), never a whole row of -inf."""
    if i == 0:
        return rng.uniform(-1, 1, shape)
    m = rng.uniform(-1, 1, shape)
    m[rng.random(shape) < 0.3] = -np.inf
    m[..., 0] = 0.0
    return m


register(OpSpec("SOFT_MAX_EXT", 2, _soft_max_ref, same_shape, {"scale": 1.0}, _check_soft_max,
                lambda s, p: [f32_bits(p["scale"])], domain=_soft_max_domain, nmse=1e-6,
                flops=lambda s, d, p: 4 * d.nelements,
                summary="softmax(a * scale + mask) along ne0; mask rows/planes broadcast (max_bias 0)"))


def _check_concat(srcs, p):
    a, b = srcs
    d = p["dim"]
    if d not in range(4) or any(a.ne[i] != b.ne[i] for i in range(4) if i != d) or a.dtype != b.dtype:
        raise ValueError(f"CONCAT along dim {d} needs equal other dims and types: a {a.describe()}, b {b.describe()}")


register(OpSpec("CONCAT", 2, lambda xs, p: np.concatenate(xs, axis=3 - p["dim"]),
                lambda s, p: (s[0].dtype, tuple(a + b if i == p["dim"] else a for i, (a, b) in
                                                enumerate(zip(s[0].ne, s[1].ne)))), {"dim": 0}, _check_concat,
                lambda s, p: [p["dim"]], flops=lambda s, d, p: 0, summary="a then b along dim"))
register(OpSpec("SUM_ROWS", 1, lambda xs, p: xs[0].sum(axis=-1, keepdims=True),
                lambda s, p: (F32, (1, *s[0].ne[1:])), summary="sum of each row (ne0) -> [1, ne1, ne2, ne3]"))


def _check_clamp(srcs, p):
    if not p["min"] <= p["max"]:
        raise ValueError(f"CLAMP needs min <= max, got {p['min']} > {p['max']}")


register(OpSpec("CLAMP", 1, lambda xs, p: np.clip(xs[0], f32(p["min"]), f32(p["max"])), same_shape,
                {"min": -1.0, "max": 1.0}, _check_clamp, lambda s, p: [f32_bits(p["min"]), f32_bits(p["max"])],
                domain=uniform(-2, 2), summary="min(max(x, min), max)"))
