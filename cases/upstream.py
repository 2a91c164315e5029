"""The upstream cases (../shared/docs/upstream-cases.md section 2), pinned as explicit examples for every backend.

Shapes are ggml ne (fastest dim first). Each entry is a Case; `pinned(op)` lists an op's cases.
"""
from __future__ import annotations

from reference.case import Case, Input, Layout
from reference.ops import TRI_TYPES
from reference.tensor import DType, contiguous_strides

F32, F16, I32 = DType.F32, DType.F16, DType.I32


def _block_params(a_ne, dtype=F32, offset=0):
    nb = contiguous_strides(dtype, a_ne)
    return dict(nb1=nb[1], nb2=nb[2], nb3=nb[3], offset=offset)


def _padded_b(ne, dim):
    """b as a view into a tensor padded by 1 in `dim`, starting one row (nb[1] bytes) in."""
    pad = [0, 0, 0, 0]
    pad[dim] = 1
    return Layout(pad=tuple(pad), offset=ne[0])


def acc_cases():
    cases = [Case.of("ACC", Input((256, 17, 1, 1)), Input((256, 16, 1, 1)), **_block_params((256, 17, 1, 1), offset=1024))]
    for b0 in (256, 128):
        a_ne = (256, 17, 2, 3)
        cases.append(Case.of("ACC", Input(a_ne), Input((b0, 16, 2, 3)), **_block_params(a_ne, offset=1024)))
        for dim in (1, 2, 3):
            cases.append(Case.of("ACC", Input(a_ne), Input((b0, 16, 2, 3), layout=_padded_b((b0, 16, 2, 3), dim)),
                                 **_block_params(a_ne, offset=1024)))
    # The block pattern that exposed llama.cpp #19426: blocks of a [S*n,S*n,ne2,ne3] matrix at
    # offset i*S*4 + j*S*nb1 (block column i, block row j >= i), for ne2,ne3 > 1.
    for size, n_blocks, batches in ((16, 4, ((1, 1), (3, 2), (2, 2))), (8, 8, ((3, 2),)), (32, 4, ((2, 2),))):
        n = size * n_blocks
        for ne2, ne3 in batches:
            a_ne = (n, n, ne2, ne3)
            nb = contiguous_strides(F32, a_ne)
            for i, j in ((0, 0), (1, n_blocks - 1), (n_blocks - 1, n_blocks - 1)):
                off = i * size * 4 + j * size * nb[1]
                for inplace in (False, True):
                    cases.append(Case.of("ACC", Input(a_ne), Input((size, size, ne2, ne3)), nb1=nb[1], nb2=nb[2],
                                         nb3=nb[3], offset=off, inplace=inplace))
    return cases


def set_cases():
    cases = []
    b_ne = (6, 5, 4, 3)
    for dtype in (F32, I32):
        for dim in (1, 2, 3):
            a_ne = list(b_ne)
            a_ne[dim] *= 2
            nb = contiguous_strides(dtype, a_ne)
            for inplace in (False, True):
                cases.append(Case.of("SET", Input(tuple(a_ne), dtype), Input(b_ne, dtype), nb1=nb[1], nb2=nb[2],
                                     nb3=nb[3], offset=nb[dim] * b_ne[dim], inplace=inplace))
    return cases


def cumsum_cases():
    cases = [Case.of("CUMSUM", Input((n, 5, 4, 3)))
             for n in (10, 127, 128, 255, 256, 511, 512, 1023, 1024, 2047, 2048)]
    cases += [Case.of("CUMSUM", Input((128, 128, 4, 4))), Case.of("CUMSUM", Input((201 * 1204,))),
              Case.of("CUMSUM", Input((20481, 4)))]
    return cases


def tri_cases():
    return [Case.of("TRI", Input((10, 10, 4, 3)), type=t) for t in TRI_TYPES]


def fill_cases():
    return [Case.of("FILL", Input((10, 10, 4, 3)), c=c) for c in (0.0, 2.0, -152.0, 3.5)] \
        + [Case.of("FILL", Input((10, 10, 4, 3), layout=Layout(pad=(2, 0, 1, 0), offset=3)), c=1.0, inplace=True)]


def diag_cases():
    return [Case.of("DIAG", Input((10, 1, 4, 3))), Case.of("DIAG", Input((128, 1, 2, 1)))]


def solve_tri_cases():
    shapes = [(64, k) for k in (10, 64, 200, 384)] + [(79, 417)] + [(80, k) for k in (79, 80, 81)] \
        + [(128, k) for k in (31, 32)]
    return [Case.of("SOLVE_TRI", Input((n, n)), Input((k, n))) for n, k in shapes] \
        + [Case.of("SOLVE_TRI", Input((64, 64, 2, 3)), Input((64, 64, 2, 3)))]


def ssm_conv_cases():
    cases = []
    for d_conv in (3, 4, 9):
        for d_inner in (1024, 1536, 2048):
            for n_s in (1, 4):
                cases.append(Case.of("SSM_CONV", Input((d_conv - 1 + 2, d_inner, n_s)), Input((d_conv, d_inner))))
        for n_s in (1, 4):  # the long-token path (upstream CUDA bug #20369 past 32 tokens)
            cases.append(Case.of("SSM_CONV", Input((d_conv + 63, 1024, n_s)), Input((d_conv, 1024))))
    return cases


