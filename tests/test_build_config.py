"""What setup.py builds, without compiling: CUDA kernels whenever they can be built, for the default GPU list.

The real compile of that list (and the device code it leaves in the library) is tests/test_cuda_build.py; here
are the decisions (medgrid/build_config.py), the reader of the device code (medgrid/fatbin.py) on made-up
fat binaries, and setup.py's extension as it would hand it to torch's builder: the default list reaches nvcc's
command line as one -gencode flag per target.
"""

from __future__ import annotations

import os
import runpy
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

from medgrid import build_config as bc
from medgrid import fatbin

REPO = Path(__file__).resolve().parents[1]
NVCC_13 = frozenset({"7.5", "8.0", "8.6", "8.7", "8.8", "8.9", "9.0", "10.0", "10.3", "11.0", "12.0", "12.1"})
NVCC_12_6 = frozenset({"5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "7.5", "8.0", "8.6", "8.7", "8.9",
                       "9.0"})


# ----------------------------------------------------------------------------- the decision
def decide(env=None, torch_cuda="13.0", nvcc="/usr/bin/nvcc", release=(13, 0), sources=True):
    return bc.decide(env or {}, torch_cuda=torch_cuda, nvcc=nvcc, nvcc_release=release, has_cuda_sources=sources)


def test_cuda_kernels_whenever_they_can_be_built():
    use, why = decide()
    assert use and "CUDA 13.0" in why  # no GPU is asked about: the decision has no such input
    assert decide({"MEDGRID_FORCE_CUDA": "1"})[0]
    assert decide(release=None)[0]  # an nvcc that does not say its version is trusted


@pytest.mark.parametrize("kw,reason", [
    ({"env": {"MEDGRID_NO_CUDA": "1"}}, "MEDGRID_NO_CUDA=1"),
    ({"torch_cuda": None}, "built without CUDA"),
    ({"nvcc": None}, "nvcc was not found"),
    ({"release": (12, 4)}, "major versions must match"),
    ({"sources": False}, "no .cu sources"),
])
def test_cpu_only_says_why(kw, reason):
    use, why = decide(**kw)
    assert not use and reason in why


@pytest.mark.parametrize("kw", [{"torch_cuda": None}, {"nvcc": None}, {"release": (12, 4)}])
def test_force_cuda_turns_a_fallback_into_an_error(kw):
    with pytest.raises(bc.BuildError, match="MEDGRID_FORCE_CUDA=1 but"):
        decide({"MEDGRID_FORCE_CUDA": "1"}, **kw)


def test_switches_are_checked():
    with pytest.raises(bc.BuildError, match="contradict"):
        decide({"MEDGRID_NO_CUDA": "1", "MEDGRID_FORCE_CUDA": "1"})
    with pytest.raises(bc.BuildError, match="use 1"):
        decide({"MEDGRID_NO_CUDA": "yes"})
    assert decide({"MEDGRID_NO_CUDA": "0", "MEDGRID_FORCE_CUDA": ""})[0]


