"""The strong evaluation of one checkpoint: AutoAttack's white-box attacks on PGD's survivors, as tidy rows.

For each configured attack epsilon (a subset of the PGD grid), on the test images (all, or a seeded
random subset of ``samples`` of them), APGD-CE and APGD-T run on the samples PGD did not break
(:mod:`medgrid.attacks.ensemble`). Rows, each with ``eval_norm``/``eval_eps`` and ``n`` = the images
evaluated: ``apgd-ce`` (robust to PGD and APGD-CE), ``apgd-t`` (robust to PGD, APGD-CE and APGD-T) with
``acc``, ``balanced_acc`` and ``grad_evals`` (the stage's forward+backward passes), and ``worst``
(``acc``, ``balanced_acc``): the per-sample worst case over every white-box attack run, what the charts
and the headline table report. See docs/evaluation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from medgrid import epsilon, results, seeding
from medgrid.attacks.ensemble import EnsembleResult, ensemble_predictions
from medgrid.attacks.sweep import RobustResult
from medgrid.data.loading import take
from medgrid.errors import UserError
from medgrid.evaluation import metrics


@dataclass
class StrongSettings:
    """What the strong evaluation runs: ``eps`` {norm: epsilons} (each in the PGD grid; None: the whole
    grid), APGD ``iterations``, ``samples`` (a cap on the test images; None: all) and ``targets`` (APGD-T's
    target classes, at most n_classes - 1)."""

    eps: dict[str, list[float]] | None = None
    iterations: int = 100
    samples: int | None = None
    targets: int = 9
    batch_size: int = 500

    def grid(self, pgd_grid: dict[str, list[float]]) -> dict[str, list[float]]:
        """The epsilons to attack, checked to be in the PGD grid (the ensemble starts from PGD's outcome)."""
        if self.eps is None:
            return {norm: sorted(values) for norm, values in pgd_grid.items()}
        out = {}
        for norm, values in self.eps.items():
            known = pgd_grid.get(norm, [])
            missing = [v for v in values if epsilon.find(v, known) is None]
            if missing:
                raise UserError(f"strong evaluation at {norm} eps {', '.join(epsilon.text(norm, v) for v in missing)}: not in the "
                                f"PGD attack grid ({norm}: {', '.join(f'{k:g}' for k in known) or 'none'}); the "
                                f"APGD attacks start from PGD's outcome")
            out[norm] = sorted(k for k in known if epsilon.find(k, values) is not None)
        return out


@dataclass
class StrongOutcome:
    """What the sanity checks need from the strong evaluation: the images it used and, per norm, the PGD
    and ensemble results on them."""

    index: torch.Tensor
    attack_eps: dict[str, list[float]] = field(default_factory=dict)  # the whole PGD grid, per norm
    pgd: dict[str, list[RobustResult]] = field(default_factory=dict)
    ensemble: dict[str, list[EnsembleResult]] = field(default_factory=dict)


def subset(n: int, samples: int | None, seed: int, device) -> torch.Tensor:
    """Indices of the images a capped evaluation uses: a seeded random subset, in test-set order; all when
    ``samples`` is None or at least ``n``."""
    if samples is None or samples >= n:
        return torch.arange(n, device=device)
    if samples < 1:
        raise UserError(f"the strong evaluation needs at least 1 image, got samples={samples}")
    perm = torch.randperm(n, generator=seeding.torch_generator(seed, seeding.STREAM_SUBSET))
    return perm[:samples].sort().values.to(device)


def restrict(res: RobustResult, index: torch.Tensor) -> RobustResult:
    """A PGD result on a subset of its images (the passes spent are the whole run's)."""
    return RobustResult(res.norm, res.eps, res.pred[index], res.correct[index], res.grad_evals)


def strong_rows(model, x: torch.Tensor, y: torch.Tensor, cell: dict, pgd: dict[str, list[RobustResult]],
                settings: StrongSettings, *, seed: int = 0) -> tuple[list[dict], StrongOutcome]:
    """Rows ``apgd-ce``, ``apgd-t`` and ``worst`` at every epsilon of ``settings.grid`` (see the module doc),
    and the outcome the sanity checks use. ``pgd``: the PGD results on all of (x, y), per norm. ``x``: float, or
    uint8 images (wherever held) of which only the attacked subset is made float."""
    attack_eps = {norm: sorted(r.eps for r in res) for norm, res in pgd.items()}
    grid = settings.grid(attack_eps)
    index = subset(x.shape[0], settings.samples, seed, y.device)
    xs, ys = take(x, index, y.device), y[index]  # uint8 stays uint8: the ensemble makes float batches
    outcome = StrongOutcome(index, attack_eps)
    rows = []
    for norm, eps_list in grid.items():
        chosen = [restrict(r, index) for r in pgd[norm] if r.eps in eps_list]
        outcome.pgd[norm] = chosen
        outcome.ensemble[norm] = ensemble_predictions(model, xs, ys, chosen, iterations=settings.iterations,
                                                      n_targets=settings.targets, seed=seed,
                                                      batch_size=settings.batch_size)
        for res in outcome.ensemble[norm]:
            common = dict(eval_norm=norm, eval_eps=res.eps, n=len(index))
            for kind, stage in (("apgd-ce", "apgd-ce"), ("apgd-t", "apgd-t"), ("worst", "apgd-t")):
                correct, pred = res.correct(stage), res.pred[stage]
                rows += [results.make_row(cell, eval_kind=kind, metric="acc", value=correct.float().mean().item(),
                                          **common),
                         results.make_row(cell, eval_kind=kind, metric="balanced_acc",
                                          value=metrics.balanced_accuracy(ys, pred), **common)]
                if kind != "worst":
                    rows.append(results.make_row(cell, eval_kind=kind, metric="grad_evals",
                                                 value=res.grad_evals[stage], **common))
    return rows, outcome
