"""The op family is the unit: every op's record carries its cases, strategy, perf case and ggml call (checked when
the record is made), names its family module, and every backend has that family's kernel file and a kernel table line
for the op (asserted when each backend module is imported). Every mutant's edit applies to its kernel file: its text
occurs there exactly once."""
from pathlib import Path

import pytest

from reference.ops import FAMILIES, REGISTRY
from reference.ops.spec import mutant_file, mutants

BACKENDS_DIR = Path(__file__).resolve().parent.parent / "backends"
KERNEL_FILES = {"opencl": "{}.cl", "vulkan": "{}.comp", "cuda": "{}.cu"}
# opencl's shared header, vulkan's subgroup-size probe, every backend's STREAM kernels (bench ops' ceilings)
NOT_FAMILIES = {"common", "probe", "stream"}


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