def l2_norm_cases():
    cases = []
    for eps in (0.0, 1e-6, 1e-4, 0.1, 10.0):
        for n in (64, 1025):
            ne = (n, 5, 4, 3)
            for layout in (Layout(), Layout(pad=(n, 0, 0, 0)), Layout(permute=(0, 2, 1, 3))):
                cases.append(Case.of("L2_NORM", Input(ne, layout=layout), eps=eps))
    return cases


def rms_norm_cases():
    return [Case.of("RMS_NORM", Input((n, 5, 4, 3), layout=layout), eps=eps)
            for eps in (1e-6, 1e-5) for n in (64, 1025)
            for layout in (Layout(), Layout(pad=(n, 0, 0, 0)), Layout(permute=(0, 2, 1, 3)))]


def unary_cases(op):
    return [Case.of(op, Input(ne, layout=layout))
            for ne in ((128, 2, 2, 2), (5, 7, 11, 13)) for layout in (Layout(), Layout(pad=(3, 1, 0, 0), offset=5))]


def scale_cases():
    return [Case.of("SCALE", Input((10, 10, 10, 10), layout=layout), s=s, b=b)
            for s, b in ((2.0, 0.0), (0.25, -1.5)) for layout in (Layout(), Layout(permute=(1, 0, 2, 3)))]


def binary_cases(op):
    a = (10, 5, 4, 3)
    bs = [(10, 5, 4, 3), (10, 1, 4, 1), (1, 1, 1, 1), (10, 5, 1, 1), (1, 5, 4, 3), (5, 5, 2, 3)]
    cases = [Case.of(op, Input(a), Input(b)) for b in bs]
    cases += [Case.of(op, Input(a, layout=Layout(permute=(0, 2, 1, 3))), Input((10, 1, 4, 1), layout=Layout(pad=(2, 0, 1, 0)))),
              Case.of(op, Input((1024, 64)), Input((1024,)))]
    return cases


def cpy_cases():
    cases = []
    for src, dst in ((F32, F16), (F16, F32), (F32, F32), (F16, F16)):
        for layout in (Layout(), Layout(permute=(0, 2, 1, 3)), Layout(pad=(1, 2, 0, 0), offset=3)):
            cases.append(Case.of("CPY", Input((256, 4, 4, 4), src, layout), dtype=dst.label))
        cases.append(Case.of("CPY", Input((7, 5, 3), src, Layout(permute=(1, 0, 2, 3))), dtype=dst.label, ne=[35, 3]))
    return cases


def cont_cases():
    return [Case.of("CONT", Input((10, 10, 10, 1), dtype, Layout(permute=perm)))
            for dtype in (F32, F16) for perm in ((1, 0, 2, 3), (0, 2, 1, 3), (2, 0, 1, 3))]


def mul_mat_cases():
    t = Layout(permute=(1, 0, 2, 3))
    return [Case.of("MUL_MAT", Input((256, 64)), Input((256, 17))),
            Case.of("MUL_MAT", Input((256, 64)), Input((256, 1))),
            Case.of("MUL_MAT", Input((128, 33, 1, 1)), Input((128, 5, 4, 2))),
            Case.of("MUL_MAT", Input((64, 16, 2, 1)), Input((64, 16, 4, 3))),
            Case.of("MUL_MAT", Input((64, 48), layout=t), Input((64, 32), layout=t)),
            Case.of("MUL_MAT", Input((256, 64), F16), Input((256, 17)))]


def repeat_cases():
    return [Case.of("REPEAT", Input(ne), ne=(10, 6, 4, 3)) for ne in ((10, 1, 4, 1), (1, 1, 1, 1), (5, 3, 2, 3))] \
        + [Case.of("REPEAT", Input((5, 3, 2), layout=Layout(permute=(1, 0, 2, 3))), ne=(10, 6, 4, 2))]


def pad_cases():
    return [Case.of("PAD", Input((10, 5, 4, 3)), pad=(2, 0, 3, 1)),
            Case.of("PAD", Input((64, 33, 2), layout=Layout(permute=(0, 2, 1, 3))), pad=(0, 0, 31, 0))]


def gdn_inputs(S, H, T, n, kda=True, h_k=None, permuted=False):
    """q, k [S,H_k,T,n], v [S,H,T,n], g [1|S,H,T,n], beta [1,H,T,n], state [S,S,H,n]; permuted = q/k/v stored
    token-major ([S,T,H,n]) and viewed head-major, as llama.cpp's reshapes leave them."""
    h_k = h_k or H
    lay = Layout(permute=(0, 2, 1, 3)) if permuted else Layout()
    return (Input((S, h_k, T, n), layout=lay), Input((S, h_k, T, n), layout=lay), Input((S, H, T, n), layout=lay),
            Input((S if kda else 1, H, T, n)), Input((1, H, T, n)), Input((S, S, H, n)))


