"""Shared fixtures: tiny MedMNIST-layout npz files, the real MedMNIST files beside the repository, and a
headless Chromium for the HTML outputs."""

import os
import shutil
import subprocess
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
    from medgrid.data import tasks

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


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def chromium():
    """A headless-capable Chromium (apt-get installed when missing and we are root); skipped otherwise."""
    exe = _chromium()
    if exe is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=600)
        exe = _chromium()
    if exe is None:
        pytest.skip("no chromium, and cannot apt-get install it (needs root and apt)")
    return exe


def headless(exe, page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Open a local ``page`` in headless Chromium, offline, with ``args`` (--screenshot=..., --dump-dom);
    scripts get 5 s of virtual time to render."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", *args, Path(page).as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny batches: faster, and much faster on a busy machine; restored after.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
