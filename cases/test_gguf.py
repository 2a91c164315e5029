"""GGUF round trips (exact in F32, the dtype's rounding in F16/BF16) and every refusal of read_gguf/write_gguf;
llama.cpp-quantized files read and compared with llama.cpp (issue 13); the layouts llama.cpp accepts."""
import os
from collections import Counter

import gguf
import numpy as np
import pytest

from bench import parity
from reference import quants
from reference.config import get_config
from reference.gguf_io import ARCH, GgufLayout, quantize_gguf, read_gguf, stays_f32, write_gguf
from reference.weights import random_weights, stored_nbytes

TINY = get_config("tiny")
Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def tiny_weights():
    return random_weights(TINY, seed=0)


@pytest.fixture(scope="module")
def good_file(tmp_path_factory, tiny_weights):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(path, TINY, tiny_weights)
    return path


def _file_types(path) -> dict[str, Q]:
    return {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}


def test_f32_round_trip_is_exact(good_file, tiny_weights):
    config, weights = read_gguf(good_file)
    assert config == TINY
    assert set(weights) == set(tiny_weights)
    for name, w in tiny_weights.items():
        assert weights[name].dtype == np.float32 and weights[name].shape == w.shape, name
        np.testing.assert_array_equal(weights[name], w, err_msg=name)
    assert set(_file_types(good_file).values()) == {Q.F32}


@pytest.mark.parametrize("dtype, qtype", [("f16", Q.F16), ("bf16", Q.BF16)])
def test_half_round_trip_rounds_to_nearest(tmp_path, tiny_weights, dtype, qtype):
    path = tmp_path / f"tiny-{dtype}.gguf"
    write_gguf(path, TINY, tiny_weights, dtype=dtype)
    config, weights = read_gguf(path)
    assert config == TINY
    types = _file_types(path)
    n_rounded = 0
    for name, w in tiny_weights.items():
        got = weights[name]
        if stays_f32(name):
            assert types[name] == Q.F32, name
            np.testing.assert_array_equal(got, w, err_msg=name)
            continue
        assert types[name] == qtype, name
        n_rounded += int(np.count_nonzero(got != w))
        if dtype == "f16":  # numpy's cast rounds to nearest even, subnormals included
            np.testing.assert_array_equal(got, w.astype(np.float16).astype(np.float32), err_msg=name)
        else:  # a bf16 (low 16 bits zero) within half a bf16 ulp (2^-8 relative) of the weight: nearest rounding
            assert not np.any(got.view(np.uint32) & 0xFFFF), name
            assert np.all(np.abs(got.astype(np.float64) - w) <= np.abs(w) * 2.0**-8), name
    assert n_rounded > 0  # the dtype was applied


def test_overridden_small_config_round_trip(tmp_path):
    # 5 layers: KDA x3, MLA (il=3), MLA (the last layer) - the pattern survives, as do the override's name and sizes.
    config = get_config("small", n_layer=5, n_expert=4)
    weights = random_weights(config, seed=1)
    path = tmp_path / "small.gguf"
    write_gguf(path, config, weights, dtype="bf16")
    got_config, got = read_gguf(path)
    assert got_config == config and got_config.mla_layers == [3, 4]
    assert {n: w.shape for n, w in got.items()} == {n: w.shape for n, w in weights.items()}


