"""Config validation, the grid and per-rule settings (grid logic only).

Everything the rules need that is more than a wildcard lives here, so the rules stay one `medgrid`
call each. The grid is the product tasks x sizes x archs x training settings x seeds; a cell is the folder
results/{task}/{size}/{arch}/{method}{norm}-{eps}/seed{seed}/, where {method} is empty for PGD-AT (the
default training method and standard training: their paths are those of every earlier medgrid) and the
method's folder otherwise (trades-beta6/, fgsm-rs/). The vocabulary (epsilon tokens, method segments, task
and corruption tables, chart registry) is medgrid's own, imported from the repository (plain Python: no
torch, numpy or medmnist), never copied here.
"""

import itertools
import math
import os
import re
import sys

import yaml

sys.path.insert(0, workflow.basedir)  # this repository's medgrid, installed or not
from medgrid import build_config, catalog, constructions, epsilon, names, train_method
from medgrid.config import unknown_keys, warmup_errors
from medgrid.errors import UserError
from medgrid.report import registry

from snakemake.utils import validate

# a misspelled key named with the closest valid one (the schema's own message dumps the whole config)
with open(f"{workflow.basedir}/workflow/schemas/config.schema.yaml") as _schema:
    _mistakes = unknown_keys(config, yaml.safe_load(_schema))
if _mistakes:
    raise ValueError("\n".join(_mistakes))
validate(config, schema="../schemas/config.schema.yaml")
_mistakes = warmup_errors(config["hparams"])
if _mistakes:
    raise ValueError("\n".join(_mistakes))


DATA_DIR = "resources/data"
ADVERSARIAL_ONLY = ("attack_steps", "attack_step_size", "eps_warmup_epochs")
# blocks of hparams.<arch> that override its settings for some cells: by kind, and by training method
HPARAM_BLOCKS = ("standard", "adversarial", *names.TRAIN_METHODS)

# renamed keys: the old name still works, with one line saying so
if config.get("data_dir") is not None:
    print(
        "medgrid: config key data_dir is deprecated: it is now source_dir (a folder of already-downloaded "
        "MedMNIST files)",
        file=sys.stderr,
    )
    if config.get("source_dir") is None:
        config["source_dir"] = config["data_dir"]
SOURCE_DIR = config.get("source_dir")


# ----------------------------------------------------------------------------- the grid
def _tokens(grid, what):
    """{norm: [canonical path tokens]} of an epsilon grid, sorted by value, duplicates refused."""
    out = {}
    for norm, values in grid.items():
        try:
            tokens = [epsilon.token(norm, v) for v in values]
        except UserError as exc:
            raise ValueError(f"config: {what}.{norm}: {exc}") from None
        dup = sorted({t for t in tokens if tokens.count(t) > 1})
        if dup:
            raise ValueError(
                f"config: {what}.{norm} epsilons {dup} are listed twice (perhaps as 0.5 and 0.50)"
            )
        if tokens:
            out[norm] = sorted(tokens, key=epsilon.parse)
    return out


def _method_grid(grid):
    """{method segment: (method, parameter, {norm: tokens})} of train_grid's other methods (e.g. trades:
    {linf: [...], beta: [1, 6]} gives trades-beta1/ and trades-beta6/), in names.TRAIN_METHODS order.
    """
    out = {}
    for method in names.TRAIN_METHODS:
        spec = grid.get(method)
        if method == names.DEFAULT_METHOD or spec is None:
            continue
        name = train_method.param_name(method)
        values = (spec.get(name) or [None]) if name else [None]
        norms = _tokens(
            {n: spec[n] for n in names.ATTACK_NORMS if n in spec},
            f"train_grid.{method}",
        )
        for value in values:
            try:
                segment = train_method.segment(method, value)
            except UserError as exc:
                raise ValueError(f"config: train_grid.{method}.{name}: {exc}") from None
            if segment in out:
                raise ValueError(
                    f"config: train_grid.{method}.{name} lists {value} twice (perhaps as 6 and 6.0)"
                )
            out[segment] = (method, train_method.param(method, value), norms)
    return out


