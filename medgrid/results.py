"""The tidy results table: one row per measurement, validated on write and on read.

Every cell of the grid writes its measurements in this one schema, so aggregation is
a concatenation and every chart is a query over the same columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from medgrid.atomic import atomic_outputs
from medgrid.errors import UserError
from medgrid.names import (
    DEFAULT_METHOD,
    EVAL_KINDS,
    NO_CONSTRUCTION,
    NO_CORRUPTION,
    NO_NORM,
    TRAIN_DATA,
    TRAIN_METHODS,
    TRAIN_NORMS,
)

# column -> pandas dtype, in the order the table is written
SCHEMA: dict[str, str] = {
    "task": "string",
    "size": "int64",
    "arch": "string",
    "train_norm": "string",
    "train_eps": "float64",
    "train_method": "string",  # pgd (also on standard models: their epsilon-0 point) | trades | fgsm-rs
    "train_method_param": "float64",  # the method's parameter (trades: beta), 0.0 for a method without one
    "seed": "int64",
    "train_data": "string",
    "construction": "string",
    "model_seed": "int64",
    "eval_kind": "string",
    "eval_norm": "string",
    "eval_eps": "float64",
    "corruption": "string",
    "severity": "int64",
    "metric": "string",
    "value": "float64",
    "n": "int64",
}
COLUMNS = list(SCHEMA)
# columns added after tables were first written: an older table without them reads with these values
# (the training method: PGD-AT, medgrid.train_method; construction: the attack setting of a D_rand / D_det
# dataset, medgrid.constructions; model_seed: which of the models trained on one constructed dataset)
DEFAULTS: dict[str, object] = {"train_method": DEFAULT_METHOD, "train_method_param": 0.0,
                               "construction": NO_CONSTRUCTION, "model_seed": 0}
# A row's model, in one definition every consumer (health, history, audit, charts, headline) uses:
BLOCK = ["task", "size", "arch"]  # one task at one size and arch: a headline block, a chart panel
SETTING = ["train_norm", "train_eps", "train_method", "train_method_param"]  # how it was trained: a headline row
# one trained model: a grid cell, or one of the models trained on an Ilyas dataset (which construction, which model)
CELL = BLOCK + SETTING + ["seed", "train_data", "construction", "model_seed"]
REPLICATES = ["seed", "model_seed"]  # what varies between the replicates of one model: grid seed, model seed
MODEL = [c for c in CELL if c not in REPLICATES]  # a model over its seeds (and model seeds)
# the columns that identify a measurement; (KEY, value) is unique in a valid table
KEY = [c for c in COLUMNS if c not in ("value", "n")]


def cell_columns(settings: Mapping) -> dict:
    """The :data:`CELL` columns of a checkpoint's settings."""
    return {
        "task": settings["task"],
        "size": int(settings["size"]),
        "arch": settings["arch"],
        "train_norm": settings["norm"],
        "train_eps": float(settings["eps"]),
        # absent before training methods existed: PGD-AT, or standard training
        "train_method": settings.get("method", DEFAULT_METHOD),
        "train_method_param": float(settings.get("method_param") or 0.0),
        "seed": int(settings["seed"]),
        "train_data": settings.get("train_data", "original"),
        "construction": settings.get("construction", NO_CONSTRUCTION),
        "model_seed": int(settings.get("model_seed", 0)),
    }


def make_row(cell: Mapping, *, eval_kind: str, metric: str, value: float, n: int,
             eval_norm: str = NO_NORM, eval_eps: float = 0.0,
             corruption: str = NO_CORRUPTION, severity: int = 0) -> dict:
    """One measurement row; ``cell`` is the output of :func:`cell_columns`."""
    return {**cell, "eval_kind": eval_kind, "eval_norm": eval_norm, "eval_eps": float(eval_eps),
            "corruption": corruption, "severity": int(severity), "metric": metric,
            "value": float(value), "n": int(n)}


