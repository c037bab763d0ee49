"""What every constructed dataset of Ilyas et al. shares: its random streams, its images as uint8 and its file
in MedMNIST's layout (train split = the new images and labels, val and test copied from the original task), so
``medgrid.data.loading.load(task, size, npz)`` and ``medgrid train --data NPZ --train-data drand`` read it.
"""

from __future__ import annotations

import numpy as np
import torch

from medgrid import seeding
from medgrid.data import loading


def stream_generator(seed: int, stream: int, device) -> torch.Generator:
    """An independent torch generator for one use (targets, random starts, permutation, noise) of ``seed``."""
    return seeding.torch_generator(seed, seeding.STREAM_FEATURES, stream, device=device)


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


def npz_arrays(ds: loading.Dataset, train_images: torch.Tensor, train_labels: torch.Tensor) -> dict[str, np.ndarray]:
    """MedMNIST-layout arrays: the new training split, val and test copied from ``ds``."""
    if train_images.dtype != torch.uint8:
        raise TypeError(f"train_images must be uint8, got {train_images.dtype}")
    return {
        "train_images": _layout(train_images), "train_labels": _labels(train_labels),
        "val_images": _layout(ds.val.images), "val_labels": _labels(ds.val.labels),
        "test_images": _layout(ds.test.images), "test_labels": _labels(ds.test.labels),
    }


