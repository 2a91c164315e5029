"""Model weights as {GGUF tensor name: float32 NumPy array}, NumPy shape = reversed ggml ne (as GGUF stores them).

Random weights are deterministic in the seed and scaled so activations stay of order 1 through every layer: each
linear map is N(0, 1/fan_in), norms are near 1, and the KDA gate parameters are drawn the way the checkpoint's are
(A_log in log[1,16], dt_bias the inverse softplus of dt in [1e-3, 0.1]), so the gates are as negative as real ones.
"""
from __future__ import annotations

import re
import zlib

import numpy as np

from .config import KimiConfig, weight_shapes


def random_weights(c: KimiConfig, seed: int = 0) -> dict[str, np.ndarray]:
    weights = {}
    for name, ne in weight_shapes(c).items():
        # One generator per tensor, keyed by its name: changing one tensor's shape leaves the others as they were.
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        shape = tuple(reversed(ne))
        kind = re.sub(r"^blk\.\d+\.", "", name).split(".")[0]  # ssm_a, ssm_dt, attn_q, token_embd, ...
        if kind == "ssm_a":
            x = -np.exp(rng.uniform(np.log(1.0), np.log(16.0), size=shape))
        elif kind == "ssm_dt":
            dt = np.exp(rng.uniform(np.log(1e-3), np.log(0.1), size=shape))
            x = dt + np.log(-np.expm1(-dt))  # inverse softplus
        elif name.endswith("norm.weight"):
            x = 1.0 + 0.1 * rng.standard_normal(shape)
        elif kind == "exp_probs_b":
            x = 0.01 * rng.standard_normal(shape)
        elif kind == "token_embd":
            x = rng.standard_normal(shape)
        elif kind.startswith("ssm_conv1d"):
            x = rng.standard_normal(shape) / np.sqrt(c.d_conv)
        else:  # a linear map: ne0 is the input width
            x = rng.standard_normal(shape) / np.sqrt(ne[0])
        weights[name] = x.astype(np.float32)
    return weights


class FileWeights(dict):
    """{GGUF name: float32 array} read from a file, with the tensors as the file stores them:
    stored {file tensor name: quants.StoredTensor} (ggml type, ne and raw blocks; a legacy attn_kv_b stays under its
    own name) and the file's layout (gguf_io.GgufLayout)."""

    def __init__(self, weights: dict, stored: dict, layout):
        super().__init__(weights)
        self.stored = stored
        self.layout = layout


def stored_nbytes(weights: dict) -> int:
    """Bytes the weights take as stored: a file's (quantized) tensor data for FileWeights, else the arrays'."""
    if isinstance(weights, FileWeights):
        return sum(t.nbytes for t in weights.stored.values())
    return sum(np.asarray(w).nbytes for w in weights.values())


def check_weights(c: KimiConfig, weights: dict[str, np.ndarray]) -> None:
    """Every tensor the config needs is present with its shape (size-1 trailing dims optional); nothing extra."""
    shapes = weight_shapes(c)
    missing = sorted(set(shapes) - set(weights))
    if missing:
        raise ValueError(f"model {c.name!r}: missing tensor(s) {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    for name, ne in shapes.items():
        got = tuple(reversed(weights[name].shape))
        if trim_ne(got) != trim_ne(ne):
            raise ValueError(f"model {c.name!r}: tensor {name} has ne {list(got)}, expected {list(ne)}")


def trim_ne(ne) -> tuple:
    ne = tuple(ne)
    while len(ne) > 1 and ne[-1] == 1:
        ne = ne[:-1]
    return ne


def kv_b_from_split(k_b: np.ndarray, v_b: np.ndarray) -> np.ndarray:
    """attn_kv_b (numpy [H*(nope+v), kv_lora]) rebuilt from attn_k_b (numpy [H, kv_lora, nope]) and attn_v_b (numpy
    [H, v, kv_lora]): the decompressed MLA form's weight, the inverse of mla.split_kv_b."""
    per_head = np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1)  # [H, nope+v, kv_lora]
    return per_head.reshape(-1, per_head.shape[-1])
