"""The datasets of Ilyas et al. (2019), "Adversarial examples are not bugs, they are features".

Nonrobust datasets (from a *standard* model C): every training image x with label y is moved by a
targeted PGD attack on C towards a target class t and relabelled t:

- ``D_rand``: t drawn at random. Ilyas et al. draw t uniformly among the classes; ``rand_targets="all"``
  (the default) does the same, so t = y for 1/C of the images, ``"other"`` draws t uniformly among the
  C - 1 classes other than y. On the synthetic task "all" gives the model trained on D_rand the higher
  accuracy on the original test set: with t != y the robust feature of the image is *anti*-correlated with
  the new label (it never agrees with it), which the trained model learns and which costs it accuracy.
- ``D_det``: t = (y + 1) mod C, a deterministic relabelling; the robust features now point to the wrong
  class on every image, so a model trained on D_det can only do well on the original test set through
  the nonrobust features the attack planted.

Defaults as Ilyas: L2, eps 0.5, step 0.1, 100 steps, no random start (the robustness library's default).

Robust dataset (from an adversarially trained model with penultimate representation g = model.features):
``D_R`` holds, for every training image x with label y, the image x_r that minimises ||g(x_r) - g(x)||_2,
found by L2-normalised gradient descent (Ilyas: 1000 steps of size 0.1) from another training image
(a seeded random permutation; ``init="other"``) or from uniform noise (``init="noise"``), clamped to
[0, 1]; label y. The step is :func:`medgrid.ops.pgd_step` with norm "l2" and an epsilon larger than the
diameter of the image box, so its projection never binds and it is a normalised step plus the clamp.

Both work batch by batch over the whole training split and keep only the current batch's iterate; the
result is rounded to uint8 and written in MedMNIST's npz layout (train split = the new images and labels,
val and test copied from the original task), so ``medgrid.data.load(task, size, npz=...)`` and
``medgrid train --data NPZ --train-data drand`` read it. The attack success rate (fraction of the rounded
images the source model classifies as t) goes into a tidy table with ``eval_kind="features"``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medgrid import attacks, data, ops, results
from medgrid.errors import UserError

MODES = ("rand", "det")
RAND_TARGETS = ("all", "other")
INITS = ("other", "noise")
TRAIN_DATA = {"rand": "drand", "det": "ddet", "robust": "drobust"}


# ------------------------------------------------------------------------------------------ seeding


def _generator(seed: int, stream: int, device) -> torch.Generator:
    """An independent torch generator for one use (targets, random starts, permutation, noise) of ``seed``."""
    derived = int(np.random.default_rng([int(seed), 7, int(stream)]).integers(0, 2**62))
    return torch.Generator(device=device).manual_seed(derived)


# ----------------------------------------------------------------------------------------- targets


def targets(labels: torch.Tensor, n_classes: int, mode: str, *, rand_targets: str = "all",
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Target class per image: ``det`` (y + 1) mod C; ``rand`` uniform over all C classes (``all``)
    or over the C - 1 classes other than y (``other``)."""
    if n_classes < 2:
        raise UserError(f"the nonrobust datasets need at least 2 classes, got {n_classes}")
    if mode == "det":
        return (labels + 1) % n_classes
    if mode != "rand":
        raise UserError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    n = labels.shape[0]
    dev = generator.device if generator is not None else labels.device
    if rand_targets == "all":
        t = torch.randint(0, n_classes, (n,), generator=generator, device=dev)
    elif rand_targets == "other":
        t = (labels.to(dev) + torch.randint(1, n_classes, (n,), generator=generator, device=dev)) % n_classes
    else:
        raise UserError(f"unknown --rand-targets {rand_targets!r}; valid: {', '.join(RAND_TARGETS)}")
    return t.to(labels.device)


# ------------------------------------------------------------------------------------- conversions


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 grey levels, rounded to nearest."""
    return x.detach().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _layout(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) tensor -> MedMNIST layout: (N, H, W) for one channel, (N, H, W, C) otherwise."""
    a = images.cpu().numpy()
    return a[:, 0] if a.shape[1] == 1 else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _labels(labels: torch.Tensor) -> np.ndarray:
    return labels.cpu().numpy().astype(np.uint8).reshape(-1, 1)


