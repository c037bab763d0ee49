"""Gradient-masking checks for every cell (Carlini et al. 2019, "On evaluating adversarial robustness";
Athalye et al. 2018), as tidy rows ``eval_kind="sanity"``.

Each check writes a row ``metric=<check>`` with value 1 (pass) or 0 (fail) and a row with the measured
quantity it was decided on, on a subset of the strong evaluation's test images (``samples``):

- ``monotone`` / ``monotone_max_increase`` (per norm): PGD run at each epsilon of the attack grid on its
  own (no carry-over from smaller epsilons, which would make the check pass by construction) must not
  gain accuracy as epsilon grows by more than the tolerance;
- ``unbounded`` / ``unbounded_acc``: PGD with L-inf eps 0.5 (any image within reach of any other of the
  same mean) must drive accuracy to at most the tolerance;
- ``pgd_vs_worst`` / ``pgd_minus_worst`` (per epsilon of the strong evaluation): the worst case over
  PGD, APGD-CE and APGD-T must not be more than the tolerance below PGD alone: otherwise PGD, the
  attack of every other number, overstates robustness;
- ``black_box`` / ``black_box_gap`` (per norm, at its largest strong epsilon): the black-box Square
  attack (Andriushchenko et al. 2020; torchattacks' implementation) must not beat the white-box worst
  case by more than the tolerance (gap = worst-case accuracy - Square's accuracy); rows
  ``eval_kind="square"`` hold its accuracy;
- ``transfer`` / ``transfer_gap`` (per strong epsilon, when a source model is given: the standard model
  of the same task and seed): PGD examples made on the source model must not beat the white-box worst
  case by more than the tolerance; rows ``eval_kind="transfer"`` hold the accuracy on them.

A masked gradient (a non-differentiable input quantisation, saturated softmax...) stalls white-box
attacks but neither Square nor transferred examples, nor unbounded ones: those checks then fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medgrid import epsilon, results, seeding
from medgrid.attacks.pgd import perturb
from medgrid.attacks.steps import default_alpha
from medgrid.attacks.sweep import robust_predictions
from medgrid.data.loading import take, take_float
from medgrid.errors import UserError
from medgrid.evaluation import metrics
from medgrid.evaluation.strong import StrongOutcome
from medgrid.models import eval_mode

MEASURED = {"monotone": "monotone_max_increase", "unbounded": "unbounded_acc", "pgd_vs_worst": "pgd_minus_worst",
            "black_box": "black_box_gap", "transfer": "transfer_gap"}


@dataclass
class SanitySettings:
    samples: int = 200            # images for the checks (the first of the strong evaluation's)
    tolerance: float = 0.02       # accuracy points a check may miss by
    unbounded_eps: float = 0.5    # L-inf radius of the unbounded attack
    square_queries: int = 1000    # Square's query budget per image
    square_samples: int = 100     # images Square attacks (the first of the checks')
    steps: int = 20               # PGD steps of the monotonicity, unbounded and transfer attacks
    batch_size: int = 500


def _row(cell, check: str, passed: bool, measured: float, n: int, norm: str = "none", eps: float = 0.0):
    common = dict(eval_kind="sanity", eval_norm=norm, eval_eps=eps, n=n)
    return [results.make_row(cell, metric=check, value=float(passed), **common),
            results.make_row(cell, metric=MEASURED[check], value=float(measured), **common)]


def _acc(correct: torch.Tensor) -> float:
    return correct.float().mean().item()


def sanity_rows(model, x: torch.Tensor, y: torch.Tensor, cell: dict, strong: StrongOutcome,
                settings: SanitySettings, *, seed: int = 0, source_model=None) -> list[dict]:
    """Every check's rows (module doc) for ``model`` on (x, y), the whole test split, after the strong
    evaluation ``strong``; ``x`` float, or uint8 images of which only the checked subset is made float."""
    k = min(settings.samples, len(strong.index))
    index = strong.index[:k]
    xs, ys = take(x, index, y.device), y[index]  # uint8 stays uint8: each check makes float batches
    tol, rows = settings.tolerance, []
    pgd_kw = dict(steps=settings.steps, seed=seeding.derive(seed, seeding.STREAM_SANITY),
                  batch_size=settings.batch_size)
    for norm, eps_all in strong.attack_eps.items():
        accs = [_acc(robust_predictions(model, xs, ys, norm=norm, eps_list=[e], **pgd_kw)[0].correct)
                for e in eps_all]
        increase = max([max(0.0, b - a) for a, b in zip(accs, accs[1:])], default=0.0)
        rows += _row(cell, "monotone", increase <= tol, increase, k, norm)
    (unbounded,) = robust_predictions(model, xs, ys, norm="linf", eps_list=[settings.unbounded_eps], **pgd_kw)
    acc = _acc(unbounded.correct)
    rows += _row(cell, "unbounded", acc <= tol, acc, k, "linf", settings.unbounded_eps)
    for norm, ensemble in strong.ensemble.items():
        for p, e in zip(strong.pgd[norm], ensemble):
            gap = _acc(p.correct) - _acc(e.correct())
            rows += _row(cell, "pgd_vs_worst", gap <= tol, gap, len(strong.index), norm, e.eps)
        rows += _black_box_rows(model, xs, ys, cell, ensemble[-1], settings, seed)
        if source_model is not None:
            for e in ensemble:
                rows += _transfer_rows(model, source_model, xs, ys, cell, e, settings, seed)
    return rows


def _black_box_rows(model, xs, ys, cell, worst, settings: SanitySettings, seed: int) -> list[dict]:
    """Square at the ensemble result's epsilon on the first ``square_samples`` images, against the worst case."""
    try:
        import torchattacks  # noqa: PLC0415 - optional: pinned requirements, installed with --no-deps
    except ImportError:
        raise UserError("the black-box check needs torchattacks: pip install --no-deps torchattacks==3.5.1 "
                        "(or turn the sanity checks off)") from None
    m = min(settings.square_samples, xs.shape[0])
    xq, yq = take_float(xs, slice(0, m), ys.device), ys[:m]
    attack = torchattacks.Square(model, norm={"linf": "Linf", "l2": "L2"}[worst.norm], eps=worst.eps,
                                 n_queries=settings.square_queries, n_restarts=1,
                                 seed=seeding.derive(seed, seeding.STREAM_SANITY, 1, epsilon.key(worst.eps)) % 2**31)
    with eval_mode(model):
        adv = attack(xq, yq)
        with torch.no_grad():
            pred = model(adv).argmax(1)
    correct = pred == yq
    common = dict(eval_kind="square", eval_norm=worst.norm, eval_eps=worst.eps, n=m)
    rows = [results.make_row(cell, metric="acc", value=_acc(correct), **common),
            results.make_row(cell, metric="balanced_acc", value=metrics.balanced_accuracy(yq, pred), **common)]
    gap = _acc(~worst.broken["apgd-t"][:m]) - _acc(correct)
    return rows + _row(cell, "black_box", gap <= settings.tolerance, gap, m, worst.norm, worst.eps)


