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

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def get_extensions():
    if os.environ.get("MEDGRID_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    debug = os.environ.get("MEDGRID_DEBUG") == "1"
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not sources:
        return [], {}
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    cxx += ["-std=c++17", "-fopenmp"]
    ext = CppExtension(
        "medgrid._C",
        sources,
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = get_extensions()

setup(
    name="medgrid",
    version="0.1.0",
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
        "report": ["altair>=5", "vl-convert-python"],
        "shift": ["medmnistc==0.1.0", "numpy<2.3"],
        "slurm": ["snakemake-executor-plugin-slurm==2.5.4"],
    },
    entry_points={"console_scripts": ["medgrid = medgrid.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
