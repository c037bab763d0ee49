"""``medgrid shift prepare|preview``: MedMNIST-C test sets, and a look at a corruption's severities."""

from __future__ import annotations

from pathlib import Path

from medgrid.cli.base import at_least, set_threads
from medgrid.names import CORRUPT_AT, SEVERITIES, SHIFT_SOURCES, UPSAMPLING


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="shift_command", metavar="{prepare,preview}", required=True, parser_class=type(p))
    q = sub.add_parser(
        "prepare", help="write {out-dir}/{task}/{corruption}.npz (MedMNIST-C layout, severities 1..5 concatenated)")
    q.add_argument("--task", required=True)
    q.add_argument("--size", type=int, default=28, help="model image size; the sets are stored at this size")
    q.add_argument("--data-dir", type=Path, required=True,
                   help="folder of the clean MedMNIST-format npz files (and of downloaded MedMNIST-C zips)")
    q.add_argument("--out-dir", type=Path, required=True, help="MedMNIST-C root for this size")
    q.add_argument("--source", choices=SHIFT_SOURCES, required=True,
                   help="download: official MedMNIST-C files (Zenodo, internet); generate: medmnistc here")
    q.add_argument("--corrupt-at", choices=CORRUPT_AT, default=None,
                   help="generate: corrupt the 224-px test set ({task}_224.npz; default for MedMNIST) or the "
                        "model-size one upsampled to 224 (default and only choice for synthetic tasks)")
    q.add_argument("--upsample", choices=UPSAMPLING, default="nearest",
                   help="resampling up to 224 px with --corrupt-at model_size (nearest: exact round trip at 28 px)")
    q.add_argument("--corruption", action="append", default=None, metavar="NAME",
                   help="one corruption (repeat for several; default: all of the task's)")
    q.add_argument("--seed", type=int, default=0, help="medmnistc's seed (seed_everything), as its DatasetManager")
    q.add_argument("--data-seed", type=int, default=0,
                   help="seed the synthetic task was generated with (for texture_shuffled)")
    q.add_argument("--clean-npz", type=Path, default=None,
                   help="the clean npz to corrupt instead of the one in --data-dir (e.g. a 224-px file elsewhere)")
    q.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: one image at a time; run corruptions as parallel jobs)")
    q.set_defaults(run=run_prepare)

    q = sub.add_parser("preview", help="PNG of a few test images under one corruption at each severity")
    q.add_argument("--task", required=True)
    q.add_argument("--size", type=int, default=28)
    q.add_argument("--data-dir", type=Path, required=True)
    q.add_argument("--corruption", required=True)
    q.add_argument("--severity", action="append", default=None, help="1..5 (repeat; default all five)")
    q.add_argument("--n", type=int, default=8, help="number of test images (columns)")
    q.add_argument("--upsample", choices=UPSAMPLING, default="nearest")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", type=Path, required=True, help="PNG file")
    q.set_defaults(run=run_preview)


def run_prepare(args) -> None:
    from medgrid import shift

    set_threads(at_least(args.threads, 1, "--threads"))  # torchvision's gaussian_blur runs on torch threads
    paths = shift.prepare(args.task, args.size, args.data_dir, args.out_dir, source=args.source,
                          corrupt_at=args.corrupt_at, corruptions=args.corruption, seed=args.seed,
                          data_seed=args.data_seed, upsample=args.upsample, clean_npz=args.clean_npz)
    for path in paths:
        print(path)


def run_preview(args) -> None:
    from medgrid import shift

    severities = args.severity or SEVERITIES
    shift.preview(args.task, args.size, args.data_dir, args.corruption, args.out, severities=severities, n=args.n,
                  seed=args.seed, upsample=args.upsample)
    print(f"wrote {args.out}: rows clean, severity {', '.join(map(str, severities))}")
