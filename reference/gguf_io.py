"""Kimi-Linear models as GGUF files that llama.cpp loads, and back: write_gguf(path, config, weights, dtype, layout),
read_gguf(path) -> (config, weights), and quantize_gguf(src, dst, ftype) through llama.cpp's own quantizer.

Tensor names are exactly the keys of weight_shapes(config); metadata is what llama.cpp's kimi-linear loader reads
(shared/docs/runtimes.md). Small tensors stay F32 whatever dtype is asked, by the rule of llama.cpp's converter:
1-D tensors and norms, everything not named *.weight (ssm_a, ssm_dt.bias, exp_probs_b.bias), the MoE router
(ffn_gate_inp) and the conv kernels.

Reading accepts every type of reference.quants.QUANT_TYPES (F32, F16, BF16, the legacy, K- and most IQ quants):
weights come back dequantized to float32 (ggml's to_float, bit for bit), and the returned dict (a FileWeights) keeps
each tensor as stored - type and raw blocks - in .stored, for the quantized size and for kernels that read blocks.
It also accepts the layouts llama.cpp's kimi-linear loader accepts (GgufLayout): conv kernels 3-D [d_conv, 1,
d_inner] (what llama.cpp's quantizer writes: it drops trailing 1s) or 4-D; ssm_a [1, n_head] or [1, n_head, 1, 1];
and the legacy unsplit attn_kv_b in place of attn_k_b/attn_v_b, which is split at load (split_kv_b: a reshape and
a transpose, exact) so one weight set serves both MLA forms - the decompressed form rebuilds attn_kv_b from the
split pair bit for bit. Weights always come back in weight_shapes' shapes, whatever the file's layout.

Before the gguf package parses a file, check_complete walks its header with bounds checks and compares the file's
size with what the header promises: a file cut short (a partial download or copy) is refused as "not a complete
GGUF file" with where it ends, instead of an IndexError from deep inside the reader. Weights that are NaN or inf are
refused on both sides, naming the tensor: a model with them can only produce NaN logits, which parity would
otherwise blame on the reference.
"""
from __future__ import annotations

import importlib.util
import mmap
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from . import quants
from .config import KimiConfig, weight_shapes
from .mla import split_kv_b
from .weights import FileWeights, check_weights, kv_b_from_split, trim_ne

ARCH = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.KIMI_LINEAR]  # "kimi-linear"
_QTYPE = gguf.GGMLQuantizationType
DTYPES = {"f32": _QTYPE.F32, "f16": _QTYPE.F16, "bf16": _QTYPE.BF16}
_FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
               "bf16": gguf.LlamaFileType.MOSTLY_BF16}
_K = gguf.Keys


def _key(template: str) -> str:
    return template.format(arch=ARCH)