def npz_arrays(ds: data.Dataset, train_images: torch.Tensor, train_labels: torch.Tensor) -> dict[str, np.ndarray]:
    """MedMNIST-layout arrays: the new training split, val and test copied from ``ds``."""
    if train_images.dtype != torch.uint8:
        raise TypeError(f"train_images must be uint8, got {train_images.dtype}")
    return {
        "train_images": _layout(train_images), "train_labels": _labels(train_labels),
        "val_images": _layout(ds.val.images), "val_labels": _labels(ds.val.labels),
        "test_images": _layout(ds.test.images), "test_labels": _labels(ds.test.labels),
    }


# ---------------------------------------------------------------------------------------- nonrobust


def nonrobust(model, split: data.Split, n_classes: int, *, mode: str, norm: str = "l2", eps: float = 0.5,
              step_size: float = 0.1, steps: int = 100, rand_targets: str = "all", random_start: bool = False,
              seed: int = 0, batch_size: int = 500, progress: bool = True):
    """D_rand / D_det from ``split``: returns (images uint8 (N, C, H, W), targets int64 (N,), success bool (N,)).

    ``success[i]`` says whether ``model`` classifies the *rounded* image i as its target.
    """
    device = split.images.device
    t_all = targets(split.labels, n_classes, mode, rand_targets=rand_targets, generator=_generator(seed, 1, device))
    start_gen = _generator(seed, 2, device)
    out = torch.empty_like(split.images)
    success = torch.empty(len(split), dtype=torch.bool, device=device)
    n = len(split)
    with attacks.eval_mode(model):
        bar = tqdm(range(0, n, batch_size), desc=f"D_{mode} ({norm} eps {eps:g}, {steps} steps)",
                   disable=None if progress else True, mininterval=1.0, unit="batch")
        for start in bar:
            sl = slice(start, start + batch_size)
            x = data.as_float(split.images[sl])
            t = t_all[sl]
            x_adv = attacks.perturb(model, x, t, norm=norm, eps=eps, alpha=step_size, steps=steps,
                                    random_init=random_start, targeted=True, generator=start_gen)
            q = to_uint8(x_adv)
            out[sl] = q
            with torch.no_grad():
                success[sl] = model(data.as_float(q)).argmax(1) == t
            bar.set_postfix(success=f"{success[:start + x.shape[0]].float().mean().item():.3f}")
    return out, t_all, success


# ------------------------------------------------------------------------------------------- robust


def box_diameter(shape) -> float:
    """L2 diameter of [0, 1]^d for one image of ``shape`` (C, H, W): an epsilon no step can reach."""
    return math.sqrt(math.prod(shape))


def invert(model, x_target: torch.Tensor, x_init: torch.Tensor, *, steps: int, step_size: float):
    """Minimise ||g(x_r) - g(x_target)||_2 over x_r in [0, 1] from ``x_init`` with L2-normalised steps.

    Returns (x_r float in [0, 1], per-sample final distance ||g(x_r) - g(x_target)||_2 / ||g(x_target)||_2).
    """
    big = 2.0 * box_diameter(x_init.shape[1:])  # the projection of pgd_step never binds
    with attacks.eval_mode(model):
        with torch.no_grad():
            goal = model.features(x_target)
        x_r = x_init.detach().clone()
        for _ in range(steps):
            x_r.requires_grad_(True)
            # squared distance: per sample the same direction as the distance's gradient (the step is
            # normalised), without the distance's 0/0 where g(x_r) = g(x)
            loss = (model.features(x_r) - goal).flatten(1).pow(2).sum(1)
            (grad,) = torch.autograd.grad(loss.sum(), x_r)
            x_r = ops.pgd_step(x_r.detach(), grad, x_init, norm="l2", eps=big, alpha=step_size, targeted=True)
        with torch.no_grad():
            rel = (model.features(x_r) - goal).flatten(1).norm(dim=1) / goal.flatten(1).norm(dim=1).clamp_min(1e-12)
    return x_r.detach(), rel