def coerce(df: pd.DataFrame, schema: Mapping[str, str], source: str, nullable=()) -> pd.DataFrame:
    """``df`` with exactly the columns of ``schema`` (column -> dtype), in its order and dtypes, no missing
    values (but in the float columns ``nullable``, where NaN means "not measured"); UserError saying why not."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise UserError(f"{source}: missing columns {missing}")
    extra = [c for c in df.columns if c not in schema]
    if extra:
        raise UserError(f"{source}: unexpected columns {extra}")
    out = df[list(schema)].copy()
    for col, dtype in schema.items():
        if out[col].isna().any() and col not in nullable:
            raise UserError(f"{source}: column {col!r} has missing values")
        try:
            out[col] = out[col].astype(dtype)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{source}: column {col!r} is not {dtype}: {exc}") from None
    return out


def with_defaults(df: pd.DataFrame, defaults: Mapping = DEFAULTS) -> pd.DataFrame:
    """``df`` with each column of ``defaults`` it lacks added, holding its default (an older table)."""
    missing = {c: v for c, v in defaults.items() if c not in df.columns}
    return df.assign(**missing) if missing else df


def validate(df: pd.DataFrame, source: str = "table") -> pd.DataFrame:
    """Return ``df`` with the schema's columns, order and dtypes, or raise UserError saying why. A table written
    before a column of :data:`DEFAULTS` existed gets that column with its default."""
    out = coerce(with_defaults(df), SCHEMA, source)
    for col, allowed in (("train_norm", TRAIN_NORMS), ("eval_norm", TRAIN_NORMS), ("train_method", TRAIN_METHODS),
                         ("train_data", TRAIN_DATA), ("eval_kind", EVAL_KINDS)):
        bad = sorted(set(out[col]) - set(allowed))
        if bad:
            raise UserError(f"{source}: column {col!r} has unknown values {bad}; allowed: {list(allowed)}")
    if (out["train_eps"] < 0).any() or (out["eval_eps"] < 0).any():
        raise UserError(f"{source}: negative epsilon")
    if (out["n"] < 0).any():
        raise UserError(f"{source}: negative n")
    if (out["model_seed"] < 0).any():
        raise UserError(f"{source}: negative model_seed")
    dup = out.duplicated(KEY, keep=False)
    if dup.any():
        first = out[dup].iloc[0]
        where = ", ".join(f"{k}={first[k]}" for k in KEY)
        raise UserError(f"{source}: duplicate measurement rows ({int(dup.sum())}), e.g. {where}")
    return out.reset_index(drop=True)


def prefer_worst(rows: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Of the ``worst`` and ``pgd`` rows, per ``key`` (the measurement without ``eval_kind``): the worst case
    over the white-box attacks where there is one, else PGD's. What the charts and tables report as robust
    accuracy, naming the attack by the row's ``eval_kind``."""
    rows = rows[rows.eval_kind.isin(["worst", "pgd"])]
    return rows.sort_values("eval_kind", key=lambda k: k != "worst", kind="stable").drop_duplicates(key)


def from_rows(rows: Iterable[Mapping], source: str = "table") -> pd.DataFrame:
    return validate(pd.DataFrame(list(rows), columns=COLUMNS), source)


def table_paths(path, csv: bool = False) -> list[Path]:
    """The files :func:`write_table` writes: the Parquet table, and the CSV beside it when asked."""
    path = Path(path)
    if csv and path.suffix == ".csv":
        raise UserError(f"--out {path} with --csv: the CSV beside the table would be the table itself; name the "
                        f"table .parquet")
    return [path, path.with_suffix(".csv")] if csv else [path]


def save(df: pd.DataFrame, target, fmt: str) -> None:
    """Write an already validated table to ``target`` (a temp file being staged) as ``fmt`` (parquet or csv)."""
    if fmt == "csv":
        df.to_csv(target, index=False)
    else:
        df.to_parquet(target, index=False)


def table_format(path) -> str:
    """A table file's format by its name, as :func:`read_frame` reads it: .csv is CSV, anything else Parquet."""
    return "csv" if Path(path).suffix == ".csv" else "parquet"


def write_table(df: pd.DataFrame, path, csv: bool = False) -> pd.DataFrame:
    """Validate and write ``df`` as Parquet (and CSV beside it when asked), both or neither."""
    paths = table_paths(path, csv)
    df = validate(df, str(path))
    with atomic_outputs(*paths) as temps:
        for tmp, target in zip(temps, paths):
            save(df, tmp, table_format(target))
    return df


def read_frame(path, what: str = "results table") -> pd.DataFrame:
    """A Parquet (or .csv) file as it is; UserError when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"missing {what} {path}")
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; name the table's file")
    try:
        return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise UserError(f"cannot read {what} {path}: {exc}") from None


def read_table(path) -> pd.DataFrame:
    return validate(read_frame(path), str(path))
