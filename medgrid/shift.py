"""MedMNIST-C: corrupted test sets (downloaded, or generated with medmnistc) and their evaluation.

Layout (MedMNIST-C's): ``{root}/{flag}/{corruption}.npz`` holding ``test_images`` (5N, H, W) or
(5N, H, W, 3) uint8 and ``test_labels`` (5N, 1): the whole clean test set once per severity,
severities 1..5 concatenated in that order. medgrid keeps one root per model size (the images are
stored at the size the models see), e.g. ``resources/medmnist-c/28/breastmnist/pixelate.npz``.

Sources:
- ``download``: the official files of Zenodo record 11471504 (one ``{flag}.zip`` per task, made by
  medmnistc from the 224-px test sets; TissueMNIST-C is not published), resized to the model size.
- ``generate``: medmnistc's own corruptions (``CORRUPTIONS_DS[flag]``, five severities) applied here,
  seeded as medmnistc's DatasetManager seeds them. The corruptions are calibrated for 224 px, so they
  always run on 224-px images: the 224-px test set (``--corrupt-at 224``, default for MedMNIST), or
  the model-size test set upsampled to 224 px and resized back after corrupting
  (``--corrupt-at model_size``; the synthetic tasks, and real data whose 224-px file is not at hand).

Synthetic tasks get a suite chosen from the same registry (SYNTHETIC_SUITE) plus ``texture_shuffled``:
the test set regenerated with the same robust features but each image's nonrobust texture drawn from
a random class (one level, no severities). See docs/shift.md.

Evaluation (``medgrid evaluate --shift-dir``): accuracy and balanced accuracy per corruption x
severity, their mean over severities (severity 0) and over corruptions (corruption "mean"), and
medmnistc's BE / rBE (errors normalised by its AlexNet baselines) for MedMNIST tasks.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np

from medgrid.atomic import atomic_output
from medgrid.errors import UserError

SEVERITIES = (1, 2, 3, 4, 5)
SOURCES = ("download", "generate")
CORRUPT_AT = ("224", "model_size")
UPSAMPLING = ("nearest", "bicubic")
CALIBRATED_SIZE = 224  # medmnistc's corruptions are designed for 224 x 224 images
TEXTURE_SHUFFLED = "texture_shuffled"
MEAN = "mean"  # the `corruption` value of the rows averaged over a task's corruptions

ZENODO_RECORD = "https://zenodo.org/records/11471504"
URL_ENV = "MEDGRID_MEDMNISTC_URL"  # base URL of the {flag}.zip files (a mirror); default the Zenodo record
NOT_ON_ZENODO = ("tissuemnist",)  # "we have uploaded all datasets except for TissueMNIST-C" (medmnistc README)

# The synthetic tasks' corruptions: name -> the MedMNIST flag whose medmnistc entry (same name, same five
# severities) is used. Measured on the synthetic task at 28 px, corrupted at 224 (docs/shift.md): the blurs
# and pixelation destroy the nonrobust texture progressively; brightness and contrast scale it together
# with the robust feature (controls). Noise and JPEG applied at 224 px leave it intact at 28 px: left out.
SYNTHETIC_SUITE = {
    "defocus_blur": "dermamnist",  # disk radius 4..8 px at 224: texture 38% .. 0% kept
    "gaussian_blur": "tissuemnist",  # kernel 13..25 px at 224: texture 37% .. 10% kept
    "pixelate": "tissuemnist",  # box down to 40%..10% of 224 px: texture 69% .. 7% kept
    "brightness_down": "pneumoniamnist",  # x0.9..0.5: everything (texture included) scaled
    "contrast_down": "pneumoniamnist",  # contrast x0.9..0.4 around the mean: texture scaled with it
}

# Resampling (PIL). Upsampling model-size images to 224 px: nearest makes the round trip
# (up, identity, box down) exact at 28 px (224 = 8 x 28), so only the corruption changes the image;
# bicubic (the protocol first measured for this project) low-passes every set: the round trip alone keeps
# 47% of the synthetic texture's amplitude. Downsampling: box (area average), exact for 224 -> 28.
_UPSAMPLE = {"nearest": "NEAREST", "bicubic": "BICUBIC"}
_DOWNSAMPLE = "BOX"


# ------------------------------------------------------------------------------------- medmnistc


def _medmnistc_registry():
    """medmnistc's corruption registry module; one-line UserError when medmnistc or ImageMagick is missing."""
    if "MAGICK_HOME" not in os.environ:
        # In a conda environment ImageMagick lives in the environment, where Wand does not look.
        lib = Path(sys.prefix) / "lib"
        if any(lib.glob("libMagickWand*.so*")) or any(lib.glob("libMagickWand*.dylib")):
            os.environ["MAGICK_HOME"] = sys.prefix
    try:
        from medmnistc.corruptions import registry  # noqa: PLC0415 - heavy (torchvision, cv2, wand)
    except ImportError as exc:
        if "MagickWand" in str(exc) or "wand" in str(exc).lower():
            raise UserError("medmnistc needs ImageMagick's MagickWand library, which was not found: install it "
                            "(Debian/Ubuntu: apt-get install libmagickwand-dev) or use the conda environment "
                            "envs/medmnistc.yaml") from None
        raise UserError(f"medmnistc is not importable ({' '.join(str(exc).split())}); install it with: "
                        f"pip install 'medmnistc==0.1.0' 'numpy<2.3'") from None
    if not hasattr(np, "fromstring"):
        raise UserError(f"medmnistc 0.1.0 calls np.fromstring, which numpy {np.__version__} no longer has; "
                        f"install numpy<2.3")
    return registry


