"""The cost of the workflow's features part, from Snakemake's benchmark files (one per job).

    python benchmarks/features_workflow_cost.py before=/tmp/run-main/logs after=logs [--seed 0] [--only NAME ...]

For each labelled logs folder: the jobs of the features rules (``features-*.benchmark.tsv``: constructions of
D_rand / D_det / D_R, texture alignment, the trainings and evaluations of the models trained on them), grouped by
kind, with their count and summed CPU seconds (Snakemake's ``cpu_time``: user + system time of the job's
processes, which on a shared machine excludes the time spent waiting for a core, though not the slowdown of
shared caches) and wall seconds (``s``). ``--seed`` keeps one grid seed's cells; ``--only`` keeps the datasets
whose name contains one of the given strings (e.g. ``100x0.1`` for one setting of a sweep, with ``drobust``).
Prints a table and writes JSON (--json, default benchmarks/out/features_workflow_cost.json). Not a test.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("construction", "alignment", "training", "evaluation")
_NAME = re.compile(r"^features-(?P<set>.+?)(?:-model(?P<model>\d+))?(?:-(?P<step>train|evaluate|alignment))?"
                   r"\.benchmark\.tsv$")


def kind_of(path: Path) -> tuple[str, str] | None:
    """(kind, dataset name) of a features benchmark file, None for other files."""
    m = _NAME.match(path.name)
    if m is None:
        return None
    step = m["step"]
    kind = {"train": "training", "evaluate": "evaluation", "alignment": "alignment", None: "construction"}[step]
    return kind, m["set"]


def read(path: Path) -> dict[str, float]:
    with path.open() as fh:
        row = next(csv.DictReader(fh, delimiter="\t"))
    return {"cpu_time": float(row["cpu_time"]), "s": float(row["s"])}


def collect(logs: Path, seed: str | None, only: list[str]) -> dict[str, dict[str, float]]:
    totals = {k: {"jobs": 0, "cpu_time": 0.0, "s": 0.0} for k in KINDS}
    for path in sorted(logs.rglob("features-*.benchmark.tsv")):
        found = kind_of(path)
        if found is None or (seed is not None and path.parent.name != f"seed{seed}"):
            continue
        kind, name = found
        if only and not any(o in name for o in only):
            continue
        values = read(path)
        totals[kind]["jobs"] += 1
        totals[kind]["cpu_time"] += values["cpu_time"]
        totals[kind]["s"] += values["s"]
    return totals


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=LOGS", help="a label and a workflow's logs folder")
    p.add_argument("--seed", default=None, help="only the cells of this grid seed")
    p.add_argument("--only", nargs="*", default=[], help="only datasets whose name contains one of these")
    p.add_argument("--json", type=Path, default=HERE / "out" / "features_workflow_cost.json")
    args = p.parse_args()
    out = {}
    for run in args.runs:
        label, _, folder = run.partition("=")
        out[label] = collect(Path(folder), args.seed, args.only)
    print(f"{'run':<10} {'kind':<13} {'jobs':>5} {'CPU s':>9} {'wall s':>9}")
    for label, totals in out.items():
        for kind in KINDS + ("all",):
            t = totals[kind] if kind != "all" else {
                key: sum(totals[k][key] for k in KINDS) for key in ("jobs", "cpu_time", "s")}
            print(f"{label:<10} {kind:<13} {t['jobs']:>5} {t['cpu_time']:>9.1f} {t['s']:>9.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"seed": args.seed, "only": args.only, "runs": out}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
