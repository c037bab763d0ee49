"""`medgrid info`, the header it puts at the top of computing jobs' logs, and no silent slow path on a GPU.

There is no GPU here, so "on a GPU" is simulated where the op decides: fake CUDA tensors (torch's FakeTensorMode
makes them without a device) reach ``medgrid.ops.pgd_step`` with the extension's kernels set to a CPU-only
build's. The answer must be one line naming the fix, not the reference; ``MEDGRID_FUSED=0`` is the way to ask
for the reference.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from medgrid import cli, fatbin, ops
from medgrid.cli import base, runtime
from medgrid.data import placement, prepare
from medgrid.errors import UserError

CPU_ONLY = frozenset({"cpu"})


@pytest.fixture
def cpu_only_build(monkeypatch):
    """The op as a CPU-only build of medgrid._C registers it."""
    monkeypatch.setattr(ops, "_KERNEL_DEVICES", CPU_ONLY)
    monkeypatch.delenv("MEDGRID_FUSED", raising=False)


def fake_cuda_inputs():
    x = torch.rand(2, 3, 8, 8, device="cuda")
    return x, torch.randn_like(x), x


# ----------------------------------------------------------------------------- no silent slow path
def test_a_cpu_only_build_on_a_gpu_stops_in_one_line(cpu_only_build, monkeypatch):
    calls = []
    reference = ops.pgd_step_reference
    monkeypatch.setattr(ops, "pgd_step_reference", lambda *a, **k: calls.append(1) or reference(*a, **k))
    with FakeTensorMode():
        x_adv, grad, x = fake_cuda_inputs()
        with pytest.raises(UserError) as err:
            ops.pgd_step(x_adv, grad, x, norm="linf", eps=0.03, alpha=0.01)
    message = str(err.value)
    assert "\n" not in message and calls == []  # no step was taken on the slow path
    assert "no CUDA kernel" in message and "CPU-only build" in message
    assert "pip install --no-build-isolation -e ." in message and "MEDGRID_FUSED=0" in message
    assert ops.plan("cuda") == ("error", message) and ops.plan("cpu") == ("fused", "")


def test_medgrid_fused_0_asks_for_the_reference_on_a_gpu(cpu_only_build, monkeypatch):
    monkeypatch.setenv("MEDGRID_FUSED", "0")
    assert ops.plan("cuda") == ("reference", "MEDGRID_FUSED=0")
    with FakeTensorMode():
        x_adv, grad, x = fake_cuda_inputs()
        out = ops.pgd_step(x_adv, grad, x, norm="l2", eps=0.5, alpha=0.1)
    assert out.device.type == "cuda" and out.shape == x_adv.shape


@pytest.mark.skipif(ops._C is None, reason="medgrid._C not built")
def test_a_cuda_build_dispatches_to_the_op(monkeypatch):
    monkeypatch.setattr(ops, "_KERNEL_DEVICES", frozenset({"cpu", "cuda"}))
    monkeypatch.delenv("MEDGRID_FUSED", raising=False)
    with FakeTensorMode():
        x_adv, grad, x = fake_cuda_inputs()
        out = ops.pgd_step(x_adv, grad, x, norm="linf", eps=0.03, alpha=0.01)  # the op's fake kernel
    assert out.device.type == "cuda" and out.shape == x_adv.shape


# ----------------------------------------------------------------------------- medgrid info
def test_info_reports_what_this_machine_runs(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "device: cpu" in out
    if ops._C is not None:
        kernels = ", ".join(sorted(ops.compiled_devices()))
        assert f"extension medgrid._C: kernels {kernels};" in out
        code = ", ".join(map(str, fatbin.targets(ops.library_path()))) or "none"
        assert f"GPU code {code};" in out and "pgd_step on cpu: fused kernel" in out
    assert "data: on the CPU the images stay in host memory" in out


def test_info_json(capsys):
    assert cli.main(["info", "--json", "--task", "breastmnist", "--size", "28"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["torch"] == torch.__version__ and report["device"] == "cpu" and report["gpus"] == []
    assert set(report["pgd_step"]) == {"cpu", "cuda"}
    if report["extension"] is not None:
        assert report["extension"]["gpu_targets"] == [str(t) for t in fatbin.targets(ops.library_path())]
        assert report["extension"]["torch_threads"] == torch.get_num_threads()


def test_require_cuda(capsys, cpu_only_build, monkeypatch):
    assert cli.main(["info", "--require-cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("medgrid: error: --require-cuda: the fused PGD step")
    if ops._C is not None:  # a build with CUDA kernels passes (there is no GPU here to check them against)
        monkeypatch.setattr(ops, "_KERNEL_DEVICES", frozenset({"cpu", "cuda"}))
        assert cli.main(["info", "--require-cuda"]) == 0


@pytest.mark.parametrize("argv,needle", [(["--task", "breastmnist"], "--task and --size go together"),
                                         (["--task", "nope", "--size", "28"], "nope"),
                                         (["--task", "breastmnist", "--size", "29"], "size 29")])
def test_info_argument_mistakes(capsys, argv, needle):
    assert cli.main(["info", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_info_placement_on_a_gpu(monkeypatch):
    gib = 2**30
    monkeypatch.setattr(placement, "free_device_memory", lambda device: 40 * gib)
    text = runtime.placement("cuda", "pathmnist", 224, "auto")
    assert "at most 50% of its free memory (40.0 GiB free now)" in text[0]
    assert "train pathmnist at 224 px: data:" in text[1] and "on cuda" in text[1]  # 100,000 images, 14.0 GiB: under half of 40
    monkeypatch.setattr(placement, "free_device_memory", lambda device: 8 * gib)
    assert "pinned host memory" in runtime.placement("cuda", "pathmnist", 224, "auto")[1]
    assert "on cuda" in runtime.placement("cuda", "pathmnist", 224, "device")[1]


def test_lines_flag_a_gpu_without_kernels_and_a_cpu_torch_on_a_gpu_node():
    report = {"medgrid": "0", "torch": "2.8.0", "torch_cuda": "12.9", "python": "3.11", "device": "cuda",
              "cuda_visible_devices": "0", "extension": None,
              "pgd_step": {"cuda": {"choice": "error", "why": "x"}},
              "gpus": [{"index": 0, "name": "Tesla V100", "capability": "7.0", "memory_gib": 32.0, "runs": None}]}
    text = "\n".join(runtime.lines(report))
    assert "gpu 0: Tesla V100 (compute capability 7.0, 32.0 GiB); medgrid's kernels for it: NOTHING" in text
    assert "pgd_step on cuda: NO CUDA KERNEL" in text and "extension medgrid._C: not built" in text
    text = "\n".join(runtime.lines(report | {"gpus": [], "torch_cuda": None, "device": "cpu"}))
    assert "medgrid: warning: CUDA_VISIBLE_DEVICES=0 but torch sees no GPU (a CPU-only torch)" in text


# ----------------------------------------------------------------------------- the header of a job's log
def test_a_computing_command_starts_its_log_with_the_header(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(base, "_logged", False)
    prepare.prepare("synthetic", 28, tmp_path / "synthetic.npz", data_seed=0)
    argv = ["train", "--task", "synthetic", "--size", "28", "--arch", "cnn-small", "--norm", "none",
            "--data", str(tmp_path / "synthetic.npz"), "--out", str(tmp_path / "m.pt"), "--epochs", "1",
            "--threads", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("medgrid info: medgrid ") and f"torch {torch.__version__}" in out[0]
    header = [line for line in out if line.startswith("medgrid info: ")]
    assert header == out[:len(header)]  # one block, at the top
    assert "medgrid info: device: cpu" in header and any("pgd_step on cuda" in line for line in header)
