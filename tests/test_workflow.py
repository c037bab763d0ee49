"""The Snakemake workflow: DAG shape, reruns of exactly the stale cells, lint and format, conda envs.

Every test works on a copy of the workflow (Snakefile, workflow/, config/, envs/, profiles/) in a
temporary folder. One tiny grid (a BreastMNIST subset, two archs, standard and Linf training, one
epoch) is run for real once per module; the rerun checks are dry-runs against its outputs and
Snakemake's metadata, and parse which jobs Snakemake schedules.
"""

from __future__ import annotations

import base64
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import headless
from packaging.requirements import InvalidRequirement, Requirement

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED_MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"
WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "envs", "profiles")
CELL_RULES = ("train", "evaluate")

# the tiny grid run for real: 1 task x 2 archs x (none-0, linf-2/255) x 1 seed
TINY_ARCHS = ("cnn-small", "resnet18")
TINY_SETTINGS = ("none-0", "linf-2o255")


def tiny_config(source_dir: Path) -> dict:
    """config/config.yaml with the grid, hyperparameters and resources replaced by tiny ones, and
    the corrupted test sets and the feature datasets turned off."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    hp = dict(epochs=1, batch_size=32, lr=0.01, optimizer="sgd", schedule="constant",
              weight_decay=0.0, momentum=0.9, attack_steps=1, attack_step_size=None,
              stop_train_acc=None, standard={}, adversarial={})
    cfg.update({
        "source_dir": str(source_dir),
        "data_seed": 0,
        "tasks": ["breastmnist"],
        "sizes": [28],
        "archs": list(TINY_ARCHS),
        "seeds": [0],
        "train_grid": {"none": [0], "linf": ["2/255"]},
        "attack_grid": {"linf": ["2/255"]},
        "evaluate": {"attack_steps": 2, "restarts": 1,
                     "strong": {"iterations": 3, "samples": 16, "apgd_targets": 1, "square_queries": 10},
                     "sanity": {"samples": 16, "square_queries": 10, "square_samples": 8}},
        # the headline's robust column of the one attack norm
        "headline": {"eps": {"linf": "2/255", "l2": 0.5},
                     "columns": ["clean", "robust_linf", "corruption", "be", "rbe", "drand", "ddet", "drobust"]},
        "hparams": {arch: dict(hp) for arch in TINY_ARCHS},
        "resources": {"default": {"threads": 1, "mem_mb": 1000, "runtime": 10, "gpu": 0}},
    })
    if "shift" in cfg:
        cfg["shift"]["enabled"] = False
    if "features" in cfg:
        cfg["features"]["datasets"] = []
    return cfg


# ------------------------------------------------------------------------------------ helpers
def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` not found beside {sys.executable} or on PATH; "
                    "install the test tools (pip install -e .[test])")
    return found


def tool_env(**extra) -> dict:
    """PATH with this interpreter's bin first, so jobs find the `medgrid` console script."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def copy_workflow(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst / part)
    return dst


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def snakemake(workdir: Path, *args, check: bool = True, timeout: int = 600, env=None):
    cmd = [tool("snakemake"), "--cores", "2", *map(str, args)]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env=env or tool_env())
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}) in {workdir}:\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@dataclass
class Job:
    rule: str
    output: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    input: list[str] = field(default_factory=list)
    reason: str = ""
    shell: str = ""


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of a `snakemake --dry-run` listing (rule, output, log, input, reason, shell command)."""
    jobs: list[Job] = []
    for line in text.splitlines():
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\S+):$", line)
        if m:
            jobs.append(Job(m.group(1)))
            continue
        if not jobs:
            continue
        m = re.match(r"^    (input|output|log|reason): (.*)$", line)
        if m:
            key, value = m.groups()
            if key == "reason":
                jobs[-1].reason = value
            else:
                getattr(jobs[-1], key).extend(v.strip() for v in value.split(", ") if v.strip())
        elif line.startswith("Shell command: "):
            jobs[-1].shell = line[len("Shell command: "):]
    return jobs


def dry_run(workdir: Path, *args, **kw) -> list[Job]:
    proc = snakemake(workdir, "--dry-run", *args, **kw)
    text = proc.stdout + "\n" + proc.stderr
    jobs = parse_dry_run(text)
    if not jobs:
        assert "Nothing to be done" in text, text[-3000:]
    return jobs


def by_rule(jobs: list[Job]) -> dict[str, list[Job]]:
    out: dict[str, list[Job]] = {}
    for job in jobs:
        out.setdefault(job.rule, []).append(job)
    return out


def cell_dir(arch: str, setting: str, task="breastmnist", size=28, seed=0) -> str:
    return f"results/{task}/{size}/{arch}/{setting}/seed{seed}"


def cells_of(jobs: list[Job], rule: str) -> set[str]:
    """The cell folders whose `rule` jobs are scheduled."""
    return {str(Path(job.output[0]).parents[0 if rule == "train" else 1]) for job in jobs
            if job.rule == rule}


def assert_reruns_exactly(jobs: list[Job], changed_cells: set[str], all_cells: set[str]):
    """The changed cells are trained (or evaluated) again, no job writes into another cell, the
    data is not prepared again and the summary is rebuilt."""
    rules = by_rule(jobs)
    assert "prepare_data" not in rules, [j.output for j in rules["prepare_data"]]
    assert "aggregate" in rules, sorted(rules)
    untouched = all_cells - changed_cells
    for job in jobs:
        for out in job.output:
            assert not any(out.startswith(c + "/") for c in untouched), (job.rule, out, job.reason)
    assert cells_of(jobs, "evaluate") == changed_cells


# A sitecustomize module for the tiny run's jobs: records the top-level modules that import
# statements in medgrid's code (module level or inside functions) ask for, and prints them on exit.
RECORD_IMPORTS = """
import atexit, builtins, sys