def robust(model, split: data.Split, *, steps: int = 1000, step_size: float = 0.1, init: str = "other",
           seed: int = 0, batch_size: int = 500, progress: bool = True):
    """D_R from ``split``: returns (images uint8 (N, C, H, W), labels (N,), stats dict).

    stats: ``source_acc`` (the model classifies the rounded x_r as y) and ``rep_rel_dist`` (mean relative
    distance of the representations after the last step).
    """
    if init not in INITS:
        raise UserError(f"unknown --init {init!r}; valid: {', '.join(INITS)}")
    device = split.images.device
    n = len(split)
    if init == "other":
        perm = torch.randperm(n, generator=_generator(seed, 3, device), device=device)
        if n > 1:  # no image starts from itself: a fixed point of the permutation moves one place on
            fixed = perm == torch.arange(n, device=device)
            perm[fixed] = (perm[fixed] + 1) % n
    noise_gen = _generator(seed, 4, device)
    out = torch.empty_like(split.images)
    correct = torch.empty(n, dtype=torch.bool, device=device)
    rel_sum = 0.0
    n_batches = math.ceil(n / batch_size)
    with attacks.eval_mode(model):
        bar = tqdm(total=n_batches * steps, desc=f"D_R ({steps} steps, init {init})",
                   disable=None if progress else True, mininterval=1.0, unit="step")  # None: only on a terminal
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            x = data.as_float(split.images[sl])
            if init == "other":
                x0 = data.as_float(split.images[perm[sl]])
            else:
                x0 = torch.rand(x.shape, generator=noise_gen, device=device)
            x_r, done = x0, 0
            while done < steps:  # in chunks of steps, so the bar moves
                chunk = min(50, steps - done)
                x_r, rel = invert(model, x, x_r, steps=chunk, step_size=step_size)
                done += chunk
                bar.update(chunk)
            q = to_uint8(x_r)
            out[sl] = q
            with torch.no_grad():
                correct[sl] = model(data.as_float(q)).argmax(1) == split.labels[sl]
            rel_sum += rel.sum().item()
            bar.set_postfix(rel_dist=f"{rel_sum / (start + x.shape[0]):.3f}")
        bar.close()
    stats = {"source_acc": correct.float().mean().item(), "rep_rel_dist": rel_sum / n}
    return out, split.labels.clone(), stats


# ---------------------------------------------------------------------------------------- the table


def attack_success_table(settings: dict, *, mode: str, norm: str, eps: float, success: torch.Tensor):
    """One tidy row: the source model's grid coordinates, train_data = drand|ddet, the attack's norm and eps."""
    cell = {**results.cell_columns(settings), "train_data": TRAIN_DATA[mode]}
    row = results.make_row(cell, eval_kind="features", metric="attack_success",
                           value=success.float().mean().item(), n=int(success.numel()), eval_norm=norm,
                           eval_eps=eps)
    return results.from_rows([row], "features")


def robust_table(settings: dict, stats: dict, n: int):
    """Rows of the D_R construction: source model accuracy on D_R (label y) and the representation distance."""
    cell = {**results.cell_columns(settings), "train_data": "drobust"}
    rows = [results.make_row(cell, eval_kind="features", metric=m, value=stats[m], n=n)
            for m in ("source_acc", "rep_rel_dist")]
    return results.from_rows(rows, "features")


# ---------------------------------------------------------------------------------------------- CLI


def _load_source(args, *, want_robust: bool):
    from medgrid import checkpoint
    from medgrid.cli import _check_writable, _device, _threads

    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    from medgrid import epsilon

    text = args.step_size
    try:
        args.step_size = epsilon.parse_eps(text)
    except UserError:
        args.step_size = 0.0
    if not args.step_size > 0:
        raise UserError(f"--step-size must be a number > 0 (e.g. 0.1 or 1/255), got {text!r}")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    for path in (args.out, getattr(args, "table", None)):
        if path is not None:
            _check_writable(path)
    _threads(args)
    device = _device(args.device)
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
    ds = data.load(settings["task"], settings["size"], args.data_dir, device=device)
    if settings.get("data_sha256") and settings["data_sha256"] != ds.sha256:
        print(f"medgrid: warning: {ds.path} differs from the data {args.checkpoint} was trained on "
              f"(sha256 {ds.sha256[:12]} != {settings['data_sha256'][:12]})", file=sys.stderr)
    seed = int(settings["seed"]) if args.seed is None else args.seed
    return model, settings, ds, seed


