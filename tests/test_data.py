"""medgrid.data: MedMNIST loading and validation, synthetic planted-feature tasks, batching."""

import hashlib
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from medgrid import names
from medgrid.data import loading, npz, prepare, synthetic, tasks
from medgrid.errors import UserError


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------------------ task info


def test_task_lists():
    assert names.TASKS == names.MEDMNIST_2D + names.SYNTHETIC_TASKS
    assert names.SYNTHETIC_TASKS == ("synthetic", "synthetic-rgb")
    assert names.SIZES == (28, 64, 128, 224)
    assert "chestmnist" not in names.MEDMNIST_2D
    assert len(names.MEDMNIST_2D) == 11


@pytest.mark.parametrize("task", names.MEDMNIST_2D)
def test_task_info_matches_medmnist(task):
    import medmnist

    raw = medmnist.INFO[task]
    info = tasks.task_info(task)
    assert info.name == task
    assert info.n_channels == raw["n_channels"]
    assert info.n_classes == len(raw["label"])
    assert info.label_names == raw["label"]
    assert info.task_type == ("binary-class" if raw["task"] == "binary-class" else "multi-class")


def test_task_info_examples():
    b = tasks.task_info("breastmnist")
    assert (b.n_channels, b.n_classes, b.task_type) == (1, 2, "binary-class")
    p = tasks.task_info("pathmnist")
    assert (p.n_channels, p.n_classes, p.task_type) == (3, 9, "multi-class")
    assert tasks.task_info("retinamnist").task_type == "multi-class"  # ordinal grades as 5 classes
    s = tasks.task_info("synthetic")
    assert (s.n_channels, s.n_classes, s.task_type) == (1, 4, "multi-class")
    assert tasks.task_info("synthetic-rgb").n_channels == 3
    assert tasks.task_info("synthetic", n_classes=2).task_type == "binary-class"


def test_unknown_task_lists_valid_names():
    with pytest.raises(UserError) as e:
        tasks.task_info("brestmnist")
    msg = one_line(e)
    assert "brestmnist" in msg
    for name in names.TASKS:
        assert name in msg


def test_multilabel_and_3d_refused():
    with pytest.raises(UserError) as e:
        tasks.task_info("chestmnist")
    assert "multi-label" in one_line(e)
    with pytest.raises(UserError) as e:
        loading.load("chestmnist", 28, "/nonexistent")
    assert "multi-label" in one_line(e)
    with pytest.raises(UserError) as e:
        tasks.task_info("organmnist3d")
    assert "3D" in one_line(e)
    with pytest.raises(UserError) as e:
        prepare.prepare("nodulemnist3d", 28, tasks.npz_path("/nonexistent", "nodulemnist3d", 28), download=False)
    assert "3D" in one_line(e)
    with pytest.raises(UserError):
        tasks.task_info("breastmnist", n_classes=3)


def test_bad_sizes(tmp_path):
    with pytest.raises(UserError) as e:
        loading.load("breastmnist", 32, tasks.npz_path(tmp_path, "breastmnist", 32))
    assert "28, 64, 128, 224" in one_line(e)
    with pytest.raises(UserError) as e:  # the synthetic tasks exist at every MedMNIST+ size
        prepare.prepare("synthetic", 32, tasks.npz_path(tmp_path, "synthetic", 32))
    assert "28, 64, 128, 224" in one_line(e)
    with pytest.raises(UserError):
        prepare.prepare("breastmnist", "28px", tmp_path / "breastmnist.npz", download=False)
    assert not list(tmp_path.iterdir())


def test_npz_path():
    assert tasks.npz_path("/d", "pathmnist", 28) == Path("/d/pathmnist.npz")
    assert tasks.npz_path(Path("/d"), "pathmnist", 64) == Path("/d/pathmnist_64.npz")
    assert tasks.npz_path("/d", "synthetic-rgb", 224) == Path("/d/synthetic-rgb_224.npz")


# ------------------------------------------------------------------------------------------- loading


