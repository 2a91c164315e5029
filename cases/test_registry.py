"""The op family is the unit: every op's record carries its cases, strategy, perf case and ggml call (checked when
the record is made), names its family module, and every backend has that family's kernel file and a kernel table line
for the op (asserted when each backend module is imported). Every mutant's edit applies to its kernel file: its text
occurs there exactly once."""
from pathlib import Path

import pytest

from reference.node import make_node
from reference.ops import FAMILIES, REGISTRY
from reference.ops.matmul import quantized_perf_cases
from reference.ops.spec import mutant_file, mutants
from reference.tensor import QUANTIZED, DType, Tensor

BACKENDS_DIR = Path(__file__).resolve().parent.parent / "backends"
KERNEL_FILES = {"opencl": "{}.cl", "vulkan": "{}.comp", "cuda": "{}.cu"}
# opencl's shared header, vulkan's subgroup-size probe, every backend's STREAM kernels (bench ops' ceilings), the
# quantized blocks' readers the weight ops' kernels share (issue 13)
NOT_FAMILIES = {"common", "probe", "stream", "quants"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_has_its_kernel_files(family):
    for backend, pattern in KERNEL_FILES.items():
        path = BACKENDS_DIR / backend / pattern.format(family)
        assert path.is_file(), f"{family}: {backend} has no {path.name}"



def test_every_kernel_file_is_a_family():
    """No kernel file outside the families (a stray file would be an op's code no table reaches)."""
    for backend, pattern in KERNEL_FILES.items():
        suffix = pattern.format("")
        stems = {p.name[:-len(suffix)] for p in (BACKENDS_DIR / backend).glob("*" + suffix)}
        stray = stems - set(FAMILIES) - NOT_FAMILIES
        assert not stray, f"{backend}: kernel files outside the families: {sorted(stray)}"


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_record_cases_are_the_ops_own(op):
    spec = REGISTRY[op]
    cases = spec.pinned()
    assert cases and all(c.op == op for c in cases) and spec.perf.op == op
    assert FAMILIES[spec.family].FAMILY == spec.family


@pytest.mark.parametrize("name", sorted(mutants()))
def test_every_mutant_edits_its_kernel_file_once(name):
    op, m = mutants()[name]
    path = BACKENDS_DIR / m.backend / mutant_file(op, m, "." + KERNEL_FILES[m.backend].split(".")[1])
    count = path.read_text().count(m.find)
    assert count == 1, f"mutant {name}: its text occurs {count} times in {path.name}"


# ---- quantized weights (issue 13) -----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["MUL_MAT", "MUL_MAT_ID", "GET_ROWS"])
def test_every_quantized_type_is_pinned_and_accepted(op):
    """The weight ops take every quantized type as src0, with test-backend-ops' pinned case for each, and a 5e-4 /
    1e-7 bound that does not depend on the weights' type (the reference is dequantized weights x floats)."""
    spec = REGISTRY[op]
    assert set(QUANTIZED) <= set(spec.src_dtypes[0])
    pinned = {c.inputs[0].dtype for c in spec.pinned()}
    assert set(QUANTIZED) <= pinned
    assert spec.nmse == (5e-4 if op != "GET_ROWS" else 1e-7) and not spec.nmse_by_dst


def test_cpy_quantizes_into_q8_0_and_q4_0_with_their_bounds():
    spec = REGISTRY["CPY"]
    pinned = {c.param_dict["dtype"] for c in spec.pinned()}
    assert {"q8_0", "q4_0"} <= pinned
    assert spec.bound(Tensor.new(DType.Q8_0, (32,))) == 2e-7 and spec.bound(Tensor.new(DType.Q4_0, (32,))) == 5e-5
    assert spec.bound(Tensor.new(DType.F16, (32,))) == spec.nmse == 1e-7


@pytest.mark.parametrize("srcs,params,message", [
    ([Tensor.new(DType.F16, (64, 2))], {"dtype": "q8_0"}, "CPY quantizes f32 only: src is f16"),
    ([Tensor.new(DType.F32, (48, 2))], {"dtype": "q8_0", "ne": [96]},
     r"CPY into q8_0 \(src rows\): rows of 48 elements cannot be q8_0"),
    ([Tensor.new(DType.F32, (64, 3))], {"dtype": "q4_0", "ne": [48, 4]}, r"CPY into q4_0 \(dst rows\)"),
    ([Tensor.new(DType.F32, (256, 2))], {"dtype": "q4_K"}, "CPY writes f32, f16, q8_0, q4_0, not 'q4_K'"),
    ([Tensor.new(DType.Q4_0, (64, 2)), Tensor.new(DType.F32, (32, 2))], {}, "MUL_MAT contracts ne0"),
    ([Tensor.new(DType.Q4_0, (64, 2)), Tensor.new(DType.Q4_0, (64, 2))], {}, "MUL_MAT src1 must be f32, got q4_0"),
    ([Tensor.new(DType.Q8_0, (64, 2))], {}, "SOFTPLUS src0 must be f32"),
])
def test_quantized_misuse_refused(srcs, params, message):
    op = "CPY" if "dtype" in params else "MUL_MAT" if len(srcs) == 2 else "SOFTPLUS"
    with pytest.raises(ValueError, match=message):
        make_node(op, srcs, params)


def test_quantized_perf_cases_are_kimis_width():
    mat_vec, batch = quantized_perf_cases(DType.Q4_K)
    assert mat_vec.inputs[0].ne[:2] == (2304, 9216) and mat_vec.inputs[0].dtype == DType.Q4_K
    assert mat_vec.inputs[1].ne[:2] == (2304, 1) and batch.inputs[1].ne[:2] == (2304, 512)