def _baselines() -> dict:
    """medmnistc's AlexNet baselines (a plain dict; importing it needs no ImageMagick)."""
    try:
        from medmnistc.utils.baselines import BASELINES  # noqa: PLC0415
    except ImportError as exc:
        raise UserError(f"medmnistc is not importable ({' '.join(str(exc).split())}); install it with: "
                        f"pip install 'medmnistc==0.1.0' 'numpy<2.3'") from None
    return BASELINES


def corruption_names(task: str) -> tuple[str, ...]:
    """The corruptions of a task in registry order: medmnistc's for MedMNIST, SYNTHETIC_SUITE + texture_shuffled.

    MedMNIST names come from medmnistc's baselines table, whose keys are the registry's (a test checks it),
    so listing them needs no ImageMagick.
    """
    from medgrid import data  # noqa: PLC0415

    data.task_info(task)  # UserError for unknown / unsupported tasks
    if task in data.SYNTHETIC_TASKS:
        return tuple(SYNTHETIC_SUITE) + (TEXTURE_SHUFFLED,)
    return tuple(_baselines()[task]["raw_scores"])


def check_corruptions(task: str, names=None) -> list[str]:
    """``names`` (default: all of the task's corruptions), validated, duplicates dropped, order kept."""
    valid = corruption_names(task)
    if not names:
        return list(valid)
    out = []
    for name in names:
        if name not in valid:
            raise UserError(f"unknown corruption {name!r} for task {task!r}; valid: {', '.join(valid)}")
        if name not in out:
            out.append(name)
    return out


def check_severity(severity) -> int:
    try:
        s = int(severity)
    except (TypeError, ValueError):
        s = None
    if s is None or str(severity).strip() != str(s) or s not in SEVERITIES:
        raise UserError(f"severity {severity!r} is outside 1-5 (medmnistc has five severities)")
    return s


def levels(name: str) -> int:
    """Number of test-set copies in a corruption's file: 5 severities, 1 for texture_shuffled."""
    return 1 if name == TEXTURE_SHUFFLED else len(SEVERITIES)


def _corruptor(task: str, name: str):
    registry = _medmnistc_registry()
    flag = SYNTHETIC_SUITE[name] if name in SYNTHETIC_SUITE and task not in registry.CORRUPTIONS_DS else task
    return registry.CORRUPTIONS_DS[flag][name]


# --------------------------------------------------------------------------------------- images


def _resize(img: np.ndarray, size: int, method: str) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), getattr(Image.Resampling, method)))


