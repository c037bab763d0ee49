"""What each task has: its file name, its splits' sizes and channels, and its MedMNIST-C test sets.

Plain Python (no torch, numpy or medmnist), so the workflow imports it to build the DAG
(workflow/rules/common.smk) and the package uses the same tables. The MedMNIST figures are medmnist's
(``INFO[flag]["n_samples"]``, ``"n_channels"``) and the corruption lists medmnistc 0.1.0's registry
(``CORRUPTIONS_DS``, in its order); tests/test_catalog.py checks both against those libraries.
"""

from __future__ import annotations

from medgrid.names import RESAMPLE_CONTROL, SPLITS, SYNTHETIC_TASKS, TEXTURE_SHUFFLED

# the synthetic generator's defaults (medgrid.data.synthetic): classes, texture amplitude in grey levels, splits
SYNTHETIC_DEFAULTS = dict(n_classes=4, amplitude=4, n_train=4000, n_val=500, n_test=1000)

# images per split (train, val, test) and channels of every task
SPLIT_IMAGES: dict[str, tuple[int, int, int, int]] = {
    "pathmnist": (89996, 10004, 7180, 3),
    "dermamnist": (7007, 1003, 2005, 3),
    "octmnist": (97477, 10832, 1000, 1),
    "pneumoniamnist": (4708, 524, 624, 1),
    "retinamnist": (1080, 120, 400, 3),
    "breastmnist": (546, 78, 156, 1),
    "bloodmnist": (11959, 1712, 3421, 3),
    "tissuemnist": (165466, 23640, 47280, 1),
    "organamnist": (34561, 6491, 17778, 1),
    "organcmnist": (12975, 2392, 8216, 1),
    "organsmnist": (13932, 2452, 8827, 1),
    **{task: (SYNTHETIC_DEFAULTS["n_train"], SYNTHETIC_DEFAULTS["n_val"], SYNTHETIC_DEFAULTS["n_test"], channels)
       for task, channels in zip(SYNTHETIC_TASKS, (1, 3))},
}

# medmnistc 0.1.0's corruptions of each MedMNIST task, in its registry's order
_ORGAN = ("pixelate", "jpeg_compression", "gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise",
          "gaussian_blur", "brightness_up", "brightness_down", "contrast_up", "contrast_down", "gamma_corr_up",
          "gamma_corr_down")
_STAINED = ("pixelate", "jpeg_compression", "defocus_blur", "motion_blur", "brightness_up", "brightness_down",
            "contrast_up", "contrast_down", "saturate", "stain_deposit", "bubble")
MEDMNISTC: dict[str, tuple[str, ...]] = {
    "pathmnist": _STAINED,
    "dermamnist": ("pixelate", "jpeg_compression", "gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise",
                   "defocus_blur", "motion_blur", "zoom_blur", "brightness_up", "brightness_down", "contrast_up",
                   "contrast_down", "black_corner", "characters"),
    "octmnist": ("pixelate", "jpeg_compression", "speckle_noise", "defocus_blur", "motion_blur", "contrast_down"),
    "pneumoniamnist": _ORGAN,
    "retinamnist": ("pixelate", "jpeg_compression", "gaussian_noise", "speckle_noise", "defocus_blur", "motion_blur",
                    "brightness_down", "contrast_down"),
    "breastmnist": ("pixelate", "jpeg_compression", "speckle_noise", "motion_blur", "brightness_up",
                    "brightness_down", "contrast_down"),
    "bloodmnist": _STAINED,
    "tissuemnist": ("pixelate", "jpeg_compression", "impulse_noise", "gaussian_blur", "brightness_up",
                    "brightness_down", "contrast_up", "contrast_down"),
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
}

# The synthetic tasks' corruptions: name -> the MedMNIST flag whose medmnistc entry (same name, same five
# severities) is used. Measured on the synthetic task at 28 px, corrupted at 224 (docs/shift.md): the blurs
# and pixelation destroy the nonrobust texture progressively; brightness and contrast scale it together
# with the robust feature (controls). Noise and JPEG applied at 224 px leave it intact at 28 px: left out.
SYNTHETIC_SUITE = {
    "defocus_blur": "dermamnist",  # disk radius 4..8 px at 224: texture 38% .. 0% kept
    "gaussian_blur": "tissuemnist",  # kernel 13..25 px at 224: texture 37% .. 10% kept
    "pixelate": "tissuemnist",  # box down to 40%..10% of 224 px: texture 69% .. 7% kept
    "brightness_down": "pneumoniamnist",  # x0.9..0.5: everything (texture included) scaled
    "contrast_down": "pneumoniamnist",  # contrast x0.9..0.4 around the mean: texture scaled with it
}


def file_stem(task: str, size) -> str:
    """MedMNIST's file naming: ``{task}`` at 28 px, ``{task}_{size}`` otherwise (the npz is ``{stem}.npz``)."""
    return task if int(size) == 28 else f"{task}_{int(size)}"


def shift_sets(task: str) -> tuple[str, ...]:
    """The test sets of a task's MedMNIST-C evaluation: its corruptions (medmnistc's for MedMNIST; the synthetic
    suite and texture_shuffled for the synthetic tasks), then resample_control (the clean test set through the
    same resize path). KeyError for a task medgrid does not know."""
    if task in SYNTHETIC_TASKS:
        return tuple(SYNTHETIC_SUITE) + (TEXTURE_SHUFFLED, RESAMPLE_CONTROL)
    return MEDMNISTC[task] + (RESAMPLE_CONTROL,)


def split_images(task: str) -> dict[str, int]:
    """{split: images} of a task at its default size (synthetic: the generator's defaults)."""
    return dict(zip(SPLITS, SPLIT_IMAGES[task][:3]))


def channels(task: str) -> int:
    return SPLIT_IMAGES[task][3]