def test_load_grey_28(tmp_path, fake_medmnist):
    path = fake_medmnist(tmp_path, "breastmnist", 28, n=(10, 3, 5))
    ds = loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28))
    assert ds.path == path and ds.size == 28 and ds.info == tasks.task_info("breastmnist")
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    raw = np.load(path)
    for split, n in zip(("train", "val", "test"), (10, 3, 5)):
        s = getattr(ds, split)
        assert s.images.dtype == torch.uint8 and s.images.shape == (n, 1, 28, 28)
        assert s.labels.dtype == torch.int64 and s.labels.shape == (n,)
        assert np.array_equal(s.images[:, 0].numpy(), raw[f"{split}_images"])
        assert np.array_equal(s.labels.numpy(), raw[f"{split}_labels"].ravel())
        assert len(s) == n


def test_load_rgb_64_channel_order(tmp_path, fake_medmnist):
    path = fake_medmnist(tmp_path, "pathmnist", 64, n=(9, 2, 3))
    assert path.name == "pathmnist_64.npz"
    ds = loading.load("pathmnist", 64, tasks.npz_path(tmp_path, "pathmnist", 64))
    raw = np.load(path)["train_images"]  # (N, H, W, C)
    assert ds.train.images.shape == (9, 3, 64, 64)
    assert ds.train.images.is_contiguous()
    assert np.array_equal(ds.train.images.numpy(), raw.transpose(0, 3, 1, 2))
    assert int(ds.train.labels.max()) < 9


def test_load_binary_1d_labels_and_128(tmp_path, fake_medmnist):
    fake_medmnist(tmp_path, "pneumoniamnist", 128, n=(4, 2, 2), labels_1d=True)
    ds = loading.load("pneumoniamnist", 128, tasks.npz_path(tmp_path, "pneumoniamnist", 128))
    assert ds.test.images.shape == (2, 1, 128, 128)
    assert ds.train.labels.tolist() == [0, 1, 0, 1]


def test_load_explicit_npz(tmp_path, fake_medmnist):
    other = fake_medmnist(tmp_path / "elsewhere", "dermamnist", 28, name="drand.npz")
    ds = loading.load("dermamnist", 28, other)
    assert ds.path == other and ds.train.images.shape[1] == 3
    # validated against the task it is loaded for: an RGB file is not a breastmnist file
    with pytest.raises(UserError) as e:
        loading.load("breastmnist", 28, other)
    assert "shape" in one_line(e) and "drand.npz" in str(e.value)
    with pytest.raises(UserError) as e:
        loading.load("dermamnist", 28, tmp_path / "missing.npz")
    assert "missing.npz" in one_line(e) and "prepare-data" not in one_line(e)  # not the task's own file
    with pytest.raises(UserError) as e:  # a folder where the file is meant
        loading.load("dermamnist", 28, tmp_path)
    assert "is a folder" in one_line(e) and "dermamnist.npz" in one_line(e)


def test_load_needs_a_source():
    with pytest.raises(UserError):
        loading.load("breastmnist", 28, None)


def test_missing_file_names_fetch_command(tmp_path):
    with pytest.raises(UserError) as e:
        loading.load("dermamnist", 64, tasks.npz_path(tmp_path, "dermamnist", 64))
    msg = one_line(e)
    assert str(tmp_path / "dermamnist_64.npz") in msg
    assert f"medgrid prepare-data --task dermamnist --size 64 --out {tmp_path / 'dermamnist_64.npz'}" in msg


def test_corrupt_files(tmp_path, fake_medmnist):
    path = tasks.npz_path(tmp_path, "breastmnist", 28)
    path.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(UserError) as e:
        loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28))
    msg = one_line(e)
    assert "not a readable npz" in msg and str(path) in msg and "prepare-data" in msg
    # a valid archive cut short
    good = fake_medmnist(tmp_path / "g", "breastmnist", 28, n=(200, 10, 10))
    blob = good.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError) as e:
        loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28))
    assert "not a readable npz" in one_line(e)
    # one member's compressed data damaged (CRC / zlib error on read)
    damaged = bytearray(blob)
    mid = len(damaged) // 3
    damaged[mid:mid + 64] = bytes(64)
    path.write_bytes(bytes(damaged))
    with pytest.raises(UserError):
        loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28))
    # a bare .npy renamed .npz
    np.save(tmp_path / "x.npy", np.zeros(3, np.uint8))
    os.replace(tmp_path / "x.npy", path)
    with pytest.raises(UserError) as e:
        loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28))
    assert "npz" in one_line(e)


