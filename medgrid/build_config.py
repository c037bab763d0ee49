"""What ``setup.py`` compiles into ``medgrid._C``: CPU kernels only, or CPU and CUDA kernels, and for which GPUs.

Plain Python without torch: ``setup.py`` loads this file before anything is built, the tests check its choices
without compiling, and ``medgrid info`` shows the default list.

CUDA kernels are built whenever they can be: torch was built with CUDA and an nvcc of the same CUDA major
version is found. A visible GPU is not needed, because the machine that builds is often not the one that runs:
with ``--use-conda`` Snakemake creates the environments where it runs itself, on a cluster's login node. Switches
(environment variables):

- ``MEDGRID_NO_CUDA=1``: CPU kernels only, even where CUDA kernels could be built.
- ``MEDGRID_FORCE_CUDA=1``: CUDA kernels or a failed build, never a CPU-only fallback (the GPU environment's
  install sets it, so a missing compiler shows when the environment is made, not as a job on a GPU).
- ``TORCH_CUDA_ARCH_LIST``: the GPU targets, read by torch's extension builder as for any other extension
  (``"8.0;9.0+PTX"``, names like ``"Hopper"``); unset: :data:`DEFAULT_CUDA_ARCHS` as far as the nvcc found can
  compile them, with PTX for the newest (:func:`gencode_flags`).
"""

from __future__ import annotations

import os
import re
import subprocess

# Compiled device code (a cubin) runs on GPUs of its major version and the same or a higher minor one, so
# one target covers a family: 7.5 T4 and Quadro RTX (the oldest nvcc 13 compiles); 8.0 A100, A30; 8.6 A10,
# A40, RTX A6000, RTX 30xx, and the 8.9 GPUs (L4, L40S, RTX 6000 Ada, RTX 40xx); 9.0 H100, H200, GH200;
# 10.0 B200, GB200 and the 10.3 GPUs (B300); 12.0 RTX PRO 6000 Blackwell, RTX 50xx and 12.1 (GB10). These
# are the targets of PyTorch's own CUDA 13.0 wheels. The newest also ships as PTX, which the driver compiles
# for GPUs newer than all of these.
DEFAULT_CUDA_ARCHS = ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0")
NO_CUDA, FORCE_CUDA, ARCH_LIST = "MEDGRID_NO_CUDA", "MEDGRID_FORCE_CUDA", "TORCH_CUDA_ARCH_LIST"
CONDA_OVERRIDE_CUDA = "CONDA_OVERRIDE_CUDA"
NVIDIA_DRIVER = "/proc/driver/nvidia/version"  # present where the NVIDIA kernel driver is loaded


class BuildError(RuntimeError):
    """The build cannot do what its switches ask (setup.py prints it as one line and stops)."""


def arch_of(code: str) -> str | None:
    """nvcc's target name -> torch's arch syntax: ``sm_90`` -> ``9.0``, ``sm_120`` -> ``12.0``; None for others."""
    m = re.fullmatch(r"(?:sm|compute)_(\d+)(\d)", code.strip())
    return f"{m[1]}.{m[2]}" if m else None


def nvcc_archs(nvcc: str) -> frozenset[str] | None:
    """The archs an nvcc compiles device code for (``nvcc --list-gpu-code``), None when it cannot tell."""
    try:
        out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    archs = frozenset(a for a in map(arch_of, out.split()) if a)
    return archs or None


