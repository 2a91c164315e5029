"""GGUF round trips (exact in F32, the dtype's rounding in F16/BF16) and every refusal of read_gguf/write_gguf."""
import os

import gguf
import numpy as np
import pytest

from reference.config import get_config
from reference.gguf_io import ARCH, read_gguf, stays_f32, write_gguf
from reference.weights import random_weights

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
    if edit == "quantized":
        name = "blk.1.attn_q.weight"
        tensors[name] = (gguf.quants.quantize(weights[name], Q.Q8_0), Q.Q8_0)
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
    ("quantized", r"tensor blk\.1\.attn_q\.weight is Q8_0"),
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
