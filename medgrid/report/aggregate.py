"""One tidy table from every cell's table, and its seed-aggregated view with t-based 95% intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from medgrid import results
from medgrid.atomic import atomic_outputs
from medgrid.errors import UserError

# a seed-aggregated row is identified by the measurement key without the seed
GROUP = [c for c in results.KEY if c != "seed"]


def by_seed(df: pd.DataFrame) -> pd.DataFrame:
    """mean, std (ddof 1), n_seeds and the t-based 95% interval of the mean over seeds."""
    g = df.groupby(GROUP, observed=True, sort=True)
    out = g["value"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["n"] = g["n"].sum().to_numpy()
    half = stats.t.ppf(0.975, np.maximum(out["n_seeds"] - 1, 1)) * out["std"] / np.sqrt(out["n_seeds"])
    half = half.where(out["n_seeds"] > 1)
    out["ci95_t_low"] = out["mean"] - half
    out["ci95_t_high"] = out["mean"] + half
    return out


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