TRAIN_GRID = _tokens(
    {n: v for n, v in config["train_grid"].items() if n in names.TRAIN_NORMS},
    "train_grid",
)
METHOD_GRID = _method_grid(config["train_grid"])
ATTACK_GRID = _tokens(config["attack_grid"], "attack_grid")
if TRAIN_GRID.get("none", ["0"]) != ["0"]:
    raise ValueError(
        "config: train_grid.none must be [0] (standard training has no epsilon)"
    )
# every training setting as (method segment, norm, eps token): PGD-AT's (segment "") first
SETTINGS = [("", n, e) for n, tokens in TRAIN_GRID.items() for e in tokens] + [
    (segment, n, e)
    for segment, (_, _, norms) in METHOD_GRID.items()
    for n, tokens in norms.items()
    for e in tokens
]
if not SETTINGS:
    raise ValueError("config: train_grid lists no training setting")
_missing = [a for a in config["archs"] if a not in config["hparams"]]
if _missing:
    raise ValueError(f"config: hparams has no entry for archs {_missing}")


def cells(**only):
    """Every cell of the grid as a dict of wildcards; keyword arguments keep matching cells only
    (e.g. cells(norm="none") for the standard models, method="" for PGD-AT's)."""
    for task, size, arch, (method, norm, eps), seed in itertools.product(
        config["tasks"], config["sizes"], config["archs"], SETTINGS, config["seeds"]
    ):
        cell = dict(
            task=task,
            size=size,
            arch=arch,
            method=method,
            norm=norm,
            eps=eps,
            seed=seed,
        )
        if all(str(cell[k]) == str(v) for k, v in only.items()):
            yield cell


def grid_paths(pattern, **only):
    """`pattern` (a path with cell wildcards, e.g. rules.evaluate.output.table) for every cell."""
    return [pattern.format(**cell) for cell in cells(**only)]


DATASETS = {
    catalog.file_stem(t, s): dict(task=t, size=s)
    for t, s in itertools.product(config["tasks"], config["sizes"])
}


def _alternatives(values):
    return "|".join(
        re.escape(str(v)) for v in sorted(set(map(str, values)), key=len, reverse=True)
    )


# Wildcards match exactly the values in the config, so one cell has one path.
wildcard_constraints:
    task=_alternatives(config["tasks"]),
    size=_alternatives(config["sizes"]),
    arch=_alternatives(config["archs"]),
    method=_alternatives(segment for segment, _, _ in SETTINGS) or "(?:)",  # "": PGD-AT
    norm=_alternatives(norm for _, norm, _ in SETTINGS),
    eps=_alternatives(eps for _, _, eps in SETTINGS),
    seed=_alternatives(config["seeds"]),
    dataset=_alternatives(DATASETS),
    model="[1-9][0-9]*",


# ----------------------------------------------------------------------------- targets
# Per-cell result tables that `medgrid aggregate` concatenates, and the final targets of `rule all`.
# Rule files append to these after defining their rules, e.g. in shift.smk:
#     RESULT_TABLES.extend(grid_paths(rules.shift_evaluate.output.table))
RESULT_TABLES = []
FINAL_TARGETS = []


def result_tables(wildcards=None):
    return RESULT_TABLES


def all_targets():
    """The inputs of the target rule `all`, as registered by the included rule files."""
    return FINAL_TARGETS


# ----------------------------------------------------------------------------- input and params
def data_file(task, size):
    """The prepared npz of a task at a size."""
    return f"{DATA_DIR}/{catalog.file_stem(task, size)}.npz"


def data_npz(wildcards):
    """The prepared npz of a cell's task and size."""
    return data_file(wildcards.task, wildcards.size)


def source_npz(wildcards):
    """The already-downloaded MedMNIST file that `prepare_data` copies, when config source_dir is set."""
    task = DATASETS[wildcards.dataset]["task"]
    if SOURCE_DIR and task not in names.SYNTHETIC_TASKS:
        return {"source": f"{SOURCE_DIR}/{wildcards.dataset}.npz"}
    return {}


