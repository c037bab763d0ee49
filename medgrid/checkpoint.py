"""Checkpoints: the weights plus every setting that made them, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from medgrid import models
from medgrid.errors import UserError
from medgrid.atomic import atomic_output

REQUIRED = ("task", "size", "arch", "norm", "eps", "seed", "n_channels", "n_classes")


def save(path, model: torch.nn.Module, settings: dict) -> None:
    """Write {state_dict, settings} to a temp file beside ``path`` and rename it into place."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save({"state_dict": state, "settings": dict(settings)}, tmp)


def load(path, device="cpu"):
    """Rebuild the model from the checkpoint's settings; returns (model in eval mode, settings)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"missing checkpoint {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        settings = blob["settings"]
        state = blob["state_dict"]
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise UserError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    missing = [k for k in REQUIRED if k not in settings]
    if missing:
        raise UserError(f"checkpoint {path} lacks settings {missing}")
    model = models.build(settings["arch"], settings["n_channels"], settings["n_classes"], settings["size"])
    model.load_state_dict(state)
    return model.to(device).eval(), settings
