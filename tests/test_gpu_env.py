"""The GPU environment: envs/medgrid-gpu.yaml, checked as a file (conda's channels are out of reach here), and
which rules Snakemake gives it.

The file must hold a CUDA build of pytorch and the CUDA compiler and runtime headers of one CUDA release (the
extension is then built with its CUDA kernels where the env is made), name everything envs/medgrid.yaml names,
and its post-deploy must refuse a CPU-only build. The workflow gives it to the rules whose jobs request a GPU,
from the config or from --set-resources, read by loading the workflow with Snakemake's API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from medgrid import build_config

REPO = Path(__file__).resolve().parents[1]
GPU_ENV = REPO / "envs" / "medgrid-gpu.yaml"
CPU_ENV = REPO / "envs" / "medgrid.yaml"
# the first CUDA release whose nvcc compiles each arch of medgrid's default list (NVIDIA's release notes:
# 12.8 added Blackwell, sm_100 and sm_120); the newest GCC each nvcc accepts as host compiler
FIRST_CUDA_FOR_ARCH = {"7.5": (10, 0), "8.0": (11, 0), "8.6": (11, 1), "9.0": (11, 8), "10.0": (12, 8),
                       "12.0": (12, 8)}
NEWEST_GCC = {(12, 8): 14, (12, 9): 14}


def specs(path: Path) -> dict[str, str]:
    """name -> the rest of its conda spec ("=12.9", "=2.8=cuda*", "" ...), pip entries left out."""
    out = {}
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(dep, str):
            name, _, rest = dep.strip().partition(" ")
            out[name] = rest.replace(" ", "")
    return out


def release(spec: str) -> tuple[int, int]:
    m = re.fullmatch(r"=(\d+)\.(\d+)", spec)
    assert m, f"expected an exact CUDA release like =12.9, got {spec!r}"
    return int(m[1]), int(m[2])


def test_gpu_env_pins_one_cuda_release_for_pytorch_and_the_compiler():
    gpu = specs(GPU_ENV)
    cuda = release(gpu["cuda-version"])  # conda-forge's pin of every CUDA package's release, pytorch's too
    assert re.fullmatch(r"=\d+\.\d+=cuda\*", gpu["pytorch"]), gpu["pytorch"]  # a CUDA build, a fixed minor
    for package in ("cuda-nvcc", "cuda-cudart-dev"):
        assert release(gpu[package]) == cuda, package
    for arch in build_config.DEFAULT_CUDA_ARCHS:  # its nvcc compiles the whole default list
        assert cuda >= FIRST_CUDA_FOR_ARCH[arch], (arch, cuda)
    gcc = re.fullmatch(r"<(\d+)", gpu["gxx_linux-64"])
    assert gcc and int(gcc[1]) - 1 <= NEWEST_GCC[cuda], gpu["gxx_linux-64"]  # a host compiler nvcc accepts
    assert "pytorch-cpu" not in gpu and "cxx-compiler" in gpu


def test_gpu_env_names_everything_the_cpu_env_names():
    gpu, cpu = yaml.safe_load(GPU_ENV.read_text()), yaml.safe_load(CPU_ENV.read_text())
    assert gpu["channels"] == cpu["channels"] == ["conda-forge", "nodefaults"]
    gpu_specs, cpu_specs = specs(GPU_ENV), specs(CPU_ENV)
    for name, spec in cpu_specs.items():
        assert name in gpu_specs, f"{GPU_ENV.name} lacks {name}"
        if name != "pytorch":
            assert gpu_specs[name] == spec, name
    pip = [d["pip"] for d in gpu["dependencies"] if isinstance(d, dict)]
    assert pip == [d["pip"] for d in cpu["dependencies"] if isinstance(d, dict)]


def test_gpu_env_post_deploy_refuses_a_cpu_only_build():
    deploy = GPU_ENV.with_name("medgrid-gpu.post-deploy.sh")
    text = deploy.read_text()
    assert os.access(deploy, os.X_OK)
    assert "MEDGRID_FORCE_CUDA=1" in text and "scripts/install_in_conda_env.sh --require-cuda" in text
    install = (REPO / "scripts" / "install_in_conda_env.sh").read_text()
    assert re.search(r'^medgrid info "\$@"$', install, flags=re.MULTILINE)


PROBE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from snakemake.api import SnakemakeApi
    from snakemake.cli import parse_set_resources
    from snakemake.settings.types import (ConfigSettings, DeploymentMethod, DeploymentSettings, OutputSettings,
                                          ResourceSettings)
    snakefile, configfile, *sets = sys.argv[1:]
    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(resource_settings=ResourceSettings(overwrite_resources=parse_set_resources(sets)),
                          config_settings=ConfigSettings(configfiles=[Path(configfile)]),
                          deployment_settings=DeploymentSettings(deployment_method={DeploymentMethod.CONDA}),
                          snakefile=Path(snakefile), workdir=Path.cwd())
        envs = {r.name: os.path.basename(str(r.conda_env)) for r in wf._workflow.rules if r.conda_env}
    print("ENVS " + json.dumps(envs))
    print("OVERRIDE " + str(os.environ.get("CONDA_OVERRIDE_CUDA")))
""")


