"""reference/quants.py against ggml itself (ggml-python): every type's block layout, its dequantizer bit for bit on
random blocks, and the quantizers (gguf's equal to ggml's where both exist; round trips within the type's precision;
refusals)."""
import ctypes

import gguf
import numpy as np
import pytest

from cases.harness import run_case
from conftest import device_backend
from reference import quants
from reference.case import Case, Input
from reference.quants import QUANT_TYPES, dequantize, ggml_to_float, quant_type, quantize
from reference.tensor import DType

N_BLOCKS = 96


def random_blocks(name: str, seed: int = 0) -> np.ndarray:
    """N_BLOCKS blocks of random bytes (uint8 [1, row bytes]) whose half-float scale fields hold finite values in
    +-2, so every bit of the quant fields is drawn and no value is NaN or inf; F16/BF16 rows of finite values."""
    qt = QUANT_TYPES[name]
    rng = np.random.default_rng([seed, qt.type_size, qt.block])
    if name == "F32":
        return rng.standard_normal((1, N_BLOCKS)).astype(np.float32).view(np.uint8)
    if name == "F16":
        return rng.standard_normal((1, N_BLOCKS)).astype(np.float16).view(np.uint8)
    if name == "BF16":
        return (rng.standard_normal((1, N_BLOCKS)).astype(np.float32).view(np.uint32) >> 16).astype(
            np.uint16).view(np.uint8)
    raw = rng.integers(0, 256, (N_BLOCKS, qt.type_size), dtype=np.uint8)
    for at in qt.f16_fields:
        raw[:, at:at + 2] = rng.uniform(-2, 2, (N_BLOCKS, 1)).astype(np.float16).view(np.uint8)
    return raw.reshape(1, -1)


def test_layouts_are_ggmls():
    ggml = quants._ggml()
    for name, qt in QUANT_TYPES.items():
        traits = ggml.ggml_get_type_traits(getattr(ggml, f"GGML_TYPE_{name}")).contents
        assert (traits.blck_size, traits.type_size) == (qt.block, qt.type_size), name
        assert qt.quantized == bool(traits.is_quantized) or name in ("F16", "BF16"), name


@pytest.mark.parametrize("name", list(QUANT_TYPES))
def test_dequantize_is_ggmls_bit_for_bit(name):
    raw = random_blocks(name)
    ours = dequantize(raw, name)
    truth = ggml_to_float(raw, name)
    assert ours.dtype == np.float32 and ours.shape == truth.shape == (1, N_BLOCKS * QUANT_TYPES[name].block)
    assert np.all(np.isfinite(truth)) and np.std(truth) > 0
    np.testing.assert_array_equal(ours, truth)


def test_the_comparison_sees_a_nibble_swap():
    """The random blocks reach every nibble: reading Q4_0's high nibble first changes most values."""
    raw = random_blocks("Q4_0")
    swapped = raw.reshape(N_BLOCKS, 18).copy()
    swapped[:, 2:] = (swapped[:, 2:] << 4) | (swapped[:, 2:] >> 4)
    changed = dequantize(swapped.reshape(1, -1), "Q4_0") != ggml_to_float(raw, "Q4_0")
    assert changed.mean() > 0.8


# what a round trip may lose: NMSE against Gaussian values (measured: Q8_0 4e-5, Q4_K 4e-3, Q2_K 1e-1)
ROUND_TRIP_NMSE = {"F16": 1e-7, "BF16": 1e-4, "Q8_0": 1e-4, "Q5_0": 3e-3, "Q5_1": 3e-3, "Q5_K": 3e-3,
                   "Q6_K": 1e-3, "Q4_0": 1e-2, "Q4_1": 1e-2, "Q4_K": 1e-2, "IQ4_NL": 1e-2, "IQ4_XS": 1e-2,
                   "Q3_K": 5e-2, "Q2_K": 2e-1}


