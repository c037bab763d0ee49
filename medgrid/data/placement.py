"""Where a command holds its splits: in the compute device's memory, or in host memory.

On a CPU the two are one memory and the splits are simply held in it ("host"). On a GPU the splits go to
device memory when they fit with room to spare: ``auto`` puts them there when they take at most
``DEVICE_FRACTION`` of the device's free memory (the rest is for the model, its activations and the
attacks); otherwise they stay in pinned host memory and every batch is copied to the device as it is used
(``non_blocking``). ``device`` and ``host`` force the choice. Either way the batches, and so the results,
are the same.
"""

from __future__ import annotations

import torch

from medgrid.errors import UserError
from medgrid.names import DATA_ON

DEVICE_FRACTION = 0.5  # auto: splits on the GPU when they take at most this share of its free memory


def free_device_memory(device) -> int:
    """Free bytes of a CUDA device, as the driver reports them."""
    return int(torch.cuda.mem_get_info(torch.device(device))[0])


def choose(nbytes: int, device, requested: str = "auto", *, free_bytes: int | None = None) -> str:
    """"device" or "host": where splits of ``nbytes`` bytes are held for computing on ``device``.

    CPU: "host" (the device's memory is the host's). CUDA: ``requested`` unless it is "auto"; auto is
    "device" when ``nbytes <= DEVICE_FRACTION * free`` (``free_bytes``, default: the device's free memory now).
    """
    if requested not in DATA_ON:
        raise UserError(f"unknown data placement {requested!r}; valid: {', '.join(DATA_ON)}")
    if torch.device(device).type != "cuda":
        return "host"
    if requested != "auto":
        return requested
    free = free_device_memory(device) if free_bytes is None else int(free_bytes)
    return "device" if nbytes <= DEVICE_FRACTION * free else "host"


def pinned(device, placement: str) -> bool:
    """Whether host-held splits are pinned: when batches are copied from them to a CUDA device."""
    return placement == "host" and torch.device(device).type == "cuda"


def describe(placement: str, nbytes: int, device, requested: str = "auto") -> str:
    """One line for a command's log: where the splits are and why."""
    size = f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
    how = "" if torch.device(device).type != "cuda" else f" (--data-on {requested})"
    if placement == "device":
        return f"data: {size} of images on {device}{how}"
    if torch.device(device).type == "cuda":
        return f"data: {size} of images in pinned host memory, batches streamed to {device}{how}"
    return f"data: {size} of images in host memory"