def synthetic_splits():
    """{split: images} the config sets for the synthetic tasks (synthetic.n_train / n_val / n_test; unset ones
    are left out: the generator's defaults)."""
    sizes = config.get("synthetic") or {}
    return {s: sizes[f"n_{s}"] for s in names.SPLITS if sizes.get(f"n_{s}")}


def prepare_options(wildcards, input):
    """Seed of the synthetic tasks; copy instead of download when a source file is given."""
    task = DATASETS[wildcards.dataset]["task"]
    if task in names.SYNTHETIC_TASKS:
        split_flags = _flags({f"n_{s}": n for s, n in synthetic_splits().items()})
        return f"--data-seed {config['data_seed']} {split_flags}".rstrip()
    if "source" in input.keys():
        return f"--source {input.source}"
    return ""


def _flags(options):
    """{"batch_size": 128, "lr": 0.1, "x": None} -> "--batch-size 128 --lr 0.1" (None omitted)."""
    return " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in options.items() if v is not None
    )


def train_options(wildcards):
    """The training hyperparameters of a cell as CLI flags: the arch's settings, overridden by its
    `standard` or `adversarial` block and then, for an adversarial cell, by the block named after its
    training method (pgd, trades, fgsm-rs), followed by the method's flags (none for PGD-AT, so the
    commands of configs without method blocks never change). Attack settings reach adversarial cells only, so changing them does not rerun standard
    models; a single-step method (fgsm-rs) takes neither attack_steps nor the adversarial block's
    attack_step_size (PGD's), only its own block's."""
    hp = config["hparams"][wildcards.arch]
    kind = "standard" if wildcards.norm == "none" else "adversarial"
    merged = {k: v for k, v in hp.items() if k not in HPARAM_BLOCKS}
    merged.update(hp.get(kind, {}))
    if kind == "standard":
        merged = {k: v for k, v in merged.items() if k not in ADVERSARIAL_ONLY}
    method, value = METHOD_GRID.get(wildcards.method, (names.DEFAULT_METHOD, None))[:2]
    if method in names.SINGLE_STEP_METHODS:
        merged = {
            k: v
            for k, v in merged.items()
            if k not in ("attack_steps", "attack_step_size")
        }
    if kind == "adversarial":
        merged.update(hp.get(method, {}))
    flags = _flags(dict(sorted(merged.items())))
    method_flags = train_method.flags(method, value)
    return f"{flags} {method_flags}" if method_flags else flags


def attack_options(grid=None):
    """An attack grid (tokens; default the main one) as `medgrid evaluate` flags, one
    --attack-norm/--attack-eps pair per norm."""
    return " ".join(
        f"--attack-norm {norm} --attack-eps {','.join(epsilon.arg(norm, t) for t in tokens)}"
        for norm, tokens in (ATTACK_GRID if grid is None else grid).items()
    )


STRONG_GRID = _tokens(
    config["evaluate"].get("strong", {}).get("epsilons") or {},
    "evaluate.strong.epsilons",
)
for _norm, _tokens_of_norm in STRONG_GRID.items():
    _outside = [t for t in _tokens_of_norm if t not in ATTACK_GRID.get(_norm, [])]
    if _outside:
        raise ValueError(
            f"config: evaluate.strong.epsilons.{_norm} {', '.join(epsilon.arg(_norm, t) for t in _outside)} "
            f"not in attack_grid.{_norm} ({', '.join(epsilon.arg(_norm, t) for t in ATTACK_GRID.get(_norm, [])) or 'empty'}): "
            "the strong evaluation attacks PGD's survivors; add it there or drop it"
        )


