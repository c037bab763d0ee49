"""``medgrid prepare-data``: make a task's npz exist (download, copy or generate)."""

from __future__ import annotations

from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--task", required=True)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic tasks")
    p.add_argument("--source-dir", type=Path, default=None,
                   help="folder of already-downloaded MedMNIST npz files to copy from (never written)")
    p.add_argument("--no-download", action="store_true", help="fail with the fetch command instead of downloading")


def run(args) -> None:
    from medgrid import data

    path = data.prepare(args.task, args.size, args.data_dir, seed=args.seed, download=not args.no_download,
                        source_dir=args.source_dir)
    print(path)