def _rewrite(src, dst, arch=ARCH, drop_keys=(), set_keys=None, tensors=None):
    """Copy src's metadata (less drop_keys, plus set_keys {key: (value, GGUFValueType)}) into dst with the given
    tensors {name: (data, qtype)} - the way to make a bad file that write_gguf itself would refuse to write."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(str(dst), arch)  # writes general.architecture itself
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == gguf.Keys.General.ARCHITECTURE or key in drop_keys:
            continue
        array = field.types[0] == gguf.GGUFValueType.ARRAY
        writer.add_key_value(key, field.contents(), field.types[0], field.types[-1] if array else None)
    for key, (value, vtype) in (set_keys or {}).items():
        writer.add_key_value(key, value, vtype)
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _f32_tensors(weights):
    return {name: (w, Q.F32) for name, w in weights.items()}


def test_rewrite_of_good_file_reads(tmp_path, good_file, tiny_weights):
    """The refusal tests below edit one thing each: the unedited rewrite must read."""
    _rewrite(good_file, tmp_path / "copy.gguf", tensors=_f32_tensors(tiny_weights))
    assert read_gguf(tmp_path / "copy.gguf")[0] == TINY


def _edited_tensors(weights, edit):
    tensors = _f32_tensors(weights)
    if edit == "unread-type":  # a ggml type read_gguf does not dequantize
        name = "blk.1.attn_q.weight"
        tensors[name] = (gguf.quants.quantize(weights[name], Q.MXFP4), Q.MXFP4)
    elif edit == "missing":
        del tensors["blk.2.ssm_beta.weight"]
    elif edit == "extra":
        tensors["blk.0.attn_kv_b.weight"] = (np.zeros((64, 32), np.float32), Q.F32)
    elif edit == "shape":
        tensors["blk.3.attn_kv_a_norm.weight"] = (np.ones(31, np.float32), Q.F32)
    return tensors


HCKV = f"{ARCH}.attention.head_count_kv"
A = gguf.GGUFValueType.ARRAY


@pytest.mark.parametrize("edit, match", [
    ("unread-type", r"tensor blk\.1\.attn_q\.weight is MXFP4, which is not read; read: F32, F16, BF16, Q8_0"),
    ("missing", r"missing tensor\(s\) blk\.2\.ssm_beta\.weight"),
    ("extra", r"tensor blk\.0\.attn_kv_b\.weight is not part of model"),
    ("shape", r"tensor blk\.3\.attn_kv_a_norm\.weight has ne \[31\], expected \[32\]"),
    ("arch", r"architecture 'llama'"),
    ("drop:kimi-linear.kda.head_dim", r"missing metadata key kimi-linear\.kda\.head_dim"),
    ("drop:" + HCKV, r"missing metadata key kimi-linear\.attention\.head_count_kv"),
    ("drop:kimi-linear.attention.key_length", r"missing metadata key kimi-linear\.attention\.key_length$"),
    ("set:layer2-mla", r"layer 2 is MLA \(1\) in kimi-linear\.attention\.head_count_kv .* makes it KDA \(0\)"),
    ("set:gating-softmax", r"kimi-linear\.expert_gating_func is 1, expected 2"),
    ("set:key_length", r"kimi-linear\.attention\.key_length is 41, expected 40"),
    ("set:head_dim-string", r"kimi-linear\.kda\.head_dim is '16', expected int"),
])
def test_read_refuses(tmp_path, good_file, tiny_weights, edit, match):
    set_keys = {
        "set:layer2-mla": {HCKV: ([0, 0, 1, 1], A)},
        "set:gating-softmax": {f"{ARCH}.expert_gating_func": (1, gguf.GGUFValueType.UINT32)},
        "set:key_length": {f"{ARCH}.attention.key_length": (41, gguf.GGUFValueType.UINT32)},
        "set:head_dim-string": {f"{ARCH}.kda.head_dim": ("16", gguf.GGUFValueType.STRING)},
    }.get(edit)
    drop = (edit.removeprefix("drop:"),) if edit.startswith("drop:") else ()
    drop += tuple(set_keys or ())
    path = tmp_path / "bad.gguf"
    _rewrite(good_file, path, arch="llama" if edit == "arch" else ARCH, drop_keys=drop, set_keys=set_keys,
             tensors=_edited_tensors(tiny_weights, edit))
    with pytest.raises(ValueError, match=match):
        read_gguf(path)


def test_read_refuses_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"weights\.safetensors: not a readable GGUF file"):
        read_gguf(path)


def test_write_refuses_bad_input(tmp_path, tiny_weights):
    with pytest.raises(ValueError, match=r"dtype must be one of f32, f16, bf16, got 'q8_0'"):
        write_gguf(tmp_path / "x.gguf", TINY, tiny_weights, dtype="q8_0")
    with pytest.raises(ValueError, match=r"not in the model: blk\.9\.attn_q\.weight"):
        write_gguf(tmp_path / "x.gguf", TINY, {**tiny_weights, "blk.9.attn_q.weight": np.zeros((4, 4))})
    short = {n: w for n, w in tiny_weights.items() if n != "output.weight"}
    with pytest.raises(ValueError, match=r"missing tensor\(s\) output\.weight"):
        write_gguf(tmp_path / "x.gguf", TINY, short)
    assert not (tmp_path / "x.gguf").exists()  # refused before any file was created


# ---- files cut short (issue 15) -------------------------------------------------------------------------------
def _tensor_spans(path) -> list[tuple[int, int, str]]:
    """(first byte, one past the last byte, name) of every tensor's data in the file, by gguf's own reader."""
    return sorted((t.data_offset, t.data_offset + int(t.n_bytes), t.name) for t in gguf.GGUFReader(path).tensors)


def _cut_down(src, dst, cuts):
    """Yield each cut of `cuts` (largest first) with dst holding src's first `cut` bytes: one copy, then truncations."""
    dst.write_bytes(src.read_bytes())
    for cut in sorted(cuts, reverse=True):
        os.truncate(dst, cut)
        yield cut


