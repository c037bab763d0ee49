"""``medgrid prepare-data``: make a task's npz file (download, copy or generate)."""

from __future__ import annotations

from pathlib import Path

from medgrid.ranges import arg


def add_arguments(p) -> None:
    p.add_argument("--task", required=True)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the npz file to write (MedMNIST calls it {task}.npz at 28 px, {task}_{size}.npz otherwise)")
    p.add_argument("--data-seed", type=arg("data_seed"), default=0, help="seed of the synthetic tasks' generator")
    p.add_argument("--source", type=Path, default=None, metavar="FILE",
                   help="an already-downloaded MedMNIST file to copy (only read, never written)")
    p.add_argument("--no-download", action="store_true", help="fail with the fetch command instead of downloading")


def run(args) -> None:
    from medgrid.cli.base import check_writable
    from medgrid.data import prepare

    check_writable(args.out)
    path = prepare.prepare(args.task, args.size, args.out, data_seed=args.data_seed, download=not args.no_download,
                           source=args.source)
    print(path)
