"""Projected gradient descent (Madry et al. 2018): a random start, then steps projected onto the eps-ball.

:func:`perturb` returns the final iterate (adversarial training, targeted dataset construction);
:func:`perturb_kl` is TRADES' variant, which raises the divergence from the clean prediction instead of the loss.
:func:`run_restart` is one restart of a robust evaluation: it records, in an :class:`Outcome`, the
first wrong label any iterate gets for each sample.
"""

from __future__ import annotations

import torch

from medgrid import ops
from medgrid.attacks.steps import kl_grad, loss_and_grad, random_start
from medgrid.models import eval_mode


def perturb(model, x, y, *, norm: str, eps: float, alpha: float, steps: int, random_init: bool = True,
            targeted: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD from a random start; untargeted raises the loss of ``y``, targeted lowers it."""
    with eval_mode(model):
        x = x.detach()
        x_adv = random_start(x, norm, eps, generator) if random_init else x.clone()
        for _ in range(steps):
            _, grad, _ = loss_and_grad(model, x_adv, y)
            x_adv = ops.pgd_step(x_adv, grad, x, norm=norm, eps=eps, alpha=alpha, targeted=targeted)
    return x_adv.detach()


def perturb_kl(model, x, *, norm: str, eps: float, alpha: float, steps: int, start_std: float = 0.001,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """TRADES' inner maximisation (Zhang et al. 2019): from ``x`` plus Gaussian noise of std ``start_std`` (the
    reference implementation's 0.001, not clamped: the first step projects), ``steps`` PGD steps that raise
    KL(f(x) || f(x_adv)), the divergence of the prediction from the clean one (no label is used)."""
    with eval_mode(model):
        x = x.detach()
        with torch.no_grad():
            p_clean = torch.softmax(model(x).float(), dim=1)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = x + start_std * noise
        for _ in range(steps):
            grad = kl_grad(model, x_adv, p_clean)
            x_adv = ops.pgd_step(x_adv, grad, x, norm=norm, eps=eps, alpha=alpha)
    return x_adv.detach().clamp_(0, 1)  # in the box already after a step (as the reference's final clamp)


class Outcome:
    """What attacks found on one batch: per sample, whether it is broken and the label it was given.

    A sample is broken once the clean input or any iterate of any attack is misclassified; ``pred``
    keeps the first wrong label found (the clean prediction, or the true label while unbroken).
    """

    def __init__(self, clean_pred: torch.Tensor, labels: torch.Tensor):
        self.labels = labels
        self.pred = clean_pred
        self.broken = clean_pred != labels

    @classmethod
    def of(cls, labels: torch.Tensor, pred: torch.Tensor, broken: torch.Tensor) -> "Outcome":
        """An outcome that starts where another attack left off (its labels found, its broken samples)."""
        outcome = cls(labels.clone(), labels)
        outcome.merge(pred, broken)
        return outcome

    def merge(self, pred: torch.Tensor, broken: torch.Tensor) -> None:
        """Add another attack's findings on the same samples: its broken samples are broken here too (those
        broken already keep the label found first)."""
        new = broken & ~self.broken
        self.pred[new] = pred[new]
        self.broken |= broken

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels found, broken) as they stand now."""
        return self.pred.clone(), self.broken.clone()

    def unbroken(self) -> torch.Tensor:
        """Indices of the samples no attack has broken yet."""
        return (~self.broken).nonzero().squeeze(1)

    def record(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        """Mark the samples ``idx`` whose ``logits`` give a wrong label (those not broken before)."""
        p = logits.argmax(1)
        wrong = (p != self.labels[idx]) & ~self.broken[idx]
        self.pred[idx[wrong]] = p[wrong]
        self.broken[idx[wrong]] = True


def run_restart(model, x: torch.Tensor, x_start: torch.Tensor, idx: torch.Tensor, outcome: Outcome, *,
                norm: str, eps: float, alpha: float, steps: int, drop_broken: bool) -> int:
    """One PGD restart from ``x_start`` on the samples ``idx`` of the batch ``x``; returns the
    forward+backward passes spent.

    Every iterate (the start and each step) is checked and recorded in ``outcome``. With
    ``drop_broken`` a sample leaves the batch as soon as it is broken.
    """
    evals = 0
    x_adv, x0, y0 = x_start[idx], x[idx], outcome.labels[idx]
    for step in range(steps + 1):
        if idx.numel() == 0:
            break
        if step < steps:
            _, grad, logits = loss_and_grad(model, x_adv, y0)
            evals += idx.numel()
        else:  # the last iterate only needs a forward pass
            with torch.no_grad():
                logits = model(x_adv)
        outcome.record(idx, logits)
        if step == steps:
            break
        x_adv = ops.pgd_step(x_adv, grad, x0, norm=norm, eps=eps, alpha=alpha)
        if drop_broken:
            keep = ~outcome.broken[idx]
            if not keep.all():
                idx, x_adv, x0, y0 = idx[keep], x_adv[keep], x0[keep], y0[keep]
    return evals
