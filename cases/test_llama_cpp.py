"""llama.cpp (llama-cpp-python, built by scripts/setup.sh) runs the tiny Kimi-Linear GGUF that gguf_io writes: finite
logits for every token fed, no leak between two sequences of one context, and graph nodes read back in numpy layout.
These tests never skip: without llama_cpp they fail, saying to run scripts/setup.sh."""
import gguf
import numpy as np
import pytest

from backends.llama_cpp import llama_cpp_run
from reference.config import get_config
from reference.gguf_io import write_gguf
from reference.weights import random_weights

TINY = get_config("tiny")
UBATCH = 32  # the 70-token prompt takes 3 calls (32, 32, 6): the recurrent state crosses ubatches


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama") / "tiny.gguf"
    write_gguf(path, TINY, random_weights(TINY, seed=0))
    return path


@pytest.fixture(scope="module")
def seqs():
    rng = np.random.default_rng(0)
    return [(rng.integers(0, TINY.n_vocab, n).tolist(), rng.integers(0, TINY.n_vocab, 3).tolist()) for n in (70, 9)]


@pytest.fixture(scope="module")
def pair(tiny_gguf, seqs):
    return llama_cpp_run(tiny_gguf, seqs, nodes=["result_output", "q_nope-3", "q_nope_perm-3"], ubatch=UBATCH)


def test_logits_of_every_token_are_finite(pair, seqs):
    for (prompt, decode), logits in zip(seqs, pair["logits"]):
        assert logits.shape == (len(prompt) + len(decode), TINY.n_vocab) and logits.dtype == np.float64
        assert np.all(np.isfinite(logits))
        assert np.std(logits) > 0.1  # a model that computes something, not zeros
    assert pair["calls"] == [(0, 0, 32), (0, 32, 32), (0, 64, 6), (1, 0, 9),
                             (0, 70, 1), (1, 9, 1), (0, 71, 1), (1, 10, 1), (0, 72, 1), (1, 11, 1)]


def test_sequences_do_not_leak(tiny_gguf, seqs, pair):
    alone = llama_cpp_run(tiny_gguf, [seqs[1]], ubatch=UBATCH)["logits"][0]
    together = pair["logits"][1]
    assert np.max(np.abs(together - alone)) <= 1e-5 * np.max(np.abs(alone))
    # The check has power: the last logits depend on the whole history (recurrent state and KV cache), so changing
    # only the first token, as a leak from sequence 0 would in effect, moves them far beyond the tolerance.
    prompt, decode = seqs[1]
    changed = llama_cpp_run(tiny_gguf, [([(prompt[0] + 1) % TINY.n_vocab] + prompt[1:], decode)],
                            ubatch=UBATCH)["logits"][0]
    assert np.max(np.abs(changed[-1] - alone[-1])) > 1e-2 * np.max(np.abs(alone))


def test_nodes_in_numpy_layout(pair, seqs):
    nodes = pair["nodes"]
    assert set(nodes) == {(0, c) for c in range(6)} | {(1, c) for c in range(4)}
    # result_output is the logits of the call's tokens: the node reader and the logits agree row for row
    assert nodes[(0, 1)]["result_output"].shape == (1, 1, 32, TINY.n_vocab)  # reversed ne, 4 dims
    np.testing.assert_array_equal(nodes[(0, 1)]["result_output"][0, 0], pair["logits"][0][32:64])
    np.testing.assert_array_equal(nodes[(1, 2)]["result_output"][0, 0], pair["logits"][1][10:11])
    # q_nope is a view [nope, H, T] and q_nope_perm its permute [nope, T, H]: read through strides they agree
    q, q_perm = nodes[(0, 2)]["q_nope-3"], nodes[(0, 2)]["q_nope_perm-3"]
    assert q.shape == (1, 6, TINY.n_head, TINY.qk_nope) and q_perm.shape == (1, TINY.n_head, 6, TINY.qk_nope)
    np.testing.assert_array_equal(q.transpose(0, 2, 1, 3), q_perm)


def test_bad_input_is_refused_before_running(tiny_gguf):
    with pytest.raises(ValueError, match=r"sequence 0: token\(s\) \[256\] outside the vocabulary 0\.\.255"):
        llama_cpp_run(tiny_gguf, [([1, 256], [])])
    with pytest.raises(ValueError, match="sequence 1: the prompt is empty"):
        llama_cpp_run(tiny_gguf, [([1], []), ([], [2])])


def test_llama_cpp_failure_is_a_runtime_error_with_its_message(tmp_path):
    path = tmp_path / "no-tensors.gguf"  # kimi-linear metadata cut short: llama.cpp refuses to load it
    writer = gguf.GGUFWriter(str(path), "kimi-linear")
    writer.add_vocab_size(TINY.n_vocab)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(RuntimeError, match=r"(?s)failed \(exit status 1\).*kimi-linear\.context_length"):
        llama_cpp_run(path, [([1, 2], [])])
