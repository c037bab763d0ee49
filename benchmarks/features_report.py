"""The tables of docs/features.md from a run's results: D_rand / D_det / D_R over all their models, per attack
setting, with the test against chance, the texture alignment and how it moves with accuracy.

    python benchmarks/features_report.py --summary results/summary.parquet
    python benchmarks/features_report.py --results results        # the per-cell tables, without an aggregate

Reads the tidy rows (medgrid.results) of the models trained on D_rand / D_det / D_R and of their datasets, and
prints Markdown tables:

1. per task, dataset and attack setting: clean balanced accuracy and AUC (mean ± half-width of the t-based 95%
   interval over all models, the number of models and grid seeds), the one-sided t-test against chance over the
   models (p) and over the grid seeds' means (p grid), the attack success, and on the synthetic tasks the texture
   alignment and off-texture share (mean ± interval over the datasets);
2. per grid seed: the mean and range of each dataset's models (how much datasets differ from one another);
3. D_R: clean and robust balanced accuracy of its models (the attack named);
4. alignment against accuracy: per kind, Pearson's r between a dataset's texture alignment and its models' mean
   balanced accuracy over every dataset of the run (settings x grid seeds x tasks).

Writes the numbers as JSON (--json, default benchmarks/out/features_report.json). Not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from medgrid import constructions, results
from medgrid.labels import DATA_LABEL, robust_label
from medgrid.names import NO_CONSTRUCTION
from medgrid.report.aggregate import by_seed
from medgrid.report.headline import p_text

HERE = Path(__file__).resolve().parent
MADE = ["drand", "ddet"]


def load(args) -> pd.DataFrame:
    if args.summary is not None:
        return results.read_table(args.summary)
    paths = sorted(Path(args.results).rglob("features/**/*.parquet")) + sorted(
        Path(args.results).rglob("features/*.parquet"))
    frames = [results.read_table(p) for p in dict.fromkeys(paths)]
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates(results.KEY)


def _p(p: float) -> str:
    return p_text(p) if np.isfinite(p) else "–"


def _ci(row) -> str:
    if row.n_seeds > 1 and np.isfinite(row.ci95_t_low):
        return f"{row['mean']:.3f} ± {(row.ci95_t_high - row.ci95_t_low) / 2:.3f}"
    return f"{row['mean']:.3f}"


def _setting(token: str) -> str:
    return "(not recorded)" if token == NO_CONSTRUCTION else constructions.parse(token).describe()


def main_table(df: pd.DataFrame) -> tuple[list[str], list[dict]]:
    s = by_seed(df[df.metric != "grad_evals"])
    key = ["task", "train_data", "construction"]
    clean = s[(s.eval_kind == "clean") & s.train_data.isin(MADE)]
    made = s[(s.eval_kind == "features") & s.train_data.isin(MADE)]
    lines = ["| task | dataset | attack | balanced acc. (models, grid seeds) | p | p grid | AUC | p | "
             "attack success | texture alignment | off-texture share |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    records = []
    for (task, data, construction), g in clean.groupby(key, sort=True):
        acc = g[g.metric == "balanced_acc"].iloc[0]
        auc = g[g.metric == "auc"].iloc[0] if (g.metric == "auc").any() else None
        extra = made[(made.task == task) & (made.train_data == data) & (made.construction == construction)]
        by = {m: extra[extra.metric == m].iloc[0] for m in ("attack_success", "texture_alignment",
                                                             "off_texture_share") if (extra.metric == m).any()}
        cells = [task, DATA_LABEL[data], _setting(construction),
                 f"{_ci(acc)} ({acc.n_seeds}, {acc.n_grid_seeds})", _p(acc.p_above_chance), _p(acc.p_above_chance_grid),
                 _ci(auc) if auc is not None else "–", _p(auc.p_above_chance) if auc is not None else "–",
                 f"{by['attack_success']['mean']:.3f}" if "attack_success" in by else "–",
                 _ci(by["texture_alignment"]) if "texture_alignment" in by else "–",
                 _ci(by["off_texture_share"]) if "off_texture_share" in by else "–"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
        records.append({"task": task, "train_data": data, "construction": construction,
                        "balanced_acc": acc["mean"], "balanced_acc_low": acc.ci95_t_low,
                        "balanced_acc_high": acc.ci95_t_high, "models": int(acc.n_seeds),
                        "grid_seeds": int(acc.n_grid_seeds), "p_above_chance": acc.p_above_chance,
                        "p_above_chance_grid": acc.p_above_chance_grid,
                        "auc": None if auc is None else auc["mean"],
                        "auc_p_above_chance": None if auc is None else auc.p_above_chance,
                        **{m: float(v["mean"]) for m, v in by.items()}})
    return lines, records


def per_seed_table(df: pd.DataFrame) -> list[str]:
    rows = df[(df.eval_kind == "clean") & (df.metric == "balanced_acc") & df.train_data.isin(MADE)]
    lines = ["| task | dataset | attack | " + " | ".join(f"seed {s}" for s in sorted(rows.seed.unique())) + " |",
             "|---|---|---|" + "---:|" * rows.seed.nunique()]
    for (task, data, construction), g in rows.groupby(["task", "train_data", "construction"], sort=True):
        cells = []
        for seed in sorted(rows.seed.unique()):
            v = g[g.seed == seed].value
            cells.append(f"{v.mean():.3f} [{v.min():.3f}, {v.max():.3f}]" if len(v) else "–")
        lines.append(f"| {task} | {DATA_LABEL[data]} | {_setting(construction)} | " + " | ".join(cells) + " |")
    return lines


def robust_table(df: pd.DataFrame) -> list[str]:
    s = by_seed(df[(df.train_data == "drobust") & (df.metric == "balanced_acc")])
    lines = ["| task | D_R model: clean | robust | models |", "|---|---:|---:|---:|"]
    for task, g in s.groupby("task", sort=True):
        clean = g[g.eval_kind == "clean"].iloc[0]
        robust = results.prefer_worst(g, ["eval_norm", "eval_eps"])
        texts = [f"{robust_label(r.eval_kind, r.eval_norm, r.eval_eps)}: {_ci(r)}" for r in robust.itertuples()]
        lines.append(f"| {task} | {_ci(clean)} | {'; '.join(texts)} | {clean.n_seeds} |")
    return lines


def alignment_vs_accuracy(df: pd.DataFrame) -> tuple[list[str], dict]:
    key = ["task", "seed", "train_data", "construction"]
    acc = df[(df.eval_kind == "clean") & (df.metric == "balanced_acc") & df.train_data.isin(MADE)]
    acc = acc.groupby(key).value.mean().rename("accuracy")
    align = df[(df.eval_kind == "features") & (df.metric == "texture_alignment")].set_index(key).value
    both = pd.concat([acc, align.rename("alignment")], axis=1, join="inner").reset_index()
    lines, out = [], {}
    for data, g in both.groupby("train_data"):
        if len(g) < 3:
            continue
        r, p = stats.pearsonr(g.alignment, g.accuracy)
        out[data] = {"r": float(r), "p": float(p), "datasets": int(len(g))}
        lines.append(f"- {DATA_LABEL[data]}: Pearson r = {r:.2f} (p = {p:.3f}) between a dataset's texture "
                     f"alignment and its models' mean balanced accuracy, over {len(g)} datasets")
    return lines, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--summary", type=Path, help="results/summary.parquet")
    where.add_argument("--results", type=Path, help="a results folder (the per-cell tables under features/)")
    p.add_argument("--json", type=Path, default=HERE / "out" / "features_report.json")
    args = p.parse_args()
    df = load(args)
    main_lines, records = main_table(df)
    print("\n".join(main_lines), "", "Per grid seed: mean [min, max] of the models' balanced accuracy", "",
          "\n".join(per_seed_table(df)), "", "\n".join(robust_table(df)), "", sep="\n")
    lines, correlation = alignment_vs_accuracy(df)
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": records, "alignment_vs_accuracy": correlation}, indent=2, default=float))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
