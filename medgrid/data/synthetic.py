"""Synthetic planted-feature tasks (``synthetic`` grey, ``synthetic-rgb`` colour): the offline ground truth.

Each class has a robust feature (a noisy Gaussian blob near one class centre; alone it allows a Bayes
accuracy of about 0.865 with 4 classes) and a nonrobust one (a +-k grey-level checkerboard carrier whose
sign follows a smooth random map per class; all its energy lies near the Nyquist frequency, so blur, JPEG
or pixelation destroy it, while it is perfectly predictive in distribution). The arrays are written in
MedMNIST's layout, so the same loader reads them. Calibration: docs/data.md.
"""

from __future__ import annotations

import numpy as np

from medgrid import seeding
from medgrid.errors import UserError
from medgrid.names import SPLITS, SYNTHETIC_SIZES, SYNTHETIC_TASKS

_BASE_CENTRES = ((9.0, 9.0), (9.0, 19.0), (19.0, 9.0), (19.0, 19.0))  # (row, col) at 28 px
_JITTER = 3.4  # px at 28, std of the blob position per axis
_WIDTH = (2.5, 4.0)  # px at 28, blob sigma
_PEAK = (0.35, 0.6)
_BACKGROUND = (0.20, 0.30)  # 0.25 +- 0.05
_CLUTTER_SIGMA = 3.0  # px at 28
_CLUTTER_STD = 0.06
_PIXEL_NOISE = 0.02
_MAP_SIGMA = 3.0  # px at 28, smoothness of the per-class sign map of the texture


def n_channels(task: str) -> int:
    return 3 if task == "synthetic-rgb" else 1


def label_names(n_classes: int) -> dict:
    """MedMNIST-style label names: where each class's blob sits (at 28 px)."""
    centres = class_centres(n_classes, 28)
    return {str(k): f"blob near ({centres[k][0]:.0f}, {centres[k][1]:.0f})" for k in range(n_classes)}


def check_classes(c) -> None:
    if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 2 <= c <= 10:
        raise UserError(f"synthetic tasks need 2 to 10 classes, got {c!r}")


def class_centres(n_classes: int, size: int) -> np.ndarray:
    """Blob centres (row, col) in pixels: the four calibrated ones for <= 4 classes; more classes sit on
    the same circle (radius 5*sqrt(2) around (14, 14) at 28 px). Scaled by size/28 (pixel centres)."""
    if n_classes <= 4:
        c28 = np.array(_BASE_CENTRES[:n_classes])
    else:
        ang = np.pi / 4 + 2 * np.pi * np.arange(n_classes) / n_classes
        r = 5 * np.sqrt(2)
        c28 = np.stack([14 - r * np.cos(ang), 14 - r * np.sin(ang)], axis=1)
    f = size / 28
    return (c28 + 0.5) * f - 0.5