def evaluate_options(attack_grid=None):
    """Flags of `medgrid evaluate`: PGD, the strong evaluation and the gradient-masking checks. The strong
    evaluation runs at evaluate.strong.epsilons (all of the evaluation's `attack_grid` when null). On a grid
    of its own (the features models': features.attack_grid) it runs at those of them in that grid, or at all
    of that grid when none is.
    """
    ev = config["evaluate"]
    grid = ATTACK_GRID if attack_grid is None else attack_grid
    strong, sanity = ev.get("strong", {}), ev.get("sanity", {})
    options = {"attack_steps": ev["attack_steps"], "restarts": ev["restarts"]}
    flags = ""
    if strong.get("enabled", True):
        attacks = strong.get("attacks")
        options.update(
            strong_attacks=",".join(attacks) if attacks else None,
            strong_schedule=strong.get("schedule", "adaptive"),
            strong_square_queries=strong.get("square_queries", 5000),
            strong_iterations=strong.get("iterations", 100),
            strong_samples=strong.get("samples"),
            apgd_targets=strong.get("apgd_targets", 9),
        )
        flags += " --strong"
        chosen = {
            norm: [t for t in tokens if t in grid.get(norm, [])]
            for norm, tokens in STRONG_GRID.items()
        }
        for norm, tokens in chosen.items():
            if tokens:
                flags += f" --strong-norm {norm} --strong-eps {','.join(epsilon.arg(norm, t) for t in tokens)}"
        if sanity.get("enabled", True):
            options.update(
                sanity_samples=sanity.get("samples", 200),
                sanity_tolerance=sanity.get("tolerance", 0.02),
                square_queries=sanity.get("square_queries", 1000),
                square_samples=sanity.get("square_samples", 100),
            )
            flags += " --sanity"
    return _flags(options) + flags


def transfer_source(wildcards):
    """The standard model of a cell's task, size, arch and seed, for the transfer check of every other
    model (adversarially trained cells and the models trained on D_rand / D_det / D_R).
    """
    ev = config["evaluate"]
    wanted = (
        ev.get("strong", {}).get("enabled", True)
        and ev.get("sanity", {}).get("enabled", True)
        and ev.get("sanity", {}).get("transfer", True)
    )
    standard_cell = wildcards.norm == "none" and "fset" not in wildcards.keys()
    if not wanted or standard_cell or clean_only(wildcards):
        return {}
    return {
        "source": rules.train.output.model.format(
            **{**dict(wildcards.items()), "method": "", "norm": "none", "eps": "0"}
        )
    }


def transfer_option(wildcards, input):
    return f"--transfer-from {input.source}" if "source" in input.keys() else ""


# ----------------------------------------------------------------------------- resources
def _rule_setting(rule, key):
    spec = config["resources"]
    return spec.get(rule, {}).get(key, spec["default"][key])


def threads_for(rule):
    return _rule_setting(rule, "threads")


def resource(rule, key):
    """mem_mb, runtime (minutes) or gpu of a rule: config resources.<rule>, else resources.default."""
    return _rule_setting(rule, key)


# ----------------------------------------------------------------------------- conda environments
# With --use-conda the rules that run medgrid's models use envs/medgrid.yaml, or envs/medgrid-gpu.yaml when
# their jobs request a GPU: a CUDA build of pytorch and the CUDA compiler, so that the environment's
# post-deploy script builds medgrid._C with its CUDA kernels wherever Snakemake creates it (a cluster's login
# node has no GPU and needs none for this). README, "On GPUs and clusters".
MEDGRID_ENV = "../../envs/medgrid.yaml"
MEDGRID_GPU_ENV = "../../envs/medgrid-gpu.yaml"


def gpu_env_cuda():
    """The CUDA version envs/medgrid-gpu.yaml pins (its cuda-version), read from the file."""
    with open(os.path.join(workflow.basedir, "envs", "medgrid-gpu.yaml")) as fh:
        for dep in yaml.safe_load(fh)["dependencies"]:
            if isinstance(dep, str) and dep.split()[0] == "cuda-version":
                return dep.split()[1].lstrip("=")
    raise ValueError("envs/medgrid-gpu.yaml pins no cuda-version")


def requested_gpus(rule, resource_key=None):
    """GPUs a rule's jobs request: --set-resources RULE:gpu=N (also from a profile's set-resources), else
    config resources.<resource_key or rule>.gpu. An override that is an expression counts as the config's.
    """
    overrides = getattr(workflow.resource_settings, "overwrite_resources", None) or {}
    given = overrides.get(rule, {}).get("gpu")
    given = getattr(given, "value", given)
    if isinstance(given, int):
        return given
    return int(resource(resource_key or rule, "gpu"))