# Config fields stored one to one under a metadata key. The remaining keys are derived (key/value lengths, the
# per-layer head_count_kv) or fixed by the architecture (sigmoid gating, renormalised weights); read_gguf checks them.
_INT_FIELDS = {
    _key(_K.LLM.VOCAB_SIZE): "n_vocab",
    _key(_K.LLM.CONTEXT_LENGTH): "n_ctx_train",
    _key(_K.LLM.EMBEDDING_LENGTH): "d_model",
    _key(_K.LLM.BLOCK_COUNT): "n_layer",
    _key(_K.LLM.FEED_FORWARD_LENGTH): "d_ff",
    _key(_K.LLM.LEADING_DENSE_BLOCK_COUNT): "n_dense_lead",
    _key(_K.LLM.EXPERT_COUNT): "n_expert",
    _key(_K.LLM.EXPERT_USED_COUNT): "n_expert_used",
    _key(_K.LLM.EXPERT_FEED_FORWARD_LENGTH): "d_expert",
    _key(_K.LLM.EXPERT_SHARED_COUNT): "n_shared",
    _key(_K.Attention.HEAD_COUNT): "n_head",
    _key(_K.Attention.KV_LORA_RANK): "kv_lora",
    _key(_K.Rope.DIMENSION_COUNT): "qk_rope",
    _key(_K.SSM.CONV_KERNEL): "d_conv",
    _key(_K.KDA.HEAD_DIM): "head_dim",
}
_FLOAT_FIELDS = {
    _key(_K.LLM.EXPERT_WEIGHTS_SCALE): "expert_scale",
    _key(_K.Attention.LAYERNORM_RMS_EPS): "eps",
}
_HEAD_COUNT_KV = _key(_K.Attention.HEAD_COUNT_KV)
_KEY_LENGTH = _key(_K.Attention.KEY_LENGTH)
_VALUE_LENGTH = _key(_K.Attention.VALUE_LENGTH)
_KEY_LENGTH_MLA = _key(_K.Attention.KEY_LENGTH_MLA)
_VALUE_LENGTH_MLA = _key(_K.Attention.VALUE_LENGTH_MLA)
_Q_LORA_RANK = _key(_K.Attention.Q_LORA_RANK)  # written only for a q-LoRA model (config.q_lora > 0)
_GATING_FUNC = _key(_K.LLM.EXPERT_GATING_FUNC)
_WEIGHTS_NORM = _key(_K.LLM.EXPERT_WEIGHTS_NORM)
KV_B_LAYOUTS = ("split", "merged")


@dataclass(frozen=True)
class GgufLayout:
    """How a file spells the tensors llama.cpp's kimi-linear loader accepts in more than one form (kimi-linear.cpp
    load_arch_tensors). The defaults are what llama.cpp's converter writes.

    conv_dims   ssm_conv1d_{q,k,v}: 4 ([d_conv, 1, d_inner, 1]) or 3 ([d_conv, 1, d_inner], as llama.cpp's
                quantizer rewrites them)
    ssm_a_dims  ssm_a: 2 ([1, n_head]) or 4 ([1, n_head, 1, 1])
    kv_b        "split": attn_k_b + attn_v_b (the MLA latent cache); "merged": the legacy unsplit attn_kv_b, with
                the legacy metadata llama.cpp then needs to load it (key_length_mla = value_length_mla = 0,
                key_length = qk_nope + qk_rope, value_length = v_head, head_count_kv = n_head on MLA layers), which
                turns its MLA KV cache off (a per-head K/V cache instead)
    """
    conv_dims: int = 4
    ssm_a_dims: int = 2
    kv_b: str = "split"

    def __post_init__(self):
        if self.conv_dims not in (3, 4) or self.ssm_a_dims not in (2, 4) or self.kv_b not in KV_B_LAYOUTS:
            raise ValueError(f"GgufLayout: conv_dims must be 3 or 4, ssm_a_dims 2 or 4, kv_b one of "
                             f"{', '.join(KV_B_LAYOUTS)}; got {self.conv_dims}, {self.ssm_a_dims}, {self.kv_b!r}")


def _derived_metadata(c: KimiConfig, kv_b: str = "split") -> dict:
    """The keys llama.cpp needs that are functions of the config (read back only to check them)."""
    if kv_b == "merged":  # per-head K and V of the decompressed form are what llama.cpp then caches
        attention = {_HEAD_COUNT_KV: [0 if c.is_kda(il) else c.n_head for il in range(c.n_layer)],
                     _KEY_LENGTH: c.qk_nope + c.qk_rope, _VALUE_LENGTH: c.v_head,
                     _KEY_LENGTH_MLA: 0, _VALUE_LENGTH_MLA: 0}
    else:  # 0 marks a KDA (recurrent) layer, 1 an MLA layer: the converter stores MLA as MQA over the latent.
        attention = {_HEAD_COUNT_KV: [0 if c.is_kda(il) else 1 for il in range(c.n_layer)],
                     _KEY_LENGTH: c.kv_lora + c.qk_rope,  # the cached latent plus the (unrotated) rope part
                     _VALUE_LENGTH: c.kv_lora,
                     _KEY_LENGTH_MLA: c.qk_nope + c.qk_rope, _VALUE_LENGTH_MLA: c.v_head}
    return {**attention, _GATING_FUNC: int(gguf.ExpertGatingFuncType.SIGMOID), _WEIGHTS_NORM: True}


