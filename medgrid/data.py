"""Datasets: 2D MedMNIST tasks (through the ``medmnist`` package) and synthetic planted-feature tasks.

Every task lives in one npz file in MedMNIST's layout: ``{data_dir}/{task}.npz`` at 28 px and
``{data_dir}/{task}_{size}.npz`` otherwise, with keys ``{train,val,test}_images`` (uint8, N x H x W or
N x H x W x C) and ``{train,val,test}_labels`` ((N, 1) integers). ``load`` validates a file and holds
each split whole in memory as uint8 tensors (N, C, H, W) plus int64 labels (N,); ``iterate`` slices
batches from those tensors (no per-sample Dataset / DataLoader).

The synthetic tasks (``synthetic`` grey, ``synthetic-rgb`` colour) are the offline ground truth: each
class has a robust feature (a noisy Gaussian blob near one class centre; alone it allows a Bayes accuracy
of about 0.865 with 4 classes) and a nonrobust one (a +-k grey-level checkerboard carrier whose sign follows a
smooth random map per class; all its energy lies near the Nyquist frequency, so blur, JPEG or pixelation
destroy it, while it is perfectly predictive in distribution). See ``generate_synthetic``.

``medmnist`` is imported lazily: importing it creates ``~/.medmnist``; ``root`` is always passed explicitly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from medgrid.atomic import atomic_output
from medgrid.errors import UserError

MEDMNIST_2D = (
    "pathmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
)
SYNTHETIC_TASKS = ("synthetic", "synthetic-rgb")
TASKS = MEDMNIST_2D + SYNTHETIC_TASKS
SIZES = (28, 64, 128, 224)
SYNTHETIC_SIZES = (28, 64)
SPLITS = ("train", "val", "test")
REQUIRED_KEYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))

# MedMNIST tasks medgrid refuses, with the reason (3D ones are detected from their class name too).
_UNSUPPORTED = {
    "chestmnist": "it is multi-label (14 independent binary labels, BCE loss); medgrid trains and attacks "
    "single-label classifiers with cross-entropy",
}
_3D_REASON = "it is a 3D (volumetric) dataset; medgrid handles 2D images only"

# Synthetic defaults (see ../shared/DESIGN.md, "The synthetic task").
SYNTHETIC_DEFAULTS = dict(n_classes=4, amplitude=4, n_train=4000, n_val=500, n_test=1000)
_BASE_CENTRES = ((9.0, 9.0), (9.0, 19.0), (19.0, 9.0), (19.0, 19.0))  # (row, col) at 28 px
_JITTER = 3.4  # px at 28, std of the blob position per axis
_WIDTH = (2.5, 4.0)  # px at 28, blob sigma
_PEAK = (0.35, 0.6)
_BACKGROUND = (0.20, 0.30)  # 0.25 +- 0.05
_CLUTTER_SIGMA = 3.0  # px at 28
_CLUTTER_STD = 0.06
_PIXEL_NOISE = 0.02
_MAP_SIGMA = 3.0  # px at 28, smoothness of the per-class sign map of the texture


@dataclass(frozen=True)
class TaskInfo:
    name: str
    n_channels: int
    n_classes: int
    task_type: str  # "multi-class" | "binary-class"
    label_names: dict = field(default_factory=dict)


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    info: TaskInfo
    size: int
    train: Split
    val: Split
    test: Split
    path: Path
    sha256: str


# --------------------------------------------------------------------------------------------- tasks


def _medmnist():
    import medmnist  # noqa: PLC0415 - lazy: importing it creates its default root folder

    return medmnist


def _task_list() -> str:
    return ", ".join(TASKS)


def task_info(task: str, *, n_classes: int | None = None) -> TaskInfo:
    """Describe a supported task; UserError for unknown, multi-label and 3D tasks.

    ``n_classes`` only applies to synthetic tasks (default 4); MedMNIST tasks have theirs fixed.
    """
    if task in SYNTHETIC_TASKS:
        c = SYNTHETIC_DEFAULTS["n_classes"] if n_classes is None else n_classes
        _check_synthetic_classes(c)
        centres = _class_centres(c, 28)
        names = {str(k): f"blob near ({centres[k][0]:.0f}, {centres[k][1]:.0f})" for k in range(c)}
        return TaskInfo(task, 3 if task == "synthetic-rgb" else 1, c,
                        "binary-class" if c == 2 else "multi-class", names)
    if n_classes is not None:
        raise UserError(f"n_classes can only be chosen for synthetic tasks, not for {task!r}")
    if task in _UNSUPPORTED:
        raise UserError(f"task {task!r} is not supported: {_UNSUPPORTED[task]}. Valid tasks: {_task_list()}")
    if task not in MEDMNIST_2D:
        if isinstance(task, str) and task.endswith("mnist3d"):
            raise UserError(f"task {task!r} is not supported: {_3D_REASON}. Valid tasks: {_task_list()}")
        raise UserError(f"unknown task {task!r}; valid tasks: {_task_list()}")
    raw = _medmnist().INFO[task]
    labels = dict(raw["label"])
    kind = raw["task"]
    # RetinaMNIST is ordinal regression over 5 grades; like MedMNIST's own baselines we treat it as
    # 5-class classification with cross-entropy.
    task_type = "binary-class" if kind == "binary-class" else "multi-class"
    return TaskInfo(task, int(raw["n_channels"]), len(labels), task_type, labels)


def _check_size(task: str, size) -> int:
    allowed = SYNTHETIC_SIZES if task in SYNTHETIC_TASKS else SIZES
    try:
        s = int(size)
    except (TypeError, ValueError):
        s = None
    if s is None or s != size or s not in allowed:
        raise UserError(f"size {size!r} is not available for task {task!r}; valid sizes: "
                        f"{', '.join(map(str, allowed))}")
    return s


def npz_path(data_dir, task: str, size: int) -> Path:
    """``{data_dir}/{task}.npz`` at 28 px, ``{data_dir}/{task}_{size}.npz`` otherwise (MedMNIST's naming)."""
    name = f"{task}.npz" if int(size) == 28 else f"{task}_{int(size)}.npz"
    return Path(data_dir) / name


def _fetch_command(task: str, size: int, data_dir) -> str:
    return f"medgrid prepare-data --task {task} --size {size} --data-dir {data_dir}"


# ------------------------------------------------------------------------------------------- writing


def write_npz(path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` as a compressed npz, atomically and byte-reproducibly.

    The file is written to a temporary name in the same folder and moved into place with ``os.replace``,
    so readers never see half a file. Zip entries carry a fixed timestamp, so identical arrays give an
    identical file. MedMNIST's layout (images uint8 N,H,W or N,H,W,C; labels (N,1) uint8) is the caller's
    to respect; ``load`` checks it.
    """
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for key in sorted(arrays):
                arr = np.ascontiguousarray(np.asarray(arrays[key]))
                if arr.dtype.hasobject:
                    raise ValueError(f"write_npz: array {key!r} has object dtype")
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, arr, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_output(dst) as tmp, open(tmp, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


# ------------------------------------------------------------------------------------------- prepare


def prepare(task: str, size: int, data_dir, *, seed: int = 0, download: bool = True, source_dir=None,
            n_classes: int | None = None, amplitude: int | None = None, n_train: int | None = None,
            n_val: int | None = None, n_test: int | None = None) -> Path:
    """Make ``npz_path(data_dir, task, size)`` exist and be valid; return its path.

    MedMNIST: an existing valid file is kept; otherwise it is copied from ``source_dir`` (a folder of
    already-downloaded files, never written to) or downloaded with ``medmnist``'s dataset class when
    ``download``. Synthetic tasks are (re)generated deterministically from ``seed`` and the synthetic
    parameters (``n_classes``, ``amplitude`` k in grey levels, split sizes; defaults in SYNTHETIC_DEFAULTS).
    """
    size = _check_size(task, size)
    if data_dir is None:
        raise UserError("prepare needs a data folder (--data-dir)")
    data_dir = Path(data_dir)
    synthetic_args = dict(n_classes=n_classes, amplitude=amplitude, n_train=n_train, n_val=n_val, n_test=n_test)
    if task in SYNTHETIC_TASKS:
        info = task_info(task, n_classes=n_classes)
        params = {k: (SYNTHETIC_DEFAULTS[k] if v is None else v) for k, v in synthetic_args.items()}
        arrays = generate_synthetic(task, size, seed=seed, **params)
        dest = npz_path(data_dir, task, size)
        _ensure_dir(data_dir)
        write_npz(dest, arrays)
        _check_file_light(dest, info, size)
        return dest
    if any(v is not None for v in synthetic_args.values()):
        given = ", ".join(k for k, v in synthetic_args.items() if v is not None)
        raise UserError(f"{given}: only for synthetic tasks, not for {task!r}")
    info = task_info(task)
    dest = npz_path(data_dir, task, size)
    fetch = _fetch_command(task, size, data_dir)
    if source_dir is not None:
        src = npz_path(source_dir, task, size)
        if not src.is_file():
            raise UserError(f"{src} not found in --source-dir {source_dir} (expected MedMNIST's file name "
                            f"{src.name})")
        if dest.exists() and os.path.samefile(src, dest):
            _check_file_light(dest, info, size)
            return dest
        _check_file_light(src, info, size)
        _ensure_dir(data_dir)
        _copy_atomic(src, dest)
        return dest
    if dest.is_file():
        _check_file_light(dest, info, size)
        return dest
    if not download:
        raise UserError(f"{dest} not found and downloading is off; fetch it with: {fetch} "
                        f"(or copy it from a folder of MedMNIST files with --source-dir DIR)")
    _ensure_dir(data_dir)
    _download(task, size, dest, fetch)
    _check_file_light(dest, info, size)
    return dest


def _ensure_dir(d: Path) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create data folder {d}: {exc.strerror}") from None


def _download(task: str, size: int, dest: Path, fetch: str) -> None:
    """Download through medmnist's dataset class into a private temp folder, then move into place."""
    medmnist = _medmnist()
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


# ---------------------------------------------------------------------------------------- validation


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_images(name: str, key: str, dtype: np.dtype, shape: tuple, info: TaskInfo, size: int) -> None:
    if dtype != np.uint8:
        raise UserError(f"{name}: {key} has dtype {dtype}, expected uint8 (MedMNIST layout)")
    c = info.n_channels
    ok = (len(shape) == 4 and shape[1:] == (size, size, c)) or (c == 1 and len(shape) == 3
                                                                and shape[1:] == (size, size))
    if not ok:
        want = f"(N, {size}, {size})" if c == 1 else f"(N, {size}, {size}, {c})"
        raise UserError(f"{name}: {key} has shape {_shape_text(shape)}, expected {want} for task "
                        f"{info.name!r} ({c} channel{'s' if c > 1 else ''}) at {size} px")
    if shape[0] < 1:
        raise UserError(f"{name}: {key} is empty")


def _check_labels(name: str, key: str, labels: np.ndarray, n_images: int, info: TaskInfo) -> np.ndarray:
    if labels.dtype.kind not in "iu":
        raise UserError(f"{name}: {key} has dtype {labels.dtype}, expected integers (uint8 in MedMNIST)")
    if not (labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)):
        raise UserError(f"{name}: {key} has shape {_shape_text(labels.shape)}, expected (N, 1) or (N,) "
                        f"(single-label task)")
    if labels.shape[0] != n_images:
        raise UserError(f"{name}: {key} has {labels.shape[0]} labels but there are {n_images} images")
    flat = labels.reshape(-1)
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= info.n_classes:
        raise UserError(f"{name}: {key} has labels in [{lo}, {hi}], outside [0, {info.n_classes - 1}] "
                        f"for task {info.name!r} ({info.n_classes} classes)")
    return flat


def _missing_file_message(path: Path, task: str, size: int, data_dir, explicit: bool) -> str:
    if explicit:
        return f"{path} not found (the --data file)"
    return f"{path} not found; fetch it with: {_fetch_command(task, size, data_dir)}"


def _corrupt(path: Path, exc: BaseException, hint: str = "") -> UserError:
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return UserError(f"{path} is not a readable npz file ({reason}){hint}")


def _open_npz(path: Path, hint: str = ""):
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _corrupt(path, exc, hint) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise UserError(f"{path} is a single .npy array, not an npz archive with "
                        f"{', '.join(REQUIRED_KEYS)}")
    return z


def _check_keys(path: Path, keys) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (has: {', '.join(sorted(keys)) or 'nothing'}); "
                        f"MedMNIST npz files hold train/val/test _images and _labels")


def _check_file_light(path: Path, info: TaskInfo, size: int) -> None:
    """Validate an npz without reading its images (headers only): keys, dtypes, shapes, labels."""
    z = _open_npz(path)
    try:
        _check_keys(path, z.files)
        with zipfile.ZipFile(path) as zf:
            for split in SPLITS:
                key = f"{split}_images"
                with zf.open(f"{key}.npy") as fh:
                    shape, dtype = _npy_header(fh)
                _check_images(str(path), key, np.dtype(dtype), tuple(shape), info, size)
                _check_labels(str(path), f"{split}_labels", z[f"{split}_labels"], shape[0], info)
    except UserError:
        raise
    except Exception as exc:
        raise _corrupt(path, exc) from None
    finally:
        z.close()


def _npy_header(fh) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of an .npy stream without reading its data."""
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(fh)
    else:  # 3.0 (utf-8 field names): only the private reader handles it
        shape, _, dtype = fmt._read_array_header(fh, version)
    return tuple(shape), np.dtype(dtype)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- load


def load(task: str, size: int, data_dir=None, *, npz=None, device="cpu", n_classes: int | None = None) -> Dataset:
    """Read and validate a task's npz (``npz_path(data_dir, task, size)``, or the file ``npz``).

    Each split is held whole: images uint8 (N, C, H, W) and labels int64 (N,), moved to ``device`` once.
    ``npz`` names a specific file in the task's layout (e.g. a generated D_rand set); it is checked
    against the task's channels, size and number of classes. ``n_classes`` is for synthetic tasks
    generated with a non-default number of classes.
    """
    info = task_info(task, n_classes=n_classes)
    size = _check_size(task, size)
    if npz is not None:
        path, explicit = Path(npz), True
    elif data_dir is not None:
        path, explicit = npz_path(data_dir, task, size), False
    else:
        raise UserError("load needs a data folder (--data-dir) or an npz file (--data)")
    if not path.is_file():
        raise UserError(_missing_file_message(path, task, size, data_dir, explicit))
    name = str(path)
    hint = "" if explicit else f"; re-create it with: {_fetch_command(task, size, data_dir)}"
    z = _open_npz(path, hint)
    splits = {}
    try:
        _check_keys(path, z.files)
        for split in SPLITS:
            images = z[f"{split}_images"]
            _check_images(name, f"{split}_images", images.dtype, images.shape, info, size)
            labels = _check_labels(name, f"{split}_labels", z[f"{split}_labels"], images.shape[0], info)
            splits[split] = _to_split(images, labels, device)
    except UserError:
        raise
    except Exception as exc:  # truncated zip member, bad CRC, bad npy header, ...
        raise _corrupt(path, exc, hint) from None
    finally:
        z.close()
    return Dataset(info=info, size=size, train=splits["train"], val=splits["val"], test=splits["test"],
                   path=path, sha256=_sha256(path))


def _to_split(images: np.ndarray, labels: np.ndarray, device) -> Split:
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = x.contiguous().to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    return Split(images=x, labels=y)


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (same device)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"as_float expects uint8 images, got {images.dtype}")
    return images.to(torch.float32).div_(255.0)


def iterate(split: Split, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x float32 [0,1], y int64)`` batches sliced from the split's whole tensors.

    With ``shuffle`` the order is ``torch.randperm`` drawn from ``generator`` (on the generator's device).
    The last batch may be smaller.
    """
    if int(batch_size) < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    n = len(split)
    if shuffle:
        dev = generator.device if generator is not None else split.images.device
        order = torch.randperm(n, generator=generator, device=dev).to(split.images.device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield as_float(split.images.index_select(0, idx)), split.labels.index_select(0, idx)
    else:
        for i in range(0, n, batch_size):
            yield as_float(split.images[i:i + batch_size]), split.labels[i:i + batch_size]


# ----------------------------------------------------------------------------------------- synthetic


def _check_synthetic_classes(c) -> None:
    if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 2 <= c <= 10:
        raise UserError(f"synthetic tasks need 2 to 10 classes, got {c!r}")


def _class_centres(n_classes: int, size: int) -> np.ndarray:
    """Blob centres (row, col) in pixels: the four calibrated ones for <= 4 classes; more classes sit on
    the same circle (radius 5*sqrt(2) around (14, 14) at 28 px). Scaled by size/28 (pixel centres)."""
    if n_classes <= 4:
        c28 = np.array(_BASE_CENTRES[:n_classes])
    else:
        ang = np.pi / 4 + 2 * np.pi * np.arange(n_classes) / n_classes
        r = 5 * np.sqrt(2)
        c28 = np.stack([14 - r * np.cos(ang), 14 - r * np.sin(ang)], axis=1)
    f = size / 28
    return (c28 + 0.5) * f - 0.5


def _gauss_filter(a: np.ndarray, sigma: float, mode: str = "wrap") -> np.ndarray:
    """Gaussian blur over the last two axes; periodic by default, so random fields stay stationary."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(a, sigma=(0,) * (a.ndim - 2) + (sigma, sigma), mode=mode)


def texture_patterns(n_classes: int, size: int, seed: int) -> np.ndarray:
    """The nonrobust feature: (n_classes, size, size) int8 patterns in {-1, +1}.

    A pixel checkerboard (the Nyquist carrier) times the sign of a smooth random map per class, so the
    energy sits near Nyquist: a sigma-1.5 Gaussian blur keeps well under 1% of it.
    """
    rng = np.random.default_rng([int(seed), 1])
    f = size / 28
    maps = _gauss_filter(rng.standard_normal((n_classes, size, size)), _MAP_SIGMA * f)
    sign = np.where(maps >= 0, 1, -1)
    ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    checker = np.where((ii + jj) % 2 == 0, 1, -1)
    return (sign * checker[None]).astype(np.int8)


def _robust_images(labels: np.ndarray, size: int, n_channels: int, n_classes: int,
                   rng: np.random.Generator) -> np.ndarray:
    """float32 images (N, H, W, n_channels) in [0, 1] grey-level units carrying only the robust feature."""
    n = labels.shape[0]
    f = size / 28
    centres = _class_centres(n_classes, size)
    pos = centres[labels] + rng.normal(0.0, _JITTER * f, size=(n, 2))
    width = rng.uniform(*_WIDTH, size=n) * f
    peak = rng.uniform(*_PEAK, size=n)
    bg = rng.uniform(*_BACKGROUND, size=n)
    axis = np.arange(size, dtype=np.float64)
    gy = np.exp(-((axis[None, :] - pos[:, :1]) ** 2) / (2 * width[:, None] ** 2))
    gx = np.exp(-((axis[None, :] - pos[:, 1:]) ** 2) / (2 * width[:, None] ** 2))
    blob = (gy[:, :, None] * gx[:, None, :]).astype(np.float32)  # (n, H, W), peak 1
    # clutter: white noise blurred with sigma 3 px (x f), periodic, scaled to std 0.06
    clutter = _gauss_filter(rng.standard_normal((n, size, size), dtype=np.float32), _CLUTTER_SIGMA * f)
    clutter *= np.float32(_CLUTTER_STD / _blur_gain(_CLUTTER_SIGMA * f))
    if n_channels == 1:
        img = (bg[:, None, None] + peak[:, None, None] * blob).astype(np.float32) + clutter
        img = img[..., None]
    else:
        # colour is a nuisance: a random background tint and blob colour per image (not class-related)
        tint = rng.uniform(0.85, 1.15, size=(n, 1, 1, n_channels)).astype(np.float32)
        colour = rng.uniform(0.6, 1.0, size=(n, 1, 1, n_channels)).astype(np.float32)
        img = (bg[:, None, None, None].astype(np.float32) * tint + clutter[..., None]
               + (peak[:, None, None, None].astype(np.float32) * colour) * blob[..., None])
    img += np.float32(_PIXEL_NOISE) * rng.standard_normal(img.shape, dtype=np.float32)
    return img


def _blur_gain(sigma: float) -> float:
    """Std of unit white noise after ``_gauss_filter`` with ``sigma`` (the filter's L2 norm)."""
    k = 8 * int(np.ceil(sigma)) + 1
    impulse = np.zeros((1, k, k))
    impulse[0, k // 2, k // 2] = 1.0
    return float(np.sqrt((_gauss_filter(impulse, sigma, mode="constant") ** 2).sum()))


_CHUNK = 500  # images drawn per random stream, so a split's first images do not depend on its size


def generate_synthetic(task: str, size: int, *, seed: int = 0, n_classes: int = 4, amplitude: int = 4,
                       n_train: int = 4000, n_val: int = 500, n_test: int = 1000,
                       shuffle_texture: bool = False) -> dict[str, np.ndarray]:
    """Arrays of a synthetic task in MedMNIST's layout (images uint8 (N,H,W) or (N,H,W,3), labels (N,1) uint8).

    Robust feature: a Gaussian blob centred near the class centre (jitter N(0, 3.4^2) px per axis, width
    U(2.5, 4) px, peak U(0.35, 0.6)) on a U(0.2, 0.3) background with smooth clutter (white noise blurred with
    sigma 3 px, std 0.06) and pixel noise 0.02 (lengths scale with size/28); with 4 classes the blob alone
    allows about 0.865 accuracy. Nonrobust feature: ``amplitude`` * ``texture_patterns(...)[label]`` added
    in integer grey levels after rounding, the rounded image first clipped to [amplitude, 255 - amplitude]
    so nothing clips. Labels are balanced and shuffled. Each split draws from its own stream of ``seed``,
    so the output depends only on the arguments (same seed -> identical arrays).

    ``shuffle_texture``: each image's nonrobust pattern is that of a class drawn uniformly at random,
    independently of its label (from a stream of its own), while labels and robust features stay exactly
    those of ``shuffle_texture=False`` (the counterfactual test set of ``medgrid shift``: texture_shuffled).
    """
    if task not in SYNTHETIC_TASKS:
        raise UserError(f"{task!r} is not a synthetic task; synthetic tasks: {', '.join(SYNTHETIC_TASKS)}")
    size = _check_size(task, size)
    _check_synthetic_classes(n_classes)
    if not isinstance(amplitude, (int, np.integer)) or isinstance(amplitude, bool) or not 0 <= amplitude <= 32:
        raise UserError(f"synthetic amplitude is an integer number of grey levels in [0, 32], got {amplitude!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"the data seed must be an integer >= 0, got {seed!r}")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in counts.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise UserError(f"synthetic {split} size must be an integer >= 1, got {n!r}")
    n_channels = 3 if task == "synthetic-rgb" else 1
    patterns = texture_patterns(n_classes, size, seed).astype(np.int16)
    out = {}
    for index, split in enumerate(SPLITS):
        n = int(counts[split])
        labels = np.random.default_rng([int(seed), 2, index]).permutation(np.arange(n) % n_classes)
        texture = (np.random.default_rng([int(seed), 4, index]).integers(0, n_classes, size=n)
                   if shuffle_texture else None)
        images = np.empty((n, size, size, n_channels), dtype=np.uint8)
        for chunk, start in enumerate(range(0, n, _CHUNK)):
            lab = labels[start:start + _CHUNK]
            rng = np.random.default_rng([int(seed), 3, index, chunk])
            img = _robust_images(lab, size, n_channels, n_classes, rng)
            base = np.clip(np.rint(img * np.float32(255.0)), amplitude, 255 - amplitude).astype(np.int16)
            tex = lab if texture is None else texture[start:start + _CHUNK]
            base += amplitude * patterns[tex][..., None]
            images[start:start + _CHUNK] = base
        out[f"{split}_images"] = images[..., 0] if n_channels == 1 else images
        out[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    return out