# ----------------------------------------------------------------------------- the targets
def test_default_list_covers_current_gpus_with_ptx_for_the_newest():
    assert bc.default_arch_list(NVCC_13) == "7.5;8.0;8.6;9.0;10.0;12.0+PTX"
    assert bc.default_arch_list(None) == "7.5;8.0;8.6;9.0;10.0;12.0+PTX"
    # an nvcc before CUDA 12.8 knows no Blackwell: the list shrinks, PTX moves to the newest it has
    assert bc.default_arch_list(NVCC_12_6) == "7.5;8.0;8.6;9.0+PTX"
    with pytest.raises(bc.BuildError, match="none of medgrid's default"):
        bc.default_arch_list(frozenset({"3.5"}))
    # every GPU family the list is documented to cover runs one of its cubins
    found = fatbin.parse(_fake_fatbin([(2, a) for a in (75, 80, 86, 90, 100, 120)] + [(1, 120)]))
    for capability in ((7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (10, 3), (12, 0), (12, 1)):
        assert fatbin.runs_on(found, capability).startswith("sm_"), capability
    assert fatbin.runs_on(found, (13, 0)) == "compute_120 (PTX)"  # a newer GPU JIT-compiles the PTX
    assert fatbin.runs_on(found, (7, 0)) is None  # V100: nvcc 13 cannot target it


def test_users_list_wins():
    assert bc.arch_list({"TORCH_CUDA_ARCH_LIST": "8.0;9.0+PTX"}, NVCC_13) == ("8.0;9.0+PTX", "TORCH_CUDA_ARCH_LIST")
    assert bc.arch_list({"TORCH_CUDA_ARCH_LIST": " "}, NVCC_13)[1] == "medgrid's default"


def test_gencode_flags():
    assert bc.gencode_flags("8.6;12.0+PTX") == [
        "-gencode=arch=compute_86,code=sm_86", "-gencode=arch=compute_120,code=sm_120",
        "-gencode=arch=compute_120,code=compute_120"]
    with pytest.raises(bc.BuildError, match="expected e.g."):
        bc.gencode_flags("Hopper")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
def test_this_nvcc_compiles_the_whole_default_list():
    nvcc = shutil.which("nvcc")
    assert bc.arch_of("sm_120") == "12.0" and bc.arch_of("compute_90") == "9.0" and bc.arch_of("lto_90") is None
    supported, release = bc.nvcc_archs(nvcc), bc.nvcc_version(nvcc)
    assert supported and release, (supported, release)
    if release >= (12, 8):
        assert set(bc.DEFAULT_CUDA_ARCHS) <= supported, sorted(supported)


def test_conda_cuda_override_only_where_no_driver_and_unset(tmp_path):
    env, no_driver, driver = {}, str(tmp_path / "absent"), tmp_path / "version"
    assert bc.conda_cuda_override("12.9", env, no_driver) == "12.9" and env == {"CONDA_OVERRIDE_CUDA": "12.9"}
    env = {"CONDA_OVERRIDE_CUDA": "12.4"}
    assert bc.conda_cuda_override("12.9", env, no_driver) is None and env["CONDA_OVERRIDE_CUDA"] == "12.4"
    driver.write_text("NVRM version: 575.51")
    env = {}
    assert bc.conda_cuda_override("12.9", env, str(driver)) is None and env == {}


# ----------------------------------------------------------------------------- reading device code
def _fake_fatbin(entries) -> bytes:
    """A fat binary as nvcc lays it out: entries (kind, arch) with payloads of a few bytes."""
    body = b""
    for kind, arch in entries:
        payload = bytes(24)
        header = struct.pack("<HHIQII", kind, 0x0101, 64, len(payload), len(payload), 0)
        header += struct.pack("<II", 0, arch) + bytes(64 - 32)
        body += header + payload
    return struct.pack("<IHHQ", fatbin.FATBIN_MAGIC, 1, 16, len(body)) + body


def test_fatbin_parse_reads_kinds_and_archs():
    blob = _fake_fatbin([(2, 75), (2, 120), (1, 120)]) + bytes(8) + _fake_fatbin([(2, 90)])
    assert [str(t) for t in fatbin.parse(blob)] == ["sm_75", "sm_120", "compute_120 (PTX)", "sm_90"]
    assert fatbin.parse(b"") == [] and fatbin.parse(bytes(64)) == []
    assert [str(t) for t in fatbin.parse(blob[:100])] == ["sm_75"]  # cut short: the entries whose headers are there


def test_a_library_without_device_code_has_no_targets(tmp_path):
    so = tmp_path / "plain.so"
    so.write_bytes(b"not an ELF file")
    assert fatbin.targets(so) == [] and fatbin.targets(None) == []
    so.write_bytes(b"\x7fELF\x02\x01" + bytes(40))  # an ELF header cut short: no section to read, no crash
    assert fatbin.targets(so) == []
    from medgrid import ops

    if ops.library_path() and "cuda" not in ops.compiled_devices():
        assert fatbin.targets(ops.library_path()) == []  # a CPU-only build carries no GPU code


# ----------------------------------------------------------------------------- setup.py as torch's builder sees it
def _extension(monkeypatch, **env):
    """Run setup.py (as pip would, without compiling) and return its extension and what it printed."""
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    for name in ("MEDGRID_NO_EXT", "MEDGRID_NO_CUDA", "MEDGRID_FORCE_CUDA", "TORCH_CUDA_ARCH_LIST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    (ext,) = captured["ext_modules"]
    return ext


def _nvcc() -> str | None:
    """The nvcc setup.py finds: CUDA_HOME/bin/nvcc, else the one on PATH."""
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME and os.access(os.path.join(CUDA_HOME, "bin", "nvcc"), os.X_OK):
        return os.path.join(CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


def _can_build_cuda() -> bool:
    import torch

    return bool(torch.version.cuda) and _nvcc() is not None


@pytest.mark.skipif(not _can_build_cuda(), reason="no torch with CUDA, or no nvcc: nothing CUDA can be built here")
def test_setup_hands_the_default_list_to_nvcc(monkeypatch, capsys):
    from torch.utils.cpp_extension import _get_cuda_arch_flags

    ext = _extension(monkeypatch)
    printed = capsys.readouterr().out
    assert "building the CUDA extension" in printed and "(medgrid's default)" in printed, printed
    assert any(s.endswith(".cu") for s in ext.sources)
    nvcc_args = ext.extra_compile_args["nvcc"]
    supported = bc.nvcc_archs(_nvcc())
    assert [a for a in nvcc_args if a.startswith("-gencode")] == bc.gencode_flags(bc.default_arch_list(supported))
    assert _get_cuda_arch_flags(nvcc_args) == []  # torch adds no targets of its own to these


@pytest.mark.skipif(not _can_build_cuda(), reason="no torch with CUDA, or no nvcc: nothing CUDA can be built here")
def test_setup_leaves_a_users_list_to_torch_and_honours_no_cuda(monkeypatch, capsys):
    ext = _extension(monkeypatch, TORCH_CUDA_ARCH_LIST="9.0")
    assert not [a for a in ext.extra_compile_args["nvcc"] if a.startswith("-gencode")]
    assert "TORCH_CUDA_ARCH_LIST=9.0 (TORCH_CUDA_ARCH_LIST)" in capsys.readouterr().out
    ext = _extension(monkeypatch, MEDGRID_NO_CUDA="1")
    assert not any(s.endswith(".cu") for s in ext.sources) and "nvcc" not in ext.extra_compile_args
    assert "without CUDA kernels: MEDGRID_NO_CUDA=1" in capsys.readouterr().out


def test_setup_stops_in_one_line_on_contradictory_switches():
    env = dict(os.environ, MEDGRID_NO_CUDA="1", MEDGRID_FORCE_CUDA="1")
    proc = subprocess.run([sys.executable, "setup.py", "--name"], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("medgrid: error: "), proc.stderr
