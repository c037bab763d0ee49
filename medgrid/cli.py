"""The ``medgrid`` console script: one subcommand per workflow rule.

User mistakes (``UserError``) print one line on stderr and exit 2; nothing half-written is left.
Subcommands of other modules register through ``add_subcommands(subparsers)`` listed in COMMAND_MODULES.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from medgrid.errors import UserError

COMMAND_MODULES: tuple[str, ...] = ("medgrid.features", "medgrid.charts", "medgrid.shift")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (exit 2) instead of usage + message."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def _threads(args) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no GPU")
    return name


def _check_writable(path: Path) -> None:
    """Fail before hours of work if the output cannot be written."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"output folder {parent} is not writable")


def add_common(p, *, data_required=True):
    """--data-dir, --threads and --device, shared by the subcommands that load data and models."""
    p.add_argument("--data-dir", type=Path, required=data_required,
                   help="folder with MedMNIST-format npz files ({task}.npz, {task}_{size}.npz)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def cmd_prepare_data(args):
    from medgrid import data

    path = data.prepare(args.task, args.size, args.data_dir, seed=args.seed, download=not args.no_download,
                        source_dir=args.source_dir)
    print(path)


def cmd_train(args):
    from medgrid import checkpoint, data, epsilon, models, train

    eps = epsilon.parse_eps(args.eps)
    epsilon.check_training(args.norm, eps)
    if args.arch not in models.MODELS:
        raise UserError(f"unknown arch {args.arch!r}; valid: {', '.join(models.MODELS)}")
    if args.epochs < 1 or args.batch_size < 1 or args.attack_steps < 1:
        raise UserError("--epochs, --batch-size and --attack-steps must be >= 1")
    if args.lr <= 0:
        raise UserError("--lr must be > 0")
    _check_writable(args.out)
    _threads(args)
    device = _device(args.device)
    ds = data.load(args.task, args.size, args.data_dir, npz=args.data, device=device)
    hp = train.HParams(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       schedule=args.schedule, weight_decay=args.weight_decay, momentum=args.momentum,
                       attack_steps=args.attack_steps, attack_step_size=args.attack_step_size,
                       stop_train_acc=args.stop_train_acc)
    model, settings = train.train(ds, arch=args.arch, norm=args.norm, eps=eps, seed=args.seed, hp=hp,
                                  device=device, train_data=args.train_data)
    checkpoint.save(args.out, model, settings)
    print(f"wrote {args.out} (best epoch {settings['best_epoch']}, "
          f"val balanced acc {settings['best_val_balanced_acc']:.4f})")


def _attack_grid(norms, eps_lists) -> dict[str, list[float]]:
    from medgrid import epsilon

    norms, eps_lists = norms or [], eps_lists or []
    if len(norms) != len(eps_lists):
        raise UserError("give --attack-eps once after each --attack-norm")
    grid: dict[str, list[float]] = {}
    for norm, text in zip(norms, eps_lists):
        if norm not in ("linf", "l2"):
            raise UserError(f"unknown attack norm {norm!r}; valid: linf, l2")
        grid.setdefault(norm, [])
        grid[norm] = sorted(set(grid[norm]) | set(epsilon.parse_eps_list(text)))
    return grid


def cmd_evaluate(args):
    from medgrid import checkpoint, data, evaluate, results

    grid = _attack_grid(args.attack_norm, args.attack_eps)
    if args.attack_steps < 1 or args.restarts < 1:
        raise UserError("--attack-steps and --restarts must be >= 1")
    if args.no_clean and not grid and args.shift_dir is None:
        raise UserError("nothing to evaluate: --no-clean without --attack-norm/--attack-eps or --shift-dir")
    shift_corruptions = [c.strip() for c in args.shift_corruptions.split(",") if c.strip()] \
        if args.shift_corruptions else None
    if shift_corruptions and args.shift_dir is None:
        raise UserError("--shift-corruptions needs --shift-dir")
    _check_writable(args.out)
    _threads(args)
    device = _device(args.device)
    model, settings = checkpoint.load(args.checkpoint, device=device)
    # evaluated on the ORIGINAL task's test split, whatever data the model was trained on
    ds = data.load(settings["task"], settings["size"], args.data_dir, npz=args.data, device=device)
    table = evaluate.evaluate(model, settings, ds, attacks_by_norm=grid, steps=args.attack_steps,
                              restarts=args.restarts, skip=not args.no_skip, batch_size=args.batch_size,
                              clean=not args.no_clean, shift_dir=args.shift_dir, shift_corruptions=shift_corruptions)
    results.write_table(table, args.out, csv=args.csv)
    print(table[table.metric != "grad_evals"].to_string(index=False, max_rows=40))


def cmd_aggregate(args):
    from medgrid import aggregate

    aggregate.aggregate(args.tables, args.out, expected=args.expect)


def build_parser() -> argparse.ArgumentParser:
    from medgrid import __version__

    parser = _Parser(prog="medgrid", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"medgrid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("prepare-data", help="download (MedMNIST), copy (--source-dir) or generate (synthetic) a task")
    p.add_argument("--task", required=True)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic tasks")
    p.add_argument("--source-dir", type=Path, default=None,
                   help="folder of already-downloaded MedMNIST npz files to copy from (never written)")
    p.add_argument("--no-download", action="store_true", help="fail with the fetch command instead of downloading")
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("train", help="train one cell: standard (--norm none) or PGD adversarial training")
    p.add_argument("--task", required=True)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--arch", required=True)
    p.add_argument("--norm", required=True, choices=("none", "linf", "l2"))
    p.add_argument("--eps", default="0", help="training epsilon, e.g. 2/255 or 0.5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.pt)")
    p.add_argument("--data", type=Path, default=None,
                   help="train on this MedMNIST-format npz instead of the task's file (e.g. D_rand)")
    p.add_argument("--train-data", default="original", choices=("original", "drand", "ddet", "drobust"))
    p.add_argument("--epochs", type=int, default=15, help="maximum epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--attack-steps", type=int, default=7, help="PGD steps per adversarial training batch")
    p.add_argument("--attack-step-size", type=float, default=None, help="default 2.5 * eps / attack-steps")
    p.add_argument("--stop-train-acc", type=float, default=None,
                   help="stop once an epoch's training accuracy reaches this (e.g. 0.995)")
    add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="clean and PGD metrics of one checkpoint on the test split")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="tidy table (.parquet)")
    p.add_argument("--attack-norm", action="append", help="linf or l2; repeat with --attack-eps for several norms")
    p.add_argument("--attack-eps", action="append", help="comma-separated epsilons, e.g. 1/255,2/255,4/255")
    p.add_argument("--attack-steps", type=int, default=20)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--no-skip", action="store_true",
                   help="attack every sample at every epsilon (slower; same results; for checking)")
    p.add_argument("--data", type=Path, default=None, help="evaluate on this npz instead of the task's file")
    p.add_argument("--csv", action="store_true", help="also write a CSV beside the Parquet table")
    p.add_argument("--shift-dir", type=Path, default=None,
                   help="MedMNIST-C root at the model's size ({dir}/{task}/{corruption}.npz, from `medgrid shift "
                        "prepare`): add corruption rows (acc, balanced_acc per severity, means, BE/rBE)")
    p.add_argument("--shift-corruptions", default=None, metavar="A,B,...",
                   help="only these corruptions (default: all of the task's)")
    p.add_argument("--no-clean", action="store_true",
                   help="leave the clean rows out (e.g. a separate table of corruption rows)")
    add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("aggregate", help="concatenate per-cell tables into one summary (+ CSV, + by-seed view)")
    p.add_argument("tables", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="summary .parquet; .csv and _by_seed.parquet beside it")
    p.add_argument("--expect", type=int, default=None, help="number of tables expected (missing cells are errors)")
    p.set_defaults(func=cmd_aggregate)

    for name in COMMAND_MODULES:
        importlib.import_module(name).add_subcommands(sub)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except UserError as exc:
        print(f"medgrid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medgrid: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
