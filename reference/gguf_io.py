"""Kimi-Linear models as GGUF files that llama.cpp loads, and back: write_gguf(path, config, weights, dtype) and
read_gguf(path) -> (config, weights).

Tensor names are exactly the keys of weight_shapes(config); metadata is what llama.cpp's kimi-linear loader reads
(shared/docs/runtimes.md). Small tensors stay F32 whatever dtype is asked, by the rule of llama.cpp's converter:
1-D tensors and norms, everything not named *.weight (ssm_a, ssm_dt.bias, exp_probs_b.bias), the MoE router
(ffn_gate_inp) and the conv kernels. Reading accepts F32, F16 and BF16 tensors and refuses anything else by name.
"""
from __future__ import annotations

import re
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

    for name, ne in shapes.items():
        qtype = _QTYPE.F32 if stays_f32(name) else DTYPES[dtype]
        data = np.asarray(weights[name], dtype=np.float32).reshape(tuple(reversed(ne)))
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_gguf(path) -> tuple[KimiConfig, dict[str, np.ndarray]]:
    """Read a Kimi-Linear GGUF: the config rebuilt from its metadata and every tensor as a float32 array (numpy
    shape = reversed ne; F16 and BF16 widened exactly). Refuses, naming the key or tensor: a file that is not GGUF,
    another architecture, a missing or inconsistent metadata key, a layer pattern other than config.is_kda, a
    quantized tensor, a missing, extra or misshapen tensor."""
    path = Path(path)
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
    check_weights(config, weights)
    return config, weights