_seen = set()
_import = builtins.__import__


def _recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and globals and str(globals.get("__name__", "")).split(".")[0] == "medgrid":
        _seen.add(name.split(".")[0])
    return _import(name, globals, locals, fromlist, level)


builtins.__import__ = _recording_import
atexit.register(lambda: _seen and print("medgrid-imports:", *sorted(_seen), file=sys.stderr))
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A folder of 'already-downloaded' MedMNIST files: a BreastMNIST subset (64/16/32 images),
    from ../shared/data/medmnist when it is there, else random images of the same layout."""
    folder = tmp_path_factory.mktemp("medmnist")
    rng = np.random.default_rng(0)
    counts = {"train": 64, "val": 16, "test": 32}
    arrays = {}
    source = SHARED_MEDMNIST / "breastmnist.npz"
    if source.exists():
        with np.load(source) as z:
            for split, n in counts.items():
                labels = z[f"{split}_labels"]
                # both classes in every split: the first n/2 of each
                idx = np.concatenate([np.flatnonzero(labels[:, 0] == c)[: n // 2] for c in (0, 1)])
                arrays[f"{split}_images"] = z[f"{split}_images"][idx]
                arrays[f"{split}_labels"] = labels[idx]
    else:
        for split, n in counts.items():
            arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    np.savez(folder / "breastmnist.npz", **arrays)
    os.chmod(folder / "breastmnist.npz", 0o444)
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_data):
    """The tiny grid run for real in a copy of the workflow whose config/config.yaml is the tiny
    config. Each job's log ends with the modules medgrid's code imported (RECORD_IMPORTS)."""
    work = copy_workflow(tmp_path_factory.mktemp("tiny") / "wf")
    write_yaml(work / "config" / "config.yaml", tiny_config(tiny_data))
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tiny_data.iterdir()}
    hook = tmp_path_factory.mktemp("hook")
    (hook / "sitecustomize.py").write_text(RECORD_IMPORTS)
    pythonpath = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    snakemake(work, timeout=1500, env=tool_env(PYTHONPATH=pythonpath))
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tiny_data.iterdir()}
    assert after == before, "the workflow wrote into config source_dir"
    return work


TINY_CELLS = {cell_dir(a, s) for a in TINY_ARCHS for s in TINY_SETTINGS}


# ------------------------------------------------------------------------------------ DAG shape
def test_default_config_builds_the_paper_grid_offline(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    cfg = yaml.safe_load((work / "config" / "config.yaml").read_text())
    settings = sum(len(v) for v in cfg["train_grid"].values())
    grid = len(cfg["tasks"]) * len(cfg["sizes"]) * len(cfg["archs"]) * settings * len(cfg["seeds"])
    assert grid == 5 * 1 * 2 * 8 * 3
    jobs = dry_run(work)
    rules = by_rule(jobs)
    assert len(rules["train"]) == grid
    assert len(rules["evaluate"]) == grid
    assert len(rules["prepare_data"]) == len(cfg["tasks"]) * len(cfg["sizes"])
    assert len(rules["aggregate"]) == 1
    assert len(rules["all"]) == 1
    # every cell's table reaches the summary
    (agg,) = rules["aggregate"]
    assert {j.output[0] for j in rules["evaluate"]} <= set(agg.input)
    # canonical cell folders, e.g. linf-2o255 for 2/255 and l2-0.25
    folders = {Path(j.output[0]).parent.parent.name for j in rules["train"]}
    assert folders == {"none-0", "linf-1o255", "linf-2o255", "linf-4o255", "linf-8o255",
                       "l2-0.25", "l2-0.5", "l2-1"}
    # a dry-run downloads nothing
    assert not (work / "resources").exists()


def test_demo_config_dag(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    jobs = dry_run(work, "--configfile", "config/demo.yaml")
    rules = by_rule(jobs)
    assert len(rules["prepare_data"]) == 1  # one task (config/demo.yaml: the demo's time)
    assert len(rules["train"]) == len(rules["evaluate"]) == 4
    cmds = {j.output[0]: j.shell for j in rules["train"]}
    std = cmds["results/synthetic/28/cnn-small/none-0/seed0/model.pt"]
    adv = cmds["results/synthetic/28/cnn-small/linf-2o255/seed0/model.pt"]
    assert "--stop-train-acc 0.995" in std and "--attack-steps" not in std
    assert "--eps 2/255" in adv and "--attack-steps 5" in adv
    assert all("--source" not in j.shell and "--data-seed 0 --n-train 2000 --n-val 500 --n-test 500" in j.shell
               for j in rules["prepare_data"])
    # rules pass files: no command is given a folder of data to find its file in
    assert not [j.shell for j in jobs if "--data-dir" in j.shell or "dirname" in j.shell]
    for job in rules["train"] + rules["evaluate"] + rules["shift_evaluate"] + rules["features_nonrobust"]:
        assert re.search(r"--data resources/data/synthetic(-rgb)?\.npz ", job.shell), job.shell
    for job in rules["shift_evaluate"]:
        assert "--shift-sets resources/medmnist-c/28/synthetic" in job.shell


def test_local_data_config_copies_instead_of_downloading(tmp_path):
    if not SHARED_MEDMNIST.is_dir():
        pytest.skip(f"no already-downloaded MedMNIST files at {SHARED_MEDMNIST}")
    # the config as shipped: source_dir ../shared/data/medmnist, relative to the working directory
    work = copy_workflow(tmp_path / "wf")
    (tmp_path / "shared").symlink_to(SHARED_MEDMNIST.parents[1], target_is_directory=True)
    jobs = dry_run(work, "--configfile", "config/local-data.yaml")
    prep = by_rule(jobs)["prepare_data"]
    assert sorted(j.output[0] for j in prep) == [
        "resources/data/breastmnist.npz", "resources/data/pneumoniamnist.npz"]
    for job in prep:
        name = Path(job.output[0]).name
        assert job.input == [f"../shared/data/medmnist/{name}"]
        assert f"--source ../shared/data/medmnist/{name}" in job.shell and f"--out resources/data/{name}" in job.shell
    train = [j.output[0] for j in by_rule(jobs)["train"]]
    assert len(train) == 2 * 1 * (6 + 4) * 3  # PGD-AT's 6 settings, TRADES and FGSM-RS at 2 epsilons each
    assert sum("/trades-beta6/linf-" in t for t in train) == sum("/fgsm-rs/linf-" in t for t in train) == 2 * 2 * 3


def test_deprecated_data_dir_is_read_as_source_dir(tmp_path, tiny_data):
    work = copy_workflow(tmp_path / "wf")
    write_yaml(work / "config" / "old.yaml", {"data_dir": str(tiny_data), "tasks": ["breastmnist"], "sizes": [28],
                                              "archs": ["cnn-small"], "seeds": [0], "train_grid": {"none": [0]},
                                              "shift": {"enabled": False}, "features": {"datasets": []}})
    proc = snakemake(work, "--dry-run", "--configfile", "config/old.yaml")
    assert "config key data_dir is deprecated: it is now source_dir" in proc.stderr
    (prep,) = by_rule(parse_dry_run(proc.stdout))["prepare_data"]
    assert f"--source {tiny_data}/breastmnist.npz" in prep.shell


def test_strong_epsilons_must_be_in_the_attack_grid(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    write_yaml(work / "config" / "bad.yaml", {"evaluate": {"strong": {"epsilons": {"linf": ["16/255"], "l2": [0.5]}}}})
    proc = snakemake(work, "--dry-run", "--configfile", "config/bad.yaml", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "evaluate.strong.epsilons.linf 16/255 not in attack_grid.linf" in text, text[-2000:]


def test_epsilons_have_one_canonical_token(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    write_yaml(work / "config" / "eps.yaml", {
        "tasks": ["synthetic"], "archs": ["cnn-small"], "seeds": [0],
        "train_grid": {"none": [0], "linf": [2 / 255, "4/255", 0.01], "l2": [0.5, 1.0]},
        "shift": {"enabled": False}, "features": {"datasets": []}})
    jobs = dry_run(work, "--configfile", "config/eps.yaml")
    train = {Path(j.output[0]).parent.parent.name: j.shell for j in by_rule(jobs)["train"]}
    assert set(train) == {"none-0", "linf-2o255", "linf-4o255", "linf-0.01", "l2-0.5", "l2-1"}
    assert "--eps 2/255" in train["linf-2o255"] and "--eps 0.01" in train["linf-0.01"]
    # two spellings of one epsilon are one cell: refused as a duplicate
    write_yaml(work / "config" / "dup.yaml", {"train_grid": {"linf": ["2/255", 2 / 255]}})
    proc = snakemake(work, "--dry-run", "--configfile", "config/dup.yaml", check=False)
    assert proc.returncode != 0 and "listed twice" in proc.stderr + proc.stdout
    # a non-canonical spelling of a cell path matches no rule
    proc = snakemake(work, "--dry-run", "results/synthetic/28/cnn-small/l2-0.50/seed0/model.pt",
                     "--configfile", "config/eps.yaml", check=False)
    assert proc.returncode != 0
    assert "MissingRuleException" in proc.stderr + proc.stdout


@pytest.mark.parametrize("override, message", [
    ({"tasks": ["chestmnist"]}, "chestmnist"),
    ({"archs": ["vgg16"]}, "vgg16"),
    ({"train_grid": {"l2": [-0.5]}}, "-0.5"),
    ({"hparams": {"cnn-small": {"lr": "fast"}}}, "fast"),
])
def test_schema_rejects_bad_config(tmp_path, override, message):
    work = copy_workflow(tmp_path / "wf")
    write_yaml(work / "config" / "bad.yaml", override)
    proc = snakemake(work, "--dry-run", "--configfile", "config/bad.yaml", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ValidationError" in text and message in text, text[-2000:]


def test_headline_epsilons_must_be_attacked(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    write_yaml(work / "config" / "bad.yaml", {"headline": {"eps": {"linf": "3/255"}}})
    proc = snakemake(work, "--dry-run", "--configfile", "config/bad.yaml", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "headline.eps.linf 3/255 is not in attack_grid.linf" in text, text[-2000:]
    # without its column, the epsilon is not used; the table rule gets the columns and the PGD steps
    write_yaml(work / "config" / "ok.yaml", {"headline": {"eps": {"linf": "3/255"}, "columns": ["clean", "robust_l2"]}})
    (table,) = by_rule(dry_run(work, "--configfile", "config/ok.yaml"))["table"]
    assert "--columns clean,robust_l2" in table.shell and "--pgd-steps 20" in table.shell
    assert "--l2-eps 0.5" in table.shell and table.output == [
        "results/tables/headline.html", "results/tables/headline.csv", "results/tables/headline.tex"]


# ------------------------------------------------------------------------------------ reruns
def test_complete_run_has_nothing_to_do(tiny_run):
    assert dry_run(tiny_run) == []
    summary = pd.read_parquet(tiny_run / "results" / "summary.parquet")
    cells = summary.groupby(["arch", "train_norm", "train_eps"]).size()
    assert len(cells) == len(TINY_CELLS)
    # the strong evaluation of a two-class task (APGD-CE and Square), the worst cases, the clean and PGD rows
    # of the same images and the masking checks of every cell (transfer: the adversarially trained ones)
    assert set(summary["eval_kind"]) == {"clean", "health", "pgd", "apgd-ce", "square", "worst", "worst-white-box",
                                         "clean-subset", "pgd-subset", "sanity", "transfer"}
    assert set(summary[summary.train_norm == "none"].eval_kind) >= {"worst", "sanity"}
    assert (tiny_run / "results" / "charts" / "audit.html").is_file()
    assert (tiny_run / "resources" / "data" / "breastmnist.npz").is_file()
    # every model's training history, and the training-curve chart of the report
    history = pd.read_parquet(tiny_run / "results" / "history.parquet")
    assert len(history.groupby(["arch", "train_norm", "train_eps"])) == len(TINY_CELLS)
    assert history.selected.sum() == len(TINY_CELLS)
    for fmt in ("html", "png", "svg"):
        assert (tiny_run / "results" / "charts" / f"training_curves.{fmt}").stat().st_size > 1000
    assert "no rows yet" not in (tiny_run / "results" / "charts" / "training_curves.svg").read_text()
    for cell in TINY_CELLS:
        for name in ("train.log", "train.benchmark.tsv", "evaluate.log", "evaluate.benchmark.tsv"):
            assert (tiny_run / cell.replace("results/", "logs/", 1) / name).is_file(), (cell, name)


def test_learning_rate_of_one_arch_reruns_that_arch_only(tiny_run):
    write_yaml(tiny_run / "config" / "lr.yaml", {"hparams": {"cnn-small": {"lr": 0.02}}})
    jobs = dry_run(tiny_run, "--configfile", "config/lr.yaml")
    changed = {cell_dir("cnn-small", s) for s in TINY_SETTINGS}
    assert cells_of(jobs, "train") == changed
    assert all("Params have changed" in j.reason for j in jobs if j.rule == "train")
    assert all("--lr 0.02" in j.shell for j in jobs if j.rule == "train")
    assert_reruns_exactly(jobs, changed, TINY_CELLS)


def test_adversarial_setting_reruns_adversarial_cells_only(tiny_run):
    write_yaml(tiny_run / "config" / "steps.yaml", {"hparams": {"resnet18": {"attack_steps": 2}}})
    jobs = dry_run(tiny_run, "--configfile", "config/steps.yaml")
    changed = {cell_dir("resnet18", "linf-2o255")}
    assert cells_of(jobs, "train") == changed
    assert_reruns_exactly(jobs, changed, TINY_CELLS)


def test_eps_warmup_reaches_adversarial_cells_only(tiny_run):
    # left out, the key changes no command (so no cell of an existing run reruns)
    assert not [j.shell for j in dry_run(tiny_run, "--forceall") if "--eps-warmup-epochs" in j.shell]
    write_yaml(tiny_run / "config" / "warmup.yaml", {"hparams": {"cnn-small": {"eps_warmup_epochs": 0}}})
    jobs = dry_run(tiny_run, "--configfile", "config/warmup.yaml")
    changed = {cell_dir("cnn-small", "linf-2o255")}
    assert cells_of(jobs, "train") == changed
    assert all("--eps-warmup-epochs 0" in j.shell for j in jobs if j.rule == "train")
    assert_reruns_exactly(jobs, changed, TINY_CELLS)


def test_new_epsilon_schedules_only_new_cells(tiny_run):
    write_yaml(tiny_run / "config" / "eps.yaml", {"train_grid": {"linf": ["2/255", "4/255"]}})
    jobs = dry_run(tiny_run, "--configfile", "config/eps.yaml")
    new = {cell_dir(a, "linf-4o255") for a in TINY_ARCHS}
    assert cells_of(jobs, "train") == new
    assert all("Missing output files" in j.reason for j in jobs if j.rule in CELL_RULES)
    assert_reruns_exactly(jobs, new, TINY_CELLS | new)
    (agg,) = by_rule(jobs)["aggregate"]
    assert len([t for t in agg.input if t.endswith("eval.parquet")]) == len(TINY_CELLS) + 2


def test_attack_grid_change_reevaluates_without_retraining(tiny_run):
    write_yaml(tiny_run / "config" / "attack.yaml", {"attack_grid": {"linf": ["2/255", "4/255"]}})
    jobs = dry_run(tiny_run, "--configfile", "config/attack.yaml")
    assert cells_of(jobs, "train") == set()
    assert_reruns_exactly(jobs, TINY_CELLS, TINY_CELLS)


def test_deleted_checkpoint_reruns_that_cell_only(tiny_run):
    cell = cell_dir("cnn-small", "linf-2o255")
    model = tiny_run / cell / "model.pt"
    aside = model.with_name("model.pt.aside")
    model.rename(aside)
    try:
        jobs = dry_run(tiny_run)
    finally:
        aside.rename(model)
    assert cells_of(jobs, "train") == {cell}
    assert_reruns_exactly(jobs, {cell}, TINY_CELLS)
    assert dry_run(tiny_run) == []


# ---------------------------------------------------------------------- Ilyas et al.'s datasets (features.smk)
def features_jobs(jobs: list[Job]) -> dict[str, dict[str, Job]]:
    """The features rules' jobs by rule, then by their first output."""
    return {rule: {j.output[0]: j for j in js} for rule, js in by_rule(jobs).items()
            if rule.startswith(("features_", "train_features", "evaluate_features"))}


