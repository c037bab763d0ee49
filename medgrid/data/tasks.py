"""The tasks medgrid supports: their description, image sizes and file names.

MedMNIST's own table (``medmnist.INFO``) describes the 2D MedMNIST tasks; the synthetic tasks are
described by :mod:`medgrid.data.synthetic`. Multi-label (ChestMNIST) and 3D tasks are refused with the reason.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from medgrid import catalog
from medgrid.data import synthetic
from medgrid.errors import UserError
from medgrid.names import MEDMNIST_2D, SIZES, SYNTHETIC_SIZES, SYNTHETIC_TASKS, TASKS

# MedMNIST tasks medgrid refuses, with the reason (3D ones are detected from their name too).
_UNSUPPORTED = {
    "chestmnist": "it is multi-label (14 independent binary labels, BCE loss); medgrid trains and attacks "
    "single-label classifiers with cross-entropy",
}
_3D_REASON = "it is a 3D (volumetric) dataset; medgrid handles 2D images only"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    n_channels: int
    n_classes: int
    task_type: str  # "multi-class" | "binary-class"
    label_names: dict = field(default_factory=dict)


def medmnist():
    """The medmnist package, imported on first use."""
    import medmnist  # noqa: PLC0415 - lazy: importing it creates its default root folder

    return medmnist


def _task_list() -> str:
    return ", ".join(TASKS)


def task_info(task: str, *, n_classes: int | None = None) -> TaskInfo:
    """Describe a supported task; UserError for unknown, multi-label and 3D tasks.

    ``n_classes`` only applies to synthetic tasks (default 4); MedMNIST tasks have theirs fixed.
    """
    if task in SYNTHETIC_TASKS:
        c = catalog.SYNTHETIC_DEFAULTS["n_classes"] if n_classes is None else n_classes
        synthetic.check_classes(c)
        return TaskInfo(task, synthetic.n_channels(task), c, "binary-class" if c == 2 else "multi-class",
                        synthetic.label_names(c))
    if n_classes is not None:
        raise UserError(f"n_classes can only be chosen for synthetic tasks, not for {task!r}")
    if task in _UNSUPPORTED:
        raise UserError(f"task {task!r} is not supported: {_UNSUPPORTED[task]}. Valid tasks: {_task_list()}")
    if task not in MEDMNIST_2D:
        if isinstance(task, str) and task.endswith("mnist3d"):
            raise UserError(f"task {task!r} is not supported: {_3D_REASON}. Valid tasks: {_task_list()}")
        raise UserError(f"unknown task {task!r}; valid tasks: {_task_list()}")
    raw = medmnist().INFO[task]
    labels = dict(raw["label"])
    # RetinaMNIST is ordinal regression over 5 grades; like MedMNIST's own baselines we treat it as
    # 5-class classification with cross-entropy.
    task_type = "binary-class" if raw["task"] == "binary-class" else "multi-class"
    return TaskInfo(task, int(raw["n_channels"]), len(labels), task_type, labels)


def check_size(task: str, size) -> int:
    """``size`` as an int when the task exists at that size; UserError otherwise."""
    allowed = SYNTHETIC_SIZES if task in SYNTHETIC_TASKS else SIZES
    try:
        s = int(size)
    except (TypeError, ValueError):
        s = None
    if s is None or s != size or s not in allowed:
        raise UserError(f"size {size!r} is not available for task {task!r}; valid sizes: "
                        f"{', '.join(map(str, allowed))}")
    return s


def npz_path(folder, task: str, size: int) -> Path:
    """``{folder}/{task}.npz`` at 28 px, ``{folder}/{task}_{size}.npz`` otherwise (MedMNIST's naming)."""
    return Path(folder) / f"{catalog.file_stem(task, size)}.npz"


def file_argument(value, option: str, task: str, size: int) -> Path:
    """The npz file an option names; UserError when none is given or it names a folder (a file is meant)."""
    if value is None:
        raise UserError(f"no npz file given ({option} FILE)")
    path = Path(value)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; name the npz file, e.g. {npz_path(path, task, size)}")
    return path


def fetch_command(task: str, size: int, out) -> str:
    """The command that makes a task's npz file ``out``, for error messages."""
    return f"medgrid prepare-data --task {task} --size {size} --out {out}"


@functools.lru_cache(maxsize=None)
def chance_level(task: str) -> float:
    """1 / n_classes of a task; NaN when the task is unknown to medgrid."""
    try:
        return 1.0 / task_info(task).n_classes
    except (UserError, ImportError, KeyError):
        return float("nan")
