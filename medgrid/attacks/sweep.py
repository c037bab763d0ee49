"""Robust predictions over an epsilon grid: the driver of a PGD evaluation.

A sample counts as broken if the clean input or any iterate of any restart at any epsilon up to the
current one is misclassified (the smaller ball lies inside the larger), so epsilons are attacked in
increasing order. With ``skip=True`` a broken sample leaves the batch at once and is not attacked at
larger epsilons; the predictions are the same as with ``skip=False``, only the number of
forward+backward passes changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm import tqdm

from medgrid import epsilon, seeding
from medgrid.attacks.pgd import Outcome, run_restart
from medgrid.attacks.steps import check_norm, default_alpha, random_start
from medgrid.data.loading import take_float
from medgrid.models import eval_mode


@dataclass
class RobustResult:
    """Outcome at one attack epsilon for every sample of the evaluated set."""

    norm: str
    eps: float
    pred: torch.Tensor        # predicted label under attack (the wrong label found, or the true one)
    correct: torch.Tensor     # bool: survived the clean input and every iterate at every eps <= this one
    grad_evals: int           # image forward+backward passes spent at this epsilon


def start_generator(seed: int, batch: int, eps: float, restart: int, device) -> torch.Generator:
    """The generator of one restart's random start: seeded by (seed, batch, eps, restart), so a sample's
    trajectory does not depend on which other samples are still being attacked."""
    return seeding.torch_generator(seed, seeding.STREAM_PGD, batch, epsilon.key(eps), restart, device=device)


def robust_predictions(model, x, y, *, norm: str, eps_list, steps: int = 20, restarts: int = 1,
                       skip: bool = True, seed: int = 0, batch_size: int = 500) -> list[RobustResult]:
    """Robust predictions of ``model`` on (x, y) for every epsilon in ``eps_list``.

    Step size :func:`~medgrid.attacks.steps.default_alpha`; random starts are drawn for the whole
    batch, whatever is skipped. ``x`` float in [0, 1], or uint8 images (wherever they are held) made float
    on ``y``'s device one batch at a time, so a whole float copy of the set is never made.
    """
    check_norm(norm)
    eps_sorted = sorted(float(e) for e in eps_list)
    n, device = x.shape[0], y.device
    preds = {e: torch.empty(n, dtype=torch.long, device=device) for e in eps_sorted}
    evals = {e: 0 for e in eps_sorted}
    # progress on a terminal only (disable=None), never in a log file
    bar = tqdm(total=math.ceil(n / batch_size) * len(eps_sorted), desc=f"PGD-{steps} {norm}", leave=False,
               mininterval=1.0, disable=None)
    with eval_mode(model), torch.enable_grad(), bar:
        for batch, start in enumerate(range(0, n, batch_size)):
            sl = slice(start, start + batch_size)
            xb, yb = take_float(x, sl, device), y[sl]
            with torch.no_grad():
                outcome = Outcome(model(xb).argmax(1), yb)
            everyone = torch.arange(xb.shape[0], device=device)
            for eps in eps_sorted:
                bar.set_postfix_str(f"eps {eps:.4g}", refresh=False)
                bar.update()
                alpha = default_alpha(eps, steps)
                for r in range(restarts):
                    x_start = random_start(xb, norm, eps, start_generator(seed, batch, eps, r, device))
                    idx = outcome.unbroken() if skip else everyone
                    evals[eps] += run_restart(model, xb, x_start, idx, outcome, norm=norm, eps=eps, alpha=alpha,
                                              steps=steps, drop_broken=skip)
                preds[eps][start:start + xb.shape[0]] = outcome.pred
    return [RobustResult(norm, e, preds[e], preds[e] == y, evals[e]) for e in eps_sorted]
