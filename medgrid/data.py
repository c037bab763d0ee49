"""Datasets: a task's npz (MedMNIST via the ``medmnist`` package, or a synthetic task) made, loaded, batched.

Every task lives in one npz file in MedMNIST's layout (:mod:`medgrid.npz`) at ``tasks.npz_path``.
``load`` validates a file and holds each split it needs whole as a uint8 tensor (N, C, H, W), read straight
into place, plus int64 labels (N,); ``iterate`` slices batches from those tensors (no per-sample Dataset /
DataLoader) and moves them to the compute device when the images are held in host memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from medgrid import npz as npzfile
from medgrid import placement, synthetic, tasks
from medgrid.errors import UserError
from medgrid.names import SPLITS, SYNTHETIC_TASKS
from medgrid.tasks import TaskInfo


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W), on `device` or in host memory (medgrid.placement)
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
    data_on: str = "host"  # where the images are: "device" or "host" (medgrid.placement)
    nbytes: int = 0  # bytes of the loaded images


# ------------------------------------------------------------------------------------------- prepare


def prepare(task: str, size: int, data_dir, *, seed: int = 0, download: bool = True, source_dir=None,
            n_classes: int | None = None, amplitude: int | None = None, n_train: int | None = None,
            n_val: int | None = None, n_test: int | None = None) -> Path:
    """Make ``tasks.npz_path(data_dir, task, size)`` exist and be valid; return its path.

    MedMNIST: an existing valid file is kept; otherwise it is copied from ``source_dir`` (a folder of
    already-downloaded files, never written to) or downloaded with ``medmnist``'s dataset class when
    ``download``. Synthetic tasks are (re)generated deterministically from ``seed`` and the synthetic
    parameters (``n_classes``, ``amplitude`` k in grey levels, split sizes; defaults in synthetic.DEFAULTS).
    """
    size = tasks.check_size(task, size)
    if data_dir is None:
        raise UserError("prepare needs a data folder (--data-dir)")
    data_dir = Path(data_dir)
    synthetic_args = dict(n_classes=n_classes, amplitude=amplitude, n_train=n_train, n_val=n_val, n_test=n_test)
    if task in SYNTHETIC_TASKS:
        info = tasks.task_info(task, n_classes=n_classes)
        params = {k: (synthetic.DEFAULTS[k] if v is None else v) for k, v in synthetic_args.items()}
        arrays = synthetic.generate(task, size, seed=seed, **params)
        dest = tasks.npz_path(data_dir, task, size)
        _ensure_dir(data_dir)
        npzfile.write_npz(dest, arrays)
        npzfile.check_file(dest, info, size)
        return dest
    if any(v is not None for v in synthetic_args.values()):
        given = ", ".join(k for k, v in synthetic_args.items() if v is not None)
        raise UserError(f"{given}: only for synthetic tasks, not for {task!r}")
    info = tasks.task_info(task)
    dest = tasks.npz_path(data_dir, task, size)
    fetch = tasks.fetch_command(task, size, data_dir)
    if source_dir is not None:
        src = tasks.npz_path(source_dir, task, size)
        if not src.is_file():
            raise UserError(f"{src} not found in --source-dir {source_dir} (expected MedMNIST's file name "
                            f"{src.name})")
        if dest.exists() and os.path.samefile(src, dest):
            npzfile.check_file(dest, info, size)
            return dest
        npzfile.check_file(src, info, size)
        _ensure_dir(data_dir)
        npzfile.copy_atomic(src, dest)
        return dest
    if dest.is_file():
        npzfile.check_file(dest, info, size)
        return dest
    if not download:
        raise UserError(f"{dest} not found and downloading is off; fetch it with: {fetch} "
                        f"(or copy it from a folder of MedMNIST files with --source-dir DIR)")
    _ensure_dir(data_dir)
    _download(task, size, dest, fetch)
    npzfile.check_file(dest, info, size)
    return dest


def _ensure_dir(d: Path) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create data folder {d}: {exc.strerror}") from None


def _download(task: str, size: int, dest: Path, fetch: str) -> None:
    """Download through medmnist's dataset class into a private temp folder, then move into place."""
    medmnist = tasks.medmnist()
    cls = getattr(medmnist, medmnist.INFO[task]["python_class"])
    tmpdir = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
    try:
        try:
            cls(split="test", root=str(tmpdir), size=None if size == 28 else size, download=True)
        except Exception as exc:
            # medmnist wraps every failure in a long multi-line RuntimeError; the cause is its context
            cause = exc.__context__ if exc.__context__ is not None else exc
            reason = " ".join(f"{type(cause).__name__}: {cause}".split())[:160]
            url = medmnist.INFO[task].get("url" + ("" if size == 28 else f"_{size}"), "?")
            raise UserError(f"{dest} not found and downloading it from {url} failed ({reason}); fetch it with: "
                            f"{fetch} on a machine with internet, or copy it in with --source-dir DIR") from None
        got = tmpdir / dest.name
        if not got.is_file():
            raise UserError(f"download of {dest.name} produced no file; fetch it with: {fetch}")
        os.replace(got, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- load


def _missing_file_message(path: Path, task: str, size: int, data_dir, explicit: bool) -> str:
    if explicit:
        return f"{path} not found (the --data file)"
    return f"{path} not found; fetch it with: {tasks.fetch_command(task, size, data_dir)}"


def load(task: str, size: int, data_dir=None, *, npz=None, device="cpu", n_classes: int | None = None,
         splits=SPLITS, data_on: str = "auto") -> Dataset:
    """Read and validate a task's npz (``tasks.npz_path(data_dir, task, size)``, or the file ``npz``).

    Every split's header and labels are checked; the images of ``splits`` are read (the others are None),
    each member once, straight into its final uint8 (N, C, H, W) tensor: on ``device``, or in (pinned) host
    memory with batches streamed to ``device``, as :func:`medgrid.placement.choose` decides from ``data_on``
    (``Dataset.data_on`` says which). Labels are int64 (N,) on ``device``. ``npz`` names a specific file in
    the task's layout (e.g. a generated D_rand set); it is checked against the task's channels, size and
    number of classes. ``n_classes`` is for synthetic tasks generated with a non-default number of classes.
    """
    info = tasks.task_info(task, n_classes=n_classes)
    size = tasks.check_size(task, size)
    if npz is not None:
        path, explicit = Path(npz), True
    elif data_dir is not None:
        path, explicit = tasks.npz_path(data_dir, task, size), False
    else:
        raise UserError("load needs a data folder (--data-dir) or an npz file (--data)")
    if not path.is_file():
        raise UserError(_missing_file_message(path, task, size, data_dir, explicit))
    name = str(path)
    hint = "" if explicit else f"; re-create it with: {tasks.fetch_command(task, size, data_dir)}"
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
