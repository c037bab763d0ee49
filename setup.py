"""Build medgrid and its fused PGD-step extension ``medgrid._C`` against the installed torch.

Install with ``pip install --no-build-isolation -e .`` so the extension is compiled
against the torch already in the environment (build isolation would fetch another one).

Switches (environment variables):
  MEDGRID_NO_EXT=1      pure Python install; medgrid.ops falls back to the PyTorch reference
  MEDGRID_FORCE_CUDA=1  build the CUDA kernels even without a visible GPU (compile and link only)
  MEDGRID_DEBUG=1       -O0 -g
"""

import glob
import os
import re
import shutil

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    """medgrid.__version__, read from the source (the package itself cannot be imported before it is built)."""
    with open(os.path.join(HERE, "medgrid", "__init__.py"), encoding="utf-8") as fh:
        return re.search(r'^__version__ = "([^"]+)"', fh.read(), re.M).group(1)


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

    CppExtension (csrc/*.cpp, csrc/cpu/*.cpp) by default; CUDAExtension (plus csrc/cuda/*.cu) when torch was built
    with CUDA, nvcc is found and a GPU is visible, or always with MEDGRID_FORCE_CUDA=1 (an
    error if torch has no CUDA or nvcc is missing). TORCH_CUDA_ARCH_LIST picks the targets.
    """
    if os.environ.get("MEDGRID_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    debug = os.environ.get("MEDGRID_DEBUG") == "1"
    force_cuda = os.environ.get("MEDGRID_FORCE_CUDA") == "1"
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    if not sources:
        return [], {}
    cu_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))

    nvcc = _find_nvcc() if torch.version.cuda else None
    if force_cuda:
        if not torch.version.cuda:
            raise RuntimeError(f"MEDGRID_FORCE_CUDA=1 but torch {torch.__version__} was built without CUDA")
        if nvcc is None:
            raise RuntimeError("MEDGRID_FORCE_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
        if not cu_sources:
            raise RuntimeError("MEDGRID_FORCE_CUDA=1 but csrc/cuda/ has no .cu sources")
    use_cuda = bool(cu_sources) and (
        force_cuda or (bool(torch.version.cuda) and nvcc is not None and torch.cuda.is_available())
    )

    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]  # -g0 drops the -g Python's flags add
    # No -std flag: torch's cpp_extension picks the standard its headers need (C++17 up to
    # torch 2.x, C++20 for torch >= 2.14, whose ATen.h refuses C++17). csrc/ is valid in both.
    cxx = opt + ["-fopenmp"]
    link = ["-fopenmp"]
    if not use_cuda:
        print("medgrid: building the CPU extension (CppExtension)")
        ext = CppExtension(
            "medgrid._C",
            sources,
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
            py_limited_api=False,
        )
        return [ext], {"build_ext": BuildExtension}

    print(f"medgrid: building the CUDA extension (CUDAExtension, nvcc {nvcc}, "
          f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '<torch default>')})")
    pip_includes, pip_libs = _pip_cuda_dirs()
    link += [f"-Wl,-rpath,{d}" for d in pip_libs]
    ext = CUDAExtension(
        "medgrid._C",
        sources + cu_sources,
        define_macros=[("MEDGRID_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx, "nvcc": (["-O0", "-g"] if debug else ["-O3", "-lineinfo"])},
        extra_link_args=link,
        py_limited_api=False,
    )
    # after CUDA_HOME's folders, so a full toolkit wins and the wheels only fill the gaps
    ext.include_dirs.extend(d for d in pip_includes if d not in ext.include_dirs)

    class BuildExtensionPipCuda(BuildExtension):
        """Links against a pip-wheel libcudart (only libcudart.so.N ships) via a libcudart.so symlink
        made in the build-temp folder."""

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
            super().build_extensions()

    return [ext], {"build_ext": BuildExtensionPipCuda}


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
