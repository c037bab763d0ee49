"""Evaluation of one checkpoint on its task's test split, as tidy rows: clean, PGD and MedMNIST-C corruptions."""

from __future__ import annotations

import math

import numpy as np
import torch

from medgrid import data, health, metrics, results, shift
from medgrid.attacks.sweep import RobustResult, robust_predictions
from medgrid.corruptions import CALIBRATED_SIZE, baselines, check_corruptions, levels
from medgrid.errors import UserError
from medgrid.names import CORRUPTION_MEAN, RESAMPLE_CONTROL, SEVERITIES, SYNTHETIC_TASKS
from medgrid.predict import predict
from medgrid.sanity import SanitySettings, sanity_rows
from medgrid.strong import StrongSettings, strong_rows


def clean_rows(model, split: data.Split, cell: dict) -> list[dict]:
    """acc, balanced_acc and auc on the clean split, and the model's health rows (:mod:`medgrid.health`)."""
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


def corruption_rows(model, ds, cell: dict, shift_dir, *, corruptions=None, batch_size: int | None = None,
                    data_on: str = "auto") -> list[dict]:
    """Tidy rows of one model on the MedMNIST-C test sets under ``{shift_dir}/{task}/``.

    Per corruption: acc and balanced_acc per severity 1..5 and their means (severity 0), plus medmnistc's
    ``be`` (mean balanced error / AlexNet's) and ``rbe`` ((mean error - control error) / (AlexNet's corrupted -
    clean error)) for MedMNIST tasks. The control is ``resample_control``, the clean test set sent through the
    corrupted sets' resize path: against it, rBE measures the corruption alone, not the resampling with it
    (rBE is left out when the control is not among the sets). AlexNet's baselines were measured at 224 px:
    at other sizes these metrics are named ``be_not_comparable`` / ``rbe_not_comparable``. One-level sets
    (texture_shuffled, resample_control) get acc and balanced_acc at severity 0 and stay out of the means
    over corruptions (corruption "mean"). Each set is read in turn and held as ``data_on`` says
    (medgrid.placement); None batches: predict's default.
    """
    task, size = ds.info.name, int(ds.size)
    names = check_corruptions(task, corruptions)
    n = len(ds.test)
    labels = ds.test.labels.cpu().numpy()
    preds = {}
    for name in names:
        path = shift.output_path(shift_dir, task, name)
        if not path.is_file():
            raise UserError(shift.missing_set_message(path, task, size, name, shift_dir))
        split = shift.load_corrupted(path, ds.info, size, labels, name, device=ds.test.device, data_on=data_on)
        preds[name] = predict(model, split, batch_size=batch_size)[0].argmax(1).cpu().numpy()
        del split  # freed before the next set is read: one corrupted set in memory at a time
    control_error = None
    if RESAMPLE_CONTROL in preds:
        control_error = 1.0 - metrics.balanced_accuracy(labels, preds[RESAMPLE_CONTROL])
    baseline = None if task in SYNTHETIC_TASKS else baselines()[task]
    suffix = "" if size == CALIBRATED_SIZE else "_not_comparable"
    rows, means = [], {}

    def row(name, severity, metric, value, count):
        rows.append(results.make_row(cell, eval_kind="corruption", corruption=name, severity=severity,
                                     metric=metric, value=value, n=count))

    for name, pred in preds.items():
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
            if control_error is not None:
                m["rbe" + suffix] = (error - control_error) / (alex - baseline["clean_score"])
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
             clean: bool = True, shift_dir=None, shift_corruptions=None, strong: StrongSettings | None = None,
             sanity: SanitySettings | None = None, source_model=None, data_on: str = "auto"):
    """All rows of one checkpoint on the test split of ``ds``, as a validated table.

    Clean and training-health rows (unless ``clean=False``), PGD rows for ``attacks_by_norm``; ``strong``:
    the APGD ensemble on PGD's survivors (:mod:`medgrid.strong`); ``sanity``: the gradient-masking checks
    after it (:mod:`medgrid.sanity`; ``source_model``: the standard model the transfer check attacks);
    ``shift_dir``: the corruption rows on the MedMNIST-C sets under ``{shift_dir}/{task}/``
    (:func:`corruption_rows`; ``shift_corruptions`` restricts them; ``data_on``: where each set is held,
    medgrid.placement). The test images stay uint8 wherever they are held: attacks make float batches.
    """
    cell = results.cell_columns(settings)
    seed = int(settings["seed"])
    rows = []
    if clean:
        with torch.no_grad():
            rows += clean_rows(model, ds.test, cell)
    if sanity is not None and strong is None:
        raise UserError("the gradient-masking checks compare with the strong evaluation: enable it too")
    if attacks_by_norm:
        x, y = ds.test.images, ds.test.labels  # uint8, made float batch by batch (or subset by subset)
        pgd = {norm: robust_predictions(model, x, y, norm=norm, eps_list=eps_list, steps=steps, restarts=restarts,
                                        skip=skip, seed=seed, batch_size=batch_size)
               for norm, eps_list in attacks_by_norm.items()}
        rows += pgd_rows(cell, y, pgd)
        if strong is not None:
            strong_found, outcome = strong_rows(model, x, y, cell, pgd, strong, seed=seed)
            rows += strong_found
            if sanity is not None:
                rows += sanity_rows(model, x, y, cell, outcome, sanity, seed=seed, source_model=source_model)
    elif strong is not None:
        raise UserError("the strong evaluation attacks PGD's survivors: give --attack-norm/--attack-eps too")
    if shift_dir is not None:
        rows += corruption_rows(model, ds, cell, shift_dir, corruptions=shift_corruptions, data_on=data_on)
    if not rows:
        raise UserError("nothing to evaluate: no clean rows (--no-clean), no attack and no --shift-dir")
    return results.from_rows(rows, "evaluation")
