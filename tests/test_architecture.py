"""The package's shape: the command line on top, no import cycles, one home for shared names, fast start-up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medgrid import models, names

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "medgrid"
MAX_LINES = 420  # "no module over about 400 lines"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The medgrid modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("medgrid")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medgrid"):
            for alias in node.names:  # `from medgrid import data` imports the module medgrid.data
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_reader_sees_the_graph():
    # the tests here mean something only if they see the imports they should
    assert "medgrid.cli.base" in GRAPH["medgrid.cli"]
    assert "medgrid.attacks.pgd" in GRAPH["medgrid.training.methods"]
    assert "medgrid.training.methods" in GRAPH["medgrid.training.loop"]
    assert "medgrid.data.loading" in GRAPH["medgrid.evaluation.evaluate"]
    assert "medgrid.evaluation.health" in GRAPH["medgrid.training.loop"]


# The layers, bottom to top: a module imports its own layer or lower ones, never a higher one, and never a
# sibling at the same rank (training and features are independent of each other). The shared ground is the
# top-level modules of medgrid (vocabulary, epsilon codec, seeds, results schema, op, models, checkpoints).
LAYERS = {"shared": 0, "data": 1, "attacks": 2, "evaluation": 3, "training": 4, "features": 4, "report": 5,
          "cli": 6}


def _layer(module: str) -> str:
    parts = module.split(".")
    if module == "medgrid.__main__":
        return "cli"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "shared"


def test_every_module_is_in_a_layer():
    assert {_layer(m) for m in MODULES} == set(LAYERS)
    for package in ("data", "attacks", "evaluation", "training", "features", "report", "cli"):
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"medgrid/{package}/__init__.py says what the layer holds"


def test_layers_only_import_downwards():
    wrong = []
    for module, deps in GRAPH.items():
        here = _layer(module)
        for dep in deps:
            there = _layer(dep)
            if dep == "medgrid":
                continue
            if LAYERS[there] > LAYERS[here] or (LAYERS[there] == LAYERS[here] and there != here):
                wrong.append(f"{module} ({here}) imports {dep} ({there})")
    assert not wrong, "\n".join(wrong)


def test_the_workflow_vocabulary_is_plain_python():
    """common.smk imports these to build the DAG: they must not pull in torch, numpy, pandas or medmnist."""
    code = ("import sys\nimport medgrid.catalog, medgrid.constructions, medgrid.epsilon, medgrid.names, medgrid.errors, "
            "medgrid.report.registry\nimport medgrid.train_method, medgrid.build_config, medgrid.config\n"
            "print('HEAVY', sorted(m for m in ('torch', 'numpy', 'pandas', 'medmnist', 'altair') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


def test_the_workflow_keeps_no_copies():
    """The workflow imports the package's tables and codec: none of them is spelled out in workflow/."""
    text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for copy in ("SYNTHETIC_TASKS = (", "SHIFT_CORRUPTIONS", "SPLIT_IMAGES = {", "NOT_ON_ZENODO = (", "Fraction",
                 "def eps_token", "def eps_value", "def eps_arg", '"pixelate",', "def dataset_stem"):
        assert copy not in text, copy


def test_domain_modules_never_import_the_command_line():
    entry_points = {"medgrid.__main__"}  # `python -m medgrid` is the command line too
    offenders = {name: sorted(m for m in deps if m == "medgrid.cli" or m.startswith("medgrid.cli."))
                 for name, deps in GRAPH.items() if not name.startswith("medgrid.cli") and name not in entry_points}
    assert not {k: v for k, v in offenders.items() if v}


def test_names_imports_nothing():
    tree = ast.parse((PACKAGE / "names.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(REPO)} has {lines} lines; split it by job"


@pytest.mark.parametrize("argv", [["--help"], ["aggregate", "--help"], ["charts", "--help"], ["train", "--help"],
                                  ["table", "--help"], ["--version"]])
def test_parser_imports_no_heavy_library(argv):
    code = ("import sys\nfrom medgrid.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'pandas', 'altair', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout[-300:]


@pytest.mark.parametrize("argv,needle", [
    (["train", "--task", "x"], "required"),
    (["train", "--task", "nope", "--arch", "cnn-small", "--norm", "none", "--out", "m.pt", "--data", "d.npz"],
     "unknown task 'nope'"),
    (["train", "--task", "synthetic", "--arch", "vgg", "--norm", "none", "--out", "m.pt", "--data", "d.npz"],
     "unknown arch 'vgg'"),
    (["train", "--task", "synthetic", "--arch", "cnn-small", "--norm", "linf", "--eps", "0", "--out", "m.pt",
      "--data", "d.npz"], "needs eps > 0"),
])
def test_a_mistake_in_the_arguments_costs_no_torch(argv, needle, tmp_path):
    code = (f"import sys\nfrom medgrid.cli import main\ncode = main({argv!r})\n"
            "print('CODE', code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "CODE 2 False" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("medgrid: error:"), proc.stderr
    assert needle in proc.stderr


# ------------------------------------------------------------------- the schema's enums

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _schema(*path):
    node = SCHEMA
    for key in path:
        node = node[key]
    return node


def test_schema_enums_equal_the_package_names():
    """JSON Schema cannot import: its enums are the one place the names are written out again."""
    props = SCHEMA["properties"]
    assert tuple(props["tasks"]["items"]["enum"]) == names.TASKS
    assert tuple(props["sizes"]["items"]["enum"]) == names.SIZES
    assert tuple(props["archs"]["items"]["enum"]) == tuple(models.MODELS) == names.ARCHS
    assert tuple(_schema("$defs", "training", "properties", "optimizer", "enum")) == names.OPTIMIZERS
    assert tuple(_schema("$defs", "training", "properties", "schedule", "enum")) == names.SCHEDULES
    features = props["features"]["properties"]
    assert tuple(features["datasets"]["items"]["enum"]) == names.TRAIN_DATA[1:]
    assert tuple(features["nonrobust"]["properties"]["norm"]["enum"]) == names.ATTACK_NORMS
    assert tuple(features["nonrobust"]["properties"]["rand_targets"]["enum"]) == names.RAND_TARGETS
    assert tuple(features["robust"]["properties"]["init"]["enum"]) == names.ROBUST_INITS
    shift = props["shift"]["properties"]
    assert tuple(shift["source"]["enum"]) == names.SHIFT_SOURCES
    assert tuple(map(str, shift["corrupt_at"]["enum"])) == names.CORRUPT_AT
    assert tuple(shift["upsample"]["enum"]) == names.UPSAMPLING
    strong = _schema("properties", "evaluate", "properties", "strong", "properties")
    assert tuple(strong["attacks"]["oneOf"][1]["items"]["enum"]) == names.STRONG_ATTACKS
    assert tuple(strong["schedule"]["enum"]) == names.STRONG_SCHEDULES


def test_headline_defaults_agree():
    """The headline's columns and epsilons: the schema, config/config.yaml and `medgrid table` agree."""
    from medgrid.cli import table

    schema = SCHEMA["properties"]["headline"]
    assert tuple(schema["properties"]["columns"]["items"]["enum"]) == names.HEADLINE_COLUMNS
    assert tuple(schema["default"]["columns"]) == tuple(schema["properties"]["columns"]["default"])
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["headline"]
    for norm in names.ATTACK_NORMS:
        assert str(config["eps"][norm]) == str(schema["default"]["eps"][norm]) == table.DEFAULT_EPS[norm]
    assert tuple(config["columns"]) == tuple(schema["default"]["columns"]) == names.HEADLINE_COLUMNS
