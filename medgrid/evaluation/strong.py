"""The strong evaluation of one checkpoint: an ensemble of attack stages on PGD's survivors, as tidy rows.

For each configured attack epsilon (a subset of the PGD grid), on the test images (all, or a seeded
random subset of ``samples`` of them), the stages of :mod:`medgrid.attacks.stages` (by default APGD-CE
and APGD-T with four or more classes, APGD-CE and Square with two) run on the samples PGD did not break
(:mod:`medgrid.attacks.ensemble`). Rows, each with ``n`` = the images evaluated:

- ``clean-subset`` and ``pgd-subset`` (``acc``, ``balanced_acc``): clean and PGD accuracy of exactly these
  images, so every robust number has its like-for-like clean and PGD figure;
- one set per stage, named by its kind (``apgd-ce``, ``apgd-t``, ``apgd-t-margin``, ``square``): ``acc`` and
  ``balanced_acc`` robust to PGD and every stage up to it (cumulative, as AutoAttack reports), its cost
  (``grad_evals``: forward+backward passes, or ``queries``: Square's forward passes), its ``budget`` per run
  (APGD iterations or Square queries), ``targets`` (targeted stages) and ``adaptive`` (1: the adaptive
  schedule, 0: the full one).

The per-sample worst case over everything that ran (these stages, and the black-box and transfer attacks of
the checks) is written after the checks by :mod:`medgrid.evaluation.worst`. See docs/evaluation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from medgrid import epsilon, results, seeding
from medgrid.attacks.ensemble import Budget, EnsembleResult, ensemble_predictions
from medgrid.attacks.stages import resolve
from medgrid.attacks.sweep import RobustResult
from medgrid.data.loading import take, take_float
from medgrid.errors import UserError
from medgrid.evaluation import metrics
from medgrid.models import eval_mode
from medgrid.names import STRONG_SCHEDULES


@dataclass
class StrongSettings:
    """What the strong evaluation runs: ``eps`` {norm: epsilons} (each in the PGD grid; None: the whole
    grid), ``attacks`` (configured stage names; None: the default for the task's number of classes), APGD
    ``iterations``, Square ``square_queries``, the ``schedule`` (adaptive or full), ``samples`` (a cap on
    the test images; None: all) and ``targets`` (APGD-T's target classes, at most n_classes - 1)."""

    eps: dict[str, list[float]] | None = None
    iterations: int = 100
    samples: int | None = None
    targets: int = 9
    batch_size: int = 500
    attacks: tuple[str, ...] | None = None
    schedule: str = "adaptive"
    square_queries: int = 5000

    def __post_init__(self):
        if self.schedule not in STRONG_SCHEDULES:
            raise UserError(f"unknown strong evaluation schedule {self.schedule!r}; valid: "
                            f"{', '.join(STRONG_SCHEDULES)}")

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

    def budget(self) -> Budget:
        return Budget(iterations=self.iterations, queries=self.square_queries, schedule=self.schedule)


@dataclass
class Found:
    """What an attack outside the ensemble (the checks' Square and transfer attacks) found at one epsilon,
    on some of the strong evaluation's images: their ``positions`` in it, the labels and broken samples."""

    kind: str
    positions: torch.Tensor
    pred: torch.Tensor
    broken: torch.Tensor


@dataclass
class StrongOutcome:
    """What the checks and the worst case need from the strong evaluation: the images it used (``index``
    into the test split), their labels and clean predictions, the whole PGD grid per norm, and per norm
    the PGD and ensemble results on these images; ``found`` collects, per (norm, eps), what the checks'
    attacks add."""

    index: torch.Tensor
    labels: torch.Tensor
    clean_pred: torch.Tensor
    attack_eps: dict[str, list[float]] = field(default_factory=dict)  # the whole PGD grid, per norm
    pgd: dict[str, list[RobustResult]] = field(default_factory=dict)
    ensemble: dict[str, list[EnsembleResult]] = field(default_factory=dict)
    found: dict[tuple[str, float], list[Found]] = field(default_factory=dict)

    def add(self, norm: str, eps: float, found: Found) -> None:
        self.found.setdefault((norm, eps), []).append(found)


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


def accuracy_rows(cell: dict, kind: str, labels: torch.Tensor, pred: torch.Tensor, correct: torch.Tensor,
                  **common) -> list[dict]:
    """``acc`` and ``balanced_acc`` of one attack's outcome (``correct``: robust; ``pred``: labels found)."""
    return [results.make_row(cell, eval_kind=kind, metric="acc", value=correct.float().mean().item(), **common),
            results.make_row(cell, eval_kind=kind, metric="balanced_acc",
                             value=metrics.balanced_accuracy(labels, pred), **common)]


def _clean_pred(model, xs, batch_size: int, device) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(take_float(xs, slice(s, s + batch_size), device)).argmax(1)
                          for s in range(0, xs.shape[0], batch_size)])


def strong_rows(model, x: torch.Tensor, y: torch.Tensor, cell: dict, pgd: dict[str, list[RobustResult]],
                settings: StrongSettings, *, n_classes: int, seed: int = 0) -> tuple[list[dict], StrongOutcome]:
    """The rows of the module doc at every epsilon of ``settings.grid``, and the outcome the checks and the
    worst case use. ``pgd``: the PGD results on all of (x, y), per norm. ``x``: float, or uint8 images
    (wherever held) of which only the attacked subset is made float."""
    stages, notes = resolve(settings.attacks, n_classes, targets=settings.targets)
    for note in notes:
        print(f"strong evaluation: {note}", flush=True)
    attack_eps = {norm: sorted(r.eps for r in res) for norm, res in pgd.items()}
    grid = settings.grid(attack_eps)
    index = subset(x.shape[0], settings.samples, seed, y.device)
    xs, ys = take(x, index, y.device), y[index]  # uint8 stays uint8: the ensemble makes float batches
    with eval_mode(model):
        clean = _clean_pred(model, xs, settings.batch_size, y.device)
    outcome = StrongOutcome(index, ys, clean, attack_eps)
    n = len(index)
    rows = accuracy_rows(cell, "clean-subset", ys, clean, clean == ys, n=n)
    for norm, eps_list in grid.items():
        chosen = [restrict(r, index) for r in pgd[norm] if r.eps in eps_list]
        outcome.pgd[norm] = chosen
        outcome.ensemble[norm] = ensemble_predictions(model, xs, ys, chosen, stages=stages, budget=settings.budget(),
                                                      seed=seed, batch_size=settings.batch_size)
        for p, res in zip(chosen, outcome.ensemble[norm]):
            common = dict(eval_norm=norm, eval_eps=res.eps, n=n)
            rows += accuracy_rows(cell, "pgd-subset", ys, p.pred, p.correct, **common)
            for stage in res.stages:
                rows += accuracy_rows(cell, stage.kind, ys, res.pred[stage.kind], res.correct(stage.kind), **common)
                square = stage.optimiser == "square"
                spent = {"metric": "queries" if square else "grad_evals", "value": res.cost[stage.kind]}
                budget = settings.square_queries if square else settings.iterations
                rows += [results.make_row(cell, eval_kind=stage.kind, **spent, **common),
                         results.make_row(cell, eval_kind=stage.kind, metric="budget", value=budget, **common),
                         results.make_row(cell, eval_kind=stage.kind, metric="adaptive",
                                          value=float(settings.schedule == "adaptive"), **common)]
                if stage.targets:
                    rows.append(results.make_row(cell, eval_kind=stage.kind, metric="targets", value=stage.targets,
                                                 **common))
    return rows, outcome
