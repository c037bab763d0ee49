"""MedMNIST-C's corruptions through medmnistc 0.1.0: which a task has, and applying them to images.

medmnistc's registry (``CORRUPTIONS_DS[flag]``, copied in :data:`medgrid.catalog.MEDMNISTC`) names each
task's corruptions, each with five severities; they are calibrated for 224-px images, so :func:`corrupt`
applies them at 224 px (upsampling smaller images first and box-resizing after). The synthetic tasks get a
suite chosen from the same registry (catalog.SYNTHETIC_SUITE) plus ``texture_shuffled`` (a counterfactual
test set, see medgrid.data.shift_sets).
See docs/shift.md.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np

from medgrid import catalog
from medgrid.catalog import SYNTHETIC_SUITE
from medgrid.data import tasks
from medgrid.errors import UserError
from medgrid.names import RESAMPLE_CONTROL, SEVERITIES, TEXTURE_SHUFFLED, UPSAMPLING

CALIBRATED_SIZE = 224  # medmnistc's corruptions are designed for 224 x 224 images
# Test sets of one level (no severities) that are not medmnistc corruptions: the synthetic tasks'
# counterfactual, and every task's control (the clean test set through the corrupted sets' resize path).
ONE_LEVEL = (TEXTURE_SHUFFLED, RESAMPLE_CONTROL)


# Resampling (PIL). Upsampling model-size images to 224 px: nearest makes the round trip
# (up, identity, box down) exact at 28 px (224 = 8 x 28), so only the corruption changes the image;
# bicubic (the protocol first measured for this project) low-passes every set: the round trip alone keeps
# 47% of the synthetic texture's amplitude. Downsampling: box (area average), exact for 224 -> 28.
UPSAMPLE = {"nearest": "NEAREST", "bicubic": "BICUBIC"}
DOWNSAMPLE = "BOX"




# ------------------------------------------------------------------------------------- medmnistc


def _medmnistc_registry():
    """medmnistc's corruption registry module; one-line UserError when medmnistc or ImageMagick is missing."""
    if "MAGICK_HOME" not in os.environ:
        # In a conda environment ImageMagick lives in the environment, where Wand does not look.
        lib = Path(sys.prefix) / "lib"
        if any(lib.glob("libMagickWand*.so*")) or any(lib.glob("libMagickWand*.dylib")):
            os.environ["MAGICK_HOME"] = sys.prefix
    try:
        from medmnistc.corruptions import registry  # noqa: PLC0415 - heavy (torchvision, cv2, wand)
    except ImportError as exc:
        if "MagickWand" in str(exc) or "wand" in str(exc).lower():
            raise UserError("medmnistc needs ImageMagick's MagickWand library, which was not found: install it "
                            "(Debian/Ubuntu: apt-get install libmagickwand-dev) or use the conda environment "
                            "envs/medmnistc.yaml") from None
        raise UserError(f"medmnistc is not importable ({' '.join(str(exc).split())}); install it with: "
                        f"pip install 'medmnistc==0.1.0' 'numpy<2.3'") from None
    if not hasattr(np, "fromstring"):
        raise UserError(f"medmnistc 0.1.0 calls np.fromstring, which numpy {np.__version__} no longer has; "
                        f"install numpy<2.3")
    return registry


def baselines() -> dict:
    """medmnistc's AlexNet baselines (a plain dict; importing it needs no ImageMagick)."""
    try:
        from medmnistc.utils.baselines import BASELINES  # noqa: PLC0415
    except ImportError as exc:
        raise UserError(f"medmnistc is not importable ({' '.join(str(exc).split())}); install it with: "
                        f"pip install 'medmnistc==0.1.0' 'numpy<2.3'") from None
    return BASELINES


def corruption_names(task: str) -> tuple[str, ...]:
    """The test sets of a task's MedMNIST-C evaluation: its corruptions in registry order (medmnistc's for
    MedMNIST, catalog.SYNTHETIC_SUITE + texture_shuffled for the synthetic tasks), then resample_control
    (:func:`medgrid.catalog.shift_sets`, checked against medmnistc's registry in tests/test_catalog.py)."""
    tasks.task_info(task)  # UserError for unknown / unsupported tasks
    return catalog.shift_sets(task)


def check_corruptions(task: str, names=None) -> list[str]:
    """``names`` (default: all of the task's corruptions), validated, duplicates dropped, order kept."""
    valid = corruption_names(task)
    if not names:
        return list(valid)
    out = []
    for name in names:
        if name not in valid:
            raise UserError(f"unknown corruption {name!r} for task {task!r}; valid: {', '.join(valid)}")
        if name not in out:
            out.append(name)
    return out


def check_severity(severity) -> int:
    try:
        s = int(severity)
    except (TypeError, ValueError):
        s = None
    if s is None or str(severity).strip() != str(s) or s not in SEVERITIES:
        raise UserError(f"severity {severity!r} is outside 1-5 (medmnistc has five severities)")
    return s


def levels(name: str) -> int:
    """Number of test-set copies in a corruption's file: 5 severities, 1 for the one-level sets."""
    return 1 if name in ONE_LEVEL else len(SEVERITIES)


