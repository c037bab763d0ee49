"""Build medgrid and its fused PGD-step extension ``medgrid._C`` against the installed torch.

Install with ``pip install --no-build-isolation -e .`` so the extension is compiled
against the torch already in the environment (build isolation would fetch another one).

The CUDA kernels are compiled whenever they can be (torch built with CUDA and an nvcc of the same CUDA
major version found), a visible GPU or not; the choices are in ``medgrid/build_config.py``.
Switches (environment variables):
  MEDGRID_NO_EXT=1        pure Python install; medgrid.ops falls back to the PyTorch reference
  MEDGRID_NO_CUDA=1       CPU kernels only, even where CUDA kernels could be built
  MEDGRID_FORCE_CUDA=1    CUDA kernels or a failed build (never a CPU-only fallback)
  TORCH_CUDA_ARCH_LIST    GPU targets, e.g. "8.0;9.0+PTX" (default: medgrid's list, see `medgrid info`)
  MEDGRID_DEBUG=1         -O0 -g
"""

import glob
import importlib.util
import os
import re
import shutil
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    """medgrid.__version__, read from the source (the package itself cannot be imported before it is built)."""
    with open(os.path.join(HERE, "medgrid", "__init__.py"), encoding="utf-8") as fh:
        return re.search(r'^__version__ = "([^"]+)"', fh.read(), re.M).group(1)


