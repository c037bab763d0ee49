"""Projected gradient descent (Madry et al. 2018) in [0, 1] pixel space, L-inf and L2.

A step has three verbs (as in MadryLab's robustness library): random start, step and
project; the last two are one fused call, :func:`medgrid.ops.pgd_step`.

Two entry points:
- :func:`perturb` returns the final iterate (adversarial training, targeted feature
  construction);
- :func:`robust_predictions` evaluates robust accuracy over an epsilon grid. A sample counts
  as broken if the clean input or any iterate of any restart at any epsilon up to the current
  one is misclassified (the smaller ball lies inside the larger). With ``skip=True`` a broken
  sample leaves the batch at once and is not attacked at larger epsilons; the predictions are
  the same as with ``skip=False``, only the number of forward+backward passes changes.

L2 random start: uniform in the eps-ball (direction Gaussian, radius eps * U^(1/d)).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from medgrid import ops

NORMS = ("linf", "l2")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Model in eval mode for the attack (BatchNorm uses running statistics); restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def random_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform point of the eps-ball around x, clamped to [0, 1]."""
    if eps == 0:
        return x.clone()
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        delta = noise * eps
    elif norm == "l2":
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        flat = direction.flatten(1)
        flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        radius = eps * u.pow(1.0 / flat.shape[1])
        delta = (flat * radius[:, None]).view_as(x)
    else:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    return (x + delta).clamp_(0, 1)


def _loss_and_grad(model, x_adv, labels):
    """Per-sample cross-entropy, its gradient w.r.t. the input, and the logits."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    loss = F.cross_entropy(logits, labels, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x_adv)
    return loss.detach(), grad, logits.detach()


def perturb(model, x, y, *, norm: str, eps: float, alpha: float, steps: int, random_init: bool = True,
            targeted: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD from a random start; untargeted raises the loss of ``y``, targeted lowers it."""
    with eval_mode(model):
        x = x.detach()
        x_adv = random_start(x, norm, eps, generator) if random_init else x.clone()
        for _ in range(steps):
            _, grad, _ = _loss_and_grad(model, x_adv, y)
            x_adv = ops.pgd_step(x_adv, grad, x, norm=norm, eps=eps, alpha=alpha, targeted=targeted)
    return x_adv.detach()


@dataclass
class RobustResult:
    """Outcome at one attack epsilon for every sample of the evaluated set."""

    norm: str
    eps: float
    pred: torch.Tensor        # predicted label under attack (the wrong label found, or the true one)
    correct: torch.Tensor     # bool: survived the clean input and every iterate at every eps <= this one
    grad_evals: int           # image forward+backward passes spent at this epsilon


def default_alpha(eps: float, steps: int) -> float:
    """Madry's step size, 2.5 * eps / steps: PGD can walk from one side of the ball to the other."""
    return 2.5 * eps / max(steps, 1)


def robust_predictions(model, x, y, *, norm: str, eps_list, steps: int = 20, restarts: int = 1,
                       alpha_factor: float = 2.5, skip: bool = True, seed: int = 0,
                       batch_size: int = 500, batch_offset: int = 0) -> list[RobustResult]:
    """Robust predictions of ``model`` on (x, y) for every epsilon in ``eps_list`` (attacked in increasing order).

    Random starts are drawn for the whole batch from a generator seeded by (seed, batch, eps, restart),
    so a sample's trajectory does not depend on which other samples are still being attacked.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    eps_sorted = sorted(float(e) for e in eps_list)
    n = x.shape[0]
    device = x.device
    pred_out = {e: torch.empty(n, dtype=torch.long, device=device) for e in eps_sorted}
    evals = {e: 0 for e in eps_sorted}
    with eval_mode(model), torch.enable_grad():
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            batch_id = batch_offset + start // batch_size
            with torch.no_grad():
                pred = model(xb).argmax(1)
            broken = pred != yb
            for eps in eps_sorted:
                alpha = alpha_factor * eps / max(steps, 1)
                for r in range(restarts):
                    gen = torch.Generator(device=device).manual_seed(
                        hash((seed, batch_id, round(eps * 1e9), r)) & 0x7FFF_FFFF_FFFF_FFFF)
                    start_all = random_start(xb, norm, eps, gen)
                    idx = (~broken).nonzero().squeeze(1) if skip else torch.arange(xb.shape[0], device=device)
                    x_adv, x0, y0 = start_all[idx], xb[idx], yb[idx]
                    for step in range(steps + 1):
                        if idx.numel() == 0:
                            break
                        if step < steps:
                            _, grad, logits = _loss_and_grad(model, x_adv, y0)
                            evals[eps] += idx.numel()
                        else:  # the last iterate only needs a forward pass
                            with torch.no_grad():
                                logits = model(x_adv)
                        p = logits.argmax(1)
                        wrong = (p != y0) & ~broken[idx]
                        pred[idx[wrong]] = p[wrong]
                        broken[idx[wrong]] = True
                        if step == steps:
                            break
                        x_adv = ops.pgd_step(x_adv, grad, x0, norm=norm, eps=eps, alpha=alpha)
                        if skip:
                            keep = ~broken[idx]
                            if not keep.all():
                                idx, x_adv, x0, y0 = idx[keep], x_adv[keep], x0[keep], y0[keep]
                pred_out[eps][start:start + xb.shape[0]] = pred
    return [RobustResult(norm, e, pred_out[e], pred_out[e] == y, evals[e]) for e in eps_sorted]