def file_shapes(c: KimiConfig, layout: GgufLayout = GgufLayout()) -> dict[str, tuple[int, ...]]:
    """The tensors of a file in `layout`, by name, as ggml ne (weight_shapes with the layout's spellings)."""
    shapes = {}
    for name, ne in weight_shapes(c).items():
        kind = name.split(".")[-2] if name.endswith(".weight") else name.split(".")[-1]
        if kind.startswith("ssm_conv1d_") and layout.conv_dims == 3:
            ne = ne[:3]
        elif kind == "ssm_a" and layout.ssm_a_dims == 4:
            ne = ne + (1, 1)
        elif kind in ("attn_k_b", "attn_v_b") and layout.kv_b == "merged":
            if kind == "attn_k_b":
                name, ne = name.replace("attn_k_b", "attn_kv_b"), (c.kv_lora, c.n_head * (c.qk_nope + c.v_head))
            else:
                continue
        shapes[name] = ne
    return shapes


def stays_f32(name: str) -> bool:
    """Tensors llama.cpp's converter keeps in F32 whatever the file type (its prepare_tensors rule)."""
    return (name.endswith("norm.weight") or not name.endswith(".weight")
            or re.search(r"\.(ffn_gate_inp|ssm_conv1d_[qkv])\.weight$", name) is not None)


# ---- a bounds-checked walk of the header (the file layout of gguf-py's GGUFReader and llama.cpp's gguf.cpp) -----
_V = gguf.GGUFValueType
_SCALAR_SIZE = {_V.UINT8: 1, _V.INT8: 1, _V.UINT16: 2, _V.INT16: 2, _V.UINT32: 4, _V.INT32: 4, _V.FLOAT32: 4,
                _V.BOOL: 1, _V.UINT64: 8, _V.INT64: 8, _V.FLOAT64: 8}