def _build_config():
    """medgrid/build_config.py, loaded from its file (the package cannot be imported before it is built)."""
    spec = importlib.util.spec_from_file_location("medgrid_build_config", os.path.join(HERE, "medgrid", "build_config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pip_cuda_dirs():
    """Include and library folders of CUDA installed as pip wheels beside torch.

    CUDA 13 wheels put everything under ``site-packages/nvidia/cu13/{include,lib}``; CUDA 12
    wheels use one folder per component (``nvidia/cuda_runtime/{include,lib}``, ``nvidia/cublas``...).
    torch's CUDAExtension only knows CUDA_HOME, which on a pip-only machine lacks the headers
    ATen's CUDA headers include (cublas_v2.h, cusparse.h, ...) and an unversioned libcudart.so.
    """
    try:
        import nvidia  # namespace package installed by the nvidia-* wheels
    except ImportError:
        return [], []
    roots = []
    for base in getattr(nvidia, "__path__", []):
        roots += sorted(glob.glob(os.path.join(base, "cu[0-9]*")))  # cu13, cu12 (unified layout)
        roots += sorted(glob.glob(os.path.join(base, "cu*")))  # cuda_runtime, cublas, ... (cu12 layout)
    include_dirs, lib_dirs = [], []
    for root in roots:
        inc, lib = os.path.join(root, "include"), os.path.join(root, "lib")
        if os.path.isdir(inc) and glob.glob(os.path.join(inc, "*.h")) and inc not in include_dirs:
            include_dirs.append(inc)
        if glob.glob(os.path.join(lib, "libcudart.so*")) and lib not in lib_dirs:
            lib_dirs.append(lib)
    return include_dirs, lib_dirs


def _find_nvcc():
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME:
        nvcc = os.path.join(CUDA_HOME, "bin", "nvcc")
        if os.path.isfile(nvcc) and os.access(nvcc, os.X_OK):
            return nvcc
    return shutil.which("nvcc")


def get_extensions():
    """(ext_modules, cmdclass): one extension ``medgrid._C`` built from csrc/ (laid out as pytorch/extension-cpp).

    CUDAExtension (csrc/*.cpp, csrc/cpu/*.cpp and csrc/cuda/*.cu) whenever medgrid/build_config.py's
    ``decide`` says the CUDA kernels can be built (no GPU needed), for its ``arch_list``; CppExtension
    (the CPU kernels) otherwise, with one line saying why.
    """
    if os.environ.get("MEDGRID_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import (
        CUDA_HOME,
        BuildExtension,
        CppExtension,
        CUDAExtension,
    )

    config = _build_config()
    debug = os.environ.get("MEDGRID_DEBUG") == "1"
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    if not sources:
        return [], {}
    cu_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))

    nvcc = _find_nvcc() if torch.version.cuda else None
    try:
        use_cuda, why = config.decide(os.environ, torch_cuda=torch.version.cuda, nvcc=nvcc,
                                      nvcc_release=config.nvcc_version(nvcc) if nvcc else None,
                                      has_cuda_sources=bool(cu_sources))
        if use_cuda:
            archs, archs_from = config.arch_list(os.environ, config.nvcc_archs(nvcc))
    except config.BuildError as exc:
        sys.exit(f"medgrid: error: {exc}")

    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]  # -g0 drops the -g Python's flags add
    # No -std flag: torch's cpp_extension picks the standard its headers need (C++17 up to
    # torch 2.x, C++20 for torch >= 2.14, whose ATen.h refuses C++17). csrc/ is valid in both.
    cxx = opt + ["-fopenmp"]
    link = ["-fopenmp"]
    if not use_cuda:
        print(f"medgrid: building the CPU extension (CppExtension), without CUDA kernels: {why}")
        ext = CppExtension(
            "medgrid._C",
            sources,
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
            py_limited_api=False,
        )
        return [ext], {"build_ext": BuildExtension}

    # A user's TORCH_CUDA_ARCH_LIST goes to torch's extension builder as for any extension; medgrid's default
    # goes to nvcc as -gencode flags (torch then adds none), whatever archs this torch's builder knows.
    gencode = [] if archs_from == config.ARCH_LIST else config.gencode_flags(archs)
    print(f"medgrid: building the CUDA extension (CUDAExtension; {why}) for "
          f"TORCH_CUDA_ARCH_LIST={archs} ({archs_from})")
    pip_includes, pip_libs = _pip_cuda_dirs()
    link += [f"-Wl,-rpath,{d}" for d in pip_libs]
    ext = CUDAExtension(
        "medgrid._C",
        sources + cu_sources,
        define_macros=[("MEDGRID_WITH_CUDA", "1")],
        # --threads: nvcc compiles the targets in parallel (MAX_JOBS of them, or one per core)
        extra_compile_args={"cxx": cxx, "nvcc": (["-O0", "-g"] if debug else ["-O3", "-lineinfo"])
                            + ["--threads", os.environ.get("MAX_JOBS", "0")] + gencode},
        extra_link_args=link,
        py_limited_api=False,
    )
    # after CUDA_HOME's folders, so a full toolkit wins and the wheels only fill the gaps; conda-forge's CUDA
    # packages keep their headers and libraries in CUDA_HOME/targets/<arch>-linux/ (CUDA_HOME is the env)
    conda_targets = glob.glob(os.path.join(CUDA_HOME or "/nonexistent", "targets", "*-linux"))
    ext.include_dirs.extend(d for d in pip_includes + [os.path.join(t, "include") for t in conda_targets]
                            if os.path.isdir(d) and d not in ext.include_dirs)
    ext.library_dirs.extend(d for d in (os.path.join(t, "lib") for t in conda_targets)
                            if os.path.isdir(d) and d not in ext.library_dirs)

    class BuildExtensionCuda(BuildExtension):
        """Links against a pip-wheel libcudart (only libcudart.so.N ships) via a libcudart.so symlink
        made in the build-temp folder; a failed build says how to build without CUDA."""

        def build_extensions(self):
            for lib in pip_libs:
                if os.path.exists(os.path.join(lib, "libcudart.so")):
                    continue
                versioned = sorted(glob.glob(os.path.join(lib, "libcudart.so.[0-9]*")))
                if not versioned:
                    continue
                link_dir = os.path.abspath(os.path.join(self.build_temp, "medgrid-cudart"))
                os.makedirs(link_dir, exist_ok=True)
                link_path = os.path.join(link_dir, "libcudart.so")
                if os.path.lexists(link_path):
                    os.remove(link_path)
                os.symlink(versioned[0], link_path)
                for e in self.extensions:
                    if link_dir not in e.library_dirs:
                        e.library_dirs.append(link_dir)
                break
            try:
                super().build_extensions()
            except Exception:
                print("medgrid: the CUDA build failed (see above); MEDGRID_NO_CUDA=1 builds the CPU kernels only",
                      file=sys.stderr)
                raise

    return [ext], {"build_ext": BuildExtensionCuda}


ext_modules, cmdclass = get_extensions()

setup(
    name="medgrid",
    version=_version(),
    description="Robustness-accuracy trade-off grids for MedMNIST classifiers (Snakemake + PyTorch)",
    packages=find_packages(include=["medgrid", "medgrid.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy",
        "pandas",
        "pyarrow",
        "scikit-learn",
        "medmnist>=3.0",
        "tqdm",
        "pyyaml",
    ],
    extras_require={
        "test": ["pytest", "snakemake>=9,<10", "snakefmt", "jsonschema"],
        "report": ["altair>=5", "vl-convert-python", "matplotlib"],
        "shift": ["medmnistc==0.1.0", "numpy<2.3"],
        "slurm": ["snakemake-executor-plugin-slurm==2.5.4"],
    },
    entry_points={"console_scripts": ["medgrid = medgrid.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
