"""Training health: is a model degenerate, that is, does it predict one class only or sit at chance?

Adversarial training on a small task can collapse to a constant classifier (real BreastMNIST, L2 0.5:
balanced accuracy exactly 0.5 clean, under PGD and under every corruption). Such a model looks
perfectly robust, because a constant cannot be attacked. :func:`assess` flags it; the evaluation
writes the verdict as rows of ``eval_kind="health"`` (:func:`rows`), the train and evaluate commands
print a warning line (:func:`message`), the charts draw flagged cells hollow.

A run trained with the catastrophic-overfitting guard (fast adversarial training, fgsm-rs) gets one more health
row, ``catastrophic_overfitting``: 1.0 when the guard stopped it (it keeps an epoch before the collapse), else
0.0 (:func:`overfit_rows`).

A model trained on D_rand, D_det or D_R (Ilyas et al.'s datasets) that sits at chance on the real test
set is flagged the same way, but there chance level is a result (those features do not generalise),
not a broken model: :func:`message` and the charts say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medgrid import results
from medgrid.evaluation import metrics
from medgrid.labels import DATA_LABEL, setting_label
from medgrid.names import DEGENERATE_MARGIN, HEALTH_METRICS, OVERFIT_DROP, OVERFIT_METRIC

HEALTH = "health"  # the eval_kind of the rows written here
CELL = results.CELL


@dataclass(frozen=True)
class Verdict:
    degenerate: bool
    predicted_classes: int  # distinct classes among the predictions
    n_classes: int
    balanced_acc: float
    chance_margin: float  # balanced accuracy minus chance (1 / n_classes)

    def as_dict(self) -> dict:
        return asdict(self)


def assess(labels, pred, n_classes: int) -> Verdict:
    """The verdict on a model's predictions ``pred`` of ``labels``: degenerate when it predicts a single
    class or its balanced accuracy is within :data:`medgrid.names.DEGENERATE_MARGIN` of chance."""
    pred_np = (pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)).reshape(-1)
    bacc = metrics.balanced_accuracy(labels, pred_np)
    margin = bacc - 1.0 / n_classes
    k = int(len(np.unique(pred_np)))
    flagged = k <= 1 or abs(margin) <= DEGENERATE_MARGIN + 1e-12
    return Verdict(bool(flagged), k, int(n_classes), float(bacc), float(margin))


def rows(cell: dict, verdict: Verdict, n: int) -> list[dict]:
    """The health rows of one model: degenerate (1.0 / 0.0), predicted_classes, chance_margin."""
    values = dict(degenerate=float(verdict.degenerate), predicted_classes=float(verdict.predicted_classes),
                  chance_margin=verdict.chance_margin)
    return [results.make_row(cell, eval_kind=HEALTH, metric=m, value=values[m], n=n) for m in HEALTH_METRICS]


def overfit_rows(cell: dict, settings: dict) -> list[dict]:
    """The guard's row of a run trained with one (fast adversarial training, :mod:`medgrid.training.guard`):
    ``catastrophic_overfitting`` 1.0 when the guard stopped the run, else 0.0, over the guard's training images;
    none for a run without the guard."""
    guard = settings.get("guard")
    if not guard:
        return []
    fired = float(settings.get("overfit_epoch") is not None)
    return [results.make_row(cell, eval_kind=HEALTH, metric=OVERFIT_METRIC, value=fired, n=int(guard["images"]))]


def overfit_message(settings: dict) -> str | None:
    """The warning line of a run the guard stopped (None otherwise), without the ``medgrid: warning:`` prefix."""
    epoch = settings.get("overfit_epoch")
    if epoch is None:
        return None
    acc = {h["epoch"]: h.get("guard_pgd_acc") for h in settings.get("history", [])}
    return (f"catastrophic overfitting at epoch {epoch}: PGD accuracy on the guard's fixed training batch fell from "
            f"{acc.get(epoch - 1, float('nan')):.3f} to {acc.get(epoch, float('nan')):.3f} (by more than "
            f"{OVERFIT_DROP}); training stopped there and kept epoch {settings.get('best_epoch')} (Wong et al. 2020)")


def message(verdict: Verdict, train_data: str = "original", split: str = "test") -> str | None:
    """The warning line of a flagged model (None when healthy), without the ``medgrid: warning:`` prefix."""
    if not verdict.degenerate:
        return None
    what = (f"predicts {verdict.predicted_classes} of {verdict.n_classes} classes on the {split} split, "
            f"balanced accuracy {verdict.balanced_acc:.3f} (chance {verdict.balanced_acc - verdict.chance_margin:.3f})")
    if train_data != "original":
        name = DATA_LABEL.get(train_data, train_data)
        return (f"model trained on {name} is at chance level: {what}; for a model trained on Ilyas et al.'s "
                f"{name} this is a result (its features do not carry to the real test set), not a broken model")
    return (f"degenerate model: {what}; training collapsed or learned nothing, so its robustness is meaningless "
            f"(a constant classifier cannot be attacked)")


def table_messages(table) -> list[str]:
    """The warning lines of the flagged models of a tidy table, from their health and clean balanced_acc rows."""
    out = []
    wanted = (table.eval_kind == HEALTH) | ((table.eval_kind == "clean") & (table.metric == "balanced_acc"))
    for key, g in table[wanted].groupby(CELL, sort=True):
        v = {("clean" if kind == "clean" else m): x for kind, m, x in zip(g.eval_kind, g.metric, g.value)}
        if v.get(OVERFIT_METRIC, 0.0) >= 0.5:
            c = dict(zip(CELL, key))
            setting = setting_label(*(c[k] for k in results.SETTING))
            out.append(f"catastrophic overfitting: the guard stopped the training of {c['task']} {c['size']} px "
                       f"{c['arch']} {setting} seed {c['seed']}; it kept an epoch before the collapse")
        if v.get("degenerate", 0.0) < 0.5 or "clean" not in v:
            continue
        bacc, margin = float(v["clean"]), float(v["chance_margin"])
        verdict = Verdict(True, int(v["predicted_classes"]), int(round(1.0 / (bacc - margin))), bacc, margin)
        out.append(message(verdict, dict(zip(CELL, key))["train_data"]))
    return out