def test_read_refuses_a_file_cut_anywhere_in_its_header(tmp_path, good_file):
    """Every cut from byte 0 to the start of the tensor data (magic, version, counts, every metadata key, every
    tensor info, the alignment padding) is refused as incomplete, saying how long the file is - never an IndexError
    or a numpy error from inside the gguf reader."""
    data_start = _tensor_spans(good_file)[0][0]
    assert data_start > 4000  # the tiny model's header: 28 keys, 89 tensor infos
    cut_file = tmp_path / "cut.gguf"
    for cut in _cut_down(good_file, cut_file, range(data_start + 1)):
        with pytest.raises(ValueError) as err:
            read_gguf(cut_file)
        assert str(err.value).startswith(f"not a complete GGUF file: {cut_file} is {cut} bytes"), (cut, err.value)
        if "ends inside its header" not in str(err.value):  # the header is whole: the cut is in the padding (to
            assert cut > data_start - 32, (cut, err.value)     # 32 bytes) or at the first tensor's first byte
            where = "in the padding before the tensor data" if cut < data_start else "inside the tensor data"
            assert f"; it ends {where}: tensor token_embd.weight " in str(err.value), (cut, err.value)


def test_read_refuses_a_file_cut_inside_its_tensor_data(tmp_path, good_file):
    """A cut inside the data names the first tensor it leaves short: cuts at every tensor's first and last byte
    and every 4093rd byte (89 tensors, 930 KB)."""
    spans = _tensor_spans(good_file)
    size = good_file.stat().st_size
    assert spans[-1][1] == size
    cuts = {s for s, _, _ in spans} | {e - 1 for _, e, _ in spans} | set(range(spans[0][0], size, 4093))
    cut_file = tmp_path / "cut.gguf"
    for cut in _cut_down(good_file, cut_file, cuts):
        start, end, name = next(span for span in spans if span[1] > cut)
        with pytest.raises(ValueError) as err:
            read_gguf(cut_file)
        assert str(err.value) == (f"not a complete GGUF file: {cut_file} is {cut} bytes, its header promises {size} "
                                  f"(89 tensors from byte {spans[0][0]}); it ends inside the tensor data: tensor "
                                  f"{name} (bytes {start} to {end}) is the first cut short"), cut