def rule_envs(tmp_path, configfile: str, *set_resources: str, env=None) -> tuple[dict, str, str]:
    """{rule: env file name} as Snakemake attaches them with --use-conda, CONDA_OVERRIDE_CUDA after parsing,
    and stderr. Snakemake's API (its Workflow is private: what `snakemake --list-conda-envs` reads, which needs
    conda itself)."""
    (tmp_path / "probe.py").write_text(PROBE)
    run_env = {k: v for k, v in os.environ.items() if k != "CONDA_OVERRIDE_CUDA"} | (env or {})
    proc = subprocess.run([sys.executable, "probe.py", str(REPO / "Snakefile"), str(REPO / configfile),
                           *set_resources], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=run_env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    envs = json.loads(re.search(r"^ENVS (.*)$", proc.stdout, flags=re.MULTILINE)[1])
    return envs, re.search(r"^OVERRIDE (.*)$", proc.stdout, flags=re.MULTILINE)[1], proc.stderr


MODEL_RULES = {"train", "evaluate", "features_nonrobust", "features_robust", "train_features", "evaluate_features",
               "train_features_model", "evaluate_features_model"}


@pytest.mark.slow
def test_rules_that_request_a_gpu_get_the_gpu_env(tmp_path):
    # config/config.yaml (the paper grid): train, evaluate and features request a GPU each
    envs, override, err = rule_envs(tmp_path, "config/config.yaml")
    assert {r for r, e in envs.items() if e == "medgrid-gpu.yaml"} == MODEL_RULES
    assert envs["prepare_data"] == envs["shift_source_224"] == envs["shift_fetch"] == "medgrid.yaml"
    assert envs["aggregate"] == "report.yaml" and envs["shift_prepare"] == "medmnistc.yaml"
    if not os.path.exists("/proc/driver/nvidia/version"):  # no driver: conda needs to be told the CUDA release
        assert override == specs(GPU_ENV)["cuda-version"].lstrip("=") and "CONDA_OVERRIDE_CUDA=" in err
    # the demo asks for no GPU: nothing changes for it; --set-resources (a profile's too) counts
    envs, override, _ = rule_envs(tmp_path, "config/demo.yaml")
    assert "medgrid-gpu.yaml" not in envs.values() and override == "None"
    envs, _, _ = rule_envs(tmp_path, "config/demo.yaml", "train:gpu=1")
    assert {r for r, e in envs.items() if e == "medgrid-gpu.yaml"} == {"train"}
    envs, _, _ = rule_envs(tmp_path, "config/config.yaml", "evaluate:gpu=0")
    assert envs["evaluate"] == "medgrid.yaml" and envs["train"] == "medgrid-gpu.yaml"
    # a user's CONDA_OVERRIDE_CUDA is left alone
    _, override, _ = rule_envs(tmp_path, "config/config.yaml", env={"CONDA_OVERRIDE_CUDA": "12.4"})
    assert override == "12.4"
