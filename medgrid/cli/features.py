"""``medgrid features nonrobust|robust``: Ilyas et al.'s datasets from a source checkpoint."""

from __future__ import annotations

from pathlib import Path

from medgrid.cli.base import (
    add_data_options,
    check_writable,
    pick_device,
    set_threads,
    warn_if_other_data,
)
from medgrid.errors import UserError
from medgrid.names import ATTACK_NORMS, NO_CONSTRUCTION, NONROBUST_MODES, RAND_TARGETS, ROBUST_INITS
from medgrid.ranges import arg


def _common(q, *, robust_source: bool) -> None:
    q.add_argument("--checkpoint", type=Path, required=True,
                   help="source model: " + ("adversarially trained" if robust_source else "standard (norm none)"))
    q.add_argument("--out", type=Path, required=True, help="MedMNIST-format npz to write")
    q.add_argument("--seed", type=arg("seed"), default=None, help="seed of targets/starts (default: the checkpoint's)")
    q.add_argument("--batch-size", type=arg("batch_size"), default=500)
    q.add_argument("--allow-any-source", action="store_true",
                   help="accept a source model of the other kind (or trained on a constructed dataset)")
    add_data_options(q, data_help="the npz file of the source model's task (its training split is attacked; val and "
                                  "test are copied into the new file)")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="features_command", metavar="{nonrobust,robust,alignment}", required=True,
                           parser_class=type(p))
    q = sub.add_parser("nonrobust", help="D_rand / D_det: targeted PGD on a standard model, relabelled to the target")
    _common(q, robust_source=False)
    q.add_argument("--mode", required=True, choices=tuple(NONROBUST_MODES),
                   help="rand: random target; det: t = (y + 1) mod C")
    q.add_argument("--table", type=Path, required=True, help="tidy table (.parquet) with the attack success rate")
    q.add_argument("--rand-targets", choices=RAND_TARGETS, default="all",
                   help="rand mode: t uniform over all classes (Ilyas; default) or over the classes != y")
    q.add_argument("--norm", choices=ATTACK_NORMS, default="l2")
    q.add_argument("--eps", default="0.5", help="attack radius, e.g. 0.5 (l2) or 8/255 (linf)")
    q.add_argument("--step-size", default="0.1", help="PGD step, e.g. 0.1 (l2) or 1/255 (linf)")
    q.add_argument("--steps", type=arg("steps"), default=100)
    q.add_argument("--random-start", action="store_true", help="start from a random point of the eps-ball")
    q.set_defaults(run=run_nonrobust)

    q = sub.add_parser("robust", help="D_R: representation inversion on an adversarially trained model")
    _common(q, robust_source=True)
    q.add_argument("--table", type=Path, default=None,
                   help="optional tidy table: source model accuracy on D_R, representation distance")
    q.add_argument("--steps", type=arg("steps"), default=1000)
    q.add_argument("--step-size", default="0.1", help="length of each L2-normalised step")
    q.add_argument("--init", choices=ROBUST_INITS, default="other",
                   help="start from another training image (seeded permutation) or uniform noise")
    q.set_defaults(run=run_robust)

    q = sub.add_parser("alignment", help="synthetic tasks: how much of each D_rand / D_det perturbation lies along "
                                         "the planted textures (target minus source class)")
    q.add_argument("--features", type=Path, required=True, metavar="NPZ", help="the D_rand / D_det file")
    q.add_argument("--name", required=True,
                   help="the dataset's name: drand, ddet, or one sweep setting's (e.g. drand-l2-0.5-100x0.1)")
    q.add_argument("--checkpoint", type=Path, required=True,
                   help="the standard model the dataset was made from (only its settings are read)")
    q.add_argument("--data", type=Path, required=True, metavar="FILE", help="the synthetic task's npz file")
    q.add_argument("--data-seed", type=arg("data_seed"), required=True,
                   help="the seed the synthetic task was generated with")
    q.add_argument("--out", type=Path, required=True, help="tidy table (.parquet)")
    q.set_defaults(run=run_alignment)


def _step_size(text: str) -> float:
    from medgrid import epsilon

    try:
        value = epsilon.parse(text)
    except UserError:
        value = 0.0
    if not value > 0:
        raise UserError(f"--step-size must be a number > 0 (e.g. 0.1 or 1/255), got {text!r}")
    return value


def _load_source(args, *, want_robust: bool):
    """(model, settings, dataset, seed) of the source checkpoint, checked to be the kind the construction needs."""
    from medgrid import checkpoint
    from medgrid.data import loading, placement

    check_writable(args.out, args.table)
    set_threads(args.threads)
    device = pick_device(args.device)
    model, settings = checkpoint.load(args.checkpoint, device=device)
    if not hasattr(model, "features"):
        raise UserError(f"checkpoint {args.checkpoint}: model has no features() (not a medgrid model)")
    robust_source = settings["norm"] != "none"
    if robust_source != want_robust and not args.allow_any_source:
        kind = f"{settings['norm']} eps {float(settings['eps']):g}" if robust_source else "standard (norm none)"
        need = "an adversarially trained" if want_robust else "a standard (norm none)"
        raise UserError(f"checkpoint {args.checkpoint} is {kind}; this construction needs {need} model "
                        f"(pass --allow-any-source to use it anyway)")
    if settings.get("train_data", "original") != "original" and not args.allow_any_source:
        raise UserError(f"checkpoint {args.checkpoint} was trained on {settings['train_data']}, not the "
                        f"original data (pass --allow-any-source to use it anyway)")
    ds = loading.load(settings["task"], settings["size"], args.data, device=device, data_on=args.data_on)
    print(placement.describe(ds.data_on, ds.nbytes, device, args.data_on), flush=True)
    warn_if_other_data(ds, settings, args.checkpoint)
    seed = int(settings["seed"]) if args.seed is None else args.seed
    return model, settings, ds, seed