def test_read_refuses_a_file_that_only_starts_like_gguf(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF\x07\x00\x00\x00" + b"\x00" * 16)  # a version nobody writes
    with pytest.raises(ValueError, match=r"x\.gguf: not a readable GGUF file \(version 7; read: 2, 3\)"):
        read_gguf(path)


# ---- NaN and inf weights -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, qtype, where, values, match", [
    ("blk.1.attn_q.weight", Q.F32, [(0, 5), (3, 7)], [np.nan, np.inf],
     r"tensor blk\.1\.attn_q\.weight has 2 non-finite value\(s\) \(1 NaN, 1 inf\); the first is nan at ne index "
     r"\[5, 0\] \(element 5\)"),
    ("output_norm.weight", Q.F32, [(3,)], [-np.inf],
     r"tensor output_norm\.weight has 1 non-finite value\(s\) \(0 NaN, 1 inf\); the first is -inf at ne index \[3\]"),
    ("blk.0.ffn_up.weight", Q.F16, [(2, 1)], [np.nan], r"tensor blk\.0\.ffn_up\.weight has 1 non-finite .* \[1, 2\]"),
    ("token_embd.weight", Q.BF16, [(9, 0)], [np.inf], r"tensor token_embd\.weight has 1 non-finite .* \[0, 9\]"),
], ids=["f32-nan-inf", "f32-norm-inf", "f16-nan", "bf16-inf"])
def test_read_refuses_non_finite_weights(tmp_path, good_file, tiny_weights, name, qtype, where, values, match):
    """A model whose weights hold NaN or inf can only give NaN logits: refused on load, naming the tensor, the
    count and the first bad element (ne order), in every dtype read."""
    w = tiny_weights[name].copy()
    for index, value in zip(where, values):
        w[index] = value
    tensors = _f32_tensors(tiny_weights)
    tensors[name] = (gguf.quants.quantize(w, qtype), qtype)
    path = tmp_path / "bad.gguf"
    _rewrite(good_file, path, tensors=tensors)
    with pytest.raises(ValueError, match=match):
        read_gguf(path)


@pytest.mark.parametrize("dtype, value, match", [
    ("f32", np.nan, r"tensor blk\.2\.ssm_beta\.weight has 1 non-finite value\(s\) \(1 NaN, 0 inf\)"),
    ("f16", 1e5, r"tensor blk\.2\.ssm_beta\.weight would have, in f16, 1 non-finite value\(s\) \(0 NaN, 1 inf\)"),
], ids=["f32-nan", "f16-overflow"])
def test_write_refuses_non_finite_weights(tmp_path, tiny_weights, dtype, value, match):
    """write_gguf never writes a file read_gguf refuses: NaN/inf given, or a finite value past the f16 range."""
    weights = {**tiny_weights, "blk.2.ssm_beta.weight": tiny_weights["blk.2.ssm_beta.weight"].copy()}
    weights["blk.2.ssm_beta.weight"][1, 2] = value
    with pytest.raises(ValueError, match=match):
        write_gguf(tmp_path / "x.gguf", TINY, weights, dtype=dtype)
    assert not (tmp_path / "x.gguf").exists()


