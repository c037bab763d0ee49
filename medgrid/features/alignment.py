"""Ground truth for D_rand and D_det on the synthetic tasks: does the attack plant the texture Ilyas et al.'s
explanation predicts?

The synthetic generator adds ``k * P[y]`` to every image of class y (``medgrid.data.synthetic.texture_patterns``:
one +-1 pattern per class, the same in every channel). If the nonrobust features a standard model relies on are
these textures, a targeted attack from class y to class t should move the image along ``P[t] - P[y]``: remove the
source class's texture and add the target's. For every perturbation ``delta = attacked image - original image``
(uint8 minus uint8, as the dataset holds them) this module measures

- ``texture_alignment``: the cosine between ``delta`` and ``P[t] - P[y]`` (1: exactly that direction; about 0 for
  a direction unrelated to the textures, e.g. random noise: ``|cos| ~ 1/sqrt(pixels)``);
- ``off_texture_share``: the share of ``delta``'s energy (squared L2 norm) outside the span of all planted
  patterns (0: a combination of textures only; about ``1 - classes / pixels`` for random noise),

each averaged over the images that were given a new label (t != y) and actually changed. Numpy only.
"""

from __future__ import annotations

import numpy as np

from medgrid import results
from medgrid.errors import UserError
from medgrid.names import NO_CONSTRUCTION, NO_NORM

MIN_PATTERN_MATCH = 0.9  # the patterns of the right data seed classify the original images far better than this


def _flat(images: np.ndarray) -> np.ndarray:
    """MedMNIST-layout images (N, H, W) or (N, H, W, C) -> float64 (N, H, W, C)."""
    a = np.asarray(images, dtype=np.float64)
    return a[..., None] if a.ndim == 3 else a


def pattern_basis(patterns: np.ndarray, channels: int) -> np.ndarray:
    """(K, H*W*C) float64: each class's pattern as the synthetic generator adds it (the same in every channel)."""
    p = np.asarray(patterns, dtype=np.float64)
    return np.repeat(p[..., None], channels, axis=-1).reshape(p.shape[0], -1)


def pattern_match(images: np.ndarray, labels: np.ndarray, patterns: np.ndarray) -> float:
    """The fraction of ``images`` whose highest correlation (mean removed) is with their own class's pattern.

    Near 1 when ``patterns`` are the textures planted in the images (the blob and the clutter are smooth and
    barely correlate with a Nyquist carrier); about chance for the patterns of another data seed.
    """
    x = _flat(images)
    x = x.reshape(x.shape[0], -1)
    x = x - x.mean(axis=1, keepdims=True)
    scores = x @ pattern_basis(patterns, _flat(images[:1]).shape[-1]).T
    return float((scores.argmax(axis=1) == np.asarray(labels).reshape(-1)).mean())


def per_image(delta: np.ndarray, sources: np.ndarray, targets: np.ndarray, patterns: np.ndarray):
    """(alignment, off-texture share) per image of the perturbations ``delta`` (MedMNIST layout, any numbers)
    from class ``sources`` to class ``targets``; NaN where it is undefined (alignment: t = y or delta = 0;
    share: delta = 0)."""
    d = _flat(delta)
    n, channels = d.shape[0], d.shape[-1]
    d = d.reshape(n, -1)
    basis = pattern_basis(patterns, channels)
    y, t = np.asarray(sources).reshape(-1), np.asarray(targets).reshape(-1)
    direction = basis[t] - basis[y]
    norm_d = np.linalg.norm(d, axis=1)
    norm_dir = np.linalg.norm(direction, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        align = (d * direction).sum(axis=1) / (norm_d * norm_dir)
        q, _ = np.linalg.qr(basis.T)  # an orthonormal basis of the patterns' span
        inside = ((d @ q) ** 2).sum(axis=1)
        share = 1.0 - inside / norm_d**2
    align[(norm_d == 0) | (norm_dir == 0)] = np.nan
    share[norm_d == 0] = np.nan
    return align, np.clip(share, 0.0, 1.0)


def alignment_table(cell: dict, *, original: np.ndarray, constructed: np.ndarray, sources: np.ndarray,
                    targets: np.ndarray, patterns: np.ndarray, norm: str = NO_NORM, eps: float = 0.0):
    """Tidy rows (eval_kind features) of one D_rand / D_det dataset: ``texture_alignment`` and
    ``off_texture_share``, each the mean over the images with a new label (t != y) that the attack changed
    (``n`` counts them), ``cell`` the rows' cell columns (the source model's cell with the dataset's train_data
    and construction), ``norm`` / ``eps`` the attack's where known."""
    if original.shape != constructed.shape:
        raise UserError(f"the constructed training split has shape {constructed.shape}, the task's {original.shape}")
    delta = constructed.astype(np.int16) - original.astype(np.int16)
    align, share = per_image(delta, sources, targets, patterns)
    used = ~np.isnan(align)
    if not used.any():
        raise UserError("no image was given a new label and changed by the attack: nothing to measure")
    common = dict(eval_kind="features", eval_norm=norm, eval_eps=eps, n=int(used.sum()))
    rows = [results.make_row(cell, metric="texture_alignment", value=float(align[used].mean()), **common),
            results.make_row(cell, metric="off_texture_share", value=float(share[used].mean()), **common)]
    return results.from_rows(rows, "alignment")


def cell_of(settings: dict, kind: str, construction: str = NO_CONSTRUCTION) -> dict:
    """The cell columns of a dataset's rows: the source model's cell, the dataset's kind and construction."""
    return {**results.cell_columns(settings), "train_data": kind, "construction": construction}
