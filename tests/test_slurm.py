"""The SLURM profile, for real: a one-node SLURM cluster on this machine (scripts/slurm_localhost.sh)
runs the first demo cells with `snakemake --profile profiles/slurm`, and the metrics equal a local
run's (same seed, same threads: the same table).

Needs root and apt-get (Debian's slurm-wlm and munge) or SLURM already running; skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from test_workflow import REPO, copy_workflow, snakemake, write_yaml

SETUP = REPO / "scripts" / "slurm_localhost.sh"
CELL = "results/synthetic/28/cnn-small/none-0/seed0"
TARGET = f"{CELL}/metrics/eval.parquet"

# the demo config cut to one short cell: data, one standard model (1 epoch), its evaluation
TINY_DEMO = {
    "hparams": {"cnn-small": {"standard": {"epochs": 1, "stop_train_acc": None}}},
    "attack_grid": {"linf": ["2/255"], "l2": [0.5]},
    "evaluate": {"attack_steps": 2, "restarts": 1, "strong": {"iterations": 3, "samples": 50},
                 "sanity": {"samples": 50, "square_queries": 10, "square_samples": 20}},
    "shift": {"enabled": False},
    "features": {"datasets": []},
}


def _slurm_usable() -> str | None:
    """Why this machine cannot host the test cluster, or None."""
    if shutil.which("sinfo") and shutil.which("sbatch"):
        return None if os.geteuid() == 0 else "SLURM is installed but setting it up needs root"
    if os.geteuid() != 0:
        return "installing SLURM needs root"
    if shutil.which("apt-get") is None:
        return "installing SLURM needs apt-get (Debian/Ubuntu)"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _slurm_usable()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    state = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True,
                           timeout=30).stdout.split()
    assert "idle" in state or "mix" in state, state


def _run(tmp_path, name, *args):
    work = copy_workflow(tmp_path / name)
    write_yaml(work / "config" / "tiny-demo.yaml", TINY_DEMO)
    snakemake(work, TARGET, *args, "--configfile", "config/demo.yaml", "config/tiny-demo.yaml",
              timeout=600)
    return work


def test_slurm_profile_runs_demo_cells_like_a_local_run(slurm_cluster, tmp_path):
    # the SLURM run mostly waits between status checks: run the local one meanwhile
    with ThreadPoolExecutor(max_workers=1) as pool:
        local_run = pool.submit(_run, tmp_path, "local")
        on_slurm = _run(
            tmp_path, "slurm", "--profile", str(REPO / "profiles" / "slurm"),
            # this test cluster: no GPUs, no accounts, jobs of seconds (poll soon), keep SLURM's logs
            "--set-resources", "train:gpu=0", "evaluate:gpu=0", "train:mem_mb=2000",
            "evaluate:mem_mb=2000",
            "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
            "--slurm-keep-successful-logs",
        )
        local = local_run.result()
    # the jobs ran as SLURM jobs: one SLURM log per rule job
    slurm_logs = {part for p in (on_slurm / ".snakemake" / "slurm_logs").rglob("*.log")
                  for part in p.parts if part.startswith("rule_")}
    assert {"rule_prepare_data", "rule_train", "rule_evaluate"} <= slurm_logs, slurm_logs
    a = pd.read_parquet(local / TARGET)
    b = pd.read_parquet(on_slurm / TARGET)
    assert set(a["eval_kind"]) == {"clean", "health", "pgd", "apgd-ce", "apgd-t", "worst", "worst-white-box",
                                   "clean-subset", "pgd-subset", "sanity", "square"}
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