# ---- the bench commands on such files -------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["parity", "pp512"])
@pytest.mark.parametrize("damage, message", [
    ("header", "not a complete GGUF file: {path} is 3000 bytes and ends inside its header"),
    ("data", "not a complete GGUF file: {path} is 500000 bytes, its header promises {size}"),
    ("nan", "{path}: tensor blk.1.attn_q.weight has 1 non-finite value(s) (1 NaN, 0 inf)"),
], ids=["cut-header", "cut-data", "nan"])
def test_bench_refuses_a_damaged_model(tmp_path, good_file, tiny_weights, capsys, command, damage, message):
    """`python -m bench parity|pp512 --model x.gguf` exits 2 with one error line before any backend runs."""
    from bench.__main__ import main

    path = tmp_path / f"{damage}.gguf"
    if damage == "nan":
        tensors = _f32_tensors(tiny_weights)
        w = tiny_weights["blk.1.attn_q.weight"].copy()
        w[0, 5] = np.nan
        tensors["blk.1.attn_q.weight"] = (w, Q.F32)
        _rewrite(good_file, path, tensors=tensors)
    else:
        path.write_bytes(good_file.read_bytes()[:3000 if damage == "header" else 500000])
    with pytest.raises(SystemExit) as done:
        main([command, "--model", str(path), "--backend", "opencl", "--no-record"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m bench: error: " + message.format(path=path, size=good_file.stat().st_size)), err
    assert err.count("\n") == 1, err


# ---- quantized files (issue 13): llama.cpp's quantizer, every type read, parity with llama.cpp --------------------
T256 = get_config("tiny-256")
# the types llama.cpp's quantizer gives tiny-256 (head-sized rows of 64 fall back to legacy 32-blocks)
FTYPE_TYPES = {"Q8_0": {"Q8_0", "F32"}, "Q4_K_M": {"Q4_K", "Q6_K", "Q5_0", "F32"},
               "Q2_K": {"Q2_K", "Q3_K", "Q6_K", "Q4_0", "F32"}}


@pytest.fixture(scope="module")
def t256_weights():
    return random_weights(T256, seed=0)


@pytest.fixture(scope="module")
def quantized_files(tmp_path_factory, t256_weights):
    """tiny-256 written as f32, then quantized by llama.cpp to each ftype of FTYPE_TYPES."""
    folder = tmp_path_factory.mktemp("quantized")
    write_gguf(folder / "f32.gguf", T256, t256_weights)
    for ftype in FTYPE_TYPES:
        quantize_gguf(folder / "f32.gguf", folder / f"{ftype}.gguf", ftype)
    return folder


@pytest.mark.parametrize("ftype", list(FTYPE_TYPES))
def test_llama_cpp_quantized_file_reads(quantized_files, t256_weights, ftype):
    """Every tensor of a llama.cpp-quantized file is read: the config as written, the weights near the originals,
    the stored blocks kept (their dequantization is the weights, by gguf's and by ggml's own code), the quantized
    size below f32's, and the 3-D conv kernels llama.cpp's quantizer writes."""
    config, weights = read_gguf(quantized_files / f"{ftype}.gguf")
    assert config == T256
    types = Counter(t.qtype.name for t in weights.stored.values())
    assert set(types) == FTYPE_TYPES[ftype], types
    assert weights.layout == GgufLayout(conv_dims=3)
    for name, w in t256_weights.items():
        assert weights[name].shape == w.shape and weights[name].dtype == np.float32, name
        nmse = float(np.sum((weights[name] - w) ** 2) / np.sum(w ** 2))
        assert nmse < 0.2, (name, nmse)  # Q2_K's 2-bit blocks lose the most: ~0.1
        stored = weights.stored[name]
        if stored.qtype.quantized:
            assert stored.ne[0] % stored.qtype.block == 0 and nmse > 0, name
            truth = quants.ggml_to_float(stored.raw, stored.qtype).reshape(w.shape)
            np.testing.assert_array_equal(weights[name], truth, err_msg=name)
    f32 = sum(w.nbytes for w in t256_weights.values())
    assert stored_nbytes(weights) < {"Q8_0": 0.3, "Q4_K_M": 0.17, "Q2_K": 0.11}[ftype] * f32


def test_quantize_gguf_refuses(tmp_path, good_file, monkeypatch):
    with pytest.raises(ValueError, match=r"ftype must be one of Q8_0, .*, got 'Q7_K'"):
        quantize_gguf(good_file, tmp_path / "q.gguf", "Q7_K")
    with pytest.raises(ValueError, match=r"Q4_K_M quantizes rows in blocks of 256 elements: model 'tiny' has "
                                         r"d_model 64"):
        quantize_gguf(good_file, tmp_path / "q.gguf", "q4_k_m")
    with pytest.raises(ValueError, match=r"not a readable GGUF file"):
        quantize_gguf(tmp_path / "absent.gguf", tmp_path / "q.gguf", "Q8_0")
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(RuntimeError, match=r"llama-cpp-python is not installed"):
        quantize_gguf(good_file, tmp_path / "q.gguf", "Q8_0")
    assert not (tmp_path / "q.gguf").exists()


@pytest.mark.slow
@pytest.mark.parametrize("ftype", list(FTYPE_TYPES))
def test_quantized_parity_against_llama_cpp(quantized_files, ftype):
    """The reference (dequantized weights x f32 activations) against llama.cpp (Q8 activations) on the same
    quantized file, node by node under parity.LLAMA_CPP_QUANT_NMSE (measured <= 4.6e-3)."""
    path = quantized_files / f"{ftype}.gguf"
    config, weights = read_gguf(path)
    summary = parity.run_llama_parity(path, config, weights, "chunk16", "absorbed").summary()
    assert summary["passed"], summary
    assert summary["nodes_checked"] > 600 and 1e-5 < summary["max_nmse"] < parity.LLAMA_CPP_QUANT_NMSE
    assert summary["top1_excused"] <= 8  # near ties only: measured 4-5 of 146 rows


def _nibbles_swapped(raw: np.ndarray, t) -> np.ndarray:
    """Q4_K blocks as a dequantizer reading each byte's high nibble first would see them (qs: bytes 16..143)."""
    blocks = raw.reshape(-1, 144).copy()
    blocks[:, 16:] = (blocks[:, 16:] << 4) | (blocks[:, 16:] >> 4)
    return blocks.reshape(raw.shape)


def _dmin_dropped(raw: np.ndarray, t) -> np.ndarray:
    """Q2_K blocks as a dequantizer that forgets the minimum (dmin, bytes 82..83) would see them."""
    blocks = raw.reshape(-1, 84).copy()
    blocks[:, 82:84] = 0
    return blocks.reshape(raw.shape)


@pytest.mark.slow
@pytest.mark.parametrize("ftype, qtype, bug", [("Q4_K_M", "Q4_K", _nibbles_swapped), ("Q2_K", "Q2_K", _dmin_dropped)],
                         ids=["q4_k-nibble-order", "q2_k-dmin-dropped"])
def test_quantized_parity_catches_a_broken_dequantizer(quantized_files, monkeypatch, ftype, qtype, bug):
    """A dequantizer bug planted in reference/quants.py makes parity against llama.cpp fail at the first node."""
    honest = quants.dequantize

    def broken(raw, t):
        return honest(bug(np.asarray(raw), t) if quants.quant_type(t).name == qtype else raw, t)

    monkeypatch.setattr(quants, "dequantize", broken)
    path = quantized_files / f"{ftype}.gguf"
    config, weights = read_gguf(path)
    result = parity.run_llama_parity(path, config, weights, "chunk16", "absorbed", parity.Scenario(prompt=8, decode=1))
    assert not result.passed
    assert result.failures[0]["nmse"] > 10 * parity.LLAMA_CPP_QUANT_NMSE, result.failures[0]


# ---- the layouts llama.cpp accepts ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [GgufLayout(conv_dims=3), GgufLayout(ssm_a_dims=4), GgufLayout(kv_b="merged"),
                                    GgufLayout(conv_dims=3, ssm_a_dims=4, kv_b="merged")],
                         ids=["conv-3d", "ssm_a-4d", "kv_b-merged", "all"])