def _arrays(n=(6, 2, 3), size=28, shape_tail=(), dtype=np.uint8, n_classes=2):
    out = {}
    for split, count in zip(("train", "val", "test"), n):
        out[f"{split}_images"] = np.zeros((count, size, size) + shape_tail, dtype=dtype)
        out[f"{split}_labels"] = (np.arange(count) % n_classes).astype(np.uint8).reshape(-1, 1)
    return out


def _load_arrays(tmp_path, arrays, task="breastmnist", size=28):
    np.savez(tasks.npz_path(tmp_path, task, size), **arrays)
    with pytest.raises(UserError) as e:
        loading.load(task, size, tasks.npz_path(tmp_path, task, size))
    return one_line(e)


def test_missing_keys(tmp_path):
    arrays = _arrays()
    del arrays["val_labels"], arrays["test_images"]
    msg = _load_arrays(tmp_path, arrays)
    assert "val_labels" in msg and "test_images" in msg and "train_images" not in msg.split("(has")[0]


def test_wrong_image_dtype(tmp_path):
    msg = _load_arrays(tmp_path, _arrays(dtype=np.float32))
    assert "float32" in msg and "uint8" in msg and "train_images" in msg


@pytest.mark.parametrize("case", ["size", "rgb-for-grey", "grey-for-rgb", "ndim"])
def test_wrong_image_shape(tmp_path, case):
    if case == "size":
        msg = _load_arrays(tmp_path, _arrays(size=32))
        assert "(6, 32, 32)" in msg and "(N, 28, 28)" in msg
    elif case == "rgb-for-grey":
        msg = _load_arrays(tmp_path, _arrays(shape_tail=(3,)))
        assert "(N, 28, 28)" in msg
    elif case == "grey-for-rgb":
        msg = _load_arrays(tmp_path, _arrays(n_classes=9), task="pathmnist", size=64)
        assert "(N, 64, 64, 3)" in msg
    else:
        arrays = _arrays()
        arrays["test_images"] = np.zeros((3, 28 * 28), np.uint8)
        msg = _load_arrays(tmp_path, arrays)
        assert "test_images" in msg and "(3, 784)" in msg


def test_grey_with_trailing_channel_accepted(tmp_path):
    np.savez(tasks.npz_path(tmp_path, "breastmnist", 28), **_arrays(shape_tail=(1,)))
    assert loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28)).train.images.shape == (6, 1, 28, 28)


def test_labels_out_of_range(tmp_path):
    arrays = _arrays()
    arrays["val_labels"] = np.array([[0], [2]], np.uint8)
    msg = _load_arrays(tmp_path, arrays)
    assert "val_labels" in msg and "[0, 2]" in msg and "2 classes" in msg
    arrays["val_labels"] = np.array([[-1], [1]], np.int8)
    assert "-1" in _load_arrays(tmp_path, arrays)


def test_labels_bad_dtype_shape_count(tmp_path):
    arrays = _arrays()
    arrays["train_labels"] = arrays["train_labels"].astype(np.float32)
    assert "train_labels" in _load_arrays(tmp_path, arrays)
    arrays = _arrays()
    arrays["train_labels"] = np.zeros((6, 2), np.uint8)
    assert "(N, 1)" in _load_arrays(tmp_path, arrays)
    arrays = _arrays()
    arrays["test_labels"] = np.zeros((4, 1), np.uint8)
    assert "4 labels" in _load_arrays(tmp_path, arrays)
    arrays = _arrays(n=(0, 2, 3))
    assert "empty" in _load_arrays(tmp_path, arrays)


# -------------------------------------------------------------------------------- write_npz, iterate


