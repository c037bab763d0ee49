"""Clean and PGD evaluation of one checkpoint, as tidy rows."""

from __future__ import annotations

import math

import torch

from medgrid import attacks, data, metrics, results
from medgrid.errors import UserError
from medgrid.train import predict


def clean_rows(model, split: data.Split, cell: dict) -> list[dict]:
    """acc, balanced_acc and auc on the clean split."""
    logits, labels = predict(model, split)
    pred = logits.argmax(1)
    n = len(split)
    rows = [results.make_row(cell, eval_kind="clean", metric="acc", value=metrics.accuracy(labels, pred), n=n),
            results.make_row(cell, eval_kind="clean", metric="balanced_acc",
                             value=metrics.balanced_accuracy(labels, pred), n=n)]
    auc = metrics.auc(labels, logits)
    if not math.isnan(auc):
        rows.append(results.make_row(cell, eval_kind="clean", metric="auc", value=auc, n=n))
    return rows


def pgd_rows(model, split: data.Split, cell: dict, *, attacks_by_norm: dict[str, list[float]], steps: int = 20,
             restarts: int = 1, skip: bool = True, seed: int = 0, batch_size: int = 500) -> list[dict]:
    """Robust acc, balanced_acc and the forward+backward passes spent, per attack norm and epsilon."""
    rows = []
    n = len(split)
    x, y = data.as_float(split.images), split.labels
    for norm, eps_list in attacks_by_norm.items():
        for res in attacks.robust_predictions(model, x, y, norm=norm, eps_list=eps_list, steps=steps,
                                              restarts=restarts, skip=skip, seed=seed, batch_size=batch_size):
            common = dict(eval_kind="pgd", eval_norm=norm, eval_eps=res.eps, n=n)
            rows += [
                results.make_row(cell, metric="acc", value=res.correct.float().mean().item(), **common),
                results.make_row(cell, metric="balanced_acc", value=metrics.balanced_accuracy(y, res.pred), **common),
                results.make_row(cell, metric="grad_evals", value=res.grad_evals, **common),
            ]
    return rows


def evaluate(model, settings: dict, ds: data.Dataset, *, attacks_by_norm: dict[str, list[float]],
             steps: int = 20, restarts: int = 1, skip: bool = True, batch_size: int = 500,
             clean: bool = True, shift_dir=None, shift_corruptions=None):
    """All clean and PGD rows of one checkpoint on the test split of ``ds``, as a validated table.

    ``shift_dir``: also the corruption rows on the MedMNIST-C sets under ``{shift_dir}/{task}/``
    (medgrid.shift.shift_rows; ``shift_corruptions`` restricts them). ``clean=False`` leaves the clean
    rows out (e.g. a table of corruption rows only).
    """
    cell = results.cell_columns(settings)
    rows = []
    if clean:
        with torch.no_grad():
            rows += clean_rows(model, ds.test, cell)
    rows += pgd_rows(model, ds.test, cell, attacks_by_norm=attacks_by_norm, steps=steps, restarts=restarts,
                     skip=skip, seed=int(settings["seed"]), batch_size=batch_size)
    if shift_dir is not None:
        from medgrid import shift  # noqa: PLC0415 - needs medmnistc's baselines for MedMNIST tasks

        rows += shift.shift_rows(model, ds, cell, shift_dir, corruptions=shift_corruptions)
    if not rows:
        raise UserError("nothing to evaluate: no clean rows (--no-clean), no attack and no --shift-dir")
    return results.from_rows(rows, "evaluation")