GPU_ENV_RULES = set()


def medgrid_env(rule, resource_key=None):
    """The conda env file of a rule that runs medgrid's models (relative to the rule files)."""
    if requested_gpus(rule, resource_key) > 0:
        GPU_ENV_RULES.add(rule)
        return MEDGRID_GPU_ENV
    return MEDGRID_ENV


def set_conda_cuda_override():
    """conda solves a CUDA build of pytorch only where it sees a CUDA driver (its __cuda virtual package). On a
    machine without one (a login node) CONDA_OVERRIDE_CUDA is set to the env's CUDA version, unless the user
    has set it (medgrid.build_config.conda_cuda_override), with one line saying so."""
    uses_conda = "conda" in str(workflow.deployment_settings.deployment_method).lower()
    if GPU_ENV_RULES and uses_conda:
        release = build_config.conda_cuda_override(gpu_env_cuda())
        if release:
            print(
                f"medgrid: rules {', '.join(sorted(GPU_ENV_RULES))} request a GPU and use envs/medgrid-gpu.yaml; "
                f"no NVIDIA driver here, so CONDA_OVERRIDE_CUDA={release} for conda to solve its CUDA build",
                file=sys.stderr,
            )


# ----------------------------------------------------------------------------- memory of the data
# A job that loads images requests its rule's mem_mb (what it needs besides the data: torch, the
# model, one batch) plus DATA_FACTOR x the MiB of uint8 images it holds (medgrid.catalog.SPLIT_IMAGES).
# DATA_FACTOR is the bound benchmarks/memory.py measures (README, "Memory").
DATA_FACTOR = 1.5


def data_mib(task, size, splits):
    """MiB of uint8 images of `splits` (names, repeats count again) of a task at a size."""
    n = catalog.split_images(task)
    if task in names.SYNTHETIC_TASKS:
        n.update(synthetic_splits())
    return sum(n[s] for s in splits) * int(size) ** 2 * catalog.channels(task) / 2**20


def _task_and_size(wildcards, size):
    """The task and image size of a job: its wildcards (or its {dataset}), `size` if given."""
    if "dataset" in wildcards.keys():
        dataset = DATASETS[wildcards.dataset]
        return dataset["task"], dataset["size"]
    return wildcards.task, size if size is not None else wildcards.size


def prepared_splits(task):
    """The splits `medgrid prepare-data` holds: all of a generated synthetic task; of a MedMNIST
    task the test split (medmnist's download loads it; a copy is streamed)."""
    return names.SPLITS if task in names.SYNTHETIC_TASKS else ("test",)


def mem_mb(rule, splits=names.SPLITS, size=None):
    """The mem_mb of a rule's jobs: resources.<rule>.mem_mb plus DATA_FACTOR x the MiB of the images
    of `splits` (repeats: outputs of that size; or a function of the task) of the job's task, at its
    size or at `size`."""

    def get(wildcards):
        task, at = _task_and_size(wildcards, size)
        held = splits(task) if callable(splits) else splits
        return resource(rule, "mem_mb") + math.ceil(
            DATA_FACTOR * data_mib(task, at, held)
        )

    return get


def shift_prepare_mem_mb(wildcards):
    """resources.shift_prepare.mem_mb plus DATA_FACTOR x (the test set it reads: at 224 px, or
    five severities of it when downloaded, and the five corrupted copies it writes at the size)
    """
    task, size = wildcards.task, wildcards.size
    source = shift_source(task)
    at = 224 if source == "download" or shift_corrupt_at(task) == "224" else size
    read = data_mib(task, at, ("test",) * (5 if source == "download" else 1))
    mib = read + data_mib(task, size, ("test",) * 5)
    return resource("shift_prepare", "mem_mb") + math.ceil(DATA_FACTOR * mib)


# ----------------------------------------------------------------------------- corrupted test sets (shift.smk)
SHIFT = config["shift"]
SHIFT_ROOT = "resources/medmnist-c"
CALIBRATED_SIZE = 224  # medmnistc's corruptions are made for 224-px images


