"""The CUDA kernels compile, link and load on a machine without a GPU, for every GPU of the default list.

Builds ``medgrid._C`` as an install does, with no ``TORCH_CUDA_ARCH_LIST`` (medgrid's default list,
medgrid/build_config.py) and ``MEDGRID_FORCE_CUDA=1`` (no CPU-only fallback), into a temporary folder.
Then: nvcc's command line (build.ninja) had one -gencode per target; the library's device code
(``.nv_fatbin``, read by medgrid/fatbin.py and, where installed, by NVIDIA's cuobjdump) holds a cubin for
every arch of the list and PTX for the newest; it loads, the op gets a CUDA kernel and ``build_info()`` says
``has_cuda``. A broken build fails the test; it is skipped only when nothing could build CUDA code here (no
nvcc, or a torch built without CUDA). Measured on 2 shared cores: 7 targets cost about 2.2x the CPU time of
the one-target build this test made before (README, "On GPUs and clusters").
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from medgrid import build_config, fatbin

REPO = Path(__file__).resolve().parents[1]


def _nvcc() -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME and os.access(os.path.join(CUDA_HOME, "bin", "nvcc"), os.X_OK):
        return os.path.join(CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(torch.version.cuda is None,
                       reason=f"torch {torch.__version__} is a CPU-only build: CUDAExtension cannot be built"),
    pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (no CUDA_HOME/bin/nvcc, none on PATH)"),
]


@pytest.fixture(scope="module")
def cuda_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cuda_build")
    lib, temp = tmp / "lib", tmp / "temp"
    env = dict(os.environ, MEDGRID_FORCE_CUDA="1", MAX_JOBS=os.environ.get("MAX_JOBS", "3"))
    for name in ("MEDGRID_NO_EXT", "MEDGRID_NO_CUDA", "TORCH_CUDA_ARCH_LIST"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(lib), "--build-temp", str(temp)],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"CUDA build failed (rc={proc.returncode}):\n{log[-6000:]}"
    libs = glob.glob(str(lib / "medgrid" / "_C*.so"))
    assert len(libs) == 1, f"expected one medgrid/_C*.so under {lib}, found {libs}\n{log[-3000:]}"
    ninja = temp / "build.ninja"
    return Path(libs[0]), log + (ninja.read_text() if ninja.exists() else "")


def _default_targets() -> tuple[str, list[str]]:
    """The default list as this nvcc compiles it, and the targets the library must then hold."""
    archs = build_config.default_arch_list(build_config.nvcc_archs(_nvcc()))
    expected = [f"sm_{a.removesuffix('+PTX').replace('.', '')}" for a in archs.split(";")]
    return archs, expected + [f"compute_{archs.split(';')[-1].removesuffix('+PTX').replace('.', '')} (PTX)"]


def test_build_used_cuda_extension_with_the_default_list(cuda_build):
    _, log = cuda_build
    archs, _ = _default_targets()
    assert "building the CUDA extension" in log
    assert f"TORCH_CUDA_ARCH_LIST={archs} (medgrid's default)" in log
    assert "pgd_step.cu" in log  # nvcc compiled the kernels
    for flag in build_config.gencode_flags(archs):  # on nvcc's command line
        assert flag in log, flag


def test_library_holds_device_code_for_every_default_target(cuda_build):
    so, _ = cuda_build
    _, expected = _default_targets()
    assert [str(t) for t in fatbin.targets(so)] == expected
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump:  # NVIDIA's own reader agrees (the CUDA pip wheels do not ship it)
        listing = subprocess.run([cuobjdump, "--list-elf", "--list-ptx", str(so)], check=False,
                                 capture_output=True, text=True).stdout
        found = set(re.findall(r"\.(sm_\d+)\.cubin", listing))
        found |= {f"compute_{m} (PTX)" for m in re.findall(r"\.sm_(\d+)\.ptx", listing)}
        assert found == set(expected), listing


def test_library_has_device_code(cuda_build):
    so, _ = cuda_build
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf not found")
    sections = subprocess.run([readelf, "-S", "-W", str(so)], capture_output=True, text=True, check=True).stdout
    assert ".nv_fatbin" in sections, sections
    dynamic = subprocess.run([readelf, "-d", "-W", str(so)], capture_output=True, text=True, check=True).stdout
    assert "libcudart.so" in dynamic, dynamic  # linked against the CUDA runtime


def test_library_loads_and_registers_cuda_kernel(cuda_build):
    so, _ = cuda_build
    # a fresh interpreter: the in-tree CPU build may already be loaded in this one
    code = textwrap.dedent(f"""
        import importlib.util, torch
        spec = importlib.util.spec_from_file_location("medgrid._C", {str(so)!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        info = mod.build_info()
        assert info["has_cuda"] is True, info
        for key in ("CPU", "CUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key("medgrid::pgd_step", key), key
        x = torch.rand(2, 3, 4, 4)
        out = torch.ops.medgrid.pgd_step(x, torch.randn_like(x), x, "linf", 0.1, 0.05, False)
        assert out.shape == x.shape
        print("ok", info)
    """)
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                          cwd=str(so.parent.parent))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok")
