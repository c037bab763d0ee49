"""``medgrid evaluate``: clean, PGD and MedMNIST-C rows of one checkpoint on its task's test split."""

from __future__ import annotations

from pathlib import Path

from medgrid.cli.base import add_data_options, at_least, check_writable, pick_device, set_threads
from medgrid.errors import UserError
from medgrid.names import ATTACK_NORMS


def add_arguments(p) -> None:
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
    add_data_options(p)


def attack_grid(norms, eps_lists) -> dict[str, list[float]]:
    """{norm: sorted epsilons} from repeated --attack-norm / --attack-eps pairs."""
    from medgrid import epsilon

    norms, eps_lists = norms or [], eps_lists or []
    if len(norms) != len(eps_lists):
        raise UserError("give --attack-eps once after each --attack-norm")
    grid: dict[str, list[float]] = {}
    for norm, text in zip(norms, eps_lists):
        if norm not in ATTACK_NORMS:
            raise UserError(f"unknown attack norm {norm!r}; valid: {', '.join(ATTACK_NORMS)}")
        grid[norm] = sorted(set(grid.get(norm, [])) | set(epsilon.parse_eps_list(text)))
    return grid


def run(args) -> None:
    grid = attack_grid(args.attack_norm, args.attack_eps)
    at_least(args.attack_steps, 1, "--attack-steps")
    at_least(args.restarts, 1, "--restarts")
    if args.no_clean and not grid and args.shift_dir is None:
        raise UserError("nothing to evaluate: --no-clean without --attack-norm/--attack-eps or --shift-dir")
    shift_corruptions = [c.strip() for c in args.shift_corruptions.split(",") if c.strip()] \
        if args.shift_corruptions else None
    if shift_corruptions and args.shift_dir is None:
        raise UserError("--shift-corruptions needs --shift-dir")
    check_writable(args.out)
    set_threads(args.threads)
    device = pick_device(args.device)

    from medgrid import checkpoint, data, evaluate, placement, results

    model, settings = checkpoint.load(args.checkpoint, device=device)
    # evaluated on the ORIGINAL task's test split, whatever data the model was trained on
    ds = data.load(settings["task"], settings["size"], args.data_dir, npz=args.data, device=device, splits=("test",),
                   data_on=args.data_on)
    print(placement.describe(ds.data_on, ds.nbytes, device, args.data_on), flush=True)
    table = evaluate.evaluate(model, settings, ds, attacks_by_norm=grid, steps=args.attack_steps,
                              restarts=args.restarts, skip=not args.no_skip, batch_size=args.batch_size,
                              clean=not args.no_clean, shift_dir=args.shift_dir, shift_corruptions=shift_corruptions,
                              data_on=args.data_on)
    results.write_table(table, args.out, csv=args.csv)
    print(table[table.metric != "grad_evals"].to_string(index=False, max_rows=40))