def gated_delta_net_cases():
    cases = [Case.of("GATED_DELTA_NET", *gdn_inputs(S, H, T, n, kda))
             for kda in (False, True) for H, S, T, n in ((32, 128, 1, 1), (16, 64, 1, 2), (4, 64, 4, 2))]
    cases += [Case.of("GATED_DELTA_NET", *gdn_inputs(64, 4, 4, 2, kda, h_k=2)) for kda in (False, True)]
    cases += [Case.of("GATED_DELTA_NET", *gdn_inputs(64, 4, 33, 1, kda, permuted=True)) for kda in (False, True)]
    cases += [Case.of("GATED_DELTA_NET", *gdn_inputs(32, 4, T, 1, True)) for T in (33, 64, 65, 100, 127, 200, 256)]
    return cases


def mul_mat_id_cases():
    cases = []
    for n_exp, n_used, n_b1, tokens, wtype in ([(4, 2, 1, t, F32) for t in (1, 4, 5, 17, 32, 129)]
                                             + [(8, 4, 4, t, F32) for t in (1, 17)] + [(8, 4, 1, 5, F16)]):
        cases.append(Case.of("MUL_MAT_ID", Input((256, 512, n_exp), wtype), Input((256, n_b1, tokens)),
                             Input((n_used, tokens), I32)))
    return cases


def sort_cases(op):
    widths = (7, 8, 15, 16, 1023, 1024, 1025, 2047, 2048, 2049)
    if op == "ARGSORT":
        return [Case.of(op, Input((n, 3)), order=o) for n in widths for o in ("ASC", "DESC")]
    return [Case.of(op, Input((n, 3)), k=k) for n in widths for k in (1, 8) if k <= n] \
        + [Case.of(op, Input((256, 5)), k=8)]  # Kimi's router: 8 of 256 experts


def get_rows_cases():
    return [Case.of("GET_ROWS", Input((64, 10)), Input((7,), I32)),
            Case.of("GET_ROWS", Input((64, 10, 3)), Input((5, 3), I32, Layout(pad=(2, 0, 0, 0), offset=1))),
            Case.of("GET_ROWS", Input((64, 10), F16), Input((9,), I32)),
            Case.of("GET_ROWS", Input((16, 300)), Input((70000,), I32))]  # past CUDA's 65,535 grid rows


def soft_max_cases():
    return [Case.of("SOFT_MAX_EXT", Input((n, r, h)), Input((n, r)), scale=sc)
            for n, r, h in ((16, 16, 4), (1023, 5, 2), (64, 8, 3)) for sc in (1.0, 0.0721)] \
        + [Case.of("SOFT_MAX_EXT", Input((32, 4, 2), layout=Layout(permute=(0, 2, 1, 3))), Input((32, 8)), scale=0.5)]


def concat_cases():
    return [Case.of("CONCAT", Input(a), Input(b), dim=d) for d, a, b in
            ((0, (10, 5, 4, 3), (7, 5, 4, 3)), (1, (10, 5, 4, 3), (10, 2, 4, 3)), (2, (10, 5, 4, 3), (10, 5, 1, 3)),
             (3, (10, 5, 4, 3), (10, 5, 4, 2)))] \
        + [Case.of("CONCAT", Input((10, 5, 4), layout=Layout(permute=(1, 0, 2, 3))),
                   Input((10, 3, 4), layout=Layout(pad=(1, 0, 0, 0), offset=2)), dim=1)]


PINNED = {
    "MUL_MAT_ID": mul_mat_id_cases, "GET_ROWS": get_rows_cases, "SOFT_MAX_EXT": soft_max_cases,
    "CONCAT": concat_cases, "ARGSORT": lambda: sort_cases("ARGSORT"), "TOP_K": lambda: sort_cases("TOP_K"),
    "SUM_ROWS": lambda: [Case.of("SUM_ROWS", Input((n, 5, 4, 3), layout=lay)) for n in (1, 64, 1025)
                         for lay in (Layout(), Layout(permute=(1, 0, 2, 3)))],
    "CLAMP": lambda: [Case.of("CLAMP", Input((128, 2, 2, 2), layout=lay), min=-0.5, max=1.25)
                      for lay in (Layout(), Layout(pad=(3, 1, 0, 0), offset=5))],
    "MUL_MAT": mul_mat_cases, "REPEAT": repeat_cases, "PAD": pad_cases, "GATED_DELTA_NET": gated_delta_net_cases,
    "ACC": acc_cases, "SET": set_cases, "CUMSUM": cumsum_cases, "TRI": tri_cases, "FILL": fill_cases,
    "DIAG": diag_cases, "SOLVE_TRI": solve_tri_cases, "SSM_CONV": ssm_conv_cases, "L2_NORM": l2_norm_cases,
    "RMS_NORM": rms_norm_cases, "SCALE": scale_cases, "CPY": cpy_cases, "CONT": cont_cases,
    **{op: (lambda op=op: unary_cases(op)) for op in ("SOFTPLUS", "SIGMOID", "SILU", "EXP", "NEG")},
    **{op: (lambda op=op: binary_cases(op)) for op in ("ADD", "SUB", "MUL", "DIV")},
}


def pinned(op: str) -> list[Case]:
    return PINNED[op]()
