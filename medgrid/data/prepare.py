"""Make a task's npz file: generate a synthetic task, copy an already-downloaded MedMNIST file, or download it
with the ``medmnist`` package. The file is named by the caller (``out``); MedMNIST's own name for it is
``catalog.file_stem(task, size) + ".npz"``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from medgrid import catalog
from medgrid.data import npz as npzfile
from medgrid.data import synthetic, tasks
from medgrid.errors import UserError
from medgrid.names import SYNTHETIC_TASKS


def prepare(task: str, size: int, out, *, data_seed: int = 0, download: bool = True, source=None,
            n_classes: int | None = None, amplitude: int | None = None, n_train: int | None = None,
            n_val: int | None = None, n_test: int | None = None) -> Path:
    """Make the file ``out`` hold the task at ``size`` px, valid; return its path.

    MedMNIST: an existing valid file is kept; otherwise it is copied from ``source`` (an already-downloaded
    MedMNIST file, never written to) or downloaded with ``medmnist``'s dataset class when ``download``.
    Synthetic tasks are (re)generated deterministically from ``data_seed`` and the synthetic parameters
    (``n_classes``, ``amplitude`` k in grey levels, split sizes; defaults in catalog.SYNTHETIC_DEFAULTS).
    """
    size = tasks.check_size(task, size)
    dest = tasks.file_argument(out, "--out", task, size)
    synthetic_args = dict(n_classes=n_classes, amplitude=amplitude, n_train=n_train, n_val=n_val, n_test=n_test)
    if task in SYNTHETIC_TASKS:
        if source is not None:
            raise UserError(f"--source: synthetic tasks are generated, not copied ({task!r})")
        info = tasks.task_info(task, n_classes=n_classes)
        params = {k: (catalog.SYNTHETIC_DEFAULTS[k] if v is None else v) for k, v in synthetic_args.items()}
        arrays = synthetic.generate(task, size, seed=data_seed, **params)
        _ensure_dir(dest.parent)
        npzfile.write_npz(dest, arrays)
        npzfile.check_file(dest, info, size)
        return dest
    if any(v is not None for v in synthetic_args.values()):
        given = ", ".join(k for k, v in synthetic_args.items() if v is not None)
        raise UserError(f"{given}: only for synthetic tasks, not for {task!r}")
    info = tasks.task_info(task)
    fetch = tasks.fetch_command(task, size, dest)
    if source is not None:
        src = Path(source)
        if not src.is_file():
            raise UserError(f"--source {src} not found (an already-downloaded MedMNIST file, e.g. "
                            f"{catalog.file_stem(task, size)}.npz)")
        if dest.exists() and os.path.samefile(src, dest):
            npzfile.check_file(dest, info, size)
            return dest
        npzfile.check_file(src, info, size)
        _ensure_dir(dest.parent)
        npzfile.copy_atomic(src, dest)
        return dest
    if dest.is_file():
        npzfile.check_file(dest, info, size)
        return dest
    if not download:
        raise UserError(f"{dest} not found and downloading is off; fetch it with: {fetch} "
                        f"(or copy an already-downloaded MedMNIST file with --source FILE)")
    _ensure_dir(dest.parent)
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
                            f"{fetch} on a machine with internet, or copy it in with --source FILE") from None
        got = tmpdir / f"{catalog.file_stem(task, size)}.npz"
        if not got.is_file():
            raise UserError(f"download of {got.name} produced no file; fetch it with: {fetch}")
        os.replace(got, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
