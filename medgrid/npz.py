"""MedMNIST's npz files: written atomically and byte-reproducibly, validated against a task.

A task's file holds ``{train,val,test}_images`` (uint8, N x H x W or N x H x W x C) and
``{train,val,test}_labels`` ((N, 1) integers); MedMNIST-C's corrupted sets hold the test split only.
Every check raises a one-line UserError that names the file, the member and what was expected.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from medgrid.atomic import atomic_output
from medgrid.errors import UserError
from medgrid.names import SPLITS

REQUIRED_KEYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))


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


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temp file renamed into place."""
    with atomic_output(dst) as tmp, open(tmp, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


# ---------------------------------------------------------------------------------------- validation


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_images(name: str, key: str, dtype: np.dtype, shape: tuple, info, size: int) -> None:
    """uint8 images of the task's channels at ``size`` px (``info``: a medgrid.tasks.TaskInfo)."""
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


def check_labels(name: str, key: str, labels: np.ndarray, n_images: int, info) -> np.ndarray:
    """One integer label in [0, n_classes) per image; returns them flat."""
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


def unreadable(path: Path, exc: BaseException, hint: str = "") -> UserError:
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return UserError(f"{path} is not a readable npz file ({reason}){hint}")


def open_npz(path: Path, hint: str = ""):
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise unreadable(path, exc, hint) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise UserError(f"{path} is a single .npy array, not an npz archive with "
                        f"{', '.join(REQUIRED_KEYS)}")
    return z


def check_keys(path: Path, keys) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (has: {', '.join(sorted(keys)) or 'nothing'}); "
                        f"MedMNIST npz files hold train/val/test _images and _labels")


def check_file(path: Path, info, size: int) -> None:
    """Validate an npz without reading its images (headers only): keys, dtypes, shapes, labels."""
    z = open_npz(path)
    try:
        check_keys(path, z.files)
        with zipfile.ZipFile(path) as zf:
            for split in SPLITS:
                key = f"{split}_images"
                with zf.open(f"{key}.npy") as fh:
                    shape, dtype = _npy_header(fh)
                check_images(str(path), key, np.dtype(dtype), tuple(shape), info, size)
                check_labels(str(path), f"{split}_labels", z[f"{split}_labels"], shape[0], info)
    except UserError:
        raise
    except Exception as exc:
        raise unreadable(path, exc) from None
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


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_test(path: Path, info, size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """test_images and test_labels (flat int64) of a MedMNIST-layout npz, checked against the task.

    ``what`` says what the file is for, in the message when it is missing.
    """
    if not path.is_file():
        raise UserError(f"{path} not found ({what})")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("test_images", "test_labels") if k not in z.files]
            if missing:
                raise UserError(f"{path} lacks {', '.join(missing)} (has: {', '.join(sorted(z.files)) or 'nothing'});"
                                f" expected MedMNIST's layout")
            images, labels = z["test_images"], z["test_labels"]
    except UserError:
        raise
    except Exception as exc:  # not a zip, truncated member, pickled object, ...
        raise unreadable(path, exc) from None
    check_images(str(path), "test_images", images.dtype, images.shape, info, size)
    flat = check_labels(str(path), "test_labels", labels, images.shape[0], info)
    if images.ndim == 4 and images.shape[-1] == 1:  # greyscale stored as (N, H, W, 1)
        images = images[..., 0]
    return images, flat.astype(np.int64)
