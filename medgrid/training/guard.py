"""The catastrophic-overfitting guard of fast adversarial training (Wong et al. 2020, "early stopping").

FGSM training can overfit catastrophically: within an epoch the model becomes robust to its single FGSM step
and loses all robustness to PGD. Wong et al. detect it by PGD accuracy on one training mini-batch after every
epoch (PGD with 5 steps of eps / 4 and a random start; 2/255 at 8/255) and stop when it falls by more than 0.2
from the previous epoch, keeping the weights of the epoch before.

Here the mini-batch is fixed for the whole run (a seeded draw of ``batch_size`` training images, the same
every epoch; Wong et al. take the first batch of each shuffled epoch), and so is the attack's random start,
so two epochs are compared on the same images and starts. The attack runs with the model in eval mode, as
every attack in medgrid (Wong et al.'s runs in train mode). The loop records the accuracy per epoch in the
history, stops at a collapse and keeps its selected epoch among those before it.
"""

from __future__ import annotations

import torch

from medgrid import seeding
from medgrid.attacks.pgd import perturb
from medgrid.data import loading
from medgrid.models import eval_mode
from medgrid.names import OVERFIT_DROP

STEPS = 5
STEP = 0.25  # step size in units of eps


class OverfitGuard:
    """PGD accuracy of the model on a fixed training mini-batch, and whether it collapsed."""

    def __init__(self, split: loading.Split, *, batch_size: int, seed: int, norm: str, eps: float):
        n = len(split)
        order = seeding.numpy_rng(seed, seeding.STREAM_OVERFIT_GUARD, 0).permutation(n)[:min(batch_size, n)]
        index = torch.from_numpy(order).to(split.labels.device)
        self.x, self.y = loading.float_batch(split, index), split.labels.index_select(0, index)
        self.seed, self.norm, self.eps = seed, norm, float(eps)

    def describe(self) -> dict:
        """The guard's settings, for the checkpoint."""
        return {"images": int(self.y.numel()), "steps": STEPS, "alpha": STEP * self.eps, "eps": self.eps,
                "norm": self.norm, "drop": OVERFIT_DROP}

    def accuracy(self, model) -> float:
        """PGD accuracy on the batch at the full training epsilon, from the same random start every time."""
        gen = seeding.torch_generator(self.seed, seeding.STREAM_OVERFIT_GUARD, 1, device=self.x.device)
        x_adv = perturb(model, self.x, self.y, norm=self.norm, eps=self.eps, alpha=STEP * self.eps, steps=STEPS,
                        generator=gen)
        with torch.no_grad(), eval_mode(model):
            return (model(x_adv).argmax(1) == self.y).float().mean().item()


def collapsed(previous: float | None, now: float) -> bool:
    """Wong et al.'s rule: PGD accuracy fell by more than :data:`medgrid.names.OVERFIT_DROP` in one epoch."""
    return previous is not None and now < previous - OVERFIT_DROP
