"""The project installs as a package: `kbo` is `python -m bench` and runs from anywhere, a wheel carries every kernel
source beside its backend (where the runtimes read them), and the runtime requirements leave out test and build
tools."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from reference.ops import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["backends", "bench", "cases", "reference", "reports"]
KERNEL_SUFFIXES = {".cl", ".comp", ".glsl", ".cu", ".cuh", ".h"}  # OpenCL C, GLSL, CUDA and their headers
# where each runtime reads its kernels: the folder of its module, one file per op family
KERNEL_FOLDERS = {"backends.opencl": ".cl", "backends.vulkan": ".comp", "backends.cuda": ".cu"}
TOOLS = {"pytest", "pytest-xdist", "pybind11"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower()


def test_pyproject_has_a_build_system():
    build = pyproject()["build-system"]
    assert build["build-backend"] and build["requires"]


def test_runtime_requirements_leave_out_test_and_build_tools():
    project = pyproject()["project"]
    assert not TOOLS & {requirement_name(r) for r in project["dependencies"]}
    extras = {name: {requirement_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    assert {"pytest", "pytest-xdist"} <= extras["test"] and "pybind11" in extras["build"]


def test_kbo_entry_point_is_python_m_bench():
    import bench.__main__

    (kbo,) = [e for e in entry_points(group="console_scripts") if e.name == "kbo"]
    assert kbo.load() is bench.__main__.main


def test_kbo_runs_outside_the_repository(tmp_path):
    kbo = Path(sys.executable).parent / "kbo"
    if not kbo.exists():
        pytest.fail(f"no {kbo}: install the project (pip install -e .) as scripts/setup.sh does")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(kbo), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    module = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    subcommands = re.compile(r"\{([a-z,-]+)\}")
    assert subcommands.search(done.stdout).group(1) == subcommands.search(module.stdout).group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (pip wheel, the pinned build backend) from a copy of the sources, so the checkout is untouched."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(ROOT / "pyproject.toml", src)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("*.whl")
    return built


def test_wheel_carries_every_kernel_source(wheel):
    on_disk = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*")
               if p.suffix in KERNEL_SUFFIXES}
    assert on_disk, "no kernel sources found in the checkout"
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert on_disk <= in_wheel, f"kernel sources missing from the wheel: {sorted(on_disk - in_wheel)}"


def test_wheel_metadata_keeps_tools_in_extras(wheel):
    metadata = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert not TOOLS & {requirement_name(r) for r in requires if "extra ==" not in r}
    assert TOOLS <= {requirement_name(r) for r in requires if "extra ==" in r}


def test_installed_wheel_finds_each_family_kernel_beside_its_backend(wheel, tmp_path):
    """The wheel unpacked (a pure-Python install) and looked up from outside the repository: each runtime's module
    folder (found without importing the runtime, which may be missing here) holds its kernel file of every family."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (f"import importlib.util, json; modules = {list(KERNEL_FOLDERS)!r}; "
            "print(json.dumps({m: importlib.util.find_spec(m).submodule_search_locations[0] for m in modules}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    for module, folder in json.loads(done.stdout).items():
        assert Path(folder).is_relative_to(site), f"{module} came from {folder}, not the installed wheel"
        suffix = KERNEL_FOLDERS[module]
        missing = sorted(name for name in (f"{family}{suffix}" for family in FAMILIES)
                         if not (Path(folder) / name).is_file())
        assert not missing, f"{module}: kernel files missing from the installed package: {missing}"
