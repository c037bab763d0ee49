"""Checkpoints: the weights plus every setting that made them, written atomically, and proving at every read
that they are what was written.

A checkpoint holds ``{state_dict, settings, sha256}``; ``sha256`` has one digest of the weights (names, dtypes,
shapes and bytes, in name order) and one of the settings (canonical JSON), taken when it was saved and checked
each time it is read: a flipped byte in a weight, or an edited setting, is refused with one line naming the
file instead of evaluating a model that was never trained. Checkpoints written before medgrid 0.2 have no
digests and are read unchecked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from medgrid import models
from medgrid.atomic import atomic_output
from medgrid.errors import UserError

REQUIRED = ("task", "size", "arch", "norm", "eps", "seed", "n_channels", "n_classes")


def weights_digest(state: dict) -> str:
    """sha256 of a state dict: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def settings_digest(settings: dict) -> str:
    """sha256 of the settings as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def save(path, model: torch.nn.Module, settings: dict) -> None:
    """Write {state_dict, settings, sha256} to a temp file beside ``path`` and rename it into place."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    settings = dict(settings)
    digests = {"weights": weights_digest(state), "settings": settings_digest(settings)}
    with atomic_output(path) as tmp:
        torch.save({"state_dict": state, "settings": settings, "sha256": digests}, tmp)


def _read(path, mmap: bool = False) -> dict:
    """The checkpoint's {state_dict, settings}, its settings checked and its digests verified; UserError for a
    missing, foreign or corrupt file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"missing checkpoint {path}")
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a folder; name the model.pt file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        settings, state = blob["settings"], blob["state_dict"]
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            reason = "it holds Python objects a checkpoint never has"  # not torch's "weights_only=False" advice
        raise UserError(f"cannot read checkpoint {path}: not a medgrid checkpoint ({reason})") from None
    if not isinstance(settings, dict) or not isinstance(state, dict):
        raise UserError(f"cannot read checkpoint {path}: not a medgrid checkpoint (no settings and weights)")
    missing = [k for k in REQUIRED if k not in settings]
    if missing:
        raise UserError(f"checkpoint {path} lacks settings {missing}")
    digests = blob.get("sha256") if isinstance(blob, dict) else None
    if digests is not None:
        if settings_digest(settings) != digests.get("settings"):
            raise UserError(f"checkpoint {path} is corrupt: its settings differ from those it was saved with "
                            f"(sha256 mismatch); train the cell again")
        if weights_digest(state) != digests.get("weights"):
            raise UserError(f"checkpoint {path} is corrupt: its weights differ from those it was saved with "
                            f"(sha256 mismatch); train the cell again")
    return {"settings": settings, "state_dict": state}


def load(path, device="cpu"):
    """Rebuild the model from the checkpoint's settings; returns (model in eval mode, settings)."""
    blob = _read(path)
    settings = blob["settings"]
    try:
        model = models.build(settings["arch"], settings["n_channels"], settings["n_classes"], settings["size"])
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise UserError(f"checkpoint {path}: its weights do not fit its settings ({settings.get('arch')}, "
                        f"{settings.get('n_channels')} channels, {settings.get('n_classes')} classes, "
                        f"{settings.get('size')} px): {first}") from None
    return model.to(device).eval(), settings


def read_settings(path) -> dict:
    """Only the settings of a checkpoint (the weights memory-mapped, read once to verify their digest)."""
    return _read(path, mmap=True)["settings"]