def test_write_npz_atomic_and_reproducible(tmp_path):
    arrays = _arrays(shape_tail=(3,))
    a = npz.write_npz(tmp_path / "a" / "x.npz", arrays)
    time.sleep(1.1)  # zip timestamps have 2 s resolution; fixed ones must make this irrelevant
    b = npz.write_npz(tmp_path / "b" / "x.npz", arrays)
    assert a.read_bytes() == b.read_bytes()
    assert os.listdir(tmp_path / "a") == ["x.npz"]
    with np.load(a) as z:
        assert sorted(z.files) == sorted(arrays)
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and np.array_equal(z[k], v)
    with zipfile.ZipFile(a) as zf:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
    # a failed write leaves the old file intact and no temporary file behind
    before = a.read_bytes()
    with pytest.raises(ValueError):
        npz.write_npz(a, {"train_images": np.array([object()], dtype=object)})
    assert a.read_bytes() == before
    assert os.listdir(tmp_path / "a") == ["x.npz"]


def _split(n=10):
    return loading.Split(images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(),
                      labels=torch.arange(n, dtype=torch.int64))


def test_as_float():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    y = loading.as_float(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y, torch.tensor([0.0, 0.2, 1.0]))
    with pytest.raises(TypeError):
        loading.as_float(y)


def test_iterate_in_order():
    batches = list(loading.iterate(_split(10), 4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    ys = torch.cat([y for _, y in batches])
    assert ys.tolist() == list(range(10))
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 2, 2)
        assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())  # images stay paired with labels


def test_iterate_shuffled_reproducible():
    s = _split(50)

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        out = []
        for x, y in loading.iterate(s, 8, shuffle=True, generator=g):
            assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())
            out += y.tolist()
        return out

    a, b, c = order(0), order(0), order(1)
    assert sorted(a) == list(range(50))
    assert a == b and a != c and a != list(range(50))
    with pytest.raises(UserError):
        next(loading.iterate(s, 0))


# ------------------------------------------------------------------------------------------- prepare


def test_prepare_missing_no_download(tmp_path):
    with pytest.raises(UserError) as e:
        prepare.prepare("bloodmnist", 224, tasks.npz_path(tmp_path, "bloodmnist", 224), download=False)
    msg = one_line(e)
    assert str(tmp_path / "bloodmnist_224.npz") in msg
    assert f"medgrid prepare-data --task bloodmnist --size 224 --out {tmp_path / 'bloodmnist_224.npz'}" in msg


def test_prepare_download_failure(tmp_path, monkeypatch):
    import medmnist

    calls = []

    class Failing:
        def __init__(self, split, root, size, download):
            calls.append((split, root, size, download))
            try:  # what medmnist does: a bare except around torchvision's download_url
                raise OSError("[Errno -3] Temporary failure in name resolution")
            except Exception:
                raise RuntimeError("\n   Automatic download failed! Please download breastmnist_64.npz manually.\n")

    monkeypatch.setattr(medmnist, "BreastMNIST", Failing)
    with pytest.raises(UserError) as e:
        prepare.prepare("breastmnist", 64, tasks.npz_path(tmp_path / "d", "breastmnist", 64))
    msg = one_line(e)
    assert "breastmnist_64.npz" in msg and "name resolution" in msg and "zenodo.org" in msg
    assert "medgrid prepare-data --task breastmnist --size 64" in msg
    assert calls and calls[0][2] == 64 and calls[0][3] is True
    assert os.listdir(tmp_path / "d") == []  # the private download folder is gone


def test_prepare_download_success(tmp_path, monkeypatch, fake_medmnist):
    import medmnist

    class Downloading:
        def __init__(self, split, root, size, download):
            assert download and os.path.isdir(root)
            fake_medmnist(root, "dermamnist", size or 28)

    monkeypatch.setattr(medmnist, "DermaMNIST", Downloading)
    path = prepare.prepare("dermamnist", 28, tasks.npz_path(tmp_path, "dermamnist", 28))
    assert path == tmp_path / "dermamnist.npz"
    assert os.listdir(tmp_path) == ["dermamnist.npz"]
    assert loading.load("dermamnist", 28, tasks.npz_path(tmp_path, "dermamnist", 28)).train.images.shape[1] == 3

    # an existing valid file is kept without downloading again
    class Never:
        def __init__(self, *a, **k):
            raise AssertionError("must not download")

    monkeypatch.setattr(medmnist, "DermaMNIST", Never)
    assert prepare.prepare("dermamnist", 28, tasks.npz_path(tmp_path, "dermamnist", 28)) == path


