"""The op family is the unit: every op's record carries its cases, strategy, perf case and ggml call (checked when
the record is made), names its family module, and every backend has that family's kernel file - with every mutant's
define in it - and a kernel table line for the op (asserted when each backend module is imported)."""
from pathlib import Path

import pytest

from reference.ops import FAMILIES, REGISTRY

BACKENDS_DIR = Path(__file__).resolve().parent.parent / "backends"
KERNEL_FILES = {"opencl": "{}.cl", "vulkan": "{}.comp", "cuda": "{}.cu"}
NOT_FAMILIES = {"common", "probe"}  # opencl's shared header, vulkan's subgroup-size probe


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_has_its_kernel_files(family):
    for backend, pattern in KERNEL_FILES.items():
        path = BACKENDS_DIR / backend / pattern.format(family)
        assert path.is_file(), f"{family}: {backend} has no {path.name}"
        text = path.read_text()
        for op in (op for op in REGISTRY.values() if op.family == family):
            for impl, (define, _) in op.mutants.items():
                assert define in text, f"{op.name}'s mutant {impl}: {define} is not planted in {path.name}"


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