def _write(out, arrays, table, table_path) -> None:
    """The dataset's npz and its table, both or neither (staged, then renamed)."""
    from medgrid import results
    from medgrid.atomic import atomic_outputs
    from medgrid.data import npz

    paths = [out] + ([table_path] if table is not None else [])
    with atomic_outputs(*paths) as temps:
        npz.write_npz_to(temps[0], arrays)
        if table is not None:
            results.save(results.validate(table, str(table_path)), temps[1], results.table_format(table_path))


def run_nonrobust(args) -> None:
    from medgrid import constructions, epsilon
    from medgrid.features import dataset, nonrobust

    eps = epsilon.parse(args.eps)
    if eps == 0:
        raise UserError("--eps must be > 0")
    step_size = _step_size(args.step_size)
    setting = constructions.token(args.norm, eps, step_size, args.steps)
    model, settings, ds, seed = _load_source(args, want_robust=False)
    images, t, success = nonrobust.nonrobust(model, ds.train, ds.info.n_classes, mode=args.mode, norm=args.norm,
                                            eps=eps, step_size=step_size, steps=args.steps,
                                            rand_targets=args.rand_targets, random_start=args.random_start,
                                            seed=seed, batch_size=args.batch_size)
    moved = t != ds.train.labels
    table = nonrobust.attack_success_table(settings, mode=args.mode, norm=args.norm, eps=eps, success=success,
                                          moved=moved, construction=setting)
    _write(args.out, dataset.npz_arrays(ds, images, t, construction=setting), table, args.table)
    rate = {k: v[moved].float().mean().item() if moved.any() else float("nan") for k, v in success.items()}
    print(f"wrote {args.out} ({len(t)} images, D_{args.mode}, {args.norm} eps {eps:g}, {args.steps} steps; "
          f"attack success on the {int(moved.sum())} images with a new label: {rate['rounded']:.4f} as written "
          f"(uint8), {rate['float']:.4f} before rounding; new label = old label for "
          f"{1 - moved.float().mean().item():.3f})")


def run_robust(args) -> None:
    from medgrid.features import dataset, robust

    step_size = _step_size(args.step_size)
    model, settings, ds, seed = _load_source(args, want_robust=True)
    images, labels, stats = robust.robust(model, ds.train, steps=args.steps, step_size=step_size, init=args.init,
                                            seed=seed, batch_size=args.batch_size)
    table = robust.robust_table(settings, stats, len(labels)) if args.table is not None else None
    _write(args.out, dataset.npz_arrays(ds, images, labels), table, args.table)
    print(f"wrote {args.out} ({len(labels)} images, D_R, {args.steps} steps of {step_size:g}, init "
          f"{args.init}; source model acc {stats['source_acc']:.4f}, representation distance "
          f"{stats['rep_rel_dist']:.4f} of its norm)")


def run_alignment(args) -> None:
    import numpy as np

    from medgrid import checkpoint, constructions, results
    from medgrid.data import npz, synthetic
    from medgrid.features import alignment, dataset
    from medgrid.names import NONROBUST_MODES, SYNTHETIC_TASKS

    kind, named = constructions.split(args.name)
    if kind not in NONROBUST_MODES.values():
        raise UserError(f"--name {args.name}: the texture alignment is measured on D_rand and D_det, not {kind}")
    check_writable(args.out)
    settings = checkpoint.read_settings(args.checkpoint)
    if settings["task"] not in SYNTHETIC_TASKS:
        raise UserError(f"{settings['task']} has no planted texture: the alignment exists on the synthetic tasks "
                        f"({', '.join(SYNTHETIC_TASKS)}) only")
    recorded = dataset.read_construction(args.features)
    setting = named if named is not None else recorded
    if named is not None and recorded not in (named, NO_CONSTRUCTION):
        raise UserError(f"--name names the attack setting {named} but {args.features} was made by {recorded}")
    with npz.open_npz(args.data) as z:
        original, sources = z["train_images"], z["train_labels"]
    with npz.open_npz(args.features) as z:
        constructed, targets = z["train_images"], z["train_labels"]
    patterns = synthetic.texture_patterns(int(settings["n_classes"]), original.shape[1], args.data_seed)
    match = alignment.pattern_match(original, sources, patterns)
    if match < alignment.MIN_PATTERN_MATCH:
        raise UserError(f"the textures of --data-seed {args.data_seed} match only {match:.2f} of the images of "
                        f"{args.data}: it was generated with another seed")
    attack = constructions.parse(setting) if setting != NO_CONSTRUCTION else None
    where = dict(norm=attack.norm, eps=attack.eps) if attack else {}
    table = alignment.alignment_table(alignment.cell_of(settings, kind, setting), original=original,
                                      constructed=constructed, sources=np.asarray(sources), targets=np.asarray(targets),
                                      patterns=patterns, **where)
    results.write_table(table, args.out)
    values = table.set_index("metric").value
    print(f"wrote {args.out} ({args.name}: texture alignment {values['texture_alignment']:.4f}, off-texture share "
          f"{values['off_texture_share']:.4f} over {int(table.n.iloc[0])} images; the data seed's textures match "
          f"{match:.3f} of the original images)")