def test_prepare_source_dir(tmp_path, fake_medmnist):
    src_dir = tmp_path / "src"
    src = fake_medmnist(src_dir, "octmnist", 64)
    before = (src.read_bytes(), src.stat().st_mtime_ns, sorted(os.listdir(src_dir)))
    out = prepare.prepare("octmnist", 64, tasks.npz_path(tmp_path / "data", "octmnist", 64), source=tasks.npz_path(src_dir, "octmnist", 64), download=False)
    assert out == tmp_path / "data" / "octmnist_64.npz"
    assert out.read_bytes() == before[0]
    assert os.listdir(tmp_path / "data") == ["octmnist_64.npz"]
    assert (src.read_bytes(), src.stat().st_mtime_ns, sorted(os.listdir(src_dir))) == before
    # source and destination the same folder: nothing to copy
    assert prepare.prepare("octmnist", 64, tasks.npz_path(src_dir, "octmnist", 64), source=tasks.npz_path(src_dir, "octmnist", 64)) == src
    with pytest.raises(UserError) as e:
        prepare.prepare("octmnist", 28, tasks.npz_path(tmp_path / "data", "octmnist", 28), source=tasks.npz_path(src_dir, "octmnist", 28))
    assert "octmnist.npz" in one_line(e)
    # an invalid source is refused and not copied
    bad_dir = tmp_path / "bad"
    fake_medmnist(bad_dir, "octmnist", 28, n_channels=3)
    with pytest.raises(UserError) as e:
        prepare.prepare("octmnist", 28, tasks.npz_path(tmp_path / "data", "octmnist", 28), source=tasks.npz_path(bad_dir, "octmnist", 28))
    assert "shape" in one_line(e)
    assert not (tmp_path / "data" / "octmnist.npz").exists()


