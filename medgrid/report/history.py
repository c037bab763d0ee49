"""Training histories: every checkpoint's per-epoch record as one table, for the training-curve chart.

Each checkpoint's settings hold ``history`` (per epoch: train loss, train accuracy, on adversarial
examples for adversarially trained cells, validation balanced accuracy, and the training epsilon reached)
and ``best_epoch``, the epoch whose weights were kept; a run with the catastrophic-overfitting guard (fgsm-rs)
also the guard's PGD accuracy per epoch and the epoch it stopped at. :func:`collect` reads the settings of many
checkpoints (memory-mapped: the weights are not read) into one table, one row per cell and epoch,
written atomically as ``results/history.parquet``. These rows are not measurements on the test set, so
they stay out of the tidy results table.
"""

from __future__ import annotations

import pandas as pd

from medgrid import checkpoint, results
from medgrid.atomic import atomic_output
from medgrid.errors import UserError

CELL = results.CELL
# column -> pandas dtype, in the order the table is written
SCHEMA: dict[str, str] = {
    **{c: results.SCHEMA[c] for c in CELL},
    "epoch": "int64",
    "train_loss": "float64",
    "train_acc": "float64",            # on the adversarial examples for adversarially trained cells
    "val_balanced_acc": "float64",
    "epoch_eps": "float64",            # the training epsilon at the epoch's last batch (< train_eps in a warm-up)
    "eps_warmup_epochs": "int64",
    "selected": "bool",                # the epoch whose weights the checkpoint holds
    "guard_pgd_acc": "float64",        # fgsm-rs: PGD accuracy on the guard's training batch (NaN: no guard)
    "overfit": "bool",                 # the guard found catastrophic overfitting at this epoch (the run's last)
}
NULLABLE = ("guard_pgd_acc",)
# columns a history written before they existed lacks, and their value there
DEFAULTS = {**results.DEFAULTS, "guard_pgd_acc": float("nan"), "overfit": False}
QUANTITIES = ("train_loss", "train_acc", "val_balanced_acc")


def from_settings(settings: dict) -> pd.DataFrame:
    """One row per epoch of one checkpoint's settings."""
    cell = results.cell_columns(settings)
    hp = settings.get("hparams", {})
    rows = []
    for h in settings.get("history", []):
        rows.append({**cell, "epoch": int(h["epoch"]), "train_loss": h["train_loss"], "train_acc": h["train_acc"],
                     "val_balanced_acc": h["val_balanced_acc"],
                     # key "train_eps" in checkpoints before medgrid 0.2; absent before the warm-up existed
                     "epoch_eps": h.get("epoch_eps", h.get("train_eps", cell["train_eps"])),
                     "eps_warmup_epochs": int(hp.get("eps_warmup_epochs", 0) or 0),
                     "selected": int(h["epoch"]) == int(settings.get("best_epoch", -1)),
                     "guard_pgd_acc": h.get("guard_pgd_acc", float("nan")), "overfit": bool(h.get("overfit", False))})
    return pd.DataFrame(rows, columns=list(SCHEMA))


def validate(df: pd.DataFrame, source: str = "history") -> pd.DataFrame:
    """``df`` with the history schema's columns and dtypes, one row per cell and epoch; UserError otherwise."""
    out = results.coerce(results.with_defaults(df, DEFAULTS), SCHEMA, source, nullable=NULLABLE)
    dup = out.duplicated(CELL + ["epoch"], keep=False)
    if dup.any():
        first = out[dup].iloc[0]
        raise UserError(f"{source}: the same cell and epoch twice, e.g. "
                        + ", ".join(f"{k}={first[k]}" for k in CELL + ["epoch"]))
    return out.reset_index(drop=True)


def collect(checkpoints, out) -> pd.DataFrame:
    """The histories of ``checkpoints`` as one validated table, written atomically to ``out`` (Parquet)."""
    frames = [from_settings(checkpoint.read_settings(p)) for p in checkpoints]
    if not frames:
        raise UserError("no checkpoints given")
    df = validate(pd.concat(frames, ignore_index=True), str(out))
    with atomic_output(out) as tmp:
        df.to_parquet(tmp, index=False)
    print(f"wrote {out} ({len(df)} epochs of {len(frames)} checkpoints)")
    return df


def read(path) -> pd.DataFrame:
    return validate(results.read_frame(path, "history table"), str(path))
