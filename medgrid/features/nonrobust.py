"""Ilyas et al.'s nonrobust datasets D_rand and D_det (from a *standard* model C): every training image x with
label y is moved by a targeted PGD attack on C towards a target class t and relabelled t.

- ``D_rand``: t drawn at random. Ilyas et al. draw t uniformly among the classes; ``rand_targets="all"``
  (the default) does the same, so t = y for 1/C of the images, ``"other"`` draws t uniformly among the
  C - 1 classes other than y. On the synthetic task "all" gives the model trained on D_rand the higher
  accuracy on the original test set: with t != y the robust feature of the image is *anti*-correlated with
  the new label (it never agrees with it), which the trained model learns and which costs it accuracy.
- ``D_det``: t = (y + 1) mod C, a deterministic relabelling; the robust features now point to the wrong
  class on every image, so a model trained on D_det can only do well on the original test set through
  the nonrobust features the attack planted.

Defaults as Ilyas: L2, eps 0.5, step 0.1, 100 steps, no random start (the robustness library's default).
The attack success rate (fraction of the rounded images the source model classifies as t) goes into a tidy
table with ``eval_kind="features"``.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from medgrid import results
from medgrid.attacks.pgd import perturb
from medgrid.data import loading
from medgrid.errors import UserError
from medgrid.features.dataset import attack_layout, output_like, stream_generator, to_uint8
from medgrid.models import eval_mode
from medgrid.names import NO_CONSTRUCTION, NONROBUST_MODES, RAND_TARGETS

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


# ---------------------------------------------------------------------------------------- nonrobust


def nonrobust(model, split: loading.Split, n_classes: int, *, mode: str, norm: str = "l2", eps: float = 0.5,
              step_size: float = 0.1, steps: int = 100, rand_targets: str = "all", random_start: bool = False,
              seed: int = 0, batch_size: int = 500, progress: bool = True):
    """D_rand / D_det from ``split``: returns (images uint8 (N, C, H, W), targets int64 (N,), success dict).

    ``success["rounded"][i]`` says whether ``model`` classifies the image i as written (rounded to uint8)
    as its target, ``success["float"][i]`` the same for the attack's float iterate before rounding.
    """
    device = split.device
    t_all = targets(split.labels, n_classes, mode, rand_targets=rand_targets, generator=stream_generator(seed, 1, device))
    start_gen = stream_generator(seed, 2, device)
    out = output_like(split)
    success = {k: torch.empty(len(split), dtype=torch.bool, device=device) for k in ("float", "rounded")}
    n = len(split)
    with eval_mode(model), attack_layout(model, device) as layout:
        bar = tqdm(range(0, n, batch_size), desc=f"D_{mode} ({norm} eps {eps:g}, {steps} steps)",
                   disable=None if progress else True, mininterval=1.0, unit="batch")
        for start in bar:
            sl = slice(start, start + batch_size)
            x = layout(loading.float_batch(split, sl))
            t = t_all[sl]
            x_adv = perturb(model, x, t, norm=norm, eps=eps, alpha=step_size, steps=steps,
                             random_init=random_start, targeted=True, generator=start_gen)
            q = to_uint8(x_adv)
            out[sl] = q
            with torch.no_grad():
                success["float"][sl] = model(x_adv).argmax(1) == t
                success["rounded"][sl] = model(loading.as_float(q)).argmax(1) == t
            bar.set_postfix(success=f"{success['rounded'][:start + x.shape[0]].float().mean().item():.3f}")
    return out, t_all, success


# ---------------------------------------------------------------------------------------- the table


def attack_success_table(settings: dict, *, mode: str, norm: str, eps: float, success: dict, moved: torch.Tensor,
                         construction: str = NO_CONSTRUCTION):
    """Tidy rows of a D_rand / D_det construction (source model's cell, train_data drand|ddet, the attack's norm
    and eps, ``construction`` its setting's token): ``attack_success`` (the written, uint8 images) and ``attack_success_before_rounding`` (the float
    iterates), each over the images whose target differs from their label (``moved``; an image whose random
    target is its own label needs no attack and would count as a free success), and ``target_is_label``,
    the fraction of all images left with their own label."""
    cell = {**results.cell_columns(settings), "train_data": NONROBUST_MODES[mode], "construction": construction}
    common = dict(eval_kind="features", eval_norm=norm, eval_eps=eps)
    n_moved = int(moved.sum().item())
    rows = [results.make_row(cell, metric="target_is_label", value=1.0 - moved.float().mean().item(),
                             n=int(moved.numel()), **common)]
    if n_moved:
        for metric, key in (("attack_success", "rounded"), ("attack_success_before_rounding", "float")):
            rows.append(results.make_row(cell, metric=metric, value=success[key][moved].float().mean().item(),
                                         n=n_moved, **common))
    return results.from_rows(rows, "features")


