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

import numpy as np
import torch
from tqdm import tqdm

from medgrid import data, ops, results, seeding
from medgrid.attacks.pgd import perturb
from medgrid.errors import UserError
from medgrid.models import eval_mode
from medgrid.names import NONROBUST_MODES, RAND_TARGETS, ROBUST_INITS


def _generator(seed: int, stream: int, device) -> torch.Generator:
    """An independent torch generator for one use (targets, random starts, permutation, noise) of ``seed``."""
    return seeding.torch_generator(seed, seeding.STREAM_FEATURES, stream, device=device)


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
        raise UserError(f"unknown mode {mode!r}; valid: {', '.join(NONROBUST_MODES)}")
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
    """uint8 (N, C, H, W) tensor -> MedMNIST layout: (N, H, W) for one channel, (N, H, W, C) otherwise.

    A view where the images are in host memory (npz.write_npz writes strided arrays without a copy); images
    allocated channels-last (:func:`_output`) are already contiguous in that layout.
    """
    a = images.cpu().numpy()
    return a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)


def _output(split: data.Split) -> torch.Tensor:
    """An empty uint8 (N, C, H, W) tensor for a new training split, in host memory and laid out channels-last,
    i.e. as the npz stores it: the images are written to the file without another copy."""
    return torch.empty(split.images.shape, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)


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
    """D_rand / D_det from ``split``: returns (images uint8 (N, C, H, W), targets int64 (N,), success dict).

    ``success["rounded"][i]`` says whether ``model`` classifies the image i as written (rounded to uint8)
    as its target, ``success["float"][i]`` the same for the attack's float iterate before rounding.
    """
    device = split.device
    t_all = targets(split.labels, n_classes, mode, rand_targets=rand_targets, generator=_generator(seed, 1, device))
    start_gen = _generator(seed, 2, device)
    out = _output(split)
    success = {k: torch.empty(len(split), dtype=torch.bool, device=device) for k in ("float", "rounded")}
    n = len(split)
    with eval_mode(model):
        bar = tqdm(range(0, n, batch_size), desc=f"D_{mode} ({norm} eps {eps:g}, {steps} steps)",
                   disable=None if progress else True, mininterval=1.0, unit="batch")
        for start in bar:
            sl = slice(start, start + batch_size)
            x = data.float_batch(split, sl)
            t = t_all[sl]
            x_adv = perturb(model, x, t, norm=norm, eps=eps, alpha=step_size, steps=steps,
                             random_init=random_start, targeted=True, generator=start_gen)
            q = to_uint8(x_adv)
            out[sl] = q
            with torch.no_grad():
                success["float"][sl] = model(x_adv).argmax(1) == t
                success["rounded"][sl] = model(data.as_float(q)).argmax(1) == t
            bar.set_postfix(success=f"{success['rounded'][:start + x.shape[0]].float().mean().item():.3f}")
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
    with eval_mode(model):
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
    if init not in ROBUST_INITS:
        raise UserError(f"unknown --init {init!r}; valid: {', '.join(ROBUST_INITS)}")
    device = split.device
    n = len(split)
    if init == "other":
        perm = torch.randperm(n, generator=_generator(seed, 3, device), device=device)
        if n > 1:  # no image starts from itself: a fixed point of the permutation moves one place on
            fixed = perm == torch.arange(n, device=device)
            perm[fixed] = (perm[fixed] + 1) % n
    noise_gen = _generator(seed, 4, device)
    out = _output(split)
    correct = torch.empty(n, dtype=torch.bool, device=device)
    rel_sum = 0.0
    n_batches = math.ceil(n / batch_size)
    with eval_mode(model):
        bar = tqdm(total=n_batches * steps, desc=f"D_R ({steps} steps, init {init})",
                   disable=None if progress else True, mininterval=1.0, unit="step")  # None: only on a terminal
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            x = data.float_batch(split, sl)
            if init == "other":
                x0 = data.float_batch(split, perm[sl])
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


def attack_success_table(settings: dict, *, mode: str, norm: str, eps: float, success: dict, moved: torch.Tensor):
    """Tidy rows of a D_rand / D_det construction (source model's cell, train_data drand|ddet, the attack's norm
    and eps): ``attack_success`` (the written, uint8 images) and ``attack_success_before_rounding`` (the float
    iterates), each over the images whose target differs from their label (``moved``; an image whose random
    target is its own label needs no attack and would count as a free success), and ``target_is_label``,
    the fraction of all images left with their own label."""
    cell = {**results.cell_columns(settings), "train_data": NONROBUST_MODES[mode]}
    common = dict(eval_kind="features", eval_norm=norm, eval_eps=eps)
    n_moved = int(moved.sum().item())
    rows = [results.make_row(cell, metric="target_is_label", value=1.0 - moved.float().mean().item(),
                             n=int(moved.numel()), **common)]
    if n_moved:
        for metric, key in (("attack_success", "rounded"), ("attack_success_before_rounding", "float")):
            rows.append(results.make_row(cell, metric=metric, value=success[key][moved].float().mean().item(),
                                         n=n_moved, **common))
    return results.from_rows(rows, "features")


def robust_table(settings: dict, stats: dict, n: int):
    """Rows of the D_R construction: source model accuracy on D_R (label y) and the representation distance."""
    cell = {**results.cell_columns(settings), "train_data": "drobust"}
    rows = [results.make_row(cell, eval_kind="features", metric=m, value=stats[m], n=n)
            for m in ("source_acc", "rep_rel_dist")]
    return results.from_rows(rows, "features")
