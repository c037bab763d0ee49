"""The per-sample worst case over every attack that ran on a sample, as tidy rows.

A sample of the strong evaluation is robust at an epsilon only if it is classified correctly clean and no
attack broke it at that epsilon or a smaller one: PGD, every stage of the ensemble, and what the
gradient-masking checks' attacks found on it (Square on its images, examples transferred from the
standard model; :class:`medgrid.evaluation.strong.Found`). Rows at each strong epsilon, ``n`` = the
strong evaluation's images:

- ``worst`` (``acc``, ``balanced_acc``): over everything that ran, what the charts and the headline report;
- ``worst-white-box``: over PGD and the white-box stages only (what the black-box and transfer checks
  compare with).

Robust accuracy is counted on the clean-correct samples only (``correct = clean_correct & ~broken``), so it
can never exceed the clean accuracy of the same images (row ``clean-subset``), for ``acc`` and, as every
class's recall can only fall, for ``balanced_acc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medgrid.evaluation.strong import StrongOutcome, accuracy_rows


@dataclass
class Worst:
    """At one epsilon, on the strong evaluation's images: labels found and broken samples over the white-box
    attacks, and over everything that ran."""

    norm: str
    eps: float
    white_pred: torch.Tensor
    white_broken: torch.Tensor
    pred: torch.Tensor
    broken: torch.Tensor

    def correct(self, clean_correct: torch.Tensor, white_box: bool = False) -> torch.Tensor:
        return clean_correct & ~(self.white_broken if white_box else self.broken)


def worst_cases(outcome: StrongOutcome) -> dict[str, list[Worst]]:
    """Per norm, in increasing epsilon: the worst cases (module doc). The ensemble's outcomes carry over
    from smaller epsilons already; the checks' finds are carried over here."""
    wrong = outcome.clean_pred != outcome.labels
    out = {}
    for norm, results_at in outcome.ensemble.items():
        carried_pred, carried = outcome.clean_pred.clone(), wrong.clone()
        out[norm] = []
        for res in results_at:
            white_pred, white_broken = res.white_box()
            pred, broken = outcome.clean_pred.clone(), wrong.clone()
            last = res.stages[-1].kind if res.stages else "pgd"
            for p, b in ((res.pred[last], res.broken[last]), (carried_pred, carried)):
                new = b & ~broken
                pred[new], broken = p[new], broken | b
            for found in outcome.found.get((norm, res.eps), []):
                full_pred, full_broken = torch.zeros_like(pred), torch.zeros_like(broken)
                full_pred[found.positions], full_broken[found.positions] = found.pred, found.broken
                new = full_broken & ~broken
                pred[new], broken = full_pred[new], broken | full_broken
            carried_pred, carried = pred, broken
            out[norm].append(Worst(norm, res.eps, white_pred, white_broken | wrong, pred, broken))
    return out


def worst_rows(cell: dict, outcome: StrongOutcome) -> list[dict]:
    """Rows ``worst`` and ``worst-white-box`` at every strong epsilon."""
    clean_correct = outcome.clean_pred == outcome.labels
    rows = []
    for norm, cases in worst_cases(outcome).items():
        for w in cases:
            common = dict(eval_norm=norm, eval_eps=w.eps, n=len(outcome.index))
            for kind, white in (("worst", False), ("worst-white-box", True)):
                correct = w.correct(clean_correct, white)
                pred = torch.where(correct, outcome.labels, w.white_pred if white else w.pred)
                rows += accuracy_rows(cell, kind, outcome.labels, pred, correct, **common)
    return rows
