"""What every constructed dataset of Ilyas et al. shares: its random streams, its images as uint8 and its file
in MedMNIST's layout (train split = the new images and labels, val and test copied from the original task), so
``medgrid.data.loading.load(task, size, npz)`` and ``medgrid train --data NPZ --train-data drand`` read it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from medgrid import seeding
from medgrid.data import loading, npz
from medgrid.names import NO_CONSTRUCTION


def stream_generator(seed: int, stream: int, device) -> torch.Generator:
    """An independent torch generator for one use (targets, random starts, permutation, noise) of ``seed``."""
    return seeding.torch_generator(seed, seeding.STREAM_FEATURES, stream, device=device)


# ---------------------------------------------------------------------------------------- layout


@contextlib.contextmanager
def attack_layout(model, device):
    """The memory layout the constructions attack in: on CPU the model and its batches channels-last (NHWC),
    which halved the time of a cnn-small forward+backward on one thread (benchmarks/features_cost.py: max
    pooling and the convolutions run their fast NHWC kernels); the model's own layout is restored after.
    Yields the function that lays out a batch. Elsewhere (CUDA: not measured) nothing changes."""
    if torch.device(device).type != "cpu":
        yield lambda x: x
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield lambda x: x.contiguous(memory_format=torch.channels_last)
    finally:
        model.to(memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------------------- conversions


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 grey levels, rounded to nearest."""
    return x.detach().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _layout(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) tensor -> MedMNIST layout: (N, H, W) for one channel, (N, H, W, C) otherwise.

    A view where the images are in host memory (npz.write_npz writes strided arrays without a copy); images
    allocated channels-last (:func:`output_like`) are already contiguous in that layout.
    """
    a = images.cpu().numpy()
    return a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)


def output_like(split: loading.Split) -> torch.Tensor:
    """An empty uint8 (N, C, H, W) tensor for a new training split, in host memory and laid out channels-last,
    i.e. as the npz stores it: the images are written to the file without another copy."""
    return torch.empty(split.images.shape, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)


def _labels(labels: torch.Tensor) -> np.ndarray:
    return labels.cpu().numpy().astype(np.uint8).reshape(-1, 1)


def npz_arrays(ds: loading.Dataset, train_images: torch.Tensor, train_labels: torch.Tensor,
               construction: str | None = None) -> dict[str, np.ndarray]:
    """MedMNIST-layout arrays: the new training split, val and test copied from ``ds``; with ``construction``
    (the token of the attack setting that made D_rand / D_det, medgrid.constructions) also the array
    :data:`CONSTRUCTION_KEY`, which ``medgrid train`` records, so the trained model's rows name the setting."""
    if train_images.dtype != torch.uint8:
        raise TypeError(f"train_images must be uint8, got {train_images.dtype}")
    arrays = {
        "train_images": _layout(train_images), "train_labels": _labels(train_labels),
        "val_images": _layout(ds.val.images), "val_labels": _labels(ds.val.labels),
        "test_images": _layout(ds.test.images), "test_labels": _labels(ds.test.labels),
    }
    if construction is not None:
        arrays[CONSTRUCTION_KEY] = np.array(construction)
    return arrays


CONSTRUCTION_KEY = "construction"  # a constructed npz's attack setting (a 0-d string array; MedMNIST has no such key)


def read_construction(path) -> str:
    """The attack setting recorded in a constructed npz (:func:`npz_arrays`); ``none`` when it has none (D_R,
    files written before it was recorded, the task's own file)."""
    with npz.open_npz(Path(path)) as z:
        if CONSTRUCTION_KEY not in z.files:
            return NO_CONSTRUCTION
        return str(z[CONSTRUCTION_KEY][()])


