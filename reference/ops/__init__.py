"""The op registry, one module per op family: reference/ops/<family>.py holds its ops' records (parameters, shape
rule, NumPy reference, input domain, bound, cost), their pinned upstream cases, Hypothesis strategies, perf cases,
ggml calls and planted bugs. The family's name is also its kernels' file name in every backend:
backends/opencl/<family>.cl, backends/vulkan/<family>.comp, backends/cuda/<family>.cu.

spec.py defines the record (OpSpec) and the registry, ggml_call.py how a ggml call is described, draw.py the
Hypothesis building blocks the strategies share.
"""
from . import (acc_set, binary, cpy, cumsum, gated_delta_net, get_rows, layout, matmul, norm, softmax, solve_tri, sort,
               ssm_conv, tri, unary)
from .spec import REGISTRY, OpSpec, get_op

FAMILIES = {m.FAMILY: m for m in (acc_set, binary, cpy, cumsum, gated_delta_net, get_rows, layout, matmul, norm,
                                   softmax, solve_tri, sort, ssm_conv, tri, unary)}
assert {op.family for op in REGISTRY.values()} == set(FAMILIES), "every op names a family module as its family"

__all__ = ["FAMILIES", "REGISTRY", "OpSpec", "get_op"]
