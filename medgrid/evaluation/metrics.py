"""Classification metrics with MedMNIST's definitions, computed by scikit-learn."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def accuracy(labels, pred) -> float:
    return float(accuracy_score(_np(labels), _np(pred)))


def balanced_accuracy(labels, pred) -> float:
    """Mean per-class recall over the classes present in ``labels`` (sklearn's definition)."""
    return float(balanced_accuracy_score(_np(labels), _np(pred)))


def auc(labels, logits) -> float:
    """MedMNIST's AUC: ROC-AUC of the positive-class score for binary tasks, mean one-vs-rest AUC otherwise.

    Classes absent from ``labels`` are left out of the mean; NaN when no class has both outcomes.
    """
    y = _np(labels)
    scores = _np(torch.as_tensor(logits).float().softmax(1))
    if scores.shape[1] == 2:
        return float(roc_auc_score(y, scores[:, 1])) if len(np.unique(y)) == 2 else float("nan")
    per_class = [roc_auc_score(y == c, scores[:, c]) for c in range(scores.shape[1])
                 if 0 < (y == c).sum() < len(y)]
    return float(np.mean(per_class)) if per_class else float("nan")
