"""``medgrid evaluate``: clean, PGD and MedMNIST-C rows of one checkpoint on its task's test split."""

from __future__ import annotations

import sys
from pathlib import Path

from medgrid.cli.base import add_data_options, check_writable, pick_device, set_threads, warn_if_other_data
from medgrid.errors import UserError
from medgrid.names import ATTACK_NORMS, STRONG_ATTACKS, STRONG_SCHEDULES
from medgrid.ranges import arg


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="tidy table (.parquet)")
    p.add_argument("--attack-norm", action="append", help="linf or l2; repeat with --attack-eps for several norms")
    p.add_argument("--attack-eps", action="append", help="comma-separated epsilons, e.g. 1/255,2/255,4/255")
    p.add_argument("--attack-steps", type=arg("attack_steps"), default=20)
    p.add_argument("--restarts", type=arg("restarts"), default=1)
    p.add_argument("--batch-size", type=arg("batch_size"), default=500)
    p.add_argument("--no-skip", action="store_true",
                   help="attack every sample at every epsilon (slower; same results; for checking)")
    p.add_argument("--csv", action="store_true", help="also write a CSV beside the Parquet table")
    p.add_argument("--shift-sets", type=Path, nargs="+", default=None, metavar="FILE",
                   help="MedMNIST-C test sets at the model's size, each named {corruption}.npz (from `medgrid shift "
                        "prepare`): add corruption rows (acc, balanced_acc per severity, means, BE/rBE)")
    p.add_argument("--no-clean", action="store_true",
                   help="leave the clean rows out (e.g. a separate table of corruption rows)")
    g = p.add_argument_group("strong evaluation (an ensemble of attacks on PGD's survivors; docs/evaluation.md)")
    g.add_argument("--strong", action="store_true", help="run it (a row set per attack, worst, worst-white-box, "
                                                          "clean-subset, pgd-subset)")
    g.add_argument("--strong-attacks", default=None,
                   help=f"comma-separated attacks from {', '.join(STRONG_ATTACKS)} (default: apgd-ce,apgd-t with "
                        "four or more classes, apgd-ce,apgd-t,square with three, apgd-ce,square with two)")
    g.add_argument("--strong-schedule", choices=STRONG_SCHEDULES, default="adaptive",
                   help="adaptive: a quarter of each budget, a per-sample early stop, the samples still closing in "
                        "run again at the full budget (a quarter of the cost or less); full: every iteration "
                        "and query of every attack on every sample it attacks (AutoAttack's)")
    g.add_argument("--strong-square-queries", type=arg("strong_square_queries"), default=5000,
                   help="query budget of the Square attack stage")
    g.add_argument("--strong-norm", action="append", help="restrict it to these epsilons of the PGD grid: linf or "
                                                          "l2, each followed by --strong-eps")
    g.add_argument("--strong-eps", action="append", help="comma-separated epsilons (default: every PGD epsilon)")
    g.add_argument("--strong-iterations", type=arg("strong_iterations"), default=100,
                   help="APGD iterations per run")
    g.add_argument("--strong-samples", type=arg("strong_samples"), default=None,
                   help="attack a seeded random subset of this many test images (default: all)")
    g.add_argument("--apgd-targets", type=arg("apgd_targets"), default=9,
                   help="APGD-T target classes (at most n_classes - 1)")
    g = p.add_argument_group("gradient-masking checks (rows sanity, square, transfer; need --strong)")
    g.add_argument("--sanity", action="store_true", help="run them")
    g.add_argument("--sanity-samples", type=arg("sanity_samples"), default=200, help="test images of the checks")
    g.add_argument("--sanity-tolerance", type=arg("sanity_tolerance"), default=0.02,
                   help="accuracy a check may miss by")
    g.add_argument("--square-queries", type=arg("square_queries"), default=1000,
                   help="query budget of the black-box check's Square attack (when the ensemble has no Square stage)")
    g.add_argument("--square-samples", type=arg("square_samples"), default=100,
                   help="test images the black-box check's Square attacks")
    g.add_argument("--transfer-from", type=Path, default=None,
                   help="standard checkpoint of the same task whose PGD examples the transfer check uses")
    add_data_options(p, data_help="the npz file of the model's task (its test split is evaluated, whatever data "
                                  "the model was trained on)")


