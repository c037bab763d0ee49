"""``medgrid history``: the per-epoch training records of checkpoints as one table (for the training curves)."""

from __future__ import annotations

from pathlib import Path

from medgrid.cli.base import check_writable


def add_arguments(p) -> None:
    p.add_argument("checkpoints", nargs="+", type=Path, help="model.pt files")
    p.add_argument("--out", type=Path, required=True, help="history table (.parquet), one row per cell and epoch")


def run(args) -> None:
    check_writable(args.out)

    from medgrid.report import history

    history.collect(args.checkpoints, args.out)
