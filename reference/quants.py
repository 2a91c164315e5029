"""ggml's weight types as GGUF stores them: block layouts, dequantizers and quantizers (issue 13, phase 1).

A quantized row of ne0 elements is ne0 / block blocks of type_size bytes each, laid out as ggml-common.h's block_*
structs; every type here keeps its scale(s) as IEEE half floats at fixed byte offsets of its block (f16_fields).
The reference computes with dequantized weights: dequantize() is gguf-py's numpy dequantizer (gguf.quants), which
cases/test_quants.py checks bit for bit against ggml's own to_float (ggml_to_float, through ggml-python) on random
blocks of every type below - a check, not an assumption. ggml's CPU matmul differs from "dequantized weights times
float activations" in one respect only: it first quantizes the activations to Q8_0 (Q8_1, Q8_K for K-quants) and
multiplies integer blocks; bench/parity.py measures what that costs against llama.cpp.

Quantizers: quantize() encodes one tensor (gguf.quants where it implements the type, ggml's own
ggml_quantize_chunk otherwise, e.g. the K-quants); whole files go through llama.cpp's quantizer
(reference.gguf_io.quantize_gguf), which also picks per-tensor types as llama.cpp's users get them.

Phase 2 (quantized kernels), the intended shape: reference/tensor.py gains one DType per quantized type here,
carrying `block` and `type_size` from QUANT_TYPES; a tensor of such a type has nb[0] = type_size, nb[1] = ne0 / block
* type_size (ne0 a multiple of block, refused otherwise), and views may only start at block boundaries. MUL_MAT and
MUL_MAT_ID accept it as src0 (the weights; src1 and dst stay f32) and GET_ROWS as its table; their NumPy references
dequantize src0's rows with dequantize() and then compute in float64 as today, so the reference is exactly
"dequantized weights x float activations". Kernels read the blocks in place (scale fields at f16_fields) and
dequantize in registers; the ggml backend passes the same bytes to ggml as the second opinion. GGUF files already
carry the blocks: reference.gguf_io.read_gguf keeps each tensor's StoredTensor (type and raw bytes) beside the
float32 weights for the session to upload.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import gguf
import numpy as np

_G = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class QuantType:
    """One ggml type: `block` elements per block, `type_size` bytes per block, and the byte offsets of the block's
    half-float scale fields (ggml-common.h; what a test must keep finite when it draws random blocks)."""
    name: str
    block: int
    type_size: int
    f16_fields: tuple[int, ...] = ()

    @property
    def gguf_type(self) -> gguf.GGMLQuantizationType:
        return _G[self.name]

    @property
    def quantized(self) -> bool:
        return self.block > 1

    def row_bytes(self, ne0: int) -> int:
        return ne0 // self.block * self.type_size

    def check_row(self, ne0: int, what: str) -> None:
        """ValueError unless rows of ne0 elements are whole blocks (K-quants: multiples of 256)."""
        if ne0 % self.block:
            raise ValueError(f"{what}: rows of {ne0} elements cannot be {self.name}, whose blocks hold {self.block} "
                             f"elements (ne0 must be a multiple of {self.block})")


# ggml's types read here. The legacy and K-quants are what llama.cpp's quantizer writes (Q8_0, Q4_K_M and Q2_K files
# mix Q8_0, Q4_0, Q5_0, Q2_K, Q3_K, Q4_K, Q6_K); the IQ types are included because gguf.quants dequantizes them and
# they pass the same check against ggml. IQ1_M is left out: its scale is split across four 16-bit fields.
QUANT_TYPES = {t.name: t for t in [
    QuantType("F32", 1, 4), QuantType("F16", 1, 2), QuantType("BF16", 1, 2),
    QuantType("Q8_0", 32, 34, (0,)), QuantType("Q4_0", 32, 18, (0,)), QuantType("Q4_1", 32, 20, (0, 2)),
    QuantType("Q5_0", 32, 22, (0,)), QuantType("Q5_1", 32, 24, (0, 2)),
    QuantType("Q2_K", 256, 84, (80, 82)), QuantType("Q3_K", 256, 110, (108,)), QuantType("Q4_K", 256, 144, (0, 2)),
    QuantType("Q5_K", 256, 176, (0, 2)), QuantType("Q6_K", 256, 210, (208,)),
    QuantType("IQ4_NL", 32, 18, (0,)), QuantType("IQ4_XS", 256, 136, (0,)), QuantType("IQ2_XXS", 256, 66, (0,)),
    QuantType("IQ2_XS", 256, 74, (0,)), QuantType("IQ2_S", 256, 82, (0,)), QuantType("IQ3_XXS", 256, 98, (0,)),
    QuantType("IQ3_S", 256, 110, (0,)), QuantType("IQ1_S", 256, 50, (0,)),
]}
for _t in QUANT_TYPES.values():  # the layouts above are gguf-py's (and ggml's, checked in the tests) or a typo
    assert gguf.GGML_QUANT_SIZES[_t.gguf_type] == (_t.block, _t.type_size), _t


def quant_type(t) -> QuantType:
    """The QuantType of a name ("Q4_K", "q4_k"), a gguf.GGMLQuantizationType or a QuantType; ValueError for a type
    not read here."""
    if isinstance(t, QuantType):
        return t
    name = t.name if isinstance(t, _G) else str(t).upper()
    if name not in QUANT_TYPES:
        raise ValueError(f"ggml type {name} is not read; read: {', '.join(QUANT_TYPES)}")
    return QUANT_TYPES[name]


def dequantize(raw: np.ndarray, t) -> np.ndarray:
    """float32 values of `raw` (uint8, numpy shape [..., row bytes], or the float array itself for F32/F16/BF16
    as gguf's reader gives them) as ggml's to_float computes them; numpy shape [..., ne0]."""
    qt = quant_type(t)
    return gguf.quants.dequantize(raw, qt.gguf_type).astype(np.float32)  # a copy, never a view of a file


def quantize(values: np.ndarray, t) -> np.ndarray:
    """values (float, numpy shape [..., ne0]) encoded as ggml type t: uint8 [..., row bytes] (F32 stays float32,
    as gguf writes it). gguf.quants' quantizer where it has one (it matches ggml's bit for bit), else ggml's own
    ggml_quantize_chunk; refuses rows that are not whole blocks and types that need an importance matrix."""
    qt = quant_type(t)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 0:
        raise ValueError("quantize needs at least one row")
    qt.check_row(values.shape[-1], f"quantize to {qt.name}")
    try:
        return gguf.quants.quantize(values, qt.gguf_type)
    except NotImplementedError:
        pass
    ggml = _ggml()
    gtype = getattr(ggml, f"GGML_TYPE_{qt.name}")
    if ggml.ggml_quantize_requires_imatrix(gtype):
        raise ValueError(f"{qt.name} needs an importance matrix to quantize (ggml_quantize_requires_imatrix); "
                         "quantize a whole file with llama.cpp and an imatrix instead")
    rows = np.ascontiguousarray(values.reshape(-1, values.shape[-1]))
    out = np.empty((rows.shape[0], qt.row_bytes(rows.shape[1])), dtype=np.uint8)
    written = ggml.ggml_quantize_chunk(gtype, rows.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                       out.ctypes.data_as(ctypes.c_void_p), 0, rows.shape[0], rows.shape[1], None)
    if written != out.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes for {qt.name}, expected {out.nbytes}")
    return out.reshape(values.shape[:-1] + (out.shape[1],))


def ggml_to_float(raw: np.ndarray, t) -> np.ndarray:
    """ggml's own dequantizer (its type traits' to_float, ggml-python): the truth dequantize() is tested against.
    raw: uint8 [..., row bytes]; returns float32 [..., ne0]."""
    qt = quant_type(t)
    ggml = _ggml()
    traits = ggml.ggml_get_type_traits(getattr(ggml, f"GGML_TYPE_{qt.name}")).contents
    if (traits.blck_size, traits.type_size) != (qt.block, qt.type_size):
        raise RuntimeError(f"ggml's {qt.name} blocks are {traits.blck_size} elements / {traits.type_size} bytes, "
                           f"ours {qt.block} / {qt.type_size}")
    raw = np.ascontiguousarray(raw).view(np.uint8)
    if not traits.to_float:  # F32 has none: its bytes are the values
        return raw.view(np.float32).copy()
    n = raw.shape[-1] // qt.type_size * qt.block
    out = np.empty(raw.shape[:-1] + (n,), dtype=np.float32)
    traits.to_float(raw.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                    out.size)
    return out


_ggml_lib = None


def _ggml():
    """ggml-python, imported once (its CPU tables initialised)."""
    global _ggml_lib
    if _ggml_lib is None:
        import ggml
        ggml.ggml_cpu_init()
        _ggml_lib = ggml
    return _ggml_lib


@dataclass(frozen=True)
class StoredTensor:
    """A weight as its file stores it: ggml type, ne, and the raw bytes (numpy shape reversed ne with ne0 replaced
    by the row's bytes; the float array itself for F32). What weights MiB counts and what quantized kernels read."""
    qtype: QuantType
    ne: tuple[int, ...]
    raw: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.raw.nbytes)