def cmd_nonrobust(args):
    from medgrid import epsilon

    eps = epsilon.parse_eps(args.eps)
    if eps == 0:
        raise UserError("--eps must be > 0")
    model, settings, ds, seed = _load_source(args, want_robust=False)
    step_size = args.step_size
    images, t, success = nonrobust(model, ds.train, ds.info.n_classes, mode=args.mode, norm=args.norm, eps=eps,
                                   step_size=step_size, steps=args.steps, rand_targets=args.rand_targets,
                                   random_start=args.random_start, seed=seed, batch_size=args.batch_size)
    table = attack_success_table(settings, mode=args.mode, norm=args.norm, eps=eps, success=success)
    data.write_npz(args.out, npz_arrays(ds, images, t))
    results.write_table(table, args.table)
    agree = (t == ds.train.labels).float().mean().item()
    print(f"wrote {args.out} ({len(t)} images, D_{args.mode}, {args.norm} eps {eps:g}, {args.steps} steps; "
          f"attack success {success.float().mean().item():.4f}; new label = old label for {agree:.3f})")


def cmd_robust(args):
    model, settings, ds, seed = _load_source(args, want_robust=True)
    images, labels, stats = robust(model, ds.train, steps=args.steps, step_size=args.step_size, init=args.init,
                                   seed=seed, batch_size=args.batch_size)
    data.write_npz(args.out, npz_arrays(ds, images, labels))
    if args.table is not None:
        results.write_table(robust_table(settings, stats, len(labels)), args.table)
    print(f"wrote {args.out} ({len(labels)} images, D_R, {args.steps} steps of {args.step_size:g}, init "
          f"{args.init}; source model acc {stats['source_acc']:.4f}, representation distance "
          f"{stats['rep_rel_dist']:.4f} of its norm)")


def add_subcommands(subparsers) -> None:
    from medgrid.cli import add_common

    p = subparsers.add_parser("features", help="Ilyas et al. datasets: D_rand, D_det (nonrobust), D_R (robust)")
    sub = p.add_subparsers(dest="features_command", metavar="{nonrobust,robust}", required=True,
                           parser_class=type(p))

    def common(q, *, robust_source: bool):
        q.add_argument("--checkpoint", type=Path, required=True,
                       help="source model: " + ("adversarially trained" if robust_source else "standard (norm none)"))
        q.add_argument("--out", type=Path, required=True, help="MedMNIST-format npz to write")
        q.add_argument("--seed", type=int, default=None, help="seed of targets/starts (default: the checkpoint's)")
        q.add_argument("--batch-size", type=int, default=500)
        q.add_argument("--allow-any-source", action="store_true",
                       help="accept a source model of the other kind (or trained on a constructed dataset)")
        add_common(q)

    q = sub.add_parser("nonrobust", help="D_rand / D_det: targeted PGD on a standard model, relabelled to the target")
    common(q, robust_source=False)
    q.add_argument("--mode", required=True, choices=MODES, help="rand: random target; det: t = (y + 1) mod C")
    q.add_argument("--table", type=Path, required=True, help="tidy table (.parquet) with the attack success rate")
    q.add_argument("--rand-targets", choices=RAND_TARGETS, default="all",
                   help="rand mode: t uniform over all classes (Ilyas; default) or over the classes != y")
    q.add_argument("--norm", choices=attacks.NORMS, default="l2")
    q.add_argument("--eps", default="0.5", help="attack radius, e.g. 0.5 (l2) or 8/255 (linf)")
    q.add_argument("--step-size", default="0.1", help="PGD step, e.g. 0.1 (l2) or 1/255 (linf)")
    q.add_argument("--steps", type=int, default=100)
    q.add_argument("--random-start", action="store_true", help="start from a random point of the eps-ball")
    q.set_defaults(func=cmd_nonrobust)

    q = sub.add_parser("robust", help="D_R: representation inversion on an adversarially trained model")
    common(q, robust_source=True)
    q.add_argument("--table", type=Path, default=None,
                   help="optional tidy table: source model accuracy on D_R, representation distance")
    q.add_argument("--steps", type=int, default=1000)
    q.add_argument("--step-size", default="0.1", help="length of each L2-normalised step")
    q.add_argument("--init", choices=INITS, default="other",
                   help="start from another training image (seeded permutation) or uniform noise")
    q.set_defaults(func=cmd_robust)