def _apply(corruptor, img224: np.ndarray, severity: int, rgb: bool) -> np.ndarray:
    """One medmnistc corruption of one 224-px uint8 image, as DatasetManager applies it.

    DatasetManager converts every image to RGB, calls ``apply(img, severity - 1)`` and converts the result
    back to greyscale ('L') for greyscale datasets.
    """
    from PIL import Image  # noqa: PLC0415

    out = corruptor.apply(Image.fromarray(img224).convert("RGB"), severity - 1)
    if not rgb:
        out = Image.fromarray(np.asarray(out)).convert("L")
    out = np.asarray(out)
    want = (CALIBRATED_SIZE, CALIBRATED_SIZE, 3) if rgb else (CALIBRATED_SIZE, CALIBRATED_SIZE)
    if out.shape != want or out.dtype != np.uint8:
        raise RuntimeError(f"medmnistc {type(corruptor).__name__} returned {out.dtype} {out.shape}, expected "
                           f"uint8 {want}")
    return out


def corrupt(images: np.ndarray, task: str, name: str, *, severities=SEVERITIES, seed: int = 0,
            out_size: int | None = None, upsample: str = "nearest") -> np.ndarray:
    """Corrupt ``images`` (uint8 (N, H, W) or (N, H, W, 3)) with medmnistc's ``name`` for ``task``.

    Returns the copies for ``severities`` concatenated in that order, at ``out_size`` (default: the input
    size). Images not at 224 px are upsampled to 224 (``upsample``) before and box-resized after.
    Seeding is DatasetManager's: ``seed_everything(seed)`` (python, numpy and torch global generators)
    before the first image, its returned generator as impulse noise's ``rng``, then severities in order
    and images in order.
    """
    if name == TEXTURE_SHUFFLED or name not in corruption_names(task):
        valid = [n for n in corruption_names(task) if n != TEXTURE_SHUFFLED]
        raise UserError(f"unknown corruption {name!r} for task {task!r}; valid: {', '.join(valid)}")
    severities = [check_severity(s) for s in severities]
    if upsample not in UPSAMPLING:
        raise UserError(f"unknown upsampling {upsample!r}; valid: {', '.join(UPSAMPLING)}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3) \
            or images.shape[1] != images.shape[2]:
        raise UserError(f"images to corrupt must be uint8 (N, H, W) or (N, H, W, 3) squares, got {images.dtype} "
                        f"{images.shape}")
    rgb = images.ndim == 4
    n, size = images.shape[0], images.shape[1]
    out_size = size if out_size is None else int(out_size)
    corruptor = _corruptor(task, name)
    from medmnistc.utils.utils import seed_everything  # noqa: PLC0415

    rng = seed_everything(int(seed))
    if name == "impulse_noise":
        corruptor.rng = rng  # as DatasetManager: skimage's s&p noise draws from this generator
    out = np.empty((len(severities) * n, out_size, out_size) + ((3,) if rgb else ()), dtype=np.uint8)
    with warnings.catch_warnings():
        # motion_blur's np.fromstring (deprecated, works below numpy 2.3): once per image otherwise
        warnings.filterwarnings("ignore", message="The binary mode of fromstring", category=DeprecationWarning)
        for i, severity in enumerate(severities):
            for j in range(n):
                img = _resize(images[j], CALIBRATED_SIZE, _UPSAMPLE[upsample])
                out[i * n + j] = _resize(_apply(corruptor, img, severity, rgb), out_size, _DOWNSAMPLE)
    return out


# ------------------------------------------------------------------------------------ npz files


def _read_test(path: Path, info, size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """test_images and test_labels (flat) of a MedMNIST-layout npz, checked against the task."""
    from medgrid import data  # noqa: PLC0415

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
        raise UserError(f"{path} is not a readable npz file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    data._check_images(str(path), "test_images", images.dtype, images.shape, info, size)
    flat = data._check_labels(str(path), "test_labels", labels, images.shape[0], info)
    if images.ndim == 4 and images.shape[-1] == 1:  # greyscale stored as (N, H, W, 1)
        images = images[..., 0]
    return images, flat.astype(np.int64)


def output_path(out_dir, task: str, name: str) -> Path:
    return Path(out_dir) / task / f"{name}.npz"


def _write(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    from medgrid import data  # noqa: PLC0415

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {path.parent}: {exc.strerror}") from None
    # write_npz: temp file beside `path`, renamed into place (parallel jobs never see half a file)
    return data.write_npz(path, {"test_images": images, "test_labels": labels.astype(np.uint8).reshape(-1, 1)})


def _fetch(task: str, size: int, data_dir) -> str:
    return f"medgrid prepare-data --task {task} --size {size} --data-dir {data_dir}"


def prepare(task: str, size: int, data_dir, out_dir, *, source: str = "generate", corrupt_at: str | None = None,
            corruptions=None, seed: int = 0, data_seed: int = 0, upsample: str = "nearest",
            clean_npz=None) -> list[Path]:
    """Write ``{out_dir}/{task}/{name}.npz`` for each corruption (default: all of the task's); return the paths.

    ``corrupt_at`` (generate): "224" corrupts ``{data_dir}/{task}_224.npz`` (or ``clean_npz``) and box-resizes
    to ``size``; "model_size" corrupts the model-size test set upsampled to 224. Default: "224" for MedMNIST,
    "model_size" for synthetic tasks (they have no 224-px version). ``seed`` seeds the corruptions,
    ``data_seed`` is the synthetic generator's seed (for texture_shuffled).
    """
    from medgrid import data  # noqa: PLC0415

    info = data.task_info(task)
    size = data._check_size(task, size)
    synthetic = task in data.SYNTHETIC_TASKS
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    if corrupt_at is None:
        corrupt_at = "model_size" if synthetic else "224"
    corrupt_at = str(corrupt_at)
    if corrupt_at not in CORRUPT_AT:
        raise UserError(f"unknown --corrupt-at {corrupt_at!r}; valid: {', '.join(CORRUPT_AT)}")
    if upsample not in UPSAMPLING:
        raise UserError(f"unknown upsampling {upsample!r}; valid: {', '.join(UPSAMPLING)}")
    names = check_corruptions(task, corruptions)
    if data_dir is None:
        raise UserError("shift prepare needs a data folder (--data-dir)")
    data_dir = Path(data_dir)
    if source == "download":
        if synthetic:
            raise UserError(f"MedMNIST-C has no {task!r}; generate its corrupted sets with --source generate")
        return [_download_one(task, size, data_dir, out_dir, name, info) for name in names]
    if corrupt_at == "224" and synthetic:
        raise UserError(f"synthetic tasks have no 224-px version; use --corrupt-at model_size for {task!r}")

    model_npz = data.npz_path(data_dir, task, size)
    if corrupt_at == "224" or size == CALIBRATED_SIZE:
        src = Path(clean_npz) if clean_npz else data.npz_path(data_dir, task, CALIBRATED_SIZE)
        src_size = CALIBRATED_SIZE
        if not src.is_file():
            hint = "" if clean_npz else (f"; fetch it with: {_fetch(task, CALIBRATED_SIZE, data_dir)} "
                                         f"(or corrupt the {size}-px test set with --corrupt-at model_size)")
            raise UserError(f"{src} not found: the 224-px test set of {task} is corrupted{hint}")
    else:
        src = Path(clean_npz) if clean_npz else model_npz
        src_size = size
        if not src.is_file():
            hint = "" if clean_npz else f"; fetch it with: {_fetch(task, size, data_dir)}"
            raise UserError(f"{src} not found{hint}")
    images, labels = _read_test(src, info, src_size, "the clean test set to corrupt")
    if src_size != size and model_npz.is_file():
        # the 224-px and model-size test sets are the same samples in the same order
        _, model_labels = _read_test(model_npz, info, size, "the model-size test set")
        if not np.array_equal(model_labels, labels):
            raise UserError(f"{src} and {model_npz} have different test labels; they must be the same task's "
                            f"test split at two sizes")

    written = []
    for name in names:
        if name == TEXTURE_SHUFFLED:
            out_images, out_labels = _texture_shuffled(task, size, images, labels, data_seed, src)
        else:
            out_images = corrupt(images, task, name, seed=seed, out_size=size, upsample=upsample)
            out_labels = np.tile(labels, len(SEVERITIES))
        written.append(_write(output_path(out_dir, task, name), out_images, out_labels))
    return written


def _texture_shuffled(task, size, images, labels, data_seed, src):
    """The synthetic test set with the same robust features and each nonrobust texture from a random class."""
    from medgrid import data  # noqa: PLC0415

    kwargs = dict(seed=int(data_seed), n_classes=int(labels.max()) + 1, n_train=1, n_val=1, n_test=len(labels))
    try:
        plain = data.generate_synthetic(task, size, **kwargs)
    except UserError:  # e.g. a single label: not a synthetic test set
        plain = None
    if plain is None or plain["test_images"].shape != images.shape or \
            not np.array_equal(plain["test_images"], images) or \
            not np.array_equal(plain["test_labels"].reshape(-1), labels):
        raise UserError(f"{src}: its test set is not what the synthetic generator makes with seed {data_seed}; "
                        f"pass the seed prepare-data used (--data-seed) to regenerate it with shuffled textures")
    shuffled = data.generate_synthetic(task, size, shuffle_texture=True, **kwargs)
    return shuffled["test_images"], shuffled["test_labels"].reshape(-1)


# -------------------------------------------------------------------------------------- download


def _zip_url(task: str) -> str:
    base = os.environ.get(URL_ENV) or f"{ZENODO_RECORD}/files"
    return f"{base.rstrip('/')}/{task}.zip"


def _download_zip(task: str, cache_dir: Path) -> Path:
    """``{cache_dir}/{task}.zip``, downloaded once; parallel jobs of one task wait for the first one (flock)."""
    dest = cache_dir / f"{task}.zip"
    url = _zip_url(task)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = open(cache_dir / f".{task}.zip.lock", "w")  # noqa: SIM115 - held across the download
    except OSError as exc:
        raise UserError(f"cannot write the download folder {cache_dir}: {exc.strerror}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dest.is_file() and zipfile.is_zipfile(dest):
            return dest
        with atomic_output(dest) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise UserError(f"cannot download MedMNIST-C's {task}.zip from {url} ({reason}); it needs internet: "
                                f"put the file at {dest}, or use --source generate") from None
            if not zipfile.is_zipfile(tmp):
                raise UserError(f"{url} did not return a zip archive; put MedMNIST-C's {task}.zip at {dest}, or use "
                                f"--source generate")
    return dest


def _download_one(task: str, size: int, data_dir: Path, out_dir, name: str, info) -> Path:
    from medgrid import data  # noqa: PLC0415

    if name == TEXTURE_SHUFFLED:
        raise UserError("texture_shuffled exists for synthetic tasks only")
    if task in NOT_ON_ZENODO:
        raise UserError(f"MedMNIST-C does not publish {task} (space constraints, says its README); generate it "
                        f"with --source generate")
    archive = _download_zip(task, data_dir / "medmnist-c")
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.namelist() if Path(m).name == f"{name}.npz"]
        members.sort(key=lambda m: (Path(m).parent.name != task, m))
        if not members:
            raise UserError(f"{archive} has no {name}.npz; delete it to download it again")
        tmpdir = Path(tempfile.mkdtemp(prefix=".extract-", dir=archive.parent))
        try:
            member = zf.extract(members[0], tmpdir)
            images, labels = _read_test(Path(member), info, CALIBRATED_SIZE, f"{name} of {archive}")
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    n = len(labels) // len(SEVERITIES)
    if n * len(SEVERITIES) != len(labels) or not np.array_equal(labels, np.tile(labels[:n], len(SEVERITIES))):
        raise UserError(f"{name}.npz of {archive} is not five copies of one test set (MedMNIST-C's layout)")
    model_npz = data.npz_path(data_dir, task, size)
    if model_npz.is_file():
        _, clean_labels = _read_test(model_npz, info, size, "the model-size test set")
        if not np.array_equal(clean_labels, labels[:n]):
            raise UserError(f"{name}.npz of {archive} does not hold the test labels of {model_npz}")
    if size != CALIBRATED_SIZE:
        images = np.stack([_resize(img, size, _DOWNSAMPLE) for img in images])
    return _write(output_path(out_dir, task, name), images, labels)


# ------------------------------------------------------------------------------------ evaluation


def load_corrupted(path: Path, info, size: int, test_labels, name: str, device="cpu"):
    """A corrupted set as a data.Split, checked: MedMNIST-C layout, model size, clean labels tiled per level."""
    from medgrid import data  # noqa: PLC0415

    images, labels = _read_test(path, info, size, f"corruption {name}")
    expected = np.tile(np.asarray(test_labels).reshape(-1), levels(name))
    if labels.shape != expected.shape or not np.array_equal(labels, expected):
        what = "the clean test labels" if levels(name) == 1 else f"the clean test labels {levels(name)} times"
        raise UserError(f"{path}: expected {len(expected)} images labelled as {what} (MedMNIST-C layout: "
                        f"severities 1..5 concatenated), got {len(labels)}")
    return data._to_split(images, labels, device)


def _missing_set(path: Path, task: str, size: int, name: str, shift_dir) -> str:
    return (f"{path} not found; make it with: medgrid shift prepare --task {task} --size {size} --data-dir DATA_DIR "
            f"--out-dir {shift_dir} --source generate --corruption {name}")


def shift_rows(model, ds, cell: dict, shift_dir, *, corruptions=None, batch_size: int = 1000) -> list[dict]:
    """Tidy rows of one model on the corrupted test sets under ``{shift_dir}/{task}/``.

    Per corruption: acc and balanced_acc per severity 1..5 and their means (severity 0), plus medmnistc's
    ``be`` (mean balanced error / AlexNet's) and ``rbe`` ((mean error - clean error) / (AlexNet's corrupted -
    clean error)) for MedMNIST tasks. AlexNet's baselines were measured at 224 px: at other sizes these
    metrics are named ``be_not_comparable`` / ``rbe_not_comparable``. Corruption "mean": the same metrics
    averaged over the corruptions (texture_shuffled, a one-level counterfactual, stays out of it).
    """
    from medgrid import data, metrics, results  # noqa: PLC0415
    from medgrid.train import predict  # noqa: PLC0415

    task, size = ds.info.name, int(ds.size)
    names = check_corruptions(task, corruptions)
    test = ds.test
    n = len(test)
    labels = test.labels.cpu().numpy()
    logits, _ = predict(model, test, batch_size=batch_size)
    clean_error = 1.0 - metrics.balanced_accuracy(labels, logits.argmax(1))
    baseline = None if task in data.SYNTHETIC_TASKS else _baselines()[task]
    suffix = "" if size == CALIBRATED_SIZE else "_not_comparable"
    rows, means = [], {}

    def row(name, severity, metric, value, count):
        rows.append(results.make_row(cell, eval_kind="corruption", corruption=name, severity=severity,
                                     metric=metric, value=value, n=count))

    for name in names:
        path = output_path(shift_dir, task, name)
        if not path.is_file():
            raise UserError(_missing_set(path, task, size, name, shift_dir))
        split = load_corrupted(path, ds.info, size, labels, name, device=test.labels.device)
        pred = predict(model, split, batch_size=batch_size)[0].argmax(1).cpu().numpy()
        if levels(name) == 1:
            row(name, 0, "acc", metrics.accuracy(labels, pred), n)
            row(name, 0, "balanced_acc", metrics.balanced_accuracy(labels, pred), n)
            continue
        accs, baccs = [], []
        for i, severity in enumerate(SEVERITIES):
            p = pred[i * n:(i + 1) * n]
            accs.append(metrics.accuracy(labels, p))
            baccs.append(metrics.balanced_accuracy(labels, p))
            row(name, severity, "acc", accs[-1], n)
            row(name, severity, "balanced_acc", baccs[-1], n)
        m = {"acc": float(np.mean(accs)), "balanced_acc": float(np.mean(baccs))}
        if baseline is not None:
            error = 1.0 - m["balanced_acc"]
            alex = baseline["raw_scores"][name]
            m["be" + suffix] = error / alex
            m["rbe" + suffix] = (error - clean_error) / (alex - baseline["clean_score"])
        for metric, value in m.items():
            row(name, 0, metric, value, len(SEVERITIES) * n)
        means[name] = m
    if means:
        for metric in next(iter(means.values())):
            row(MEAN, 0, metric, float(np.mean([m[metric] for m in means.values()])), len(SEVERITIES) * n * len(means))
    return rows


# ------------------------------------------------------------------------------------------- CLI


def _cmd_prepare(args):
    import torch  # noqa: PLC0415 - torchvision's gaussian_blur runs on torch threads

    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    paths = prepare(args.task, args.size, args.data_dir, args.out_dir, source=args.source, corrupt_at=args.corrupt_at,
                    corruptions=args.corruption, seed=args.seed, data_seed=args.data_seed, upsample=args.upsample,
                    clean_npz=args.clean_npz)
    for p in paths:
        print(p)


def _cmd_preview(args):
    """A PNG grid: the first --n test images clean (top row), then corrupted at each severity."""
    from PIL import Image  # noqa: PLC0415

    from medgrid import data  # noqa: PLC0415

    info = data.task_info(args.task)
    size = data._check_size(args.task, args.size)
    if args.corruption == TEXTURE_SHUFFLED:
        raise UserError("texture_shuffled has no severities to preview; look at its npz from shift prepare")
    check_corruptions(args.task, [args.corruption])
    severities = [check_severity(s) for s in (args.severity or SEVERITIES)]
    if not 1 <= args.n <= 64:
        raise UserError(f"--n must be in 1..64, got {args.n}")
    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file, got {args.out}")
    src = data.npz_path(args.data_dir, args.task, size)
    images, _ = _read_test(src, info, size, f"the test set; fetch it with: {_fetch(args.task, size, args.data_dir)}")
    images = images[:args.n]
    rows = [images] + [corrupt(images, args.task, args.corruption, severities=[s], seed=args.seed,
                               upsample=args.upsample) for s in severities]
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    with atomic_output(args.out) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    print(f"wrote {args.out}: rows clean, severity {', '.join(map(str, severities))}")


def add_subcommands(sub) -> None:
    p = sub.add_parser("shift", help="MedMNIST-C corrupted test sets (download or generate with medmnistc)")
    shift_sub = p.add_subparsers(dest="shift_command", required=True)

    q = shift_sub.add_parser(
        "prepare", help="write {out-dir}/{task}/{corruption}.npz (MedMNIST-C layout, severities 1..5 concatenated)")
    q.add_argument("--task", required=True)
    q.add_argument("--size", type=int, default=28, help="model image size; the sets are stored at this size")
    q.add_argument("--data-dir", type=Path, required=True,
                   help="folder of the clean MedMNIST-format npz files (and of downloaded MedMNIST-C zips)")
    q.add_argument("--out-dir", type=Path, required=True, help="MedMNIST-C root for this size")
    q.add_argument("--source", choices=SOURCES, required=True,
                   help="download: official MedMNIST-C files (Zenodo, internet); generate: medmnistc here")
    q.add_argument("--corrupt-at", choices=CORRUPT_AT, default=None,
                   help="generate: corrupt the 224-px test set ({task}_224.npz; default for MedMNIST) or the "
                        "model-size one upsampled to 224 (default and only choice for synthetic tasks)")
    q.add_argument("--upsample", choices=UPSAMPLING, default="nearest",
                   help="resampling up to 224 px with --corrupt-at model_size (nearest: exact round trip at 28 px)")
    q.add_argument("--corruption", action="append", default=None, metavar="NAME",
                   help="one corruption (repeat for several; default: all of the task's)")
    q.add_argument("--seed", type=int, default=0, help="medmnistc's seed (seed_everything), as its DatasetManager")
    q.add_argument("--data-seed", type=int, default=0,
                   help="seed the synthetic task was generated with (for texture_shuffled)")
    q.add_argument("--clean-npz", type=Path, default=None,
                   help="the clean npz to corrupt instead of the one in --data-dir (e.g. a 224-px file elsewhere)")
    q.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: one image at a time; run corruptions as parallel jobs)")
    q.set_defaults(func=_cmd_prepare)

    q = shift_sub.add_parser("preview", help="PNG of a few test images under one corruption at each severity")
    q.add_argument("--task", required=True)
    q.add_argument("--size", type=int, default=28)
    q.add_argument("--data-dir", type=Path, required=True)
    q.add_argument("--corruption", required=True)
    q.add_argument("--severity", action="append", default=None, help="1..5 (repeat; default all five)")
    q.add_argument("--n", type=int, default=8, help="number of test images (columns)")
    q.add_argument("--upsample", choices=UPSAMPLING, default="nearest")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", type=Path, required=True, help="PNG file")
    q.set_defaults(func=_cmd_preview)