def attack_grid(norms, eps_lists, what: str = "attack") -> dict[str, list[float]]:
    """{norm: sorted epsilons} from repeated --attack-norm / --attack-eps pairs."""
    from medgrid import epsilon

    norms, eps_lists = norms or [], eps_lists or []
    if len(norms) != len(eps_lists):
        raise UserError(f"give --{what}-eps once after each --{what}-norm")
    grid: dict[str, list[float]] = {}
    for norm, text in zip(norms, eps_lists):
        if norm not in ATTACK_NORMS:
            raise UserError(f"unknown {what} norm {norm!r}; valid: {', '.join(ATTACK_NORMS)}")
        grid[norm] = sorted(set(grid.get(norm, [])) | set(epsilon.parse_list(text)))
    return grid


def run(args) -> None:
    grid = attack_grid(args.attack_norm, args.attack_eps)
    if args.no_clean and not grid and not args.shift_sets:
        raise UserError("nothing to evaluate: --no-clean without --attack-norm/--attack-eps or --shift-sets")
    strong, sanity = _strong_settings(args), _sanity_settings(args)
    from medgrid.results import table_paths

    check_writable(*table_paths(args.out, args.csv))
    set_threads(args.threads)
    device = pick_device(args.device)

    from medgrid import checkpoint, results
    from medgrid.data import loading, placement
    from medgrid.evaluation import evaluate, health
    from medgrid.evaluation.shift import set_files

    model, settings = checkpoint.load(args.checkpoint, device=device)
    source = None
    if args.transfer_from is not None:
        source, source_settings = checkpoint.load(args.transfer_from, device=device)
        if (source_settings["task"], source_settings["size"]) != (settings["task"], settings["size"]):
            raise UserError(f"--transfer-from {args.transfer_from} is a {source_settings['task']} model at "
                            f"{source_settings['size']} px; the transfer check needs one of {settings['task']} at "
                            f"{settings['size']} px")
    # evaluated on the ORIGINAL task's test split, whatever data the model was trained on
    ds = loading.load(settings["task"], settings["size"], args.data, device=device, splits=("test",),
                      data_on=args.data_on)
    print(placement.describe(ds.data_on, ds.nbytes, device, args.data_on), flush=True)
    warn_if_other_data(ds, settings, args.checkpoint)
    table = evaluate.evaluate(model, settings, ds, attacks_by_norm=grid, steps=args.attack_steps,
                              restarts=args.restarts, skip=not args.no_skip, batch_size=args.batch_size,
                              clean=not args.no_clean, shift_sets=set_files(args.shift_sets or []),
                              strong=strong, sanity=sanity, source_model=source, data_on=args.data_on)
    results.write_table(table, args.out, csv=args.csv)
    print(table[table.metric != "grad_evals"].to_string(index=False, max_rows=40))
    from medgrid.evaluation.sanity import check_messages

    for warning in health.table_messages(table) + check_messages(table):
        print(f"medgrid: warning: {warning}", file=sys.stderr)


def _strong_settings(args):
    """StrongSettings from the options, or None without --strong."""
    if not args.strong:
        if args.strong_norm or args.strong_eps or args.strong_attacks or args.sanity:
            raise UserError("--strong-norm/--strong-eps/--strong-attacks and --sanity need --strong")
        return None
    from medgrid.evaluation.strong import StrongSettings

    eps = attack_grid(args.strong_norm, args.strong_eps, "strong") or None
    attacks = None
    if args.strong_attacks is not None:
        attacks = tuple(a.strip() for a in args.strong_attacks.split(",") if a.strip())
        bad = [a for a in attacks if a not in STRONG_ATTACKS]
        if bad or not attacks or len(set(attacks)) != len(attacks):
            raise UserError(f"--strong-attacks {args.strong_attacks!r}: give each of {', '.join(STRONG_ATTACKS)} at "
                            "most once, at least one")
    return StrongSettings(eps=eps, iterations=args.strong_iterations,
                          samples=None if args.strong_samples is None else args.strong_samples,
                          targets=args.apgd_targets, batch_size=args.batch_size,
                          attacks=attacks, schedule=args.strong_schedule,
                          square_queries=args.strong_square_queries)


def _sanity_settings(args):
    """SanitySettings from the options, or None without --sanity."""
    if not args.sanity:
        if args.transfer_from is not None:
            raise UserError("--transfer-from needs --sanity")
        return None
    from medgrid.evaluation.sanity import SanitySettings

    return SanitySettings(samples=args.sanity_samples,
                          tolerance=args.sanity_tolerance,
                          square_queries=args.square_queries,
                          square_samples=args.square_samples,
                          steps=args.attack_steps, batch_size=args.batch_size)
