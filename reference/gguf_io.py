"""Kimi-Linear models as GGUF files that llama.cpp loads, and back: write_gguf(path, config, weights, dtype) and
read_gguf(path) -> (config, weights).

Tensor names are exactly the keys of weight_shapes(config); metadata is what llama.cpp's kimi-linear loader reads
(shared/docs/runtimes.md). Small tensors stay F32 whatever dtype is asked, by the rule of llama.cpp's converter:
1-D tensors and norms, everything not named *.weight (ssm_a, ssm_dt.bias, exp_probs_b.bias), the MoE router
(ffn_gate_inp) and the conv kernels. Reading accepts F32, F16 and BF16 tensors and refuses anything else by name.

Before the gguf package parses a file, check_complete walks its header with bounds checks and compares the file's
size with what the header promises: a file cut short (a partial download or copy) is refused as "not a complete
GGUF file" with where it ends, instead of an IndexError from deep inside the reader. Weights that are NaN or inf are
refused on both sides, naming the tensor: a model with them can only produce NaN logits, which parity would
otherwise blame on the reference.
"""
from __future__ import annotations

import mmap
import re
import struct
from pathlib import Path

import gguf
import numpy as np

from .config import KimiConfig, weight_shapes
from .weights import check_weights

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
    _key(_K.Attention.VALUE_LENGTH_MLA): "v_head",
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
_GATING_FUNC = _key(_K.LLM.EXPERT_GATING_FUNC)
_WEIGHTS_NORM = _key(_K.LLM.EXPERT_WEIGHTS_NORM)


def _derived_metadata(c: KimiConfig) -> dict:
    """The keys llama.cpp needs that are functions of the config (read back only to check them)."""
    return {
        # 0 marks a KDA (recurrent) layer, 1 an MLA layer: the converter stores MLA as MQA over the latent.
        _HEAD_COUNT_KV: [0 if c.is_kda(il) else 1 for il in range(c.n_layer)],
        _KEY_LENGTH: c.kv_lora + c.qk_rope,  # the cached latent plus the (unrotated) rope part
        _VALUE_LENGTH: c.kv_lora,
        _KEY_LENGTH_MLA: c.qk_nope + c.qk_rope,
        _GATING_FUNC: int(gguf.ExpertGatingFuncType.SIGMOID),
        _WEIGHTS_NORM: True,
    }


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


def write_gguf(path, config: KimiConfig, weights: dict[str, np.ndarray], dtype: str = "f32") -> None:
    """Write config and weights ({GGUF name: float array, numpy shape = reversed ne}) as a llama.cpp GGUF file.
    dtype ("f32", "f16", "bf16") applies to the large matrices; see stays_f32 for the rest. bf16 rounds to nearest
    even, as ggml does."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    shapes = weight_shapes(config)
    extra = sorted(set(weights) - set(shapes))
    if extra:
        raise ValueError(f"model {config.name!r}: tensor(s) not in the model: {', '.join(extra)}")
    check_weights(config, weights)

    tensors = []  # every tensor converted and checked before the file is created
    for name, ne in shapes.items():
        qtype = _QTYPE.F32 if stays_f32(name) else DTYPES[dtype]
        data = np.asarray(weights[name], dtype=np.float32).reshape(tuple(reversed(ne)))
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
    for key, field in _FLOAT_FIELDS.items():
        writer.add_float32(key, getattr(config, field))
    for key, value in _derived_metadata(config).items():
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


def read_gguf(path) -> tuple[KimiConfig, dict[str, np.ndarray]]:
    """Read a Kimi-Linear GGUF: the config rebuilt from its metadata and every tensor as a float32 array (numpy
    shape = reversed ne; F16 and BF16 widened exactly). Refuses, naming the key or tensor: a file that is not GGUF,
    another architecture, a missing or inconsistent metadata key, a layer pattern other than config.is_kda, a
    quantized tensor, a missing, extra or misshapen tensor, a tensor with NaN or inf values; and a file cut short
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
    qk_nope = get(_KEY_LENGTH_MLA, int) - ints["qk_rope"]
    config = KimiConfig(name=fields.get(_K.General.NAME) or path.stem, qk_nope=qk_nope, **ints, **floats)

    head_count_kv = get(_HEAD_COUNT_KV, list)
    if len(head_count_kv) != config.n_layer:
        raise ValueError(f"{path}: {_HEAD_COUNT_KV} has {len(head_count_kv)} entries for {config.n_layer} layers")
    for key, expected in _derived_metadata(config).items():
        got = fields.get(key)
        if got is None:
            raise ValueError(f"{path}: missing metadata key {key}")
        if key == _HEAD_COUNT_KV:
            for il, (g, e) in enumerate(zip(got, expected)):
                if g != e:
                    kinds = {0: "KDA (0)", 1: "MLA (1)"}
                    raise ValueError(f"{path}: layer {il} is {kinds.get(g, g)} in {key} but the Kimi-Linear layer "
                                     f"pattern makes it {kinds[e]}")
        elif got != expected:
            raise ValueError(f"{path}: metadata key {key} is {got!r}, expected {expected!r} for this config")

    shapes = weight_shapes(config)
    weights = {}
    for t in reader.tensors:
        if t.name not in shapes:
            raise ValueError(f"{path}: tensor {t.name} is not part of model {config.name!r}")
        if t.tensor_type not in DTYPES.values():
            raise ValueError(f"{path}: tensor {t.name} is {t.tensor_type.name}; only F32, F16 and BF16 are read")
        weights[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        _refuse_nonfinite(path, t.name, weights[t.name], "has")  # widening keeps NaN/inf: one check covers all types
    check_weights(config, weights)
    return config, weights
