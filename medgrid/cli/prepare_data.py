"""``medgrid prepare-data``: make a task's npz file (download, copy or generate)."""

from __future__ import annotations

from pathlib import Path

from medgrid.catalog import SYNTHETIC_DEFAULTS
from medgrid.names import SPLITS
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
    for split in SPLITS:
        default = SYNTHETIC_DEFAULTS[f"n_{split}"]
        p.add_argument(f"--n-{split}", type=arg(f"n_{split}"), default=None,
                       help=f"synthetic tasks: images in the {split} split (default {default})")


def run(args) -> None:
    from medgrid.cli.base import check_writable
    from medgrid.data import prepare
    from medgrid.errors import UserError
    from medgrid.names import SYNTHETIC_TASKS

    sizes = {k: getattr(args, k) for k in ("n_train", "n_val", "n_test") if getattr(args, k) is not None}
    if sizes and args.task not in SYNTHETIC_TASKS:
        raise UserError(f"--n-train / --n-val / --n-test size the generated synthetic tasks, not {args.task}")
    check_writable(args.out)
    path = prepare.prepare(args.task, args.size, args.out, data_seed=args.data_seed, download=not args.no_download,
                           source=args.source, **sizes)
    print(path)
