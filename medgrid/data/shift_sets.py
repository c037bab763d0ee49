"""MedMNIST-C test sets: downloaded (official files) or generated with medmnistc, stored at the model size.

Layout (MedMNIST-C's): ``{root}/{flag}/{corruption}.npz`` holding ``test_images`` (5N, H, W) or
(5N, H, W, 3) uint8 and ``test_labels`` (5N, 1): the whole clean test set once per severity,
severities 1..5 concatenated in that order. medgrid keeps one root per model size (the images are
stored at the size the models see), e.g. ``resources/medmnist-c/28/breastmnist/pixelate.npz``.

Sources:
- ``download``: the official files of Zenodo record 11471504 (one ``{flag}.zip`` per task, made by
  medmnistc from the 224-px test sets; TissueMNIST-C is not published), resized to the model size.
- ``generate``: medmnistc's own corruptions (:mod:`medgrid.data.corruptions`) applied here, seeded as
  medmnistc's DatasetManager seeds them, always on 224-px images: the 224-px test set
  (``corrupt_at="224"``, default for MedMNIST), or the model-size test set upsampled to 224 px and
  resized back after corrupting (``corrupt_at="model_size"``; the synthetic tasks, and real data whose
  224-px file is not at hand).

``texture_shuffled`` (synthetic tasks): the test set regenerated with the same robust features but each
image's nonrobust texture drawn from a random class (one level, no severities). See docs/shift.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from medgrid.atomic import atomic_output
from medgrid.data import loading, synthetic, tasks
from medgrid.data import npz as npzfile
from medgrid.data.corruptions import (
    CALIBRATED_SIZE,
    DOWNSAMPLE,
    check_corruptions,
    check_severity,
    corrupt,
    levels,
    resample,
    resize,
)
from medgrid.errors import UserError
from medgrid.names import (
    CORRUPT_AT,
    NOT_ON_ZENODO,
    RESAMPLE_CONTROL,
    SEVERITIES,
    SHIFT_SOURCES,
    SYNTHETIC_TASKS,
    TEXTURE_SHUFFLED,
    UPSAMPLING,
)

ZENODO_RECORD = "https://zenodo.org/records/11471504"
URL_ENV = "MEDGRID_MEDMNISTC_URL"  # base URL of the {flag}.zip files (a mirror); default the Zenodo record


def output_path(out_dir, task: str, name: str) -> Path:
    """``{out_dir}/{task}/{name}.npz``: where the workflow keeps a corrupted test set (MedMNIST-C's layout)."""
    return Path(out_dir) / task / f"{name}.npz"


def _write(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {path.parent}: {exc.strerror}") from None
    # write_npz: temp file beside `path`, renamed into place (parallel jobs never see half a file)
    return npzfile.write_npz(path, {"test_images": images, "test_labels": labels.astype(np.uint8).reshape(-1, 1)})


def prepare(task: str, size: int, data, out, *, corruption: str, source: str = "generate",
            corrupt_at: str | None = None, corruption_seed: int = 0, data_seed: int = 0,
            upsample: str = "nearest", clean_224=None, archive=None) -> Path:
    """Write the corrupted test set ``corruption`` of ``task`` at ``size`` px to the file ``out``; return it.

    ``data``: the task's npz at ``size`` (its test labels are what every set is checked against; with
    ``corrupt_at="model_size"`` its test images are what is corrupted). ``source="generate"``: medmnistc here,
    on the 224-px test set ``clean_224`` (``corrupt_at="224"``, default for MedMNIST) or on the model-size test
    set upsampled to 224 (``corrupt_at="model_size"``; the synthetic tasks, which have no 224-px version).
    ``source="download"``: the official set from MedMNIST-C's ``archive`` (``{task}.zip``, :func:`fetch`),
    resized to ``size``. ``corruption_seed`` seeds the corruptions (medmnistc's DatasetManager seeding),
    ``data_seed`` is the synthetic generator's seed (for texture_shuffled). ``resample_control`` is the clean
    test set sent through the same resize path uncorrupted (with ``source="download"``: the 224-px test set
    box-resized, as the official sets are).
    """
    info = tasks.task_info(task)
    size = tasks.check_size(task, size)
    synthetic_task = task in SYNTHETIC_TASKS
    if source not in SHIFT_SOURCES:
        raise UserError(f"unknown source {source!r}; valid: {', '.join(SHIFT_SOURCES)}")
    if corrupt_at is None:
        corrupt_at = "model_size" if synthetic_task else "224"
    corrupt_at = str(corrupt_at)
    if corrupt_at not in CORRUPT_AT:
        raise UserError(f"unknown --corrupt-at {corrupt_at!r}; valid: {', '.join(CORRUPT_AT)}")
    if upsample not in UPSAMPLING:
        raise UserError(f"unknown upsampling {upsample!r}; valid: {', '.join(UPSAMPLING)}")
    (name,) = check_corruptions(task, [corruption])
    data, out = Path(data), Path(out)
    if source == "download":
        if synthetic_task:
            raise UserError(f"MedMNIST-C has no {task!r}; generate its corrupted sets with --source generate")
        corrupt_at = "224"  # the official sets were made from the 224-px test set: so is their control
    elif corrupt_at == "224" and synthetic_task:
        raise UserError(f"the synthetic tasks are corrupted at their own size (upsampled to 224 px for medmnistc): "
                        f"use --corrupt-at model_size for {task!r}")
    if source == "download" and name != RESAMPLE_CONTROL:
        if archive is None:
            raise UserError(f"--source download needs MedMNIST-C's {task}.zip (--zip FILE; `medgrid shift fetch` "
                            f"downloads it)")
        return _download_one(task, size, data, out, name, info, Path(archive))
    images, labels, src = _clean_test_set(task, size, data, info, corrupt_at, clean_224)
    if name == TEXTURE_SHUFFLED:
        out_images, out_labels = _texture_shuffled(task, size, images, labels, data_seed, src)
    elif name == RESAMPLE_CONTROL:
        out_images, out_labels = resample(images, out_size=size, upsample=upsample), labels
    else:
        out_images = corrupt(images, task, name, seed=corruption_seed, out_size=size, upsample=upsample)
        out_labels = np.tile(labels, len(SEVERITIES))
    return _write(out, out_images, out_labels)


def _clean_test_set(task: str, size: int, data: Path, info, corrupt_at: str, clean_224):
    """(images, labels, path) of the clean test set the corrupted sets are made from: the 224-px one
    (``corrupt_at`` "224", or a 224-px model) or the model-size one ``data``, checked against the model-size
    labels."""
    if not data.is_file():
        raise UserError(f"{data} not found (the --data file: the task's npz at {size} px); make it with: "
                        f"{tasks.fetch_command(task, size, data)}")
    if size == CALIBRATED_SIZE:
        src = data
    elif corrupt_at == "224":
        if clean_224 is None:
            raise UserError(f"--corrupt-at 224 corrupts the 224-px test set of {task}: give its npz with --clean-224 "
                            f"FILE (or corrupt the {size}-px test set with --corrupt-at model_size)")
        src = Path(clean_224)
        if not src.is_file():
            raise UserError(f"{src} not found: the 224-px test set of {task} is corrupted; fetch it with: "
                            f"{tasks.fetch_command(task, CALIBRATED_SIZE, src)} (or corrupt the {size}-px test set "
                            f"with --corrupt-at model_size)")
    else:
        src = data
    src_size = CALIBRATED_SIZE if src != data else size
    images, labels = npzfile.read_test(src, info, src_size, "the clean test set to corrupt")
    if src != data:
        # the 224-px and model-size test sets are the same samples in the same order
        model_labels, _ = npzfile.read_test_labels(data, info, size, "the model-size test set")
        if not np.array_equal(model_labels, labels):
            raise UserError(f"{src} and {data} have different test labels; they must be the same task's "
                            f"test split at two sizes")
    return images, labels, src


def _texture_shuffled(task, size, images, labels, data_seed, src):
    """The synthetic test set with the same robust features and each nonrobust texture from a random class."""
    kwargs = dict(seed=int(data_seed), n_classes=int(labels.max()) + 1, n_train=1, n_val=1, n_test=len(labels))
    try:
        plain = synthetic.generate(task, size, **kwargs)
    except UserError:  # e.g. a single label: not a synthetic test set
        plain = None
    if plain is None or plain["test_images"].shape != images.shape or \
            not np.array_equal(plain["test_images"], images) or \
            not np.array_equal(plain["test_labels"].reshape(-1), labels):
        raise UserError(f"{src}: its test set is not what the synthetic generator makes with seed {data_seed}; "
                        f"pass the seed prepare-data used (--data-seed) to regenerate it with shuffled textures")
    shuffled = synthetic.generate(task, size, shuffle_texture=True, **kwargs)
    return shuffled["test_images"], shuffled["test_labels"].reshape(-1)


# -------------------------------------------------------------------------------------- download


def _zip_url(task: str) -> str:
    base = os.environ.get(URL_ENV) or f"{ZENODO_RECORD}/files"
    return f"{base.rstrip('/')}/{task}.zip"


def fetch(task: str, out) -> Path:
    """Download MedMNIST-C's ``{task}.zip`` to the file ``out`` (through a temp file renamed into place)."""
    dest = Path(out)
    if task in SYNTHETIC_TASKS or task in NOT_ON_ZENODO:
        raise UserError(f"MedMNIST-C does not publish {task}; generate its sets with --source generate")
    tasks.task_info(task)
    url = _zip_url(task)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the download folder {dest.parent}: {exc.strerror}") from None
    with atomic_output(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as target:
                shutil.copyfileobj(response, target, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise UserError(f"cannot download MedMNIST-C's {task}.zip from {url} ({reason}); it needs internet: "
                            f"put the file at {dest}, or use --source generate") from None
        if not zipfile.is_zipfile(tmp):
            raise UserError(f"{url} did not return a zip archive; put MedMNIST-C's {task}.zip at {dest}, or use "
                            f"--source generate")
    return dest


def _download_one(task: str, size: int, data: Path, out: Path, name: str, info, archive: Path) -> Path:
    if name == TEXTURE_SHUFFLED:
        raise UserError("texture_shuffled exists for synthetic tasks only")
    if task in NOT_ON_ZENODO:
        raise UserError(f"MedMNIST-C does not publish {task} (space constraints, says its README); generate it "
                        f"with --source generate")
    if not archive.is_file() or not zipfile.is_zipfile(archive):
        raise UserError(f"{archive} is not MedMNIST-C's {task}.zip; download it with: medgrid shift fetch --task "
                        f"{task} --out {archive}")
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.namelist() if Path(m).name == f"{name}.npz"]
        members.sort(key=lambda m: (Path(m).parent.name != task, m))
        if not members:
            raise UserError(f"{archive} has no {name}.npz; delete it to download it again")
        tmpdir = Path(tempfile.mkdtemp(prefix=".extract-", dir=out.parent if out.parent.is_dir() else None))
        try:
            member = zf.extract(members[0], tmpdir)
            images, labels = npzfile.read_test(Path(member), info, CALIBRATED_SIZE, f"{name} of {archive}")
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    n = len(labels) // len(SEVERITIES)
    if n * len(SEVERITIES) != len(labels) or not np.array_equal(labels, np.tile(labels[:n], len(SEVERITIES))):
        raise UserError(f"{name}.npz of {archive} is not five copies of one test set (MedMNIST-C's layout)")
    if data.is_file():
        clean_labels, _ = npzfile.read_test_labels(data, info, size, "the model-size test set")
        if not np.array_equal(clean_labels, labels[:n]):
            raise UserError(f"{name}.npz of {archive} does not hold the test labels of {data}")
    if size != CALIBRATED_SIZE:
        images = np.stack([resize(img, size, DOWNSAMPLE) for img in images])
    return _write(out, images, labels)


# ------------------------------------------------------------------------------------- reading


def load_corrupted(path: Path, info, size: int, test_labels, name: str, device="cpu", data_on: str = "auto"):
    """A corrupted set as a loading.Split, checked: MedMNIST-C layout, model size, clean labels tiled per level.

    The images are read once, straight into place (``data_on``: see medgrid.data.placement), after the labels."""
    labels, shape = npzfile.read_test_labels(path, info, size, f"corruption {name}")
    expected = np.tile(np.asarray(test_labels).reshape(-1), levels(name))
    if labels.shape != expected.shape or not np.array_equal(labels, expected):
        times = levels(name)
        what = "the clean test labels" if times == 1 else f"the clean test labels {times} times"
        raise UserError(f"{path}: expected {len(expected)} images labelled as {what} (MedMNIST-C layout: "
                        f"severities 1..5 concatenated), got {len(labels)}")
    return loading.load_test(path, labels, shape, device, data_on)


def missing_set_message(path: Path, task: str, size: int, name: str) -> str:
    return (f"{path} not found; make it with: medgrid shift prepare --task {task} --size {size} --data DATA.npz "
            f"--source generate --corruption {name} --out {path}")


def preview(task: str, size: int, data, corruption: str, out, *, severities=SEVERITIES, n: int = 8,
            seed: int = 0, upsample: str = "nearest") -> Path:
    """A PNG grid: the first ``n`` test images clean (top row), then corrupted at each severity (rows)."""
    from PIL import Image  # noqa: PLC0415 - Pillow comes with medmnistc

    info = tasks.task_info(task)
    size = tasks.check_size(task, size)
    if corruption == TEXTURE_SHUFFLED:
        raise UserError("texture_shuffled has no severities to preview; look at its npz from shift prepare")
    check_corruptions(task, [corruption])
    severities = [check_severity(s) for s in severities]
    if not 1 <= n <= 64:
        raise UserError(f"--n must be in 1..64, got {n}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file, got {out}")
    src = Path(data)
    images, _ = npzfile.read_test(src, info, size,
                                  f"the test set; make it with: {tasks.fetch_command(task, size, src)}")
    images = images[:n]
    rows = [images] + [corrupt(images, task, corruption, severities=[s], seed=seed, upsample=upsample)
                       for s in severities]
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    with atomic_output(out) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return out
