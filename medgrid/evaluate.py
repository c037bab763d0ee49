"""Evaluation of one checkpoint on its task's test split, as tidy rows: clean, PGD and MedMNIST-C corruptions."""

from __future__ import annotations

import math

import numpy as np
import torch

from medgrid import data, metrics, results, shift
from medgrid.attacks.sweep import robust_predictions
from medgrid.corruptions import CALIBRATED_SIZE, baselines, check_corruptions, levels
from medgrid.errors import UserError
from medgrid.names import CORRUPTION_MEAN, SEVERITIES, SYNTHETIC_TASKS
from medgrid.predict import predict


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
    x, y = split.images, split.labels  # uint8, made float batch by batch (robust_predictions)
    for norm, eps_list in attacks_by_norm.items():
        for res in robust_predictions(model, x, y, norm=norm, eps_list=eps_list, steps=steps,
                                     restarts=restarts, skip=skip, seed=seed, batch_size=batch_size):
            common = dict(eval_kind="pgd", eval_norm=norm, eval_eps=res.eps, n=n)
            rows += [
                results.make_row(cell, metric="acc", value=res.correct.float().mean().item(), **common),
                results.make_row(cell, metric="balanced_acc", value=metrics.balanced_accuracy(y, res.pred), **common),
                results.make_row(cell, metric="grad_evals", value=res.grad_evals, **common),
            ]
    return rows


def corruption_rows(model, ds, cell: dict, shift_dir, *, corruptions=None, batch_size: int | None = None,
                    data_on: str = "auto") -> list[dict]:
    """Tidy rows of one model on the corrupted test sets under ``{shift_dir}/{task}/``.

    Per corruption: acc and balanced_acc per severity 1..5 and their means (severity 0), plus medmnistc's
    ``be`` (mean balanced error / AlexNet's) and ``rbe`` ((mean error - clean error) / (AlexNet's corrupted -
    clean error)) for MedMNIST tasks. AlexNet's baselines were measured at 224 px: at other sizes these
    metrics are named ``be_not_comparable`` / ``rbe_not_comparable``. Corruption "mean": the same metrics
    averaged over the corruptions (texture_shuffled, a one-level counterfactual, stays out of it).
    Each set is read in turn and held as ``data_on`` says (medgrid.placement); None batches: predict's default.
    """
    task, size = ds.info.name, int(ds.size)
    names = check_corruptions(task, corruptions)
    test = ds.test
    n = len(test)
    labels = test.labels.cpu().numpy()
    logits, _ = predict(model, test, batch_size=batch_size)
    clean_error = 1.0 - metrics.balanced_accuracy(labels, logits.argmax(1))
    baseline = None if task in SYNTHETIC_TASKS else baselines()[task]
    suffix = "" if size == CALIBRATED_SIZE else "_not_comparable"
    rows, means = [], {}

    def row(name, severity, metric, value, count):
        rows.append(results.make_row(cell, eval_kind="corruption", corruption=name, severity=severity,
                                     metric=metric, value=value, n=count))

    for name in names:
        path = shift.output_path(shift_dir, task, name)
        if not path.is_file():
            raise UserError(shift.missing_set_message(path, task, size, name, shift_dir))
        split = shift.load_corrupted(path, ds.info, size, labels, name, device=test.device, data_on=data_on)
        pred = predict(model, split, batch_size=batch_size)[0].argmax(1).cpu().numpy()
        del split  # freed before the next set is read: one corrupted set in memory at a time
        if levels(name) == 1:
            row(name, 0, "acc", metrics.accuracy(labels, pred), n)
            row(name, 0, "balanced_acc", metrics.balanced_accuracy(labels, pred), n)
            continue
        accs, baccs = [], []
        for i, severity in enumerate(SEVERITIES):
            p = pred[i * n:(i + 1) * n]
            accs.append(metrics.accuracy(labels, p))
            baccs.append(metrics.balanced_accuracy(labels, p))
            row(name, severity, "acc", accs[-1], n)
            row(name, severity, "balanced_acc", baccs[-1], n)
        m = {"acc": float(np.mean(accs)), "balanced_acc": float(np.mean(baccs))}
        if baseline is not None:
            error = 1.0 - m["balanced_acc"]
            alex = baseline["raw_scores"][name]
            m["be" + suffix] = error / alex
            m["rbe" + suffix] = (error - clean_error) / (alex - baseline["clean_score"])
        for metric, value in m.items():
            row(name, 0, metric, value, len(SEVERITIES) * n)
        means[name] = m
    if means:
        for metric in next(iter(means.values())):
            row(CORRUPTION_MEAN, 0, metric, float(np.mean([m[metric] for m in means.values()])),
                len(SEVERITIES) * n * len(means))
    return rows


def evaluate(model, settings: dict, ds: data.Dataset, *, attacks_by_norm: dict[str, list[float]],
             steps: int = 20, restarts: int = 1, skip: bool = True, batch_size: int = 500,
             clean: bool = True, shift_dir=None, shift_corruptions=None, data_on: str = "auto"):
    """All clean and PGD rows of one checkpoint on the test split of ``ds``, as a validated table.

    ``shift_dir``: also the corruption rows on the MedMNIST-C sets under ``{shift_dir}/{task}/``
    (:func:`corruption_rows`; ``shift_corruptions`` restricts them). ``clean=False`` leaves the clean
    rows out (e.g. a table of corruption rows only). ``data_on``: where the corrupted sets are held
    (medgrid.placement).
    """
    cell = results.cell_columns(settings)
    rows = []
    if clean:
        with torch.no_grad():
            rows += clean_rows(model, ds.test, cell)
    rows += pgd_rows(model, ds.test, cell, attacks_by_norm=attacks_by_norm, steps=steps, restarts=restarts,
                     skip=skip, seed=int(settings["seed"]), batch_size=batch_size)
    if shift_dir is not None:
        rows += corruption_rows(model, ds, cell, shift_dir, corruptions=shift_corruptions, data_on=data_on)
    if not rows:
        raise UserError("nothing to evaluate: no clean rows (--no-clean), no attack and no --shift-dir")
    return results.from_rows(rows, "evaluation")