def _corruptor(task: str, name: str):
    registry = _medmnistc_registry()
    flag = SYNTHETIC_SUITE[name] if name in SYNTHETIC_SUITE and task not in registry.CORRUPTIONS_DS else task
    return registry.CORRUPTIONS_DS[flag][name]


# --------------------------------------------------------------------------------------- images


def resize(img: np.ndarray, size: int, method: str) -> np.ndarray:
    """One uint8 image resized with PIL's ``method`` (a PIL.Image.Resampling name)."""
    from PIL import Image  # noqa: PLC0415

    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), getattr(Image.Resampling, method)))


def _apply(corruptor, img224: np.ndarray, severity: int, rgb: bool) -> np.ndarray:
    """One medmnistc corruption of one 224-px uint8 image, as DatasetManager applies it.

    DatasetManager converts every image to RGB, calls ``apply(img, severity - 1)`` and converts the result
    back to greyscale ('L') for greyscale datasets.
    """
    from PIL import Image  # noqa: PLC0415

    out = corruptor.apply(Image.fromarray(img224).convert("RGB"), severity - 1)
    if not rgb:
        out = Image.fromarray(np.asarray(out)).convert("L")
    out = np.asarray(out)
    want = (CALIBRATED_SIZE, CALIBRATED_SIZE, 3) if rgb else (CALIBRATED_SIZE, CALIBRATED_SIZE)
    if out.shape != want or out.dtype != np.uint8:
        raise RuntimeError(f"medmnistc {type(corruptor).__name__} returned {out.dtype} {out.shape}, expected "
                           f"uint8 {want}")
    return out


def corrupt(images: np.ndarray, task: str, name: str, *, severities=SEVERITIES, seed: int = 0,
            out_size: int | None = None, upsample: str = "nearest") -> np.ndarray:
    """Corrupt ``images`` (uint8 (N, H, W) or (N, H, W, 3)) with medmnistc's ``name`` for ``task``.

    Returns the copies for ``severities`` concatenated in that order, at ``out_size`` (default: the input
    size). Images not at 224 px are upsampled to 224 (``upsample``) before and box-resized after.
    Seeding is DatasetManager's: ``seed_everything(seed)`` (python, numpy and torch global generators)
    before the first image, its returned generator as impulse noise's ``rng``, then severities in order
    and images in order.
    """
    if name in ONE_LEVEL or name not in corruption_names(task):
        valid = [n for n in corruption_names(task) if n not in ONE_LEVEL]
        raise UserError(f"unknown corruption {name!r} for task {task!r}; valid: {', '.join(valid)}")
    severities = [check_severity(s) for s in severities]
    images = _checked(images, upsample)
    rgb = images.ndim == 4
    n, size = images.shape[0], images.shape[1]
    out_size = size if out_size is None else int(out_size)
    corruptor = _corruptor(task, name)
    from medmnistc.utils.utils import seed_everything  # noqa: PLC0415

    rng = seed_everything(int(seed))
    if name == "impulse_noise":
        corruptor.rng = rng  # as DatasetManager: skimage's s&p noise draws from this generator
    out = np.empty((len(severities) * n, out_size, out_size) + ((3,) if rgb else ()), dtype=np.uint8)
    with warnings.catch_warnings():
        # motion_blur's np.fromstring (deprecated, works below numpy 2.3): once per image otherwise
        warnings.filterwarnings("ignore", message="The binary mode of fromstring", category=DeprecationWarning)
        for i, severity in enumerate(severities):
            for j in range(n):
                img = resize(images[j], CALIBRATED_SIZE, UPSAMPLE[upsample])
                out[i * n + j] = resize(_apply(corruptor, img, severity, rgb), out_size, DOWNSAMPLE)
    return out


def _checked(images, upsample: str) -> np.ndarray:
    """``images`` as uint8 (N, H, W) or (N, H, W, 3) squares, and a known upsampling; UserError otherwise."""
    if upsample not in UPSAMPLING:
        raise UserError(f"unknown upsampling {upsample!r}; valid: {', '.join(UPSAMPLING)}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3) \
            or images.shape[1] != images.shape[2]:
        raise UserError(f"images to corrupt must be uint8 (N, H, W) or (N, H, W, 3) squares, got {images.dtype} "
                        f"{images.shape}")
    return images


def resample(images: np.ndarray, *, out_size: int | None = None, upsample: str = "nearest") -> np.ndarray:
    """The resize path of :func:`corrupt` without the corruption: each image up to 224 px (``upsample``; as
    is when already 224) and box-resized to ``out_size``. This is the control every corrupted set is compared
    with, so that a corruption's effect is not mixed with the resampling's (docs/shift.md)."""
    images = _checked(images, upsample)
    out_size = images.shape[1] if out_size is None else int(out_size)
    out = np.empty((images.shape[0], out_size, out_size) + images.shape[3:], dtype=np.uint8)
    for j in range(images.shape[0]):
        out[j] = resize(resize(images[j], CALIBRATED_SIZE, UPSAMPLE[upsample]), out_size, DOWNSAMPLE)
    return out