def _transfer_rows(model, source, xs, ys, cell, worst, settings: SanitySettings, seed: int) -> list[dict]:
    """PGD examples made on ``source`` at the result's epsilon, evaluated on ``model``, against the worst case."""
    device = ys.device
    gen = seeding.torch_generator(seed, seeding.STREAM_SANITY, 2, epsilon.key(worst.eps), device=device)
    pred, clean = [], []
    for start in range(0, xs.shape[0], settings.batch_size):
        sl = slice(start, start + settings.batch_size)
        xb = take_float(xs, sl, device)
        adv = perturb(source, xb, ys[sl], norm=worst.norm, eps=worst.eps, steps=settings.steps,
                      alpha=default_alpha(worst.eps, settings.steps), generator=gen)
        with eval_mode(model), torch.no_grad():
            pred.append(model(adv).argmax(1))
            clean.append(model(xb).argmax(1))
    pred, clean = torch.cat(pred), torch.cat(clean)
    correct = (pred == ys) & (clean == ys)  # a sample the model misclassifies clean is broken for every attack
    common = dict(eval_kind="transfer", eval_norm=worst.norm, eval_eps=worst.eps, n=xs.shape[0])
    rows = [results.make_row(cell, metric="acc", value=_acc(correct), **common),
            results.make_row(cell, metric="balanced_acc", value=metrics.balanced_accuracy(ys, pred), **common)]
    gap = _acc(~worst.broken["apgd-t"][:xs.shape[0]]) - _acc(correct)
    return rows + _row(cell, "transfer", gap <= settings.tolerance, gap, xs.shape[0], worst.norm, worst.eps)
