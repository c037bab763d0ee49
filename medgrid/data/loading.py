"""A task's npz file loaded and batched.

Every task lives in one npz file in MedMNIST's layout (:mod:`medgrid.data.npz`; made by
:mod:`medgrid.data.prepare`). ``load`` validates a file and holds each split it needs whole as a uint8 tensor (N, C, H, W), read straight
into place, plus int64 labels (N,); ``iterate`` slices batches from those tensors (no per-sample Dataset /
DataLoader) and moves them to the compute device when the images are held in host memory.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from medgrid import catalog, heap, names
from medgrid.data import npz as npzfile
from medgrid.data import placement, tasks
from medgrid.data.tasks import TaskInfo
from medgrid.errors import UserError
from medgrid.names import SPLITS


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W), on `device` or in host memory (medgrid.data.placement)
    labels: torch.Tensor  # int64 (N,), on `device`
    device: torch.device | None = None  # where batches are computed on; default: where the images are

    def __post_init__(self):
        if self.device is None:
            self.device = self.images.device

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    info: TaskInfo
    size: int
    train: Split | None  # None: a split the command did not load
    val: Split | None
    test: Split | None
    path: Path
    sha256: str
    data_on: str = "host"  # where the images are: "device" or "host" (medgrid.data.placement)
    nbytes: int = 0  # bytes of the loaded images


# ---------------------------------------------------------------------------------------------- load


def _other_task_file(name: str, task: str) -> str | None:
    """The task whose file name (MedMNIST's naming, any size) ``name`` is, if that is not ``task``: a file of
    another task has the same layout and often the same image shape, so only its name tells."""
    for other in names.TASKS:
        if other != task and any(name == f"{catalog.file_stem(other, s)}.npz" for s in names.SIZES):
            return other
    return None


def load(task: str, size: int, npz, *, device="cpu", n_classes: int | None = None, splits=SPLITS,
         data_on: str = "auto") -> Dataset:
    """Read and validate the npz file ``npz`` of a task at ``size`` px (its own file, or one in its layout such
    as a generated D_rand set, checked against the task's channels, size and number of classes).

    Every split's header and labels are checked; the images of ``splits`` are read (the others are None),
    each member once, straight into its final uint8 (N, C, H, W) tensor: on ``device``, or in (pinned) host
    memory with batches streamed to ``device``, as :func:`medgrid.data.placement.choose` decides from ``data_on``
    (``Dataset.data_on`` says which). Labels are int64 (N,) on ``device``. ``n_classes`` is for synthetic
    tasks generated with a non-default number of classes.
    """
    info = tasks.task_info(task, n_classes=n_classes)
    size = tasks.check_size(task, size)
    path = tasks.file_argument(npz, "--data", task, size)
    # a task's own file (MedMNIST's name) can be made again by prepare-data; a constructed set by its own rule
    own = path.name == tasks.npz_path(".", task, size).name
    other = _other_task_file(path.name, task)
    if other is not None:
        raise UserError(f"{path} is named as {other}'s data, not {task}'s: give the {task} file (e.g. "
                        f"{tasks.npz_path('resources/data', task, size)})")
    if not path.is_file():
        made = f"; make it with: {tasks.fetch_command(task, size, path)}" if own else ""
        raise UserError(f"{path} not found (the --data file){made}")
    name = str(path)
    hint = f"; re-create it with: {tasks.fetch_command(task, size, path)}" if own else ""
    z = npzfile.open_npz(path, hint)
    loaded = {}
    try:
        npzfile.check_keys(path, z.files)
        shapes, labels = {}, {}
        for split in SPLITS:
            shape, dtype = npzfile.member_header(z.zip, f"{split}_images")
            npzfile.check_images(name, f"{split}_images", dtype, shape, info, size)
            labels[split] = npzfile.check_labels(name, f"{split}_labels", z[f"{split}_labels"], shape[0], info)
            shapes[split] = shape
        heap.configure(size)  # before the images are allocated (medgrid/heap.py)
        wanted = [s for s in SPLITS if s in splits]
        nbytes = sum(int(np.prod(shapes[s], dtype=np.int64)) for s in wanted)
        where = placement.choose(nbytes, device, data_on)
        for split in wanted:
            images = read_images(z.zip, f"{split}_images", shapes[split], device, where)
            loaded[split] = Split(images, torch.from_numpy(labels[split].astype(np.int64)).to(device),
                                  torch.device(device))
    except (UserError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as exc:  # truncated zip member, bad CRC, bad npy header, ...
        raise npzfile.unreadable(path, exc, hint) from None
    finally:
        z.close()
    return Dataset(info=info, size=size, train=loaded.get("train"), val=loaded.get("val"), test=loaded.get("test"),
                   path=path, sha256=npzfile.sha256(path), data_on=where, nbytes=nbytes)


def read_images(zf, key: str, shape: tuple, device, where: str) -> torch.Tensor:
    """Images ``key`` (MedMNIST layout, ``shape`` from its header) of an open npz as one uint8 (N, C, H, W)
    tensor, decompressed chunk by chunk straight into place: on ``device`` (``where`` "device"), else in host
    memory (pinned when batches go to a GPU)."""
    n, h, w = shape[:3]
    c = shape[3] if len(shape) == 4 else 1
    pinned = placement.pinned(device, where)
    try:
        if where == "device":
            out = torch.empty((n, c, h, w), dtype=torch.uint8, device=device)
        else:
            out = torch.empty((n, c, h, w), dtype=torch.uint8, pin_memory=pinned)
    except RuntimeError as exc:  # out of memory (torch's allocators raise RuntimeError subclasses)
        held = f"on {device}" if where == "device" else "in pinned host memory" if pinned else "in host memory"
        hint = "; try --data-on host" if where == "device" else ""
        reason = " ".join(str(exc).split())[:120]
        raise UserError(f"not enough memory for {n * c * h * w / 2**30:.2f} GiB of images ({key}) {held} "
                        f"({reason}){hint}") from None
    for start, block in npzfile.iter_rows(zf, key):
        chunk = torch.from_numpy(block)
        chunk = chunk.unsqueeze(1) if chunk.ndim == 3 else chunk.permute(0, 3, 1, 2)
        out[start:start + chunk.shape[0]].copy_(chunk)
    return out


def load_test(path: Path, labels: np.ndarray, shape: tuple, device, data_on: str = "auto") -> Split:
    """The test split of a test-only npz (e.g. a MedMNIST-C set) whose labels and image shape were already read
    and checked (``npz.read_test_labels``): images read once, straight into place as :func:`load` does."""
    where = placement.choose(int(np.prod(shape, dtype=np.int64)), device, data_on)
    heap.configure(shape[1])
    try:
        with zipfile.ZipFile(path) as zf:
            images = read_images(zf, "test_images", shape, device, where)
    except (UserError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as exc:  # truncated member, bad CRC, ...
        raise npzfile.unreadable(path, exc) from None
    return Split(images, torch.from_numpy(labels.astype(np.int64)).to(device), torch.device(device))


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (same device)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"as_float expects uint8 images, got {images.dtype}")
    return images.to(torch.float32).div_(255.0)


def float_batch(split: Split, index) -> torch.Tensor:
    """``split.images[index]`` (a slice or an index tensor) as float32 in [0, 1] on the split's device."""
    return take_float(split.images, index, split.device)


def take(images: torch.Tensor, index, device) -> torch.Tensor:
    """``images[index]`` (a slice or an index tensor) on ``device``, in their own dtype, wherever they are held."""
    if isinstance(index, torch.Tensor):
        x = images.index_select(0, index.to(images.device))
    else:
        x = images[index]
    return x.to(device, non_blocking=True)


def take_float(images: torch.Tensor, index, device) -> torch.Tensor:
    """``images[index]`` as float32 in [0, 1] on ``device``: uint8 images made float only for the rows taken
    (attacks call it per batch, so a float copy of a whole set is never made); float images as they are."""
    x = take(images, index, device)
    return as_float(x) if x.dtype == torch.uint8 else x


def iterate(split: Split, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x float32 [0,1], y int64)`` batches sliced from the split's whole tensors, on its device.

    With ``shuffle`` the order is ``torch.randperm`` drawn from ``generator`` (on the generator's device).
    The last batch may be smaller.
    """
    if int(batch_size) < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    n = len(split)
    if shuffle:
        dev = generator.device if generator is not None else split.device
        order = torch.randperm(n, generator=generator, device=dev).to(split.labels.device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield float_batch(split, idx), split.labels.index_select(0, idx)
    else:
        for i in range(0, n, batch_size):
            yield float_batch(split, slice(i, i + batch_size)), split.labels[i:i + batch_size]
