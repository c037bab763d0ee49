"""Ilyas et al.'s robust dataset D_R (from an adversarially trained model with penultimate representation
g = model.features): for every training image x with label y, the image x_r that minimises ||g(x_r) - g(x)||_2,
found by L2-normalised gradient descent (Ilyas: 1000 steps of size 0.1) from another training image (a seeded
random permutation; ``init="other"``) or from uniform noise (``init="noise"``), clamped to [0, 1]; label y.
The step is :func:`medgrid.ops.pgd_step` with norm "l2" and an epsilon larger than the diameter of the image
box, so its projection never binds and it is a normalised step plus the clamp. Works batch by batch over the
whole training split and keeps only the current batch's iterate.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from medgrid import ops, results
from medgrid.data import loading
from medgrid.errors import UserError
from medgrid.features.dataset import attack_layout, output_like, stream_generator, to_uint8
from medgrid.models import eval_mode
from medgrid.names import ROBUST_INITS

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


def robust(model, split: loading.Split, *, steps: int = 1000, step_size: float = 0.1, init: str = "other",
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
        perm = torch.randperm(n, generator=stream_generator(seed, 3, device), device=device)
        if n > 1:  # no image starts from itself: a fixed point of the permutation moves one place on
            fixed = perm == torch.arange(n, device=device)
            perm[fixed] = (perm[fixed] + 1) % n
    noise_gen = stream_generator(seed, 4, device)
    out = output_like(split)
    correct = torch.empty(n, dtype=torch.bool, device=device)
    rel_sum = 0.0
    n_batches = math.ceil(n / batch_size)
    with eval_mode(model), attack_layout(model, device) as layout:
        bar = tqdm(total=n_batches * steps, desc=f"D_R ({steps} steps, init {init})",
                   disable=None if progress else True, mininterval=1.0, unit="step")  # None: only on a terminal
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            x = layout(loading.float_batch(split, sl))
            if init == "other":
                x0 = layout(loading.float_batch(split, perm[sl]))
            else:
                x0 = layout(torch.rand(x.shape, generator=noise_gen, device=device))
            x_r, done = x0, 0
            while done < steps:  # in chunks of steps, so the bar moves
                chunk = min(50, steps - done)
                x_r, rel = invert(model, x, x_r, steps=chunk, step_size=step_size)
                done += chunk
                bar.update(chunk)
            q = to_uint8(x_r)
            out[sl] = q
            with torch.no_grad():
                correct[sl] = model(loading.as_float(q)).argmax(1) == split.labels[sl]
            rel_sum += rel.sum().item()
            bar.set_postfix(rel_dist=f"{rel_sum / (start + x.shape[0]):.3f}")
        bar.close()
    stats = {"source_acc": correct.float().mean().item(), "rep_rel_dist": rel_sum / n}
    return out, split.labels.clone(), stats


def robust_table(settings: dict, stats: dict, n: int):
    """Rows of the D_R construction: source model accuracy on D_R (label y) and the representation distance."""
    cell = {**results.cell_columns(settings), "train_data": "drobust"}
    rows = [results.make_row(cell, eval_kind="features", metric=m, value=stats[m], n=n)
            for m in ("source_acc", "rep_rel_dist")]
    return results.from_rows(rows, "features")