def test_demo_features_dag_models_and_alignment(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    rules = features_jobs(dry_run(work, "--configfile", "config/demo.yaml"))
    base = "results/synthetic/28/cnn-small/none-0/seed0/features"
    # one setting (Ilyas' attack): the plain names; 3 models per dataset, the first where it always was
    assert f"{base}/drand.npz" in rules["features_nonrobust"] and len(rules["features_nonrobust"]) == 2
    assert "--steps 100 --batch-size 250" in rules["features_nonrobust"][f"{base}/drand.npz"].shell
    first = rules["train_features"][f"{base}/drand/model.pt"].shell
    assert "--model-seed" not in first and "--train-data drand " in first
    assert len(rules["train_features"]) == 3 and len(rules["train_features_model"]) == 6
    for k in (1, 2):
        later = rules["train_features_model"][f"{base}/drand/model{k}/model.pt"].shell
        assert later == first.replace("/drand/model.pt", f"/drand/model{k}/model.pt").replace(
            "features-drand-train.log", f"features-drand-model{k}-train.log").replace(
            " --data-on", f" --model-seed {k} --data-on")
    # D_rand / D_det models are evaluated clean; the D_R models under attack too
    evaluations = {**rules["evaluate_features"], **rules["evaluate_features_model"]}
    assert len(evaluations) == 9
    for out, job in evaluations.items():
        attacked = "/drobust/" in out
        assert ("--attack-norm linf --attack-eps 2/255,4/255" in job.shell) == attacked, job.shell
        assert ("--transfer-from" in job.shell) == attacked
    # the texture alignment of every D_rand / D_det dataset, with the task's data seed
    assert len(rules["features_alignment"]) == 2
    job = rules["features_alignment"][f"{base}/ddet.alignment.parquet"]
    assert "--name ddet" in job.shell and "--data-seed 0" in job.shell and f"{base}/ddet.npz" in job.input


def test_attack_sweep_makes_one_construction_per_setting(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    write_yaml(work / "config" / "sweep.yaml", {"features": {"nonrobust": {"eps": [0.25, 0.5], "steps": [10, 100]},
                                                         "model_seeds": 2}})
    rules = features_jobs(dry_run(work, "--configfile", "config/demo.yaml", "config/sweep.yaml"))
    base = "results/synthetic/28/cnn-small/none-0/seed0/features"
    made = {Path(o).name for o in rules["features_nonrobust"] if o.startswith(base)}
    settings = [("0.25", 10), ("0.25", 100), ("0.5", 10), ("0.5", 100)]
    assert made == {f"{k}-l2-{e}-{n}x0.1.npz" for k in ("drand", "ddet") for e, n in settings}
    for e, n in settings:
        job = rules["features_nonrobust"][f"{base}/ddet-l2-{e}-{n}x0.1.npz"]
        assert f"--mode det --norm l2 --eps {e} --step-size 0.1 --steps {n} " in job.shell
        train = rules["train_features"][f"{base}/ddet-l2-{e}-{n}x0.1/model.pt"]
        assert f"--train-data ddet-l2-{e}-{n}x0.1 " in train.shell
        assert f"{base}/ddet-l2-{e}-{n}x0.1/model1/model.pt" in rules["train_features_model"]
    assert len(rules["features_alignment"]) == 8 and len(rules["features_robust"]) == 1
    # a setting listed twice (0.5 and 1/2) is refused
    write_yaml(work / "config" / "twice.yaml", {"features": {"nonrobust": {"eps": [0.5, "1/2"]}}})
    proc = snakemake(work, "--dry-run", "--configfile", "config/demo.yaml", "config/twice.yaml", check=False)
    assert proc.returncode != 0 and "lists the setting l2-0.5-100x0.1 twice" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def features_run(tmp_path_factory, tiny_data):
    """A tiny grid (cnn-small, none-0 and linf-2/255) with D_rand, D_det and D_R and one model per dataset (as
    medgrid trained before model_seeds existed), run for real."""
    work = copy_workflow(tmp_path_factory.mktemp("features") / "wf")
    cfg = tiny_config(tiny_data)
    cfg.update(archs=["cnn-small"], hparams={"cnn-small": cfg["hparams"]["cnn-small"]})
    cfg["features"].update(datasets=["drand", "ddet", "drobust"], model_seeds=1, batch_size=32,
                           nonrobust={**cfg["features"]["nonrobust"], "steps": 2},
                           robust={"source": {"norm": "linf", "eps": "2/255"}, "steps": 2, "step_size": 0.1,
                                   "init": "other"})
    write_yaml(work / "config" / "config.yaml", cfg)
    snakemake(work, timeout=1500)
    return work


def test_more_models_per_dataset_leave_the_first_alone(features_run):
    assert dry_run(features_run) == []
    write_yaml(features_run / "config" / "models.yaml", {"features": {"model_seeds": 3}})
    jobs = dry_run(features_run, "--configfile", "config/models.yaml")
    rules = by_rule(jobs)
    # only the new models: nothing is constructed or trained again, the first models are not evaluated again
    assert set(rules) == {"train_features_model", "evaluate_features_model", "aggregate", "history", "charts",
                          "table", "all"}, sorted(rules)
    new = sorted(j.output[0] for j in rules["train_features_model"])
    cells = ["none-0/seed0/features/drand", "none-0/seed0/features/ddet", "linf-2o255/seed0/features/drobust"]
    assert new == sorted(f"results/breastmnist/28/cnn-small/{c}/model{k}/model.pt" for c in cells for k in (1, 2))
    summary = pd.read_parquet(features_run / "results" / "summary.parquet")
    made = summary[summary.train_data != "original"]
    assert set(made.model_seed) == {0} and set(made[made.train_data == "drand"].construction) == {"l2-0.5-2x0.1"}
    # the D_rand / D_det models' rows are clean ones; the D_R model's include the attacks
    assert set(made[made.train_data == "drand"].eval_kind) == {"clean", "health", "features"}
    assert "pgd" in set(made[made.train_data == "drobust"].eval_kind)
# ------------------------------------------------------------------------------------ training methods
# The tiny config's train commands as medgrid wrote them before training methods existed (commit 3fe0e31): an
# existing config keeps its cell paths, logs and commands, so an upgrade reruns nothing.
TINY_TRAIN_COMMANDS = {
    f"{cell_dir(arch, setting)}/model.pt":
        f"medgrid train --task breastmnist --size 28 --arch {arch} --norm {norm} --eps {eps} --seed 0"
        f" --data resources/data/breastmnist.npz --out {cell_dir(arch, setting)}/model.pt"
        + (" --attack-steps 1" if norm != "none" else "")
        + " --batch-size 32 --epochs 1 --lr 0.01 --momentum 0.9 --optimizer sgd --schedule constant"
          f" --weight-decay 0.0 --data-on auto --threads 1 > {cell_dir(arch, setting).replace('results/', 'logs/', 1)}"
          "/train.log 2>&1"
    for arch in TINY_ARCHS for setting, norm, eps in (("none-0", "none", "0"), ("linf-2o255", "linf", "2/255"))
}
METHOD_GRID = {"train_grid": {"trades": {"linf": ["2/255"], "beta": [6]}, "fgsm-rs": {"linf": ["2/255"]}}}
METHOD_CELLS = {cell_dir(a, s) for a in TINY_ARCHS for s in ("trades-beta6/linf-2o255", "fgsm-rs/linf-2o255")}


def test_an_old_config_keeps_its_cell_paths_and_commands(tiny_run):
    jobs = by_rule(dry_run(tiny_run, "--forceall"))
    assert {j.output[0]: j.shell for j in jobs["train"]} == TINY_TRAIN_COMMANDS
    assert sorted(j.output[0] for j in jobs["evaluate"]) == sorted(
        f"{c}/metrics/eval.parquet" for c in TINY_CELLS)


def test_method_cells_get_a_folder_of_their_own_and_their_flags(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    write_yaml(work / "config" / "m.yaml", {
        "tasks": ["synthetic"], "archs": ["cnn-small"], "seeds": [0], "features": {"datasets": []},
        "shift": {"enabled": False},
        "train_grid": {"none": [0], "linf": ["8/255"], "l2": [],  # (lists replace config.yaml's, mappings merge)
                       "trades": {"linf": ["8/255"], "l2": [0.5], "beta": [1, 6.0]}, "fgsm-rs": {"linf": ["8/255"]}},
        "hparams": {"cnn-small": {"attack_steps": 3, "attack_step_size": 0.01, "trades": {"epochs": 2},
                                  "fgsm-rs": {"attack_step_size": 0.04}}}})
    train = {j.output[0].removeprefix("results/synthetic/28/cnn-small/"): j.shell
             for j in by_rule(dry_run(work, "--configfile", "config/m.yaml"))["train"]}
    assert set(train) == {f"{s}/seed0/model.pt" for s in (
        "none-0", "linf-8o255", "trades-beta1/linf-8o255", "trades-beta6/linf-8o255", "trades-beta1/l2-0.5",
        "trades-beta6/l2-0.5", "fgsm-rs/linf-8o255")}
    pgd, trades, fast = (train[f"{s}/seed0/model.pt"] for s in ("linf-8o255", "trades-beta6/linf-8o255",
                                                                   "fgsm-rs/linf-8o255"))
    assert "--method" not in pgd and "--epochs 40" in pgd and "--attack-step-size 0.01" in pgd
    assert "--method trades --beta 6 " in trades and "--epochs 2" in trades and "--attack-steps 3" in trades
    assert "--method fgsm-rs " in fast and "--attack-steps" not in fast and "--attack-step-size 0.04" in fast
    assert "logs/synthetic/28/cnn-small/fgsm-rs/linf-8o255/seed0/train.log" in fast
    # one beta twice is one cell: refused
    write_yaml(work / "config" / "dup.yaml", {"train_grid": {"trades": {"linf": ["2/255"], "beta": [6, 6.0]}}})
    proc = snakemake(work, "--dry-run", "--configfile", "config/dup.yaml", check=False)
    assert proc.returncode != 0 and "lists 6.0 twice" in proc.stdout + proc.stderr
    # fgsm-rs takes no attack_steps of its own
    write_yaml(work / "config" / "bad.yaml", {"hparams": {"cnn-small": {"fgsm-rs": {"attack_steps": 2}}}})
    proc = snakemake(work, "--dry-run", "--configfile", "config/bad.yaml", check=False)
    assert proc.returncode != 0 and "ValidationError" in proc.stdout + proc.stderr


def test_methods_train_through_the_workflow_beside_an_old_run(tiny_run, tmp_path):
    """The tiny run, completed by an older config, gains TRADES and FGSM-RS cells: only they are trained and
    evaluated, and the summary, history and headline carry their method."""
    work = tmp_path / "wf"
    shutil.copytree(tiny_run, work, symlinks=True)
    assert dry_run(work) == []
    write_yaml(work / "config" / "methods.yaml", METHOD_GRID)
    jobs = dry_run(work, "--configfile", "config/methods.yaml")
    assert cells_of(jobs, "train") == METHOD_CELLS
    assert_reruns_exactly(jobs, METHOD_CELLS, TINY_CELLS | METHOD_CELLS)
    snakemake(work, "--configfile", "config/methods.yaml", timeout=1500)
    assert dry_run(work, "--configfile", "config/methods.yaml") == []
    summary = pd.read_parquet(work / "results" / "summary.parquet")
    methods = summary.groupby(["arch", "train_method", "train_method_param"]).size()
    assert set(methods.index) == {(a, m, p) for a in TINY_ARCHS for m, p in (("pgd", 0.0), ("trades", 6.0),
                                                                             ("fgsm-rs", 0.0))}
    guard = summary[summary.metric == "catastrophic_overfitting"]
    assert set(guard.train_method) == {"fgsm-rs"} and len(guard) == len(TINY_ARCHS)
    history = pd.read_parquet(work / "results" / "history.parquet")
    assert set(history.train_method) == {"pgd", "trades", "fgsm-rs"}
    assert history[history.train_method == "fgsm-rs"].guard_pgd_acc.notna().all()
    csv = pd.read_csv(work / "results" / "tables" / "headline.csv")
    assert list(dict.fromkeys(csv[csv.arch == "cnn-small"].setting)) == [
        "standard", "L∞ 2/255", "TRADES β=6 L∞ 2/255", "FGSM-RS L∞ 2/255"]


# ------------------------------------------------------------------------------------ report
# a reader's first two clicks in the report: the first category under Results, then the eye button
# (view) of its first result
FIRST_CLICKS = """<script>
setTimeout(function () {
  var items = Array.from(document.querySelectorAll("nav li"));
  var heading = items.findIndex(function (li) { return li.textContent === "Results"; });
  items[heading + 1].querySelector("a").click();
  setTimeout(function () { document.querySelector('a[iconname="eye"]').click(); }, 500);
}, 1000);
</script>"""


def test_report_opens_with_the_headline_table(tiny_run, chromium, tmp_path):
    tables = tiny_run / "results" / "tables"
    csv = pd.read_csv(tables / "headline.csv", dtype={"text": str})
    # the tiny grid has no MedMNIST-C, feature or L2 rows: clean and L-inf columns, one seed: means only
    assert set(csv.column) == {"clean", "robust_linf"} and (csv.n_seeds == 1).all()
    assert set(csv.arch) == set(TINY_ARCHS) and set(csv.setting) == {"standard", "L∞ 2/255"}
    assert not csv.text.str.contains("±").any() and csv.low.isna().all()
    assert (tables / "headline.tex").read_text().count(r"\begin{tabular}") == len(TINY_ARCHS)
    summary = pd.read_parquet(tiny_run / "results" / "summary.parquet")
    clean = summary[(summary.eval_kind == "clean") & (summary.metric == "balanced_acc")]
    assert sorted(csv[csv.column == "clean"]["mean"]) == pytest.approx(sorted(clean.value))
    report = tiny_run / "results" / "report.html"
    snakemake(tiny_run, "--report", str(report))
    page = report.read_text()
    clicked = tmp_path / "report.html"
    clicked.write_text(page[:page.rindex("</body>")] + FIRST_CLICKS + page[page.rindex("</body>"):])
    proc = headless(chromium, clicked, tmp_path, "--dump-dom")
    dom = proc.stdout
    assert "At a glance" in dom, proc.stderr[-2000:]
    frame = re.search(r'<iframe src="data:text/html;charset=utf8;filename=([^;"]+);base64,([^"]+)"', dom)
    assert frame, "the first result of the first category did not open"
    assert frame.group(1) == "headline.html"
    assert base64.b64decode(frame.group(2)) == (tables / "headline.html").read_bytes()
    # the landing page points there too
    assert "showCategory('At%20a%20glance')" in dom


# ------------------------------------------------------------------------------------ style
def test_lint_is_clean(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    proc = snakemake(work, "--lint", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in text, text[-4000:]


def test_snakefmt_is_clean():
    proc = subprocess.run([tool("snakefmt"), "--check", "."], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# ------------------------------------------------------------------------------------ conda envs
def rule_envs() -> dict[str, Path]:
    """rule name -> the conda env file of its `conda:` directive (relative to its .smk file)."""
    envs = {}
    for smk in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = smk.read_text()
        for block in re.split(r"^(?=rule \S+:)", text, flags=re.M):
            m = re.match(r"rule (\S+):", block)
            if not m or m.group(1) == "all":
                continue
            env = re.search(r"^    conda:\s*\n\s+(?:\"([^\"]+)\"|medgrid_env\()", block, flags=re.M)
            assert env, f"rule {m.group(1)} in {smk.name} has no conda: directive"
            # medgrid_env(): envs/medgrid.yaml, or for jobs that request a GPU envs/medgrid-gpu.yaml, which names
            # everything medgrid.yaml does (tests/test_gpu_env.py)
            envs[m.group(1)] = (smk.parent / (env.group(1) or "../../envs/medgrid.yaml")).resolve()
    return envs


CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-cpu": "torch", "pytorch-gpu": "torch",
                 "matplotlib-base": "matplotlib"}


def norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def post_deploy_packages() -> set[str]:
    """What every env's post-deploy script installs with `pip install --no-deps NAME==VERSION` beside medgrid."""
    text = (REPO / "scripts" / "install_in_conda_env.sh").read_text()
    return {norm_name(m) for m in re.findall(r"pip install --no-deps ([A-Za-z0-9_.-]+)==", text)}


def env_packages(path: Path) -> set[str]:
    """The distributions an env file names, and those its post-deploy script adds."""
    spec = yaml.safe_load(path.read_text())
    names = post_deploy_packages()
    for dep in spec["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            name = re.split(r"[\s=<>!~\[;]", item.strip(), maxsplit=1)[0]
            if name and not name.startswith(("-", ".", "/")):
                names.add(CONDA_TO_PYPI.get(norm_name(name), norm_name(name)))
    return names


def closure(names: set[str]) -> set[str]:
    """The names and everything they require (non-extra requirements, transitively), as installed here."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in reqs:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is None or "extra" not in str(req.marker):
                todo.append(norm_name(req.name))
    return seen


def imported_top_modules(log_text: str) -> set[str]:
    """Third-party top-level modules medgrid's code imported in a job (RECORD_IMPORTS' line)."""
    found = set()
    for line in log_text.splitlines():
        if line.startswith("medgrid-imports: "):
            found |= set(line.split()[1:])
    return {m for m in found if m != "medgrid" and m not in sys.stdlib_module_names}


def test_env_files_parse_and_name_what_their_rules_import(tiny_run):
    envs = rule_envs()
    for path in sorted(set(envs.values())):
        assert path.is_file(), f"missing conda env file {path}"
        spec = yaml.safe_load(path.read_text())
        assert spec["channels"] and spec["dependencies"], path
        assert any(str(d).replace(" ", "") == "python=3.11" for d in spec["dependencies"]), path
        deploy = path.with_name(path.stem + ".post-deploy.sh")
        assert deploy.is_file(), f"{path.name}: no {deploy.name} installing medgrid"
        assert "scripts/install_in_conda_env.sh" in deploy.read_text(), deploy
    assert re.search(r"pip install .*-e \.", (REPO / "scripts" / "install_in_conda_env.sh").read_text())
    # which modules each rule's jobs imported in the tiny run
    listing = dry_run(tiny_run, "--forceall")
    dists = importlib.metadata.packages_distributions()
    checked, problems = set(), []
    for job in listing:
        if job.rule not in envs or not job.log:
            continue
        log = tiny_run / job.log[0]
        modules = imported_top_modules(log.read_text(errors="replace")) if log.exists() else set()
        if not modules:
            continue
        checked.add(job.rule)
        covered = closure(env_packages(envs[job.rule]))
        for module in sorted(modules):
            owners = {norm_name(d) for d in dists.get(module, [])}
            if not owners:
                problems.append(f"{job.rule}: imports {module}, which no installed distribution provides")
            elif not owners & covered:
                problems.append(f"{job.rule}: imports {module} ({', '.join(sorted(owners))}), "
                                f"not named in {envs[job.rule].name} nor required by what it names")
    assert {"prepare_data", "train", "evaluate", "aggregate"} <= checked, checked
    assert not problems, "\n".join(sorted(set(problems)))


def test_computing_jobs_logs_start_with_what_they_ran_on(tiny_run):
    """Every train and evaluate job's log opens with `medgrid info`'s short report (the rules' commands are
    unchanged: the commands print it when they pick their device)."""
    listing = dry_run(tiny_run, "--forceall")
    logs = [tiny_run / job.log[0] for job in listing if job.rule in ("train", "evaluate") and job.log]
    assert logs
    for log in logs:
        first = log.read_text(errors="replace").splitlines()[0]
        assert first.startswith("medgrid info: medgrid "), (log, first)
