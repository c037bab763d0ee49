"""Evaluation of one checkpoint on its task's test split, as tidy rows: clean, PGD and MedMNIST-C corruptions."""

from __future__ import annotations

import math

import torch

from medgrid import results
from medgrid.attacks.sweep import RobustResult, robust_predictions
from medgrid.data import loading
from medgrid.errors import UserError
from medgrid.evaluation import health, metrics
from medgrid.evaluation.predict import predict
from medgrid.evaluation.sanity import SanitySettings, sanity_rows
from medgrid.evaluation.shift import corruption_rows
from medgrid.evaluation.strong import StrongSettings, strong_rows
from medgrid.evaluation.worst import worst_rows


def clean_rows(model, split: loading.Split, cell: dict) -> list[dict]:
    """acc, balanced_acc and auc on the clean split, and the model's health rows (:mod:`medgrid.evaluation.health`)."""
    logits, labels = predict(model, split)
    pred = logits.argmax(1)
    n = len(split)
    rows = [results.make_row(cell, eval_kind="clean", metric="acc", value=metrics.accuracy(labels, pred), n=n),
            results.make_row(cell, eval_kind="clean", metric="balanced_acc",
                             value=metrics.balanced_accuracy(labels, pred), n=n)]
    auc = metrics.auc(labels, logits)
    if not math.isnan(auc):
        rows.append(results.make_row(cell, eval_kind="clean", metric="auc", value=auc, n=n))
    return rows + health.rows(cell, health.assess(labels, pred, logits.shape[1]), n)


def pgd_rows(cell: dict, y: torch.Tensor, pgd: dict[str, list[RobustResult]]) -> list[dict]:
    """Robust acc, balanced_acc and the forward+backward passes spent, per attack norm and epsilon."""
    rows = []
    n = y.shape[0]
    for norm, results_at in pgd.items():
        for res in results_at:
            common = dict(eval_kind="pgd", eval_norm=norm, eval_eps=res.eps, n=n)
            rows += [
                results.make_row(cell, metric="acc", value=res.correct.float().mean().item(), **common),
                results.make_row(cell, metric="balanced_acc", value=metrics.balanced_accuracy(y, res.pred), **common),
                results.make_row(cell, metric="grad_evals", value=res.grad_evals, **common),
            ]
    return rows


def evaluate(model, settings: dict, ds: loading.Dataset, *, attacks_by_norm: dict[str, list[float]],
             steps: int = 20, restarts: int = 1, skip: bool = True, batch_size: int = 500,
             clean: bool = True, shift_sets: dict | None = None, strong: StrongSettings | None = None,
             sanity: SanitySettings | None = None, source_model=None, data_on: str = "auto"):
    """All rows of one checkpoint on the test split of ``ds``, as a validated table.

    Clean and training-health rows (unless ``clean=False``), PGD rows for ``attacks_by_norm``; ``strong``:
    the ensemble of attack stages on PGD's survivors (:mod:`medgrid.evaluation.strong`); ``sanity``: the
    gradient-masking checks after it (:mod:`medgrid.evaluation.sanity`; ``source_model``: the standard model the
    transfer check attacks); then the per-sample worst case over all of them (:mod:`medgrid.evaluation.worst`);
    ``shift_sets``: the corruption rows on these MedMNIST-C sets ({corruption: file};
    :func:`medgrid.evaluation.shift.corruption_rows`; ``data_on``: where each set is held, medgrid.data.placement). The test images stay uint8 wherever they are held: attacks make float batches.
    """
    cell = results.cell_columns(settings)
    seed = int(settings["seed"])
    rows = []
    if clean:
        with torch.no_grad():
            rows += clean_rows(model, ds.test, cell)
        rows += health.overfit_rows(cell, settings)
    if sanity is not None and strong is None:
        raise UserError("the gradient-masking checks compare with the strong evaluation: enable it too")
    if attacks_by_norm:
        x, y = ds.test.images, ds.test.labels  # uint8, made float batch by batch (or subset by subset)
        pgd = {norm: robust_predictions(model, x, y, norm=norm, eps_list=eps_list, steps=steps, restarts=restarts,
                                        skip=skip, seed=seed, batch_size=batch_size)
               for norm, eps_list in attacks_by_norm.items()}
        rows += pgd_rows(cell, y, pgd)
        if strong is not None:
            strong_found, outcome = strong_rows(model, x, y, cell, pgd, strong, n_classes=ds.info.n_classes, seed=seed)
            rows += strong_found
            if sanity is not None:  # its Square and transfer finds enter the worst case too
                rows += sanity_rows(model, x, y, cell, outcome, sanity, seed=seed, source_model=source_model)
            rows += worst_rows(cell, outcome)
    elif strong is not None:
        raise UserError("the strong evaluation attacks PGD's survivors: give --attack-norm/--attack-eps too")
    if shift_sets:
        rows += corruption_rows(model, ds, cell, shift_sets, data_on=data_on)
    if not rows:
        raise UserError("nothing to evaluate: no clean rows (--no-clean), no attack and no --shift-sets")
    return results.from_rows(rows, "evaluation")