class _HeaderWalk:
    """Reads the header of `buf` (the file's bytes) from byte 0; every read that would run past the end raises
    ValueError("not a complete GGUF file: ...") naming what was being read and where."""

    def __init__(self, path: Path, buf):
        self.path, self.buf, self.size, self.pos, self.order = path, buf, len(buf), 0, "<"

    def short(self, what: str, need: int) -> ValueError:
        return ValueError(f"not a complete GGUF file: {self.path} is {self.size} bytes and ends inside its header "
                          f"({what} at byte {self.pos} needs {need} byte(s), {self.size - self.pos} left)")

    def take(self, n: int, what: str) -> int:
        if n > self.size - self.pos:
            raise self.short(what, n)
        start = self.pos
        self.pos += n
        return start

    def u32(self, what: str) -> int:
        return struct.unpack_from(self.order + "I", self.buf, self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack_from(self.order + "Q", self.buf, self.take(8, what))[0]

    def string(self, what: str) -> bytes:
        n = self.u64(f"the length of {what}")
        start = self.take(n, what)
        return bytes(self.buf[start:start + n])

    def skip_value(self, vtype: int, what: str) -> None:
        if vtype in _SCALAR_SIZE:
            self.take(_SCALAR_SIZE[vtype], what)
        elif vtype == _V.STRING:
            self.string(what)
        elif vtype == _V.ARRAY:
            itype = self.u32(f"the item type of {what}")
            count = self.u64(f"the length of {what}")
            if itype in _SCALAR_SIZE:
                self.take(count * _SCALAR_SIZE[itype], f"{what} ({count} items)")
                return
            if count * 8 > self.size - self.pos:  # every string or array item takes at least 8 bytes
                raise self.short(f"{what} ({count} items)", count * 8)
            for i in range(count):
                self.skip_value(itype, f"{what}[{i}]")
        else:
            raise ValueError(f"{self.path}: not a readable GGUF file ({what} has unknown value type {vtype})")


def check_complete(path) -> None:
    """Refuse a GGUF file that ends before its header says it does: inside the header (magic, counts, metadata,
    tensor infos) or inside the tensor data (the end of the last tensor, data offset + tensor offset + size). Only the
    header is read. Raises ValueError: "not a complete GGUF file: <path> ..." for a truncation, "<path>: not a
    readable GGUF file (...)" for a file that is not GGUF at all."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as e:
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from e
    try:
        _check_header(path, buf)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def _check_header(path: Path, buf) -> None:
    magic = struct.pack("<I", gguf.GGUF_MAGIC)  # b"GGUF"
    head = bytes(buf[:4])
    if head != magic[:len(head)]:
        raise ValueError(f"{path}: not a readable GGUF file (starts with {head!r}, not the GGUF magic {magic!r})")
    h = _HeaderWalk(path, buf)
    h.take(4, "the GGUF magic")
    version = h.u32("the version")
    if version & 0xFFFF == 0:  # written in the other byte order (GGUFReader's test)
        h.order = ">"
        version = struct.unpack("<I", struct.pack(">I", version))[0]
    if version not in gguf.READER_SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: not a readable GGUF file (version {version}; "
                         f"read: {', '.join(map(str, gguf.READER_SUPPORTED_VERSIONS))})")
    n_tensors = h.u64("the tensor count")
    n_kv = h.u64("the metadata count")
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for i in range(n_kv):
        key = h.string(f"the name of metadata key {i} of {n_kv}").decode("utf-8", "replace")
        vtype = h.u32(f"the type of metadata key {key}")
        if key == _K.General.ALIGNMENT and vtype == _V.UINT32:
            alignment = h.u32(f"metadata key {key}")
        else:
            h.skip_value(vtype, f"metadata key {key}")
    spans = []  # (start, end) of each tensor's data relative to the data section, and its name
    for i in range(n_tensors):
        name = h.string(f"the name of tensor {i} of {n_tensors}").decode("utf-8", "replace")
        n_dims = h.u32(f"the dimension count of tensor {name}")
        h.take(8 * n_dims, f"the dimensions of tensor {name}")
        dims = struct.unpack_from(f"{h.order}{n_dims}Q", buf, h.pos - 8 * n_dims)
        ttype = h.u32(f"the type of tensor {name}")
        offset = h.u64(f"the data offset of tensor {name}")
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise ValueError(f"{path}: not a readable GGUF file (tensor {name} has unknown type {ttype})") from None
        n = 1
        for d in dims:
            n *= d
        spans.append((offset, offset + n // block * type_size, name))
    if alignment == 0 or alignment & (alignment - 1):
        raise ValueError(f"{path}: not a readable GGUF file ({_K.General.ALIGNMENT} is {alignment}, "
                         "not a power of two)")
    data_offset = -(-h.pos // alignment) * alignment
    need = data_offset + max((end for _, end, _ in spans), default=0)
    if need > h.size:
        start, end, name = min((data_offset + s, data_offset + e, n) for s, e, n in spans if data_offset + e > h.size)
        where = ("in the padding before the tensor data" if h.size < data_offset else "inside the tensor data")
        raise ValueError(f"not a complete GGUF file: {path} is {h.size} bytes, its header promises {need} "
                         f"({n_tensors} tensors from byte {data_offset}); it ends {where}: tensor {name} "
                         f"(bytes {start} to {end}) is the first cut short")


def _refuse_nonfinite(path, name: str, values: np.ndarray, what: str) -> None:
    """ValueError naming the tensor, the count of NaN/inf values and the first one's ne index (one pass when all
    are finite)."""
    if np.isfinite(values).all():
        return
    bad = ~np.isfinite(values)
    first = int(np.flatnonzero(bad)[0])
    index = [int(i) for i in reversed(np.unravel_index(first, values.shape))]
    n_nan = int(np.count_nonzero(np.isnan(values)))
    raise ValueError(f"{path}: tensor {name} {what} {int(bad.sum())} non-finite value(s) ({n_nan} NaN, "
                     f"{int(bad.sum()) - n_nan} inf); the first is {values.flat[first]} at ne index {index} "
                     f"(element {first})")


def write_gguf(path, config: KimiConfig, weights: dict[str, np.ndarray], dtype: str = "f32",
               layout: GgufLayout = GgufLayout()) -> None:
    """Write config and weights ({GGUF name: float array, numpy shape = reversed ne}) as a llama.cpp GGUF file.
    dtype ("f32", "f16", "bf16") applies to the large matrices; see stays_f32 for the rest. bf16 rounds to nearest
    even, as ggml does. layout: the spellings llama.cpp also accepts (GgufLayout); weights are always given in
    weight_shapes' form (attn_k_b/attn_v_b are merged here for layout.kv_b == "merged"). Quantized files:
    quantize_gguf."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not isinstance(layout, GgufLayout):
        raise ValueError(f"layout must be a GgufLayout, got {layout!r}")
    extra = sorted(set(weights) - set(weight_shapes(config)))
    if extra:
        raise ValueError(f"model {config.name!r}: tensor(s) not in the model: {', '.join(extra)}")
    check_weights(config, weights)

    tensors = []  # every tensor converted and checked before the file is created
    for name, ne in file_shapes(config, layout).items():
        qtype = _QTYPE.F32 if stays_f32(name) else DTYPES[dtype]
        if name.endswith("attn_kv_b.weight"):
            values = kv_b_from_split(weights[name.replace("attn_kv_b", "attn_k_b")],
                                     weights[name.replace("attn_kv_b", "attn_v_b")])
        else:
            values = weights[name]
        data = np.asarray(values, dtype=np.float32).reshape(tuple(reversed(ne)))
        _refuse_nonfinite(path, name, data, "has")
        with np.errstate(over="ignore"):  # an overflow to inf is refused, by name, just below
            raw = gguf.quants.quantize(data, qtype)
        if qtype != _QTYPE.F32:  # a finite f32 can round to inf: |x| > 65504 in f16, > 3.39e38 in bf16
            _refuse_nonfinite(path, name, gguf.quants.dequantize(raw, qtype), f"would have, in {dtype},")
        tensors.append((name, raw, qtype))

    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_name(config.name)
    writer.add_file_type(_FILE_TYPES[dtype])
    writer.add_tokenizer_model("none")  # no tokenizer: llama.cpp then takes the vocabulary size from vocab_size
    for key, field in _INT_FIELDS.items():
        writer.add_uint32(key, getattr(config, field))
    if config.q_lora:
        writer.add_uint32(_Q_LORA_RANK, config.q_lora)
    for key, field in _FLOAT_FIELDS.items():
        writer.add_float32(key, getattr(config, field))
    for key, value in _derived_metadata(config, layout.kv_b).items():
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        else:
            writer.add_uint32(key, value)

    for name, raw, qtype in tensors:
        writer.add_tensor(name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_gguf(path) -> tuple[KimiConfig, FileWeights]:
    """Read a Kimi-Linear GGUF: the config rebuilt from its metadata and every tensor as a float32 array in
    weight_shapes' form (numpy shape = reversed ne; F16, BF16 and quantized blocks dequantized as ggml does), in a
    FileWeights that also holds each tensor as stored (.stored) and the file's layout (.layout). Refuses, naming the
    key or tensor: a file that is not GGUF, another architecture, a missing or inconsistent metadata key, a layer
    pattern other than config.is_kda, a tensor type not read (reference.quants.QUANT_TYPES), rows that are not whole
    blocks, a missing, extra or misshapen tensor, a tensor with NaN or inf values; and a file cut short
    (check_complete) before the gguf package parses it."""
    path = Path(path)
    check_complete(path)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from e
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}

    def get(key: str, kind: type):
        if key not in fields:
            raise ValueError(f"{path}: missing metadata key {key}")
        value = fields[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{path}: metadata key {key} is {value!r}, expected {kind.__name__}")
        return value

    arch = get(_K.General.ARCHITECTURE, str)
    if arch != ARCH:
        raise ValueError(f"{path}: architecture {arch!r} (key {_K.General.ARCHITECTURE}), expected {ARCH!r}")
    ints = {field: get(key, int) for key, field in _INT_FIELDS.items()}
    # float32 in the file: take the shortest decimal that rounds to it, so 2.446 reads back as 2.446.
    floats = {field: float(str(np.float32(get(key, float)))) for key, field in _FLOAT_FIELDS.items()}
    # key_length_mla 0 marks the legacy layout (unsplit attn_kv_b): the head sizes are then the plain key/value lengths
    kv_b = "merged" if get(_KEY_LENGTH_MLA, int) == 0 else "split"
    key_length, value_length = (_KEY_LENGTH, _VALUE_LENGTH) if kv_b == "merged" else (_KEY_LENGTH_MLA,
                                                                                      _VALUE_LENGTH_MLA)
    q_lora = get(_Q_LORA_RANK, int) if _Q_LORA_RANK in fields else 0
    config = KimiConfig(name=fields.get(_K.General.NAME) or path.stem, qk_nope=get(key_length, int) - ints["qk_rope"],
                        v_head=get(value_length, int), q_lora=q_lora, **ints, **floats)

    head_count_kv = get(_HEAD_COUNT_KV, list)
    if len(head_count_kv) != config.n_layer:
        raise ValueError(f"{path}: {_HEAD_COUNT_KV} has {len(head_count_kv)} entries for {config.n_layer} layers")
    for key, expected in _derived_metadata(config, kv_b).items():
        got = fields.get(key)
        if got is None:
            raise ValueError(f"{path}: missing metadata key {key}")
        if key == _HEAD_COUNT_KV:
            for il, (g, e) in enumerate(zip(got, expected)):
                if (g == 0) != (e == 0):
                    kinds = {0: "KDA (0)"}
                    raise ValueError(f"{path}: layer {il} is {kinds.get(g, f'MLA ({g})')} in {key} but the "
                                     f"Kimi-Linear layer pattern makes it {kinds.get(e, f'MLA ({e})')}")
        if got != expected:
            raise ValueError(f"{path}: metadata key {key} is {got!r}, expected {expected!r} for this config")

    shapes = file_shapes(config, GgufLayout(kv_b=kv_b))
    canonical = weight_shapes(config)
    found, stored, dims = {}, {}, {}
    for t in reader.tensors:
        if t.name not in shapes:
            raise ValueError(f"{path}: tensor {t.name} is not part of model {config.name!r}"
                             + (f" ({kv_b} attn_kv_b layout)" if re.search(r"attn_kv?_b|attn_v_b", t.name) else ""))
        if t.tensor_type.name not in quants.QUANT_TYPES:
            raise ValueError(f"{path}: tensor {t.name} is {t.tensor_type.name}, which is not read; read: "
                             f"{', '.join(quants.QUANT_TYPES)}")
        qtype = quants.quant_type(t.tensor_type)
        ne = tuple(int(n) for n in t.shape)
        qtype.check_row(ne[0], f"{path}: tensor {t.name}")
        found[t.name] = quants.dequantize(t.data, qtype).reshape(tuple(reversed(ne)))
        _refuse_nonfinite(path, t.name, found[t.name], "has")  # dequantizing keeps NaN/inf: one check for all
        stored[t.name] = quants.StoredTensor(qtype, ne, t.data)  # a view of the file's memory map
        dims[t.name.split(".")[-2] if t.name.endswith(".weight") else t.name.split(".")[-1]] = len(ne)
    missing = sorted(set(shapes) - set(found))
    if missing:
        raise ValueError(f"model {config.name!r}: missing tensor(s) {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    for name, ne in shapes.items():  # each spelling llama.cpp accepts (trailing 1s aside) and only those
        got = tuple(reversed(found[name].shape))
        if trim_ne(got) != trim_ne(ne):
            raise ValueError(f"model {config.name!r}: tensor {name} has ne {list(got)}, expected {list(ne)}")
    weights = {}
    for name, ne in canonical.items():
        if name in found:
            weights[name] = found[name].reshape(tuple(reversed(ne)))
    for il in config.mla_layers if kv_b == "merged" else ():
        b = f"blk.{il}."
        weights[b + "attn_k_b.weight"], weights[b + "attn_v_b.weight"] = split_kv_b(
            found[b + "attn_kv_b.weight"], config.mla)
    layout = GgufLayout(conv_dims=3 if dims.get("ssm_conv1d_q", 4) == 3 else 4,
                        ssm_a_dims=4 if dims.get("ssm_a", 2) == 4 else 2, kv_b=kv_b)
    weights = FileWeights({name: weights[name] for name in canonical}, stored, layout)
    check_weights(config, weights)
    return config, weights


# ---- quantized files through llama.cpp's quantizer -----------------------------------------------------------
# The ftypes llama.cpp quantizes without an importance matrix (its IQ1/IQ2/IQ3 ftypes need one).
QUANTIZE_FTYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
                   "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "F16", "BF16")
_NEEDS_256 = ("_K", "IQ4_XS")  # ftypes whose main type has 256-element blocks


def quantize_gguf(src, dst, ftype: str, n_threads: int = 2, timeout_s: float = 600) -> None:
    """Quantize the GGUF `src` into `dst` with llama.cpp's own quantizer (llama_model_quantize, llama-cpp-python),
    as `llama-quantize src dst FTYPE` does: per-tensor types chosen by llama.cpp (Q4_K_M mixes Q4_K, Q6_K, Q5_0,
    ...), small tensors kept F32. Runs in a child process (a failed GGML_ASSERT aborts). Refuses before anything
    runs: an unknown ftype, llama-cpp-python missing, a source read_gguf refuses, and a K-quant ftype for a model
    whose hidden size (the rows of the large matrices) is not a multiple of 256."""
    ftype = ftype.upper()
    if ftype not in QUANTIZE_FTYPES:
        raise ValueError(f"ftype must be one of {', '.join(QUANTIZE_FTYPES)}, got {ftype!r}")
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError("quantize_gguf needs llama.cpp's quantizer: llama-cpp-python is not installed in this "
                           "environment (run scripts/setup.sh)")
    config, _ = read_gguf(src)
    if any(tag in ftype for tag in _NEEDS_256) and config.d_model % 256:
        raise ValueError(f"{ftype} quantizes rows in blocks of 256 elements: model {config.name!r} has d_model "
                         f"{config.d_model}, not a multiple of 256")
    code = ("import sys; from reference.gguf_io import _quantize_here; "
            "_quantize_here(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))")
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(src), str(dst), ftype, str(n_threads)],
                              cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"llama.cpp's quantizer did not finish {src} -> {ftype} within {timeout_s} s") from e
    if proc.returncode != 0:
        raise RuntimeError(f"llama.cpp's quantizer failed on {src} -> {ftype} (exit status {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")


def _quantize_here(src: str, dst: str, ftype: str, n_threads: int) -> None:
    """The child's side of quantize_gguf: llama.cpp's log kept to warnings and errors."""
    import llama_cpp

    @llama_cpp.llama_log_callback
    def log(level, text, _user_data):
        if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
            sys.stderr.write(text.decode(errors="replace"))

    llama_cpp.llama_log_set(log, None)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(gguf.LlamaFileType[f"MOSTLY_{ftype}"])
    params.nthread = n_threads
    status = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if status != 0:
        raise SystemExit(f"llama_model_quantize returned {status}")
