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
    with atomic_output(path) as tmp:
        write_npz_to(tmp, arrays)
    return path


def write_npz_to(target, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed, byte-reproducible npz to ``target`` directly (a temp file the caller
    renames: :func:`write_npz`, or several outputs staged together with medgrid.atomic.atomic_outputs)."""
    with open(target, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for key in sorted(arrays):
                arr = np.asarray(arrays[key])  # a strided view (e.g. NCHW seen as NHWC) is written without a copy
                if arr.flags.f_contiguous and not arr.flags.c_contiguous:
                    arr = np.ascontiguousarray(arr)  # (numpy would record it column-major)
                if arr.dtype.hasobject:
                    raise ValueError(f"write_npz: array {key!r} has object dtype")
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, arr, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


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
    """uint8 images of the task's channels at ``size`` px (``info``: a medgrid.data.tasks.TaskInfo)."""
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
    shape, _, dtype = _npy_header_full(fh)
    return shape, dtype


def _npy_header_full(fh) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) of an .npy stream; the stream is left at the start of the data."""
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    else:  # 3.0 (utf-8 field names): only the private reader handles it
        shape, fortran, dtype = fmt._read_array_header(fh, version)
    return tuple(shape), bool(fortran), np.dtype(dtype)


def member_name(zf: zipfile.ZipFile, key: str) -> str:
    """The zip member that holds array ``key`` (``key.npy``, as numpy writes it, or ``key`` itself)."""
    return f"{key}.npy" if f"{key}.npy" in zf.namelist() else key


def member_header(zf: zipfile.ZipFile, key: str) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of array ``key`` of an open npz (zip), from its header only."""
    with zf.open(member_name(zf, key)) as fh:
        return _npy_header(fh)


READ_CHUNK = 1 << 22  # bytes of an array decompressed at a time by iter_rows
READ_PIECE = 1 << 18  # bytes asked of the zip member at a time


def iter_rows(zf: zipfile.ZipFile, key: str, chunk_bytes: int | None = None):
    """Array ``key`` of an open npz (zip) as consecutive blocks of rows: yields ``(start, block)``.

    The member is read once, decompressed on the fly into one reused buffer of about ``chunk_bytes`` (default
    READ_CHUNK), so the whole array is never held: a caller copies each block where it belongs before asking
    for the next. The member's end is read too, so zip's CRC check runs. Raises ValueError when the data are
    cut short.
    """
    chunk_bytes = READ_CHUNK if chunk_bytes is None else chunk_bytes
    name = member_name(zf, key)
    with zf.open(name) as fh:
        shape, fortran, dtype = _npy_header_full(fh)
        if dtype.hasobject:
            raise ValueError(f"{key} holds Python objects, not numbers")
        if fortran and len(shape) > 1:  # column-major data: numpy's reader, then rows (never MedMNIST's case)
            fh.close()
            with zf.open(name) as whole:
                yield 0, np.ascontiguousarray(np.lib.format.read_array(whole, allow_pickle=False))
            return
        if not shape:
            raise ValueError(f"{key} is a single number, not an array of rows")
        n = shape[0]
        row_shape = tuple(shape[1:])
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        rows = max(1, chunk_bytes // max(row_bytes, 1))
        buf = np.empty((min(rows, n),) + row_shape, dtype=dtype)
        raw = memoryview(buf.reshape(-1).view(np.uint8))
        for start in range(0, n, rows):
            k = min(rows, n - start)
            want, got = k * row_bytes, 0
            while got < want:  # in pieces: zipfile's read holds a few copies of what it is asked for
                m = fh.readinto(raw[got:min(want, got + READ_PIECE)])
                if not m:
                    raise ValueError(f"{key}: data cut short ({start * row_bytes + got} of {n * row_bytes} bytes)")
                got += m
            yield start, buf[:k]
        while fh.read(1 << 16):  # read to the member's end: zipfile checks the CRC there
            pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_test_labels(path: Path, info, size: int, what: str) -> tuple[np.ndarray, tuple]:
    """test_labels (flat int64) and the shape of test_images of a MedMNIST-layout npz, checked against the
    task, without reading the images. ``what`` says what the file is for, in the message when it is missing."""
    if not path.is_file():
        raise UserError(f"{path} not found ({what})")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("test_images", "test_labels") if k not in z.files]
            if missing:
                raise UserError(f"{path} lacks {', '.join(missing)} (has: {', '.join(sorted(z.files)) or 'nothing'});"
                                f" expected MedMNIST's layout")
            shape, dtype = member_header(z.zip, "test_images")
            labels = z["test_labels"]
    except UserError:
        raise
    except Exception as exc:  # not a zip, truncated member, pickled object, ...
        raise unreadable(path, exc) from None
    check_images(str(path), "test_images", dtype, shape, info, size)
    flat = check_labels(str(path), "test_labels", labels, shape[0], info)
    return flat.astype(np.int64), shape


def read_test(path: Path, info, size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """test_images and test_labels (flat int64) of a MedMNIST-layout npz, checked against the task.

    ``what`` says what the file is for, in the message when it is missing.
    """
    labels, _ = read_test_labels(path, info, size, what)
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["test_images"]
    except Exception as exc:  # truncated member, bad CRC, ...
        raise unreadable(path, exc) from None
    if images.ndim == 4 and images.shape[-1] == 1:  # greyscale stored as (N, H, W, 1)
        images = images[..., 0]
    return images, labels
