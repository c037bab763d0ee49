"""Shared data fixtures: tiny MedMNIST-layout npz files and the real MedMNIST files beside the repository."""

from pathlib import Path

import numpy as np
import pytest

# ../shared/data/medmnist beside the repository (CI clones the repository with shared/ next to it)
SHARED_MEDMNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"


def write_fake_medmnist(directory, task, size=28, *, n=(12, 4, 6), n_channels=None, n_classes=None, seed=0,
                        labels_1d=False, name=None):
    """Write a small random npz in MedMNIST's layout with numpy's own savez_compressed (as MedMNIST does).

    Channels and classes default to the task's; returns the path. ``name`` overrides the file name.
    """
    from medgrid import tasks

    info = tasks.task_info(task)
    c = info.n_channels if n_channels is None else n_channels
    k = info.n_classes if n_classes is None else n_classes
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size) if c == 1 else (count, size, size, c)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        labels = (np.arange(count) % k).astype(np.uint8)
        arrays[f"{split}_labels"] = labels if labels_1d else labels.reshape(-1, 1)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name if name else tasks.npz_path(directory, task, size)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def fake_medmnist():
    """Factory: ``fake_medmnist(dir, task, size, **kw) -> Path`` (see write_fake_medmnist)."""
    return write_fake_medmnist


@pytest.fixture
def shared_medmnist():
    """Folder with the real breastmnist.npz / pneumoniamnist.npz (read-only); skipped when absent."""
    needed = ("breastmnist.npz", "pneumoniamnist.npz")
    if not all((SHARED_MEDMNIST / f).is_file() for f in needed):
        pytest.skip(f"real MedMNIST files not found in {SHARED_MEDMNIST} (needs ../shared beside the repository)")
    return SHARED_MEDMNIST


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny batches: faster, and much faster on a busy machine; restored after.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