def test_prepare_synthetic_only_options(tmp_path):
    with pytest.raises(UserError):
        prepare.prepare("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28), n_classes=3, download=False)


# --------------------------------------------------------------------------------------------- synthetic

SMALL = dict(n_train=300, n_val=20, n_test=40)


def test_synthetic_prepare_load_deterministic(tmp_path):
    a = prepare.prepare("synthetic", 28, tasks.npz_path(tmp_path / "a", "synthetic", 28), data_seed=3, **SMALL)
    b = prepare.prepare("synthetic", 28, tasks.npz_path(tmp_path / "b", "synthetic", 28), data_seed=3, **SMALL)
    c = prepare.prepare("synthetic", 28, tasks.npz_path(tmp_path / "c", "synthetic", 28), data_seed=4, **SMALL)
    assert a.name == "synthetic.npz"
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    ds = loading.load("synthetic", 28, a)
    assert ds.train.images.shape == (300, 1, 28, 28) and ds.val.images.shape == (20, 1, 28, 28)
    assert ds.test.images.shape == (40, 1, 28, 28)
    assert torch.bincount(ds.train.labels).tolist() == [75, 75, 75, 75]
    assert ds.sha256 == loading.load("synthetic", 28, b).sha256
    with np.load(a) as z:  # MedMNIST layout exactly
        assert sorted(z.files) == sorted(npz.REQUIRED_KEYS)
        assert z["train_images"].dtype == np.uint8 and z["train_images"].shape == (300, 28, 28)
        assert z["train_labels"].dtype == np.uint8 and z["train_labels"].shape == (300, 1)


def test_synthetic_rgb_64_and_classes(tmp_path):
    p = prepare.prepare("synthetic-rgb", 64, tasks.npz_path(tmp_path, "synthetic-rgb", 64), data_seed=0, n_classes=6, **SMALL)
    assert p.name == "synthetic-rgb_64.npz"
    with np.load(p) as z:
        assert z["train_images"].shape == (300, 64, 64, 3)
        assert set(np.unique(z["train_labels"])) == set(range(6))
    ds = loading.load("synthetic-rgb", 64, tasks.npz_path(tmp_path, "synthetic-rgb", 64), n_classes=6)
    assert ds.train.images.shape == (300, 3, 64, 64) and ds.info.n_classes == 6
    with pytest.raises(UserError) as e:  # read as the default 4-class task: labels out of range
        loading.load("synthetic-rgb", 64, tasks.npz_path(tmp_path, "synthetic-rgb", 64))
    assert "4 classes" in one_line(e)


def test_synthetic_bad_parameters(tmp_path):
    for kw in (dict(n_classes=1), dict(n_classes=11), dict(amplitude=-1), dict(amplitude=2.5), dict(n_val=0),
               dict(data_seed=-1)):
        with pytest.raises(UserError):
            prepare.prepare("synthetic", 28, tasks.npz_path(tmp_path, "synthetic", 28), **kw)
    assert not list(tmp_path.iterdir())


def test_synthetic_generation_fast():
    t = time.perf_counter()
    arrays = synthetic.generate("synthetic", 28, seed=0)  # default 4000 / 500 / 1000
    elapsed = time.perf_counter() - t
    assert arrays["train_images"].shape == (4000, 28, 28) and arrays["test_images"].shape == (1000, 28, 28)
    assert elapsed < 5.0, f"generation took {elapsed:.1f} s"


@pytest.mark.parametrize("task,size", [("synthetic", 28), ("synthetic-rgb", 64)])
def test_synthetic_texture_is_exact_integer_pattern(task, size):
    """The image with texture minus the same image without it is exactly +-k times the class pattern."""
    k = 4
    kw = dict(seed=1, n_train=200, n_val=1, n_test=1)
    with_t = synthetic.generate(task, size, amplitude=k, **kw)
    without = synthetic.generate(task, size, amplitude=0, **kw)
    labels = with_t["train_labels"].ravel()
    assert np.array_equal(labels, without["train_labels"].ravel())
    pattern = synthetic.texture_patterns(4, size, seed=1).astype(int)[labels]
    if task == "synthetic-rgb":
        pattern = pattern[..., None]
    diff = with_t["train_images"].astype(int) - without["train_images"].astype(int)
    # equal except where the robust image needed the headroom (rare): there it is clipped to [k, 255-k] first
    agree = diff == k * pattern
    assert agree.mean() > 0.999
    base = without["train_images"].astype(int)
    assert np.all(agree | (base < k) | (base > 255 - k))
    img = with_t["train_images"]
    assert img.min() >= 0 and img.max() <= 255  # (uint8) and no wrap-around: checked by `agree` above


def test_texture_energy_near_nyquist():
    from scipy.ndimage import gaussian_filter

    for size in (28, 64):
        p = synthetic.texture_patterns(4, size, seed=0).astype(float)
        assert set(np.unique(p)) == {-1.0, 1.0}
        kept = (gaussian_filter(p, (0, 1.5, 1.5), mode="wrap") ** 2).sum() / (p ** 2).sum()
        assert kept < 0.01, kept
        # the class patterns differ from each other
        flat = p.reshape(4, -1)
        corr = flat @ flat.T / flat.shape[1]
        assert np.all(np.abs(corr[~np.eye(4, dtype=bool)]) < 0.7)


@pytest.mark.parametrize("size", [28, 64])
def test_synthetic_blob_at_class_centres(size):
    """Robust feature: the class-mean image (minus the overall mean) peaks near the class centre."""
    from scipy.ndimage import gaussian_filter

    a = synthetic.generate("synthetic", size, seed=0, amplitude=0, n_train=800, n_val=1, n_test=1)
    x = a["train_images"].astype(float)
    y = a["train_labels"].ravel()
    f = size / 28
    mean = x.mean(0)
    for c, (r0, c0) in enumerate([(9, 9), (9, 19), (19, 9), (19, 19)]):
        m = gaussian_filter(x[y == c].mean(0) - mean, 2 * f)
        r, q = np.unravel_index(np.argmax(m), m.shape)
        assert abs(r - ((r0 + 0.5) * f - 0.5)) <= 1.5 * f and abs(q - ((c0 + 0.5) * f - 0.5)) <= 1.5 * f, (c, r, q)


def _probe(d, features):
    """Test accuracy of a logistic-regression probe on ``features`` of the train / test images."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    xtr, xte = features(d["train_images"]), features(d["test_images"])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
    with threadpool_limits(1):  # BLAS threads on 2 shared cores are 10x slower than one
        clf = LogisticRegression(max_iter=400, C=0.1).fit((xtr - mu) / sd, d["train_labels"].ravel())
    return clf.score((xte - mu) / sd, d["test_labels"].ravel())


def _highpass(x):
    from scipy.ndimage import gaussian_filter

    x = x.astype(np.float64) / 255
    return (x - gaussian_filter(x, (0, 2, 2), mode="wrap")).reshape(len(x), -1)


def _blurred(x):
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(x.astype(np.float64) / 255, (0, 1.75, 1.75), mode="wrap")
    return x[:, ::2, ::2].reshape(len(x), -1)  # blurred: every other pixel loses nothing


def test_synthetic_linear_probes():
    """Texture alone is near-perfectly predictive; with it blurred away only the blob (Bayes ~0.865) is left."""
    kw = dict(seed=0, n_train=1200, n_val=1, n_test=800)
    d = synthetic.generate("synthetic", 28, **kw)
    texture = _probe(d, _highpass)
    blurred = _probe(d, _blurred)
    assert texture >= 0.97, texture
    assert 0.70 <= blurred <= 0.93, blurred
    assert blurred <= texture - 0.05
    # control: without the planted texture the high-pass probe sees only what is left of the blob
    d0 = synthetic.generate("synthetic", 28, amplitude=0, **kw)
    assert _probe(d0, _highpass) <= 0.90


def test_synthetic_rgb_texture_probe():
    d = synthetic.generate("synthetic-rgb", 28, seed=2, n_train=600, n_val=1, n_test=400)
    gray = {k: (v.mean(-1).round().astype(np.uint8) if k.endswith("images") else v) for k, v in d.items()}
    assert _probe(gray, _highpass) >= 0.97


# ----------------------------------------------------------------------------------------- real data


REAL = {"breastmnist": ((546, 78, 156), (147, 399)), "pneumoniamnist": ((4708, 524, 624), (1214, 3494))}


@pytest.mark.parametrize("task", sorted(REAL))
def test_real_medmnist_load(task, shared_medmnist):
    sizes, train_counts = REAL[task]
    ds = loading.load(task, 28, shared_medmnist / f"{task}.npz")
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes
    assert torch.bincount(ds.train.labels, minlength=2).tolist() == list(train_counts)
    assert ds.train.images.shape[1:] == (1, 28, 28)
    assert ds.sha256 == hashlib.sha256((shared_medmnist / f"{task}.npz").read_bytes()).hexdigest()


def test_real_medmnist_prepare_from_source(tmp_path, shared_medmnist):
    import medmnist

    listing = sorted(os.listdir(shared_medmnist))
    for task, (sizes, _) in REAL.items():
        path = prepare.prepare(task, 28, tasks.npz_path(tmp_path, task, 28), source=shared_medmnist / f"{task}.npz",
                               download=False)
        assert path == tmp_path / f"{task}.npz"
        ds = loading.load(task, 28, path)
        assert (len(ds.train), len(ds.val), len(ds.test)) == sizes
        assert ds.sha256 == loading.load(task, 28, shared_medmnist / f"{task}.npz").sha256
    assert sorted(os.listdir(shared_medmnist)) == listing  # nothing written into the source folder
    theirs = medmnist.BreastMNIST(split="test", root=str(tmp_path), download=False)
    assert len(theirs) == 156
    ours = loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28)).test
    assert np.array_equal(theirs.imgs, ours.images[:, 0].numpy())
    assert np.array_equal(theirs.labels.ravel(), ours.labels.numpy())
    assert len(medmnist.PneumoniaMNIST(split="val", root=str(tmp_path), download=False)) == 524