@pytest.mark.parametrize("name", list(ROUND_TRIP_NMSE))
def test_quantize_round_trip(name):
    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    raw = quantize(x, name)
    back = dequantize(raw, name)
    assert back.shape == x.shape
    np.testing.assert_array_equal(back, ggml_to_float(raw.view(np.uint8).reshape(3, -1), name))
    nmse = float(np.sum((back - x) ** 2) / np.sum(x ** 2))
    assert 0 < nmse < ROUND_TRIP_NMSE[name], nmse


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "BF16"])
def test_gguf_quantizer_is_ggmls(name):
    """Where gguf.quants has a quantizer, it writes the bytes ggml's ggml_quantize_chunk writes."""
    x = np.random.default_rng(2).standard_normal((4, 256)).astype(np.float32)
    ggml = quants._ggml()
    qt = QUANT_TYPES[name]
    out = np.empty((4, qt.row_bytes(256)), np.uint8)
    ggml.ggml_quantize_chunk(getattr(ggml, f"GGML_TYPE_{name}"), x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                             out.ctypes.data_as(ctypes.c_void_p), 0, 4, 256, None)
    np.testing.assert_array_equal(quantize(x, name).view(np.uint8), out)


def test_refusals():
    with pytest.raises(ValueError, match=r"rows of 128 elements cannot be Q4_K, whose blocks hold 256 elements"):
        quantize(np.zeros((2, 128)), "Q4_K")
    with pytest.raises(ValueError, match=r"IQ2_XXS needs an importance matrix"):
        quantize(np.zeros((2, 256)), "IQ2_XXS")
    with pytest.raises(ValueError, match=r"ggml type MXFP4 is not read; read: F32, F16"):
        quant_type(gguf.GGMLQuantizationType.MXFP4)
    with pytest.raises(ValueError, match=r"ggml type Q9_0 is not read"):
        quant_type("q9_0")
    assert quant_type("q4_k") is QUANT_TYPES["Q4_K"]


# ---- the ggml backend as the second opinion on the quantized ops ---------------------------------------------------
def _halves_swapped(real):
    """A dequantizer with a realistic bug: the two 16-element halves of every 32 values swapped (Q4_0's low nibbles
    are elements 0-15 and its high nibbles 16-31: reading them in the other order)."""
    def broken(raw, t):
        out = real(raw, t)
        groups = out.reshape(*out.shape[:-1], -1, 2, 16)
        return groups[..., ::-1, :].reshape(out.shape).copy()
    return broken


QUANTIZED_CASES = [Case.of("MUL_MAT", Input((256, 16), DType.Q4_K), Input((256, 3))),
                   Case.of("MUL_MAT_ID", Input((64, 16, 4), DType.Q8_0), Input((64, 2, 5)), Input((2, 5), DType.I32)),
                   Case.of("GET_ROWS", Input((64, 5), DType.Q4_0), Input((4,), DType.I32))]


@pytest.mark.parametrize("case", QUANTIZED_CASES, ids=lambda c: c.label())
def test_ggml_catches_a_wrong_dequantizer(monkeypatch, case):
    """ggml reads the blocks with its own dequantizer; the reference with reference.quants.dequantize. The case
    passes, and fails once the reference's dequantizer reads the halves of each block in the wrong order."""
    ggml = device_backend("ggml")
    assert run_case(ggml, case).passed
    monkeypatch.setattr(quants, "dequantize", _halves_swapped(quants.dequantize))
    outcome = run_case(ggml, case)
    assert not outcome.passed and outcome.nmse > 0.1, outcome.report()


def test_ggml_catches_a_wrong_quantizer(monkeypatch):
    """CPY f32 -> q4_0: the reference is reference.quants.quantize, ggml's is its own quantize_row_q4_0."""
    ggml = device_backend("ggml")
    case = Case.of("CPY", Input((256, 4)), dtype="q4_0")
    assert run_case(ggml, case).nmse == 0  # bit for bit
    real = quants.quantize
    monkeypatch.setattr(quants, "quantize", lambda values, t: real(np.asarray(values) * 1.05, t))  # a scale 5% off
    outcome = run_case(ggml, case)
    assert not outcome.passed, outcome.report()