def shift_source(task):
    """download (official files) or generate; generated where MedMNIST-C has no file."""
    published = task not in names.SYNTHETIC_TASKS and task not in names.NOT_ON_ZENODO
    return "download" if SHIFT["source"] == "download" and published else "generate"


def shift_corrupt_at(task):
    """224 (the 224-px test set) or model_size; the synthetic tasks are corrupted at their own size."""
    return "model_size" if task in names.SYNTHETIC_TASKS else str(SHIFT["corrupt_at"])


def shift_archive(task):
    """MedMNIST-C's zip of a task, downloaded once by rule shift_fetch."""
    return f"{DATA_DIR}/medmnist-c/{task}.zip"


def shift_inputs(wildcards):
    """The cell's clean test set (labels are checked against it); when the 224-px test set is corrupted
    (or, with downloaded sets, resampled for their control) that file: from the grid's data when 224 is a
    grid size, else from shift_source_224; and MedMNIST-C's zip of the task for the downloaded sets.
    """
    inputs = {"data": data_npz(wildcards)}
    task, size = wildcards.task, int(wildcards.size)
    source = shift_source(task)
    from_224 = (source == "generate" and shift_corrupt_at(task) == "224") or (
        source == "download" and wildcards.corruption == names.RESAMPLE_CONTROL
    )
    if from_224 and size != CALIBRATED_SIZE:
        if CALIBRATED_SIZE in config["sizes"]:
            inputs["clean"] = data_file(task, CALIBRATED_SIZE)
        else:
            inputs["clean"] = (
                f"{SHIFT_ROOT}/source/{catalog.file_stem(task, CALIBRATED_SIZE)}.npz"
            )
    if source == "download" and wildcards.corruption != names.RESAMPLE_CONTROL:
        inputs["archive"] = shift_archive(task)
    return inputs


def shift_prepare_options(wildcards, input):
    options = _flags(
        {
            "source": shift_source(wildcards.task),
            "corrupt_at": shift_corrupt_at(wildcards.task),
            "upsample": SHIFT["upsample"],
            "corruption_seed": SHIFT["seed"],
            "data_seed": config["data_seed"],
        }
    )
    if "clean" in input.keys():
        options += f" --clean-224 {input.clean}"
    if "archive" in input.keys():
        options += f" --zip {input.archive}"
    return options


def shift_source_224_input(wildcards):
    """The already-downloaded 224-px file to copy, when config source_dir is set."""
    if SOURCE_DIR:
        return {
            "source": f"{SOURCE_DIR}/{catalog.file_stem(wildcards.task, CALIBRATED_SIZE)}.npz"
        }
    return {}


def shift_set_files(wildcards):
    """Every corrupted test set of the cell's task at its size."""
    return [
        f"{SHIFT_ROOT}/{wildcards.size}/{wildcards.task}/{name}.npz"
        for name in catalog.shift_sets(wildcards.task)
    ]


# ----------------------------------------------------------------------------- Ilyas et al. datasets (features.smk)
FEATURES = config["features"]
ROBUST_NORM = FEATURES["robust"]["source"]["norm"]
ROBUST_EPS = epsilon.token(ROBUST_NORM, FEATURES["robust"]["source"]["eps"])
if "drobust" in FEATURES["datasets"] and ROBUST_EPS not in TRAIN_GRID.get(
    ROBUST_NORM, []
):
    raise ValueError(
        f"config: features.robust.source {ROBUST_NORM} {epsilon.arg(ROBUST_NORM, ROBUST_EPS)} is not a PGD-AT cell of "
        f"train_grid ({', '.join(f'{n}-{t}' for n, ts in TRAIN_GRID.items() for t in ts)})"
    )


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _nonrobust_attacks():
    """The attack settings of D_rand / D_det: every (eps, steps) of features.nonrobust, duplicates refused."""
    nr = FEATURES["nonrobust"]
    attacks = {}
    for eps in _as_list(nr["eps"]):
        for steps in _as_list(nr["steps"]):
            try:
                attack = constructions.Attack(
                    nr["norm"],
                    epsilon.parse(eps),
                    epsilon.parse(nr["step_size"]),
                    int(steps),
                )
                key = attack.token
            except UserError as exc:
                raise ValueError(f"config: features.nonrobust: {exc}") from None
            if key in attacks:
                raise ValueError(
                    f"config: features.nonrobust lists the setting {key} twice (perhaps as 0.5 and 0.50)"
                )
            attacks[key] = (eps, steps)
    return attacks


