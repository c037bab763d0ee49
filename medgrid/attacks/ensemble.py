"""The white-box ensemble of a strong evaluation: PGD's survivors attacked by APGD-CE, then by APGD-T
over the most likely other classes (AutoAttack's standard white-box attacks, Croce & Hein 2020).

Epsilons are attacked in increasing order and a sample broken at a smaller epsilon stays broken (the
smaller ball lies inside the larger). At each epsilon the outcome starts from PGD's (the clean input and
every PGD iterate, :func:`medgrid.attacks.sweep.robust_predictions`), APGD-CE runs on the samples still
unbroken, then APGD-T on those APGD-CE left. So, as AutoAttack reports them, the accuracies are
cumulative: ``apgd-ce`` counts a sample as robust if PGD and APGD-CE failed, ``apgd-t`` (= ``worst``) if
PGD, APGD-CE and APGD-T failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medgrid import epsilon, seeding
from medgrid.attacks.apgd import run_apgd
from medgrid.attacks.pgd import Outcome
from medgrid.attacks.steps import check_norm
from medgrid.attacks.sweep import RobustResult
from medgrid.data.loading import take_float
from medgrid.models import eval_mode

STAGES = ("apgd-ce", "apgd-t")


@dataclass
class EnsembleResult:
    """At one epsilon, per stage (``apgd-ce``, ``apgd-t``): the labels found and which samples are broken
    after PGD and the attacks up to that stage, and the forward+backward passes the stage spent."""

    norm: str
    eps: float
    pred: dict[str, torch.Tensor]
    broken: dict[str, torch.Tensor]
    grad_evals: dict[str, int]

    def correct(self, stage: str = "apgd-t") -> torch.Tensor:
        return ~self.broken[stage]


def ensemble_predictions(model, x: torch.Tensor, y: torch.Tensor, pgd: list[RobustResult], *, iterations: int = 100,
                         n_targets: int = 9, seed: int = 0, batch_size: int = 500) -> list[EnsembleResult]:
    """Run APGD-CE and APGD-T on (x, y) after the PGD results ``pgd`` (one norm, on the same samples); ``x`` float,
    or uint8 images made float one batch at a time on ``y``'s device.

    ``n_targets``: APGD-T's target classes (at most n_classes - 1), the ones with the highest clean logits
    after the predicted class, one APGD run each, on the samples the previous targets left unbroken.
    """
    pgd = sorted(pgd, key=lambda r: r.eps)
    norms = {r.norm for r in pgd}
    if len(norms) != 1:
        raise ValueError(f"one norm at a time, got {sorted(norms)}")
    norm = norms.pop()
    check_norm(norm)
    n, device = x.shape[0], y.device
    pred = {(r.eps, s): torch.empty(n, dtype=torch.long, device=device) for r in pgd for s in STAGES}
    broken = {(r.eps, s): torch.empty(n, dtype=torch.bool, device=device) for r in pgd for s in STAGES}
    evals = {(r.eps, s): 0 for r in pgd for s in STAGES}
    with eval_mode(model):
        for batch, start in enumerate(range(0, n, batch_size)):
            sl = slice(start, start + batch_size)
            xb, yb = take_float(x, sl, device), y[sl]
            with torch.no_grad():
                clean = model(xb)
            outcome = Outcome(clean.argmax(1), yb)
            # APGD-T's targets: the classes in order of their clean logits, after the first
            ranked = clean.argsort(dim=1, descending=True)
            targets = min(n_targets, clean.shape[1] - 1)
            for r in pgd:
                outcome.merge(r.pred[sl], ~r.correct[sl])
                gen = seeding.torch_generator(seed, seeding.STREAM_APGD, batch, epsilon.key(r.eps), 0, device=device)
                evals[(r.eps, "apgd-ce")] += run_apgd(model, xb, outcome.unbroken(), outcome, norm=norm, eps=r.eps,
                                                      iterations=iterations, loss="ce", generator=gen)
                pred[(r.eps, "apgd-ce")][sl], broken[(r.eps, "apgd-ce")][sl] = outcome.snapshot()
                for rank in range(1, targets + 1):
                    gen = seeding.torch_generator(seed, seeding.STREAM_APGD, batch, epsilon.key(r.eps), rank,
                                                  device=device)
                    evals[(r.eps, "apgd-t")] += run_apgd(model, xb, outcome.unbroken(), outcome, norm=norm,
                                                         eps=r.eps, iterations=iterations, loss="dlr-targeted",
                                                         target=ranked[:, rank], generator=gen)
                pred[(r.eps, "apgd-t")][sl], broken[(r.eps, "apgd-t")][sl] = outcome.snapshot()
    return [EnsembleResult(norm, r.eps, {s: pred[(r.eps, s)] for s in STAGES},
                           {s: broken[(r.eps, s)] for s in STAGES}, {s: evals[(r.eps, s)] for s in STAGES})
            for r in pgd]
