"""Seeds: every random stream medgrid draws is derived from a user's seed in one place.

A stream is named by the seed plus a few integers (what it is for, which split, which batch...), and
its generator is built from ``numpy.random.SeedSequence(seed, *stream)``, so streams of one seed are
independent and reproducible on every platform and Python version.
"""

from __future__ import annotations

import random

import numpy as np

# stream names, so two uses of one seed never draw the same numbers
STREAM_SYNTHETIC_TEXTURE = 1
STREAM_SYNTHETIC_LABELS = 2
STREAM_SYNTHETIC_IMAGES = 3
STREAM_SYNTHETIC_SHUFFLE = 4
STREAM_FEATURES = 7
STREAM_INDEPENDENT_MODEL = 8
STREAM_PGD = 9  # random starts of a robust evaluation: (batch, eps, restart)
STREAM_APGD = 10  # APGD starts: (batch, eps, attack, target)
STREAM_SUBSET = 11  # the test images of a strong evaluation with a sample cap
STREAM_SANITY = 12  # starts of the gradient-masking checks' attacks
STREAM_SALIENCY = 13  # the PGD start of the saliency figure's adversarial examples
STREAM_SQUARE = 21  # Square's random search in the strong evaluation and the black-box check: (batch, eps)
STREAM_CHECK_SUBSET = 22  # which of the strong evaluation's images the gradient-masking checks use
STREAM_OVERFIT_GUARD = 14  # fast adversarial training's guard: its training batch (0) and PGD start (1)


def numpy_rng(seed: int, *stream: int) -> np.random.Generator:
    """A numpy generator for one stream of ``seed``."""
    return np.random.default_rng([int(seed), *map(int, stream)])


def derive(seed: int, *stream: int) -> int:
    """A 62-bit integer seed for one stream of ``seed`` (for torch generators and model seeds)."""
    return int(numpy_rng(seed, *stream).integers(0, 2**62))


def torch_generator(seed: int, *stream: int, device="cpu"):
    """A torch generator on ``device`` for one stream of ``seed``."""
    import torch  # here, not above: the synthetic generator and the charts use this module without torch

    return torch.Generator(device=device).manual_seed(derive(seed, *stream))


def training_seeds(seed: int, train_data: str = "original", model_seed: int = 0) -> dict[str, int]:
    """The seeds of one training run: ``init`` (weights, via :func:`seed_everything`), ``order`` (batch
    order) and ``attack`` (adversarial-training random starts).

    A cell trained on its task's own data uses its grid seed: init = order = seed, attack = seed + 1
    (as medgrid always has). A model trained on a constructed dataset (Ilyas et al.'s D_rand, D_det, D_R)
    must be a fresh model: it gets seeds drawn from the stream (seed, STREAM_INDEPENDENT_MODEL, dataset),
    so it shares neither the initial weights nor the batch order of the source cell (same grid seed)
    whose model made the dataset, and each dataset's model differs from the others'.

    ``model_seed`` k numbers the independent models trained on one constructed dataset: model 0 draws from
    the stream above (the seeds the first model always had), model k >= 1 from (seed,
    STREAM_INDEPENDENT_MODEL, dataset, k). ``train_data`` is the dataset's kind (drand, ddet, drobust), not
    its attack setting: model k of every setting of a sweep starts from the same weights and batch order,
    so the settings are compared on paired models.
    """
    if train_data == "original":
        if model_seed:
            raise ValueError("model_seed is for models trained on a constructed dataset; a grid cell has its seed")
        return {"init": int(seed), "order": int(seed), "attack": int(seed) + 1}
    if model_seed < 0:
        raise ValueError(f"model_seed must be >= 0, got {model_seed}")
    dataset = int.from_bytes(train_data.encode(), "little")  # the dataset's name as an integer
    stream = (STREAM_INDEPENDENT_MODEL, dataset) + ((int(model_seed),) if model_seed else ())
    init, order, attack = numpy_rng(seed, *stream).integers(0, 2**31, size=3)
    return {"init": int(init), "order": int(order), "attack": int(attack)}


def seed_everything(seed: int) -> None:
    """Same seed, same weights on CPU: Python, NumPy and torch global RNGs plus deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