NONROBUST_ATTACKS = (
    _nonrobust_attacks()
)  # token -> (eps, steps) as the config writes them
# one setting keeps the plain names (drand.npz, as before sweeps); a sweep names each setting's datasets
NONROBUST_SETS = {
    constructions.name(kind, token if len(NONROBUST_ATTACKS) > 1 else None): value
    for kind in constructions.NONROBUST
    if kind in FEATURES["datasets"]
    for token, value in NONROBUST_ATTACKS.items()
}
FEATURE_SETS = list(NONROBUST_SETS) + [
    d for d in FEATURES["datasets"] if d not in constructions.NONROBUST
]
MODEL_SEEDS = range(FEATURES["model_seeds"])


def nonrobust_options(wildcards):
    """Attack flags of `medgrid features nonrobust` for one dataset (one setting of a sweep); --rand-targets
    only reaches D_rand."""
    nr = FEATURES["nonrobust"]
    kind, _ = constructions.split(wildcards.nonrobust)
    eps, steps = NONROBUST_SETS[wildcards.nonrobust]
    opts = {
        "mode": {"drand": "rand", "ddet": "det"}[kind],
        "norm": nr["norm"],
        "eps": epsilon.arg(nr["norm"], eps),
        "step_size": nr["step_size"],
        "steps": steps,
        "batch_size": FEATURES["batch_size"],
    }
    if kind == "drand":
        opts["rand_targets"] = nr["rand_targets"]
    return _flags(opts) + (" --random-start" if nr["random_start"] else "")


def alignment_options(wildcards):
    return f"--data-seed {config['data_seed']}"


def robust_options():
    r = FEATURES["robust"]
    return _flags(
        {
            "steps": r["steps"],
            "step_size": r["step_size"],
            "init": r["init"],
            "batch_size": FEATURES["batch_size"],
        }
    )


def features_train_options(wildcards):
    """Flags of the models trained on these datasets: the arch's hparams with its `standard` block
    (as train_options for a none-0 cell), then features.train on top; --model-seed for the second and
    later models of a dataset (the first keeps the command it always had)."""
    hp = config["hparams"][wildcards.arch]
    merged = {k: v for k, v in hp.items() if k not in HPARAM_BLOCKS}
    merged.update(hp.get("standard", {}))
    merged = {k: v for k, v in merged.items() if k not in ADVERSARIAL_ONLY}
    merged.update(FEATURES["train"])
    flags = _flags(dict(sorted(merged.items())))
    if "model" in wildcards.keys():
        flags += f" --model-seed {wildcards.model}"
    return flags


def features_attack_grid():
    """features.attack_grid as tokens; null: the main attack_grid."""
    if FEATURES["attack_grid"] is None:
        return ATTACK_GRID
    return _tokens(FEATURES["attack_grid"], "features.attack_grid")


def clean_only(wildcards):
    """Whether a model is evaluated on the clean test set only: those trained on D_rand / D_det (their
    robustness is not the experiment's question, and the attacks would cost more than their training).
    """
    return (
        "fset" in wildcards.keys()
        and constructions.split(wildcards.fset)[0] in constructions.NONROBUST
    )


def features_attack_options(wildcards):
    """features.attack_grid as `medgrid evaluate` flags (none for D_rand / D_det models)."""
    return "" if clean_only(wildcards) else attack_options(features_attack_grid())


def features_evaluate_options(wildcards):
    """The strong evaluation and masking checks of the D_R models at features.attack_grid (none for D_rand /
    D_det models)."""
    return "" if clean_only(wildcards) else evaluate_options(features_attack_grid())


