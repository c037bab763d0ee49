"""Predictions of a model on a whole split, batch by batch, in eval mode."""

from __future__ import annotations

import torch

from medgrid import data
from medgrid.models import eval_mode


@torch.no_grad()
def predict(model, split: data.Split, batch_size: int = 1000, autocast: bool = False):
    """(logits as float32, labels) for a whole split, model in eval mode (bf16 autocast on CUDA if asked)."""
    with eval_mode(model):
        outs = []
        for x, _ in data.iterate(split, batch_size):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                outs.append(model(x).float())
    return torch.cat(outs), split.labels
