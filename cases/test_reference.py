"""The references themselves, checked on small hand-worked examples (the semantics traps of the spec, section 7)."""
import numpy as np
import pytest

from reference.ops import get_op


def ref(op, *xs, **params):
    spec = get_op(op)
    return spec.reference([np.asarray(x, dtype=np.float64) for x in xs], spec.defaults(params))


def test_l2_norm_eps_clamps_the_norm():
    x = np.array([[3.0, 4.0]])  # norm 5
    assert np.allclose(ref("L2_NORM", x, eps=10.0), x / 10.0)  # not x / sqrt(25 + 10)
    assert np.allclose(ref("L2_NORM", x, eps=1e-6), x / 5.0)


def test_rms_norm_adds_eps_under_the_root():
    x = np.array([[3.0, 4.0]])
    assert np.allclose(ref("RMS_NORM", x, eps=0.5), x / np.sqrt(12.5 + 0.5))


def test_softplus_threshold():
    assert ref("SOFTPLUS", [20.5])[0] == 20.5
    assert np.isclose(ref("SOFTPLUS", [0.0])[0], np.log(2))


def test_cumsum_is_inclusive_along_ne0():
    assert ref("CUMSUM", [[1, 2, 3], [4, 5, 6]]).tolist() == [[1, 3, 6], [4, 9, 15]]


def test_tri_types_follow_ggml():
    a = np.ones((3, 3))  # numpy [row i1][col i0]
    assert ref("TRI", a, type="LOWER").tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert ref("TRI", a, type="UPPER_DIAG").tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 1]]


def test_solve_tri_ignores_upper_triangle_and_divides_by_diagonal():
    a = np.array([[2.0, 99.0], [1.0, 4.0]])
    b = np.array([[2.0], [9.0]])
    x = ref("SOLVE_TRI", a, b)
    assert np.allclose(x, [[1.0], [2.0]])


def test_ssm_conv_window():
    # one channel, d_conv 3, two tokens: sx = [s0, s1 | x0, x1]
    sx = np.array([[[[1.0, 2.0, 3.0, 4.0]]]])  # (1, n_s, d_inner, L)
    c = np.array([[[[10.0, 100.0, 1000.0]]]])
    out = ref("SSM_CONV", sx, c)
    assert out.reshape(-1).tolist() == [3210.0, 4320.0]


def test_acc_adds_at_byte_strides():
    a = np.zeros((1, 1, 2, 4))  # references see 4-D numpy shapes (reversed ne)
    b = np.ones((1, 1, 1, 2))
    out = ref("ACC", a, b, nb1=16, nb2=32, nb3=32, offset=4 * 5)
    assert out[0, 0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0]]


def test_diag():
    assert ref("DIAG", [[[1.0, 2.0]]]).tolist() == [[[1, 0], [0, 2]]]


def test_binary_broadcast_repeats_b():
    out = ref("SUB", np.arange(6).reshape(2, 3), [[1.0, 2.0, 3.0]])
    assert out.tolist() == [[-1, -1, -1], [2, 2, 2]]


@pytest.mark.parametrize("n", [16, 64])
def test_solve_tri_domain_is_well_conditioned(n):
    """The drawn triangular systems keep float32 forward substitution accurate (else the bound would be unfair)."""
    spec = get_op("SOLVE_TRI")
    rng = np.random.default_rng(0)
    a = spec.domain(rng, (n, n), 0, {})
    b = spec.domain(rng, (n, 8), 1, {})
    x64 = ref("SOLVE_TRI", a, b)
    a32, x32 = np.tril(a).astype(np.float32), np.zeros((n, 8), np.float32)
    for i in range(n):
        x32[i] = (b[i].astype(np.float32) - a32[i, :i] @ x32[:i]) / a32[i, i]
    assert np.sum((x32 - x64) ** 2) / np.sum(x64 ** 2) < 1e-10