def test_layout_round_trip(tmp_path, tiny_weights, layout):
    """Each spelling is written as asked and read back to the same weights, in weight_shapes' form, bit for bit; a
    merged attn_kv_b is split exactly, and the decompressed form's attn_kv_b rebuilt from the split is the file's."""
    from reference.weights import kv_b_from_split

    path = tmp_path / "variant.gguf"
    write_gguf(path, TINY, tiny_weights, layout=layout)
    dims = {t.name: len(t.shape) for t in gguf.GGUFReader(path).tensors}
    assert dims["blk.0.ssm_conv1d_q.weight"] == layout.conv_dims and dims["blk.0.ssm_a"] == layout.ssm_a_dims
    assert ("blk.3.attn_kv_b.weight" in dims) == (layout.kv_b == "merged")
    assert ("blk.3.attn_k_b.weight" in dims) == (layout.kv_b == "split")
    config, weights = read_gguf(path)
    assert config == TINY and weights.layout == layout
    for name, w in tiny_weights.items():
        np.testing.assert_array_equal(weights[name], w, err_msg=name)
    if layout.kv_b == "merged":
        rebuilt = kv_b_from_split(weights["blk.3.attn_k_b.weight"], weights["blk.3.attn_v_b.weight"])
        np.testing.assert_array_equal(rebuilt, weights.stored["blk.3.attn_kv_b.weight"].raw)