def _gauss_filter(a: np.ndarray, sigma: float, mode: str = "wrap") -> np.ndarray:
    """Gaussian blur over the last two axes; periodic by default, so random fields stay stationary."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(a, sigma=(0,) * (a.ndim - 2) + (sigma, sigma), mode=mode)


def texture_patterns(n_classes: int, size: int, seed: int) -> np.ndarray:
    """The nonrobust feature: (n_classes, size, size) int8 patterns in {-1, +1}.

    A pixel checkerboard (the Nyquist carrier) times the sign of a smooth random map per class, so the
    energy sits near Nyquist: a sigma-1.5 Gaussian blur keeps well under 1% of it.
    """
    rng = seeding.numpy_rng(seed, seeding.STREAM_SYNTHETIC_TEXTURE)
    f = size / 28
    maps = _gauss_filter(rng.standard_normal((n_classes, size, size)), _MAP_SIGMA * f)
    sign = np.where(maps >= 0, 1, -1)
    ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    checker = np.where((ii + jj) % 2 == 0, 1, -1)
    return (sign * checker[None]).astype(np.int8)


def _robust_images(labels: np.ndarray, size: int, n_channels: int, n_classes: int,
                   rng: np.random.Generator, block: int | None = None):
    """float32 images (N, H, W, n_channels) in [0, 1] grey-level units carrying only the robust feature.

    Yielded ``block`` images at a time as ``(start, images)`` (default :data:`_BLOCK`), so no whole-chunk
    float image is held; the draws from ``rng``, and so every value, do not depend on ``block``.
    """
    block = _BLOCK if block is None else block
    n = labels.shape[0]
    f = size / 28
    centres = class_centres(n_classes, size)
    pos = centres[labels] + rng.normal(0.0, _JITTER * f, size=(n, 2))
    width = rng.uniform(*_WIDTH, size=n) * f
    peak = rng.uniform(*_PEAK, size=n)
    bg = rng.uniform(*_BACKGROUND, size=n)
    axis = np.arange(size, dtype=np.float64)
    gy = np.exp(-((axis[None, :] - pos[:, :1]) ** 2) / (2 * width[:, None] ** 2))
    gx = np.exp(-((axis[None, :] - pos[:, 1:]) ** 2) / (2 * width[:, None] ** 2))
    # clutter: white noise blurred with sigma 3 px (x f), periodic, scaled to std 0.06 (each image on its own)
    gain = np.float32(_CLUTTER_STD / _blur_gain(_CLUTTER_SIGMA * f))
    clutter = np.empty((n, size, size), dtype=np.float32)
    for start in range(0, n, block):
        c = _gauss_filter(rng.standard_normal((min(block, n - start), size, size), dtype=np.float32),
                          _CLUTTER_SIGMA * f)
        c *= gain
        clutter[start:start + block] = c
    if n_channels > 1:
        # colour is a nuisance: a random background tint and blob colour per image (not class-related)
        tint = rng.uniform(0.85, 1.15, size=(n, 1, 1, n_channels)).astype(np.float32)
        colour = rng.uniform(0.6, 1.0, size=(n, 1, 1, n_channels)).astype(np.float32)
    for start in range(0, n, block):
        sl = slice(start, start + block)
        blob = (gy[sl, :, None] * gx[sl, None, :]).astype(np.float32)  # (k, H, W), peak 1
        if n_channels == 1:
            img = (bg[sl, None, None] + peak[sl, None, None] * blob).astype(np.float32) + clutter[sl]
            img = img[..., None]
        else:
            img = (bg[sl, None, None, None].astype(np.float32) * tint[sl] + clutter[sl, ..., None]
                   + (peak[sl, None, None, None].astype(np.float32) * colour[sl]) * blob[..., None])
        img += np.float32(_PIXEL_NOISE) * rng.standard_normal(img.shape, dtype=np.float32)
        yield start, img


def _blur_gain(sigma: float) -> float:
    """Std of unit white noise after ``_gauss_filter`` with ``sigma`` (the filter's L2 norm)."""
    k = 8 * int(np.ceil(sigma)) + 1
    impulse = np.zeros((1, k, k))
    impulse[0, k // 2, k // 2] = 1.0
    return float(np.sqrt((_gauss_filter(impulse, sigma, mode="constant") ** 2).sum()))


_CHUNK = 500  # images drawn per random stream, so a split's first images do not depend on its size
_BLOCK = 50  # images of a chunk assembled at a time (memory only: the values do not depend on it)


def generate(task: str, size: int, *, seed: int = 0, n_classes: int = 4, amplitude: int = 4,
             n_train: int = 4000, n_val: int = 500, n_test: int = 1000,
             shuffle_texture: bool = False) -> dict[str, np.ndarray]:
    """Arrays of a synthetic task in MedMNIST's layout (images uint8 (N,H,W) or (N,H,W,3), labels (N,1) uint8).

    Robust feature: a Gaussian blob centred near the class centre (jitter N(0, 3.4^2) px per axis, width
    U(2.5, 4) px, peak U(0.35, 0.6)) on a U(0.2, 0.3) background with smooth clutter (white noise blurred with
    sigma 3 px, std 0.06) and pixel noise 0.02 (lengths scale with size/28); with 4 classes the blob alone
    allows about 0.865 accuracy. Nonrobust feature: ``amplitude`` * ``texture_patterns(...)[label]`` added
    in integer grey levels after rounding, the rounded image first clipped to [amplitude, 255 - amplitude]
    so nothing clips. Labels are balanced and shuffled. Each split draws from its own stream of ``seed``,
    so the output depends only on the arguments (same seed -> identical arrays).

    ``shuffle_texture``: each image's nonrobust pattern is that of a class drawn uniformly at random,
    independently of its label (from a stream of its own), while labels and robust features stay exactly
    those of ``shuffle_texture=False`` (the counterfactual test set of ``medgrid shift``: texture_shuffled).
    """
    if task not in SYNTHETIC_TASKS:
        raise UserError(f"{task!r} is not a synthetic task; synthetic tasks: {', '.join(SYNTHETIC_TASKS)}")
    if size not in SYNTHETIC_SIZES:
        raise UserError(f"size {size!r} is not available for task {task!r}; valid sizes: "
                        f"{', '.join(map(str, SYNTHETIC_SIZES))}")
    check_classes(n_classes)
    if not isinstance(amplitude, (int, np.integer)) or isinstance(amplitude, bool) or not 0 <= amplitude <= 32:
        raise UserError(f"synthetic amplitude is an integer number of grey levels in [0, 32], got {amplitude!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"the data seed must be an integer >= 0, got {seed!r}")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in counts.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise UserError(f"synthetic {split} size must be an integer >= 1, got {n!r}")
    channels = n_channels(task)
    patterns = texture_patterns(n_classes, size, seed).astype(np.int16)
    out = {}
    for index, split in enumerate(SPLITS):
        n = int(counts[split])
        labels = seeding.numpy_rng(seed, seeding.STREAM_SYNTHETIC_LABELS, index).permutation(np.arange(n) % n_classes)
        texture = (seeding.numpy_rng(seed, seeding.STREAM_SYNTHETIC_SHUFFLE, index).integers(0, n_classes, size=n)
                   if shuffle_texture else None)
        images = np.empty((n, size, size, channels), dtype=np.uint8)
        for chunk, start in enumerate(range(0, n, _CHUNK)):
            lab = labels[start:start + _CHUNK]
            rng = seeding.numpy_rng(seed, seeding.STREAM_SYNTHETIC_IMAGES, index, chunk)
            tex = lab if texture is None else texture[start:start + _CHUNK]
            for at, img in _robust_images(lab, size, channels, n_classes, rng):
                base = np.clip(np.rint(img * np.float32(255.0)), amplitude, 255 - amplitude).astype(np.int16)
                base += amplitude * patterns[tex[at:at + len(img)]][..., None]
                images[start + at:start + at + len(img)] = base
        out[f"{split}_images"] = images[..., 0] if channels == 1 else images
        out[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    return out
