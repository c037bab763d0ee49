"""Predictions of a model on a whole split, batch by batch, in eval mode."""

from __future__ import annotations

import torch

from medgrid.data import loading
from medgrid.models import eval_mode

PIXELS_PER_BATCH = 1000 * 28 * 28  # default batch: 1000 images at 28 px, as many pixels at larger sizes


def default_batch_size(split: loading.Split) -> int:
    """Images per batch whose activations take what 1000 images of 28 px take: 1000 at 28 px, 15 at 224."""
    h, w = split.images.shape[-2:]
    return max(1, PIXELS_PER_BATCH // (int(h) * int(w)))


@torch.no_grad()
def predict(model, split: loading.Split, batch_size: int | None = None, autocast: bool = False):
    """(logits as float32, labels) for a whole split, model in eval mode (bf16 autocast on CUDA if asked).

    ``batch_size`` None: :func:`default_batch_size`, so a batch's memory does not grow with the image size.
    """
    batch_size = default_batch_size(split) if batch_size is None else batch_size
    with eval_mode(model):
        outs = []
        for x, _ in loading.iterate(split, batch_size):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                outs.append(model(x).float())
    return torch.cat(outs), split.labels