def test_layout_refusals(tmp_path, tiny_weights):
    with pytest.raises(ValueError, match=r"GgufLayout: conv_dims must be 3 or 4, .* got 2, 2, 'split'"):
        GgufLayout(conv_dims=2)
    with pytest.raises(ValueError, match=r"kv_b one of split, merged; got 4, 2, 'unsplit'"):
        GgufLayout(kv_b="unsplit")
    path = tmp_path / "mixed.gguf"  # a merged-layout file that still holds the split pair
    write_gguf(path, TINY, tiny_weights, layout=GgufLayout(kv_b="merged"))
    tensors = _f32_tensors(tiny_weights)
    tensors["blk.3.attn_kv_b.weight"] = (gguf.GGUFReader(path).tensors[0].data * 0 + 1, Q.F32)
    _rewrite(path, tmp_path / "both.gguf", tensors=tensors)
    with pytest.raises(ValueError, match=r"tensor blk\.3\.attn_k_b\.weight is not part of model 'tiny' \(merged "):
        read_gguf(tmp_path / "both.gguf")


def test_llama_cpp_runs_the_3d_conv_and_4d_ssm_a_layout(tmp_path, tiny_weights):
    """llama.cpp loads both spellings and computes the same logits from them, bit for bit, and parity holds."""
    from backends.llama_cpp import llama_cpp_run

    seqs = [(list(range(5, 25)), [3])]
    write_gguf(tmp_path / "plain.gguf", TINY, tiny_weights)
    write_gguf(tmp_path / "variant.gguf", TINY, tiny_weights, layout=GgufLayout(conv_dims=3, ssm_a_dims=4))
    plain, variant = (llama_cpp_run(tmp_path / f"{n}.gguf", seqs)["logits"][0] for n in ("plain", "variant"))
    np.testing.assert_array_equal(plain, variant)
    config, weights = read_gguf(tmp_path / "variant.gguf")
    summary = parity.run_llama_parity(tmp_path / "variant.gguf", config, weights, "chunk16", "absorbed",
                                      parity.Scenario(prompt=20, decode=1)).summary()
    assert summary["passed"] and summary["top1_agreement"] == 1.0, summary


def test_llama_cpp_on_the_legacy_kv_b_layout(tmp_path, tiny_weights):
    """llama.cpp 0.3.36 loads a merged attn_kv_b file (its MLA cache off, a per-head K/V cache instead) and runs it,
    but its logits are not the split file's: that branch of kimi-linear.cpp concatenates K as [k_pe | k_nope] while
    Q stays [q_nope | q_pe]. Our reader splits attn_kv_b exactly, so the reference is the same model either way.
    If this starts to fail, llama.cpp fixed its legacy branch: compare node by node then."""
    from backends.llama_cpp import llama_cpp_run

    seqs = [(list(range(5, 25)), [3])]
    write_gguf(tmp_path / "split.gguf", TINY, tiny_weights)
    write_gguf(tmp_path / "merged.gguf", TINY, tiny_weights, layout=GgufLayout(kv_b="merged"))
    split, merged = (llama_cpp_run(tmp_path / f"{n}.gguf", seqs)["logits"][0] for n in ("split", "merged"))
    assert np.all(np.isfinite(merged)) and np.std(merged) > 0.1
    assert np.max(np.abs(merged - split)) > 0.1 * np.max(np.abs(split))


def test_q_lora_round_trip_and_llama_cpp_refusal(tmp_path):
    """A q-LoRA model (attn_q_a, attn_q_a_norm, attn_q_b; q_lora_rank in the metadata) is written and read back
    exactly. llama.cpp 0.3.36 declares the tensors but never reads q_lora_rank for kimi-linear (and its graph
    always multiplies by attn_q), so it refuses the file at load."""
    import dataclasses

    from backends.llama_cpp import llama_cpp_run

    config = dataclasses.replace(TINY, name="tiny-q-lora", q_lora=48)
    weights = random_weights(config, seed=0)
    assert "blk.3.attn_q_a.weight" in weights and "blk.3.attn_q.weight" not in weights
    path = tmp_path / "q_lora.gguf"
    write_gguf(path, config, weights, layout=GgufLayout(conv_dims=3))
    got_config, got = read_gguf(path)
    assert got_config == config and got.stored["blk.3.attn_q_a_norm.weight"].qtype.name == "F32"
    for name, w in weights.items():
        np.testing.assert_array_equal(got[name], w, err_msg=name)
    with pytest.raises(RuntimeError, match=r"tensor 'blk\.3\.attn_q_a_norm\.weight' has wrong shape; expected +0"):
        llama_cpp_run(path, [([1, 2, 3], [])])
