"""``medgrid aggregate``: every cell's table into one summary, its CSV and its by-seed view."""

from __future__ import annotations

from pathlib import Path

from medgrid.ranges import arg


def add_arguments(p) -> None:
    p.add_argument("tables", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="summary .parquet; .csv and _by_seed.parquet beside it")
    p.add_argument("--expect", type=arg("expect"), default=None, help="number of tables expected (missing cells are errors)")


def run(args) -> None:
    from medgrid.cli.base import check_writable
    from medgrid.report import aggregate

    check_writable(*aggregate.output_paths(args.out))
    aggregate.aggregate(args.tables, args.out, expected=args.expect)
