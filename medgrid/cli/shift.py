"""``medgrid shift prepare|fetch|preview``: MedMNIST-C test sets, and a look at a corruption's severities."""

from __future__ import annotations

from pathlib import Path

from medgrid.cli.base import at_least, check_writable, log_runtime, set_threads
from medgrid.errors import UserError
from medgrid.names import CORRUPT_AT, SEVERITIES, SHIFT_SOURCES, UPSAMPLING
from medgrid.ranges import arg


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="shift_command", metavar="{prepare,fetch,preview}", required=True,
                           parser_class=type(p))
    q = sub.add_parser(
        "prepare", help="write one corrupted test set (MedMNIST-C layout, severities 1..5 concatenated) to a file")
    q.add_argument("--task", required=True)
    q.add_argument("--size", type=int, default=28, help="model image size; the set is stored at this size")
    q.add_argument("--data", type=Path, required=True, metavar="FILE",
                   help="the task's npz at --size: its test labels check every set, and with --corrupt-at "
                        "model_size its test images are corrupted")
    q.add_argument("--corruption", required=True, metavar="NAME", help="the corruption (one of the task's)")
    q.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the set's npz (named {corruption}.npz, as `evaluate --shift-sets` reads it)")
    q.add_argument("--source", choices=SHIFT_SOURCES, required=True,
                   help="download: the official MedMNIST-C set from --zip; generate: medmnistc here")
    q.add_argument("--corrupt-at", choices=CORRUPT_AT, default=None,
                   help="generate: corrupt the 224-px test set (--clean-224; default for MedMNIST) or the "
                        "model-size one upsampled to 224 (default and only choice for synthetic tasks)")
    q.add_argument("--clean-224", type=Path, default=None, metavar="FILE",
                   help="the task's 224-px npz ({task}_224.npz), corrupted with --corrupt-at 224")
    q.add_argument("--zip", type=Path, default=None, metavar="FILE",
                   help="--source download: MedMNIST-C's {task}.zip (`medgrid shift fetch` downloads it)")
    q.add_argument("--upsample", choices=UPSAMPLING, default="nearest",
                   help="resampling up to 224 px with --corrupt-at model_size (nearest: exact round trip at 28 px)")
    q.add_argument("--corruption-seed", type=arg("corruption_seed"), default=0,
                   help="medmnistc's seed (seed_everything), as its DatasetManager")
    q.add_argument("--data-seed", type=arg("data_seed"), default=0,
                   help="seed the synthetic task was generated with (for texture_shuffled)")
    q.add_argument("--threads", type=arg("threads"), default=1,
                   help="torch CPU threads (default 1: one image at a time; run corruptions as parallel jobs)")
    q.set_defaults(run=run_prepare)

    q = sub.add_parser("fetch", help="download MedMNIST-C's {task}.zip (Zenodo; needs internet)")
    q.add_argument("--task", required=True)
    q.add_argument("--out", type=Path, required=True, metavar="FILE", help="the zip file to write")
    q.set_defaults(run=run_fetch)

    q = sub.add_parser("preview", help="PNG of a few test images under one corruption at each severity")
    q.add_argument("--task", required=True)
    q.add_argument("--size", type=int, default=28)
    q.add_argument("--data", type=Path, required=True, metavar="FILE", help="the task's npz at --size")
    q.add_argument("--corruption", required=True)
    q.add_argument("--severity", action="append", default=None, help="1..5 (repeat; default all five)")
    q.add_argument("--n", type=arg("n"), default=8, help="number of test images (columns)")
    q.add_argument("--upsample", choices=UPSAMPLING, default="nearest")
    q.add_argument("--corruption-seed", type=arg("corruption_seed"), default=0, help="medmnistc's seed")
    q.add_argument("--out", type=Path, required=True, help="PNG file")
    q.set_defaults(run=run_preview)


def run_prepare(args) -> None:
    from medgrid.data import shift_sets

    if args.out.name != f"{args.corruption}.npz":
        raise UserError(f"--out {args.out}: name the file {args.corruption}.npz (evaluate --shift-sets takes a set's "
                        f"corruption from its file name)")
    check_writable(args.out)
    set_threads(at_least(args.threads, 1, "--threads"))  # torchvision's gaussian_blur runs on torch threads
    log_runtime("cpu")
    path = shift_sets.prepare(args.task, args.size, args.data, args.out, corruption=args.corruption,
                              source=args.source, corrupt_at=args.corrupt_at, corruption_seed=args.corruption_seed,
                              data_seed=args.data_seed, upsample=args.upsample, clean_224=args.clean_224,
                              archive=args.zip)
    print(path)


def run_fetch(args) -> None:
    from medgrid.data import shift_sets

    check_writable(args.out)
    print(shift_sets.fetch(args.task, args.out))


def run_preview(args) -> None:
    from medgrid.data import shift_sets

    severities = args.severity or SEVERITIES
    check_writable(args.out)
    shift_sets.preview(args.task, args.size, args.data, args.corruption, args.out, severities=severities, n=args.n,
                       seed=args.corruption_seed, upsample=args.upsample)
    print(f"wrote {args.out}: rows clean, severity {', '.join(map(str, severities))}")
