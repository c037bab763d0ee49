"""The MedMNIST-C rows of one model: accuracy per corruption and severity, their means, and medmnistc's BE and
rBE, on the corrupted test sets made by :mod:`medgrid.data.shift_sets` (docs/shift.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgrid import results
from medgrid.data import shift_sets
from medgrid.data.corruptions import CALIBRATED_SIZE, baselines, check_corruptions, levels
from medgrid.errors import UserError
from medgrid.evaluation import metrics
from medgrid.evaluation.predict import predict
from medgrid.names import CORRUPTION_MEAN, RESAMPLE_CONTROL, SEVERITIES, SYNTHETIC_TASKS


def corruption_rows(model, ds, cell: dict, sets: dict, *, batch_size: int | None = None,
                    data_on: str = "auto") -> list[dict]:
    """Tidy rows of one model on the MedMNIST-C test sets ``sets`` ({corruption: npz file}, e.g. from
    :func:`set_files`), taken in the task's registry order.

    Per corruption: acc and balanced_acc per severity 1..5 and their means (severity 0), plus medmnistc's
    ``be`` (mean balanced error / AlexNet's) and ``rbe`` ((mean error - control error) / (AlexNet's corrupted -
    clean error)) for MedMNIST tasks. The control is ``resample_control``, the clean test set sent through the
    corrupted sets' resize path: against it, rBE measures the corruption alone, not the resampling with it
    (rBE is left out when the control is not among the sets). AlexNet's baselines were measured at 224 px:
    at other sizes these metrics are named ``be_not_comparable`` / ``rbe_not_comparable``. One-level sets
    (texture_shuffled, resample_control) get acc and balanced_acc at severity 0 and stay out of the means
    over corruptions (corruption "mean"). Each set is read in turn and held as ``data_on`` says
    (medgrid.data.placement); None batches: predict's default.
    """
    task, size = ds.info.name, int(ds.size)
    given = check_corruptions(task, list(sets))
    names = [name for name in check_corruptions(task) if name in given]  # registry order: one mean, one sum order
    n = len(ds.test)
    labels = ds.test.labels.cpu().numpy()
    preds = {}
    for name in names:
        path = Path(sets[name])
        if not path.is_file():
            raise UserError(shift_sets.missing_set_message(path, task, size, name))
        split = shift_sets.load_corrupted(path, ds.info, size, labels, name, device=ds.test.device, data_on=data_on)
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


def set_files(paths) -> dict[str, Path]:
    """{corruption: file} of MedMNIST-C files named ``{corruption}.npz`` (MedMNIST-C's layout); UserError for a
    name given twice."""
    sets: dict[str, Path] = {}
    for path in map(Path, paths):
        if path.suffix != ".npz":
            raise UserError(f"{path}: a MedMNIST-C test set is an npz file named after its corruption "
                            f"(e.g. pixelate.npz)")
        if path.stem in sets:
            raise UserError(f"two test sets of corruption {path.stem!r}: {sets[path.stem]} and {path}")
        sets[path.stem] = path
    return sets