def nvcc_version(nvcc: str) -> tuple[int, int] | None:
    """(major, minor) of an nvcc's CUDA release (``nvcc --version``: "release 13.0"), None when unknown."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2])) if m else None


def default_arch_list(supported: frozenset[str] | None = None) -> str:
    """:data:`DEFAULT_CUDA_ARCHS` in torch's syntax, those an nvcc compiles (``supported``; None: all), PTX of the
    newest: ``"7.5;8.0;8.6;9.0;10.0;12.0+PTX"``. An older nvcc (CUDA 12.0-12.7) lacks 10.0 and 12.0 and gets
    ``...;9.0+PTX``."""
    kept = [a for a in DEFAULT_CUDA_ARCHS if supported is None or a in supported]
    if not kept:
        raise BuildError(f"this nvcc compiles none of medgrid's default GPU targets {', '.join(DEFAULT_CUDA_ARCHS)} "
                         f"(it knows {', '.join(sorted(supported or ()))}); set {ARCH_LIST}")
    return ";".join(kept) + "+PTX"


def arch_list(env, supported: frozenset[str] | None) -> tuple[str, str]:
    """(the targets in torch's syntax, where they come from): the user's ``TORCH_CUDA_ARCH_LIST`` when set,
    else :func:`default_arch_list`."""
    given = (env.get(ARCH_LIST) or "").strip()
    if given:
        return given, ARCH_LIST
    return default_arch_list(supported), "medgrid's default"


def gencode_flags(archs: str) -> list[str]:
    """nvcc's flags for targets in torch's numeric syntax: ``"8.6;9.0+PTX"`` -> a cubin for 8.6 and 9.0 and PTX
    of 9.0. setup.py passes these for medgrid's default list itself, so that the list does not depend on which
    archs the installed torch's extension builder knows (torch 2.6 rejects 10.0 and 12.0)."""
    flags = []
    for item in archs.replace(" ", ";").split(";"):
        if not item:
            continue
        arch, ptx = item.removesuffix("+PTX"), item.endswith("+PTX")
        m = re.fullmatch(r"(\d+)\.(\d)", arch)
        if not m:
            raise BuildError(f"GPU target {item!r}: expected e.g. 9.0 or 12.0+PTX")
        digits = m[1] + m[2]
        flags.append(f"-gencode=arch=compute_{digits},code=sm_{digits}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{digits},code=compute_{digits}")
    return flags


def _switch(env, name: str) -> bool:
    value = (env.get(name) or "").strip()
    if value not in ("", "0", "1"):
        raise BuildError(f"{name}={value!r}: use 1 (on) or 0 (off)")
    return value == "1"


def decide(env, *, torch_cuda: str | None, nvcc: str | None, nvcc_release: tuple[int, int] | None,
           has_cuda_sources: bool = True) -> tuple[bool, str]:
    """(build the CUDA kernels?, why): yes whenever torch has CUDA and a matching nvcc is found, unless
    ``MEDGRID_NO_CUDA=1``. With ``MEDGRID_FORCE_CUDA=1`` a reason not to is a :class:`BuildError` instead."""
    no_cuda, force = _switch(env, NO_CUDA), _switch(env, FORCE_CUDA)
    if no_cuda and force:
        raise BuildError(f"{NO_CUDA}=1 and {FORCE_CUDA}=1 contradict each other; set one")
    if no_cuda:
        return False, f"{NO_CUDA}=1"
    if not has_cuda_sources:
        why = "csrc/cuda/ has no .cu sources"
    elif not torch_cuda:
        why = "this torch was built without CUDA"
    elif nvcc is None:
        why = "nvcc was not found (set CUDA_HOME or put nvcc on PATH)"
    elif nvcc_release is not None and str(nvcc_release[0]) != torch_cuda.split(".")[0]:
        why = (f"nvcc {nvcc} is CUDA {nvcc_release[0]}.{nvcc_release[1]} but torch was built with CUDA "
               f"{torch_cuda} (the major versions must match)")
    else:
        release = f"CUDA {nvcc_release[0]}.{nvcc_release[1]}" if nvcc_release else "version unknown"
        return True, f"torch built with CUDA {torch_cuda}, nvcc {nvcc} ({release})"
    if force:
        raise BuildError(f"{FORCE_CUDA}=1 but {why}")
    return False, why


def conda_cuda_override(release: str, env=None, driver: str = NVIDIA_DRIVER) -> str | None:
    """Let conda solve a CUDA build of pytorch where no driver is loaded: set ``CONDA_OVERRIDE_CUDA=release``
    in ``env`` (default ``os.environ``) unless it is set already or this machine has an NVIDIA driver (then
    conda sees the driver's CUDA as its ``__cuda`` virtual package). The value set, or None.

    The workflow calls it when rules use the GPU environment: Snakemake makes the environments where it runs,
    on a cluster's login node, and conda there would otherwise refuse every CUDA build.
    """
    env = os.environ if env is None else env
    if CONDA_OVERRIDE_CUDA in env or os.path.exists(driver):
        return None
    env[CONDA_OVERRIDE_CUDA] = release
    return release