def _feature_sets():
    """(dataset name, the cells it is made from) of every configured Ilyas et al. dataset (each setting of
    an attack sweep its own D_rand / D_det)."""
    for fset in FEATURE_SETS:
        if fset == "drobust":
            yield fset, dict(method="", norm=ROBUST_NORM, eps=ROBUST_EPS)
        else:
            yield fset, dict(method="", norm="none")


def _model_paths(pattern, fset, where):
    """A pattern with {fset} (and {model}) for every model trained on one dataset: model 0 at the path the
    first model always had, models 1.. in model{k}/ beside it."""
    first = pattern.replace("{fset}", fset)
    paths = grid_paths(first, **where)
    for k in MODEL_SEEDS[1:]:
        later = first.replace(f"features/{fset}/", f"features/{fset}/model{k}/", 1)
        paths += grid_paths(later, **where)
    return paths


def features_tables():
    """Per dataset: how it was made (attack success, ...; on the synthetic tasks the texture alignment of
    D_rand / D_det) and the evaluation of every model trained on it."""
    tables = []
    for fset, where in _feature_sets():
        if fset == "drobust":
            tables += grid_paths(rules.features_robust.output.table, **where)
        else:
            made = rules.features_nonrobust.output.table.replace("{nonrobust}", fset)
            tables += grid_paths(made, **where)
            aligned = rules.features_alignment.output.table.replace("{nonrobust}", fset)
            tables += [
                p
                for task in config["tasks"]
                if task in names.SYNTHETIC_TASKS
                for p in grid_paths(aligned, task=task, **where)
            ]
        tables += _model_paths(rules.evaluate_features.output.table, fset, where)
    return tables


def all_checkpoints(wildcards=None):
    """Every model of the run: the grid's cells and the models trained on the Ilyas et al. datasets."""
    models = grid_paths(rules.train.output.model)
    for fset, where in _feature_sets():
        models += _model_paths(rules.train_features.output.model, fset, where)
    return models


# ----------------------------------------------------------------------------- the report (report.smk)
HEADLINE = config["headline"]
for _column in HEADLINE["columns"]:
    _norm = _column.removeprefix("robust_")
    if _column.startswith("robust_") and epsilon.token(
        _norm, HEADLINE["eps"][_norm]
    ) not in ATTACK_GRID.get(_norm, []):
        raise ValueError(
            f"config: headline.eps.{_norm} {HEADLINE['eps'][_norm]} is not in attack_grid.{_norm} "
            f"({', '.join(epsilon.arg(_norm, t) for t in ATTACK_GRID.get(_norm, [])) or 'empty'}); add it there, "
            f"or drop {_column} from headline.columns"
        )


def headline_options():
    """`medgrid table` flags: the headline epsilons, the columns and the PGD steps the headers name."""
    eps = {
        f"{norm}_eps": epsilon.arg(norm, value)
        for norm, value in HEADLINE["eps"].items()
    }
    return _flags(
        {
            **eps,
            "columns": ",".join(HEADLINE["columns"]),
            "pgd_steps": config["evaluate"]["attack_steps"],
        }
    )


CHART_DIR = "results/charts"


def chart_outputs():
    """The outputs of the charts job, from medgrid's chart registry (every chart in every format, the HTML in
    the report), the seed-aggregated table and the evaluation audit)."""
    outputs = {}
    for chart in registry.CHARTS:
        for key, name in registry.files(chart).items():
            path = f"{CHART_DIR}/{name}"
            if key.endswith("_html"):
                path = report(
                    path,
                    caption=chart.caption,
                    category="Charts",
                    labels={"chart": chart.label},
                )
            outputs[key] = path
    outputs["table"] = report(
        f"{CHART_DIR}/{registry.TABLE}",
        caption="../report/table.rst",
        category="Tables",
        labels={"table": "seed-aggregated (mean, 95% interval)"},
    )
    outputs["audit"] = report(
        f"{CHART_DIR}/{registry.AUDIT}",
        caption="../report/audit.rst",
        category="Tables",
        labels={"table": "evaluation audit (gradient-masking checks)"},
    )
    return outputs
