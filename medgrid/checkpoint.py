"""Checkpoints: the weights plus every setting that made them, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from medgrid import models
from medgrid.atomic import atomic_output
from medgrid.errors import UserError

REQUIRED = ("task", "size", "arch", "norm", "eps", "seed", "n_channels", "n_classes")


def save(path, model: torch.nn.Module, settings: dict) -> None:
    """Write {state_dict, settings} to a temp file beside ``path`` and rename it into place."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save({"state_dict": state, "settings": dict(settings)}, tmp)


def _read(path, mmap: bool = False) -> dict:
    """The checkpoint's {state_dict, settings}, its settings checked; UserError for a missing or foreign file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"missing checkpoint {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        settings, state = blob["settings"], blob["state_dict"]
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise UserError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    missing = [k for k in REQUIRED if k not in settings]
    if missing:
        raise UserError(f"checkpoint {path} lacks settings {missing}")
    return {"settings": settings, "state_dict": state}


def load(path, device="cpu"):
    """Rebuild the model from the checkpoint's settings; returns (model in eval mode, settings)."""
    blob = _read(path)
    settings = blob["settings"]
    model = models.build(settings["arch"], settings["n_channels"], settings["n_classes"], settings["size"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), settings


def read_settings(path) -> dict:
    """Only the settings of a checkpoint (the weights are memory-mapped, not read)."""
    return _read(path, mmap=True)["settings"]
