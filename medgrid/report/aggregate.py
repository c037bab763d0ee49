"""One tidy table from every cell's table, and its seed-aggregated view with t-based 95% intervals.

The view aggregates a model's replicates: its grid seeds and, for the models trained on Ilyas et al.'s
datasets, the several models trained on each dataset (``model_seed``). ``n_seeds`` counts the values (models),
``n_grid_seeds`` the grid seeds among them (for those models: the datasets constructed). Clean balanced accuracy
and AUC rows also say whether their mean is above chance (1 / classes; AUC 0.5) by a one-sided one-sample
t-test: ``p_above_chance`` over all the models, and ``p_above_chance_grid`` over the grid seeds' means (each
constructed dataset counted once; from 2 grid seeds), the stricter test when the datasets differ more than the
models trained on one of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from medgrid import results
from medgrid.atomic import atomic_outputs
from medgrid.data.tasks import chance_level
from medgrid.errors import UserError

# a seed-aggregated row is identified by the measurement key without the replicates (grid seed, model seed)
GROUP = [c for c in results.KEY if c not in results.REPLICATES]
AUC_CHANCE = 0.5
TESTED = ("balanced_acc", "auc")  # the clean metrics tested against chance


def by_seed(df: pd.DataFrame) -> pd.DataFrame:
    """mean, std (ddof 1), n_seeds (values), n_grid_seeds, the t-based 95% interval of the mean over the values,
    and for clean balanced accuracy and AUC the test against chance (:func:`above_chance`)."""
    df = results.with_defaults(df)
    g = df.groupby(GROUP, observed=True, sort=True)
    out = g["value"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["n"] = g["n"].sum().to_numpy()
    out["n_grid_seeds"] = g["seed"].nunique().to_numpy()
    half = stats.t.ppf(0.975, np.maximum(out["n_seeds"] - 1, 1)) * out["std"] / np.sqrt(out["n_seeds"])
    half = half.where(out["n_seeds"] > 1)
    out["ci95_t_low"] = out["mean"] - half
    out["ci95_t_high"] = out["mean"] + half
    return above_chance(out, df)


def one_sided_p(values, chance: float) -> tuple[float, float]:
    """(t, p) of the one-sided one-sample t-test that the mean of ``values`` exceeds ``chance``; NaN for fewer
    than 2 values. Values without spread: p = 0 above chance, 1 otherwise (t infinite or NaN)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2 or not np.isfinite(chance):
        return float("nan"), float("nan")
    if np.ptp(v) == 0:
        diff = v[0] - chance
        return (float(np.sign(diff) * np.inf) if diff else float("nan")), (0.0 if diff > 0 else 1.0)
    res = stats.ttest_1samp(v, chance, alternative="greater")
    return float(res.statistic), float(res.pvalue)


def above_chance(out: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """``out`` (the by-seed view of ``df``) with ``test_chance``, ``t_above_chance``, ``p_above_chance`` (over all
    values) and ``p_above_chance_grid`` (over the grid seeds' means); NaN on rows that are not a clean balanced
    accuracy or AUC."""
    tests = []
    rows = df[(df.eval_kind == "clean") & df.metric.isin(TESTED)]
    for key, group in rows.groupby(GROUP, observed=True, sort=False):
        entry = dict(zip(GROUP, key))
        chance = AUC_CHANCE if entry["metric"] == "auc" else chance_level(entry["task"])
        t, p = one_sided_p(group.value, chance)
        p_grid = one_sided_p(group.groupby("seed").value.mean(), chance)[1]
        tests.append({**entry, "test_chance": chance, "t_above_chance": t, "p_above_chance": p,
                      "p_above_chance_grid": p_grid})
    columns = GROUP + ["test_chance", "t_above_chance", "p_above_chance", "p_above_chance_grid"]
    tests = pd.DataFrame(tests, columns=columns).astype({c: out[c].dtype for c in GROUP})
    return out.merge(tests, on=GROUP, how="left")


def output_paths(out) -> list[Path]:
    """The files :func:`aggregate` writes: the summary (Parquet), its CSV and its by-seed view."""
    out = Path(out)
    return [out, out.with_suffix(".csv"), out.with_name(out.stem + "_by_seed.parquet")]


def aggregate(tables, out, expected: int | None = None) -> pd.DataFrame:
    """Concatenate ``tables`` (each a validated per-cell table) into ``out`` (+ .csv, + _by_seed.parquet)."""
    tables = [Path(t) for t in tables]
    if expected is not None and len(tables) != expected:
        raise UserError(f"expected {expected} cell tables, got {len(tables)}")
    missing = [str(t) for t in tables if not t.exists()]
    if missing:
        raise UserError(f"missing cell tables: {', '.join(missing)}")
    frames = []
    for t in tables:
        frame = results.read_table(t)
        if frame.empty:
            raise UserError(f"cell table {t} has no rows")
        frames.append(frame.assign(_source=str(t)))
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(results.KEY, keep=False)
    if dup.any():
        sources = sorted(set(df.loc[dup, "_source"]))
        raise UserError(f"duplicate measurements across cell tables: {', '.join(sources)}")
    df = results.validate(df.drop(columns="_source"), str(out))
    seeds = by_seed(df)
    summary_path, csv_path, by_seed_path = output_paths(out)
    if results.table_format(summary_path) == "csv":
        raise UserError(f"--out {summary_path}: the summary is Parquet (its CSV is written beside it)")
    with atomic_outputs(summary_path, csv_path, by_seed_path) as (summary_tmp, csv_tmp, seeds_tmp):
        results.save(df, summary_tmp, "parquet")
        results.save(df, csv_tmp, "csv")
        seeds.to_parquet(seeds_tmp, index=False)
    print(f"wrote {out} ({len(df)} rows from {len(tables)} tables) and {by_seed_path} ({len(seeds)} rows)")
    return df
