"""MedMNIST-C: generated sets (layout, seeding as medmnistc's DatasetManager), download, evaluation rows, errors."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from medgrid import checkpoint, cli, names, results
from medgrid.data import corruptions, loading, npz, prepare, shift_sets, synthetic, tasks
from medgrid.errors import UserError
from medgrid.evaluation.shift import corruption_rows

registry = pytest.importorskip("medmnistc.corruptions.registry",
                               reason="medmnistc (and ImageMagick) not installed", exc_type=ImportError)

# medmnistc's motion_blur calls np.fromstring (deprecated in numpy 2.2, gone in 2.3): DatasetManager here
pytestmark = pytest.mark.filterwarnings("ignore:The binary mode of fromstring:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"


def smooth_images(n, size, channels=None, seed=0):
    """Plausible uint8 test images: smooth random fields (what medmnistc's corruptions are made for)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    shape = (n, size, size) + ((channels,) if channels else ())
    sigma = (0, size / 10, size / 10) + ((0,) if channels else ())
    f = gaussian_filter(rng.standard_normal(shape), sigma)
    f = (f - f.min()) / (f.max() - f.min())
    return np.round(40 + 170 * f).astype(np.uint8)


def write_task(path, images, labels, splits=("test",)):
    arrays = {}
    for s in splits:
        arrays[f"{s}_images"] = images
        arrays[f"{s}_labels"] = np.asarray(labels, dtype=np.uint8).reshape(-1, 1)
    npz.write_npz(path, arrays)
    return path


def make_sets(task, size, data_dir, out_dir, *, corruptions, seed=0, source="generate", archive=None, **kw):
    """shift_sets.prepare once per corruption, as the workflow's jobs do: the task's files in ``data_dir``
    (its 224-px one when there), each set written to ``{out_dir}/{task}/{name}.npz``; returns the paths."""
    clean_224 = tasks.npz_path(data_dir, task, 224)
    return [shift_sets.prepare(task, size, tasks.npz_path(data_dir, task, size), shift_sets.output_path(out_dir, task, name),
                               corruption=name, source=source, corruption_seed=seed, archive=archive,
                               clean_224=clean_224 if clean_224.is_file() else None, **kw)
            for name in corruptions]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip()


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("medgrid: error:"), err
    for needle in needles:
        assert needle in err, err


# ------------------------------------------------------------------------------------------ names


# -------------------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def breast_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("breast")
    write_task(d / "breastmnist.npz", smooth_images(3, 28), [0, 1, 1])
    return d


def test_generate_layout_dtype_and_seed(breast_dir, tmp_path):
    out = tmp_path / "c"
    names = ["pixelate", "speckle_noise"]
    paths = make_sets("breastmnist", 28, breast_dir, out, source="generate", corrupt_at="model_size",
                          corruptions=names, seed=3)
    assert paths == [out / "breastmnist" / f"{n}.npz" for n in names]
    for p in paths:
        with np.load(p) as z:
            assert sorted(z.files) == ["test_images", "test_labels"]
            assert z["test_images"].shape == (15, 28, 28) and z["test_images"].dtype == np.uint8
            assert z["test_labels"].shape == (15, 1) and z["test_labels"].dtype == np.uint8
            assert z["test_labels"].ravel().tolist() == [0, 1, 1] * 5
            sev = z["test_images"].reshape(5, 3, 28, 28).astype(int)
            assert not np.array_equal(sev[0], sev[4])  # severities differ
    again = make_sets("breastmnist", 28, breast_dir, tmp_path / "d", source="generate",
                          corrupt_at="model_size", corruptions=names, seed=3)
    other = make_sets("breastmnist", 28, breast_dir, tmp_path / "e", source="generate",
                          corrupt_at="model_size", corruptions=["speckle_noise"], seed=4)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]  # same seed: same files
    with np.load(paths[1]) as a, np.load(other[0]) as b:  # speckle noise is random: another seed differs
        assert not np.array_equal(a["test_images"], b["test_images"])
    assert not list(out.rglob("*.tmp"))


def test_rgb_and_nearest_round_trip(tmp_path):
    images = smooth_images(2, 28, channels=3)
    write_task(tmp_path / "bloodmnist.npz", images, [0, 7])
    (p,) = make_sets("bloodmnist", 28, tmp_path, tmp_path / "c", source="generate", corrupt_at="model_size",
                         corruptions=["brightness_up"])
    with np.load(p) as z:
        assert z["test_images"].shape == (10, 28, 28, 3)
    # upsampled with nearest and box-resized back, 28 -> 224 -> 28 is the identity
    for img in images:
        assert np.array_equal(corruptions.resize(corruptions.resize(img, 224, "NEAREST"), 28, "BOX"), img)


def test_resample_control_is_the_resize_path_without_a_corruption(tmp_path):
    """The control goes through exactly the path of the corrupted sets, minus the corruption."""
    images = smooth_images(3, 28, seed=2)
    write_task(tmp_path / "breastmnist.npz", images, [0, 1, 1])
    out = tmp_path / "c"
    # nearest upsampling at 28 px: the round trip is exact, so the control is the clean test set
    (p,) = make_sets("breastmnist", 28, tmp_path, out, source="generate", corrupt_at="model_size",
                         corruptions=[names.RESAMPLE_CONTROL])
    with np.load(p) as z:
        assert np.array_equal(z["test_images"], images) and z["test_labels"].ravel().tolist() == [0, 1, 1]
    # bicubic: the round trip low-passes the images, and the control shows it
    (p,) = make_sets("breastmnist", 28, tmp_path, tmp_path / "b", source="generate", corrupt_at="model_size",
                         upsample="bicubic", corruptions=[names.RESAMPLE_CONTROL])
    with np.load(p) as z:
        expected = [corruptions.resize(corruptions.resize(img, 224, "BICUBIC"), 28, "BOX") for img in images]
        assert np.array_equal(z["test_images"], np.stack(expected)) and not np.array_equal(z["test_images"], images)
    # from a 224-px test set: box-resized to the model size, as the corrupted sets are
    big = smooth_images(3, 224, seed=2)
    write_task(tmp_path / "breastmnist_224.npz", big, [0, 1, 1])
    (p,) = make_sets("breastmnist", 28, tmp_path, tmp_path / "d", source="generate", corrupt_at="224",
                         corruptions=[names.RESAMPLE_CONTROL])
    with np.load(p) as z:
        assert np.array_equal(z["test_images"], np.stack([corruptions.resize(b, 28, "BOX") for b in big]))
    assert corruptions.levels(names.RESAMPLE_CONTROL) == 1
    with pytest.raises(UserError, match="unknown corruption"):
        corruptions.corrupt(images, "breastmnist", names.RESAMPLE_CONTROL)


def test_same_images_as_medmnistc_dataset_manager(tmp_path):
    """At 224 px, generate reproduces medmnistc's DatasetManager for every set that sees the seeded state
    (the registry's first corruptions, and all deterministic ones)."""
    from medmnistc.dataset_manager import DatasetManager

    src = tmp_path / "src"
    write_task(src / "breastmnist_224.npz", smooth_images(2, 224, seed=1), [1, 0])
    DatasetManager(medmnist_path=str(src), output_path=str(tmp_path / "official"),
                   random_seed=0).create_dataset("breastmnist")
    # pixelate, jpeg_compression: deterministic; speckle_noise: the first random one (fresh seeded state);
    # brightness/contrast: deterministic. motion_blur comes after speckle noise drew from the stream.
    same = ["pixelate", "jpeg_compression", "speckle_noise", "brightness_up", "brightness_down", "contrast_down"]
    ours = make_sets("breastmnist", 224, src, tmp_path / "ours", source="generate", corruptions=same, seed=0)
    for name, p in zip(same, ours):
        with np.load(p) as a, np.load(tmp_path / "official" / "breastmnist" / f"{name}.npz") as b:
            assert np.array_equal(a["test_images"], b["test_images"]), name
            assert np.array_equal(a["test_labels"], b["test_labels"]), name


def test_impulse_noise_uses_the_seeded_rng(tmp_path):
    write_task(tmp_path / "pneumoniamnist.npz", smooth_images(2, 28), [0, 1])
    a, b, c = (make_sets("pneumoniamnist", 28, tmp_path, tmp_path / k, source="generate",
                             corrupt_at="model_size", corruptions=["impulse_noise"], seed=s)[0]
               for k, s in (("a", 0), ("b", 0), ("c", 1)))
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_corrupt_at_224_resizes_to_model_size(tmp_path):
    write_task(tmp_path / "breastmnist_224.npz", smooth_images(2, 224), [1, 0])
    write_task(tmp_path / "breastmnist.npz", smooth_images(2, 28), [1, 0])
    (p,) = make_sets("breastmnist", 28, tmp_path, tmp_path / "c", source="generate",
                         corruptions=["contrast_down"])
    with np.load(p) as z:
        assert z["test_images"].shape == (10, 28, 28)
    write_task(tmp_path / "breastmnist.npz", smooth_images(2, 28), [0, 0])
    with pytest.raises(UserError, match="different test labels"):
        make_sets("breastmnist", 28, tmp_path, tmp_path / "c", source="generate", corruptions=["pixelate"])


def test_texture_shuffled_keeps_robust_features(tmp_path):
    prepare.prepare("synthetic", 28, tasks.npz_path(tmp_path, "synthetic", 28), data_seed=5, n_train=8, n_val=8, n_test=200)
    (p,) = make_sets("synthetic", 28, tmp_path, tmp_path / "c", source="generate",
                         corruptions=[names.TEXTURE_SHUFFLED], data_seed=5)
    clean = loading.load("synthetic", 28, tasks.npz_path(tmp_path, "synthetic", 28)).test
    x, y = clean.images[:, 0].numpy().astype(int), clean.labels.numpy()
    with np.load(p) as z:
        shuffled, labels = z["test_images"].astype(int), z["test_labels"].ravel()
    assert shuffled.shape == x.shape and np.array_equal(labels, y)
    # the difference is exactly the texture of another class minus the own one (amplitude 4)
    patterns = synthetic.texture_patterns(4, 28, 5).astype(int)
    diff = shuffled - x
    texture = [next(k for k in range(4) if np.array_equal(d, 4 * (patterns[k] - patterns[c])))
               for d, c in zip(diff, y)]
    agree = np.mean(np.array(texture) == y)
    assert 0.1 < agree < 0.45  # uniform over 4 classes: 1/4 agree by chance
    assert len(set(texture)) == 4
    with pytest.raises(UserError, match="--data-seed"):
        make_sets("synthetic", 28, tmp_path, tmp_path / "c", source="generate",
                      corruptions=[names.TEXTURE_SHUFFLED], data_seed=6)


def test_download_from_a_mirror(tmp_path, monkeypatch):
    """The official layout in {flag}.zip (here a local mirror; Zenodo needs internet), resized to 28 px."""
    images = np.concatenate([smooth_images(2, 224, seed=s) for s in range(5)])
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    inner = write_task(tmp_path / "pixelate.npz", images, [1, 0] * 5)
    with zipfile.ZipFile(mirror / "breastmnist.zip", "w") as zf:
        zf.write(inner, "breastmnist/pixelate.npz")
    monkeypatch.setenv(shift_sets.URL_ENV, mirror.resolve().as_uri())
    write_task(tmp_path / "d" / "breastmnist.npz", smooth_images(2, 28), [1, 0])
    archive = shift_sets.fetch("breastmnist", tmp_path / "d" / "medmnist-c" / "breastmnist.zip")
    (p,) = make_sets("breastmnist", 28, tmp_path / "d", tmp_path / "c", source="download",
                     corruptions=["pixelate"], archive=archive)
    with np.load(p) as z:
        assert z["test_images"].shape == (10, 28, 28)
        expected = np.stack([corruptions.resize(img, 28, "BOX") for img in images])
        assert np.array_equal(z["test_images"], expected)
    assert archive.is_file() and zipfile.is_zipfile(archive)  # one download for all of the task's sets
    with pytest.raises(UserError, match="needs MedMNIST-C's breastmnist.zip"):
        make_sets("breastmnist", 28, tmp_path / "d", tmp_path / "c", source="download", corruptions=["pixelate"])


# -------------------------------------------------------------------------------------- evaluation


class FirstPixel(torch.nn.Module):
    """Predicts the class written into the first pixel of each image (value = 10 * class)."""

    def __init__(self, n_classes):
        super().__init__()
        self.n_classes = n_classes
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        cls = torch.round(x[:, 0, 0, 0] * 255 / 10).long().clamp(0, self.n_classes - 1)
        return torch.nn.functional.one_hot(cls, self.n_classes).float() + 0 * self.dummy


def test_rows_against_sklearn_and_medmnistc_evaluator(tmp_path):
    from medmnistc.eval import Evaluator

    rng = np.random.default_rng(0)
    n = 40
    labels = rng.integers(0, 2, n)
    clean = np.full((n, 28, 28), 100, np.uint8)
    clean_pred = np.where(rng.random(n) < 0.8, labels, 1 - labels)
    clean[:, 0, 0] = 10 * clean_pred
    write_task(tmp_path / "breastmnist.npz", clean, labels, splits=("train", "val", "test"))
    ds = loading.load("breastmnist", 28, tasks.npz_path(tmp_path, "breastmnist", 28))
    preds = {}
    for k, name in enumerate(["pixelate", "motion_blur"]):
        p = np.where(rng.random(5 * n) < 0.75 - 0.1 * k, np.tile(labels, 5), 1 - np.tile(labels, 5))
        images = np.full((5 * n, 28, 28), 90, np.uint8)
        images[:, 0, 0] = 10 * p
        write_task(tmp_path / "c" / "breastmnist" / f"{name}.npz", images, np.tile(labels, 5))
        preds[name] = p
    # the control: the clean test set through the resize path, here unchanged by it (as with nearest at 28 px)
    write_task(tmp_path / "c" / "breastmnist" / f"{names.RESAMPLE_CONTROL}.npz", clean, labels)
    cell = results.cell_columns({"task": "breastmnist", "size": 28, "arch": "x", "norm": "none", "eps": 0,
                                 "seed": 0})
    def sets(names_):
        return {n: tmp_path / "c" / "breastmnist" / f"{n}.npz" for n in names_}

    rows = results.from_rows(corruption_rows(FirstPixel(2), ds, cell, sets(list(preds) + [names.RESAMPLE_CONTROL])))
    assert set(rows.eval_kind) == {"corruption"}

    def value(corruption, severity, metric):
        (v,) = rows[(rows.corruption == corruption) & (rows.severity == severity) & (rows.metric == metric)].value
        return v

    evaluator = Evaluator("breastmnist", labels.reshape(-1, 1).tolist(), list(preds), str(tmp_path), "x",
                          "binary-class")
    evaluator.evaluate_clean(np.eye(2)[clean_pred])
    for name, p in preds.items():
        for s in range(1, 6):
            sl = slice((s - 1) * n, s * n)
            assert value(name, s, "balanced_acc") == pytest.approx(balanced_accuracy_score(labels, p[sl]))
            assert value(name, s, "acc") == pytest.approx(np.mean(labels == p[sl]))
        assert value(name, 0, "balanced_acc") == pytest.approx(
            np.mean([balanced_accuracy_score(labels, p[i * n:(i + 1) * n]) for i in range(5)]))
        evaluator.evaluate(np.eye(2)[p], name)
    evaluator.output_log = {}
    evaluator.populate_summary()
    for name in preds:  # 28 px: the AlexNet-normalised errors carry their caveat in the metric name
        assert value(name, 0, "be_not_comparable") == pytest.approx(evaluator.output_log["be_scores"][name])
        assert value(name, 0, "rbe_not_comparable") == pytest.approx(evaluator.output_log["rbe_scores"][name])
    assert value("mean", 0, "be_not_comparable") == pytest.approx(evaluator.output_log["metrics"]["be"])
    assert value("mean", 0, "rbe_not_comparable") == pytest.approx(evaluator.output_log["metrics"]["rbe"])
    assert value("mean", 0, "balanced_acc") == pytest.approx(
        np.mean([value(c, 0, "balanced_acc") for c in preds]))
    assert value(names.RESAMPLE_CONTROL, 0, "balanced_acc") == pytest.approx(balanced_accuracy_score(labels, clean_pred))
    assert "be" not in set(rows.metric)
    # a control that differs from the clean set: rBE counts the corruption's error beyond the control's
    resampled = clean.copy()
    resampled[:, 0, 0] = 10 * labels  # the control is classified perfectly
    write_task(tmp_path / "c" / "breastmnist" / f"{names.RESAMPLE_CONTROL}.npz", resampled, labels)
    rows = results.from_rows(corruption_rows(FirstPixel(2), ds, cell, sets(list(preds) + [names.RESAMPLE_CONTROL])))
    alex = corruptions.baselines()["breastmnist"]
    for name in preds:
        error = 1 - value(name, 0, "balanced_acc")
        expected = (error - 0.0) / (alex["raw_scores"][name] - alex["clean_score"])
        assert value(name, 0, "rbe_not_comparable") == pytest.approx(expected)
    # without the control there is no clean baseline that isolates the corruption: no rBE
    rows = results.from_rows(corruption_rows(FirstPixel(2), ds, cell, sets(list(preds))))
    assert not {"rbe", "rbe_not_comparable"} & set(rows.metric)


def test_evaluate_cli_writes_a_shift_table(tmp_path, capsys):
    d = tmp_path / "data"
    prepare.prepare("synthetic", 28, tasks.npz_path(d, "synthetic", 28), data_seed=0, n_train=8, n_val=8, n_test=30)
    ckpt = tmp_path / "model.pt"
    from medgrid import models

    model = models.build("cnn-small", 1, 4, 28)
    checkpoint.save(ckpt, model, {"task": "synthetic", "size": 28, "arch": "cnn-small", "norm": "none",
                                  "eps": 0.0, "seed": 0, "n_channels": 1, "n_classes": 4})
    chosen = ["brightness_down", names.TEXTURE_SHUFFLED]
    data = d / "synthetic.npz"
    for name in chosen:
        assert run(capsys, "shift", "prepare", "--task", "synthetic", "--size", "28", "--data", data, "--corruption",
                   name, "--out", tmp_path / "c" / f"{name}.npz", "--source", "generate")[0] == 0
    out = tmp_path / "shift.parquet"
    code, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--data", data, "--shift-sets",
                    *[tmp_path / "c" / f"{name}.npz" for name in chosen], "--no-clean", "--out", out)
    assert code == 0, err
    table = results.read_table(out)
    assert set(table.eval_kind) == {"corruption"}
    got = {(c, s, m) for c, s, m in zip(table.corruption, table.severity, table.metric)}
    expected = {(c, s, m) for c in ("brightness_down",) for s in range(6) for m in ("acc", "balanced_acc")}
    expected |= {(names.TEXTURE_SHUFFLED, 0, m) for m in ("acc", "balanced_acc")}
    expected |= {("mean", 0, m) for m in ("acc", "balanced_acc")}
    assert got == expected
    assert (table[table.severity > 0].n == 30).all()
    # missing set: one line naming the file and the command that makes it
    code, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--data", data, "--shift-sets",
                    tmp_path / "c" / "defocus_blur.npz", "--no-clean", "--out", out)
    assert_one_line_error(code, err, "defocus_blur.npz not found", "medgrid shift prepare")
    code, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--data", data, "--shift-sets",
                    tmp_path / "c" / "fog.npz", "--no-clean", "--out", out)
    assert_one_line_error(code, err, "unknown corruption 'fog'")
    # wrong layout: one severity instead of five
    bad = tmp_path / "bad"
    with np.load(tmp_path / "c" / "brightness_down.npz") as z:
        write_task(bad / "brightness_down.npz", z["test_images"][:30], z["test_labels"][:30])
    code, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--data", data, "--shift-sets",
                    bad / "brightness_down.npz", "--no-clean", "--out", out)
    assert_one_line_error(code, err, "expected 150 images", "got 30")
    code, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--data", data, "--no-clean", "--out", out)
    assert_one_line_error(code, err, "nothing to evaluate")


# ------------------------------------------------------------------------------------------ errors


def test_bad_input_is_one_line(breast_dir, tmp_path, capsys, monkeypatch):
    data = breast_dir / "breastmnist.npz"

    def prepare_set(*argv, corruption="pixelate", task="breastmnist", source="generate"):
        return run(capsys, "shift", "prepare", "--task", task, "--size", "28", "--corruption", corruption, "--out",
                   tmp_path / "c" / f"{corruption}.npz", "--source", source, *argv)

    code, err = prepare_set("--data", data, "--corrupt-at", "model_size", corruption="fog")
    assert_one_line_error(code, err, "unknown corruption 'fog'", "pixelate, jpeg_compression")
    code, err = prepare_set("--data", data)  # default: the 224-px test set, which is not given
    assert_one_line_error(code, err, "--clean-224 FILE", "--corrupt-at model_size")
    code, err = prepare_set("--data", data, "--clean-224", breast_dir / "breastmnist_224.npz")
    assert_one_line_error(code, err, "breastmnist_224.npz not found",
                          f"medgrid prepare-data --task breastmnist --size 224 --out {breast_dir / 'breastmnist_224.npz'}")
    code, err = prepare_set("--data", tmp_path / "synthetic.npz", "--corrupt-at", "224", task="synthetic")
    assert_one_line_error(code, err, "use --corrupt-at model_size")
    code, err = run(capsys, "shift", "prepare", "--task", "breastmnist", "--data", data, "--corruption", "pixelate",
                    "--out", tmp_path / "c" / "x.npz", "--source", "generate", "--corrupt-at", "model_size")
    assert_one_line_error(code, err, "name the file pixelate.npz")
    code, err = run(capsys, "shift", "preview", "--task", "breastmnist", "--data", data,
                    "--corruption", "pixelate", "--severity", "6", "--out", tmp_path / "p.png")
    assert_one_line_error(code, err, "severity '6' is outside 1-5")
    write_task(tmp_path / "w" / "breastmnist.npz", smooth_images(2, 32), [0, 1])
    code, err = prepare_set("--data", tmp_path / "w" / "breastmnist.npz", "--corrupt-at", "model_size")
    assert_one_line_error(code, err, "test_images has shape (2, 32, 32), expected (N, 28, 28)")
    npz.write_npz(tmp_path / "k" / "breastmnist.npz", {"images": smooth_images(2, 28)})
    code, err = prepare_set("--data", tmp_path / "k" / "breastmnist.npz", "--corrupt-at", "model_size")
    assert_one_line_error(code, err, "lacks test_images, test_labels")
    code, err = prepare_set("--data", data, source="download")
    assert_one_line_error(code, err, "--zip FILE", "medgrid shift fetch")
    monkeypatch.setenv(shift_sets.URL_ENV, (tmp_path / "nowhere").resolve().as_uri())
    code, err = run(capsys, "shift", "fetch", "--task", "breastmnist", "--out", tmp_path / "z" / "breastmnist.zip")
    assert_one_line_error(code, err, "breastmnist.zip", "needs internet", "--source generate")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.npz"))
    assert not list((tmp_path / "z").iterdir())


def test_preview_png(breast_dir, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "p.png"
    code, err = run(capsys, "shift", "preview", "--task", "breastmnist", "--data", breast_dir / "breastmnist.npz",
                    "--corruption",
                    "motion_blur", "--severity", "1", "--severity", "5", "--n", "3", "--out", out)
    assert code == 0, err
    assert Image.open(out).size == (3 * 28, 3 * 28)  # clean + 2 severities, 3 images


# ---------------------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (REAL_DATA / "breastmnist.npz").is_file(), reason=f"no real BreastMNIST in {REAL_DATA}")
def test_real_breastmnist_motion_blur(tmp_path):
    """motion_blur breaks on 28-px images (medmnistc returns a (28, 3) array); corrupted at 224 it works."""
    with np.load(REAL_DATA / "breastmnist.npz") as z:
        images, labels = z["test_images"][:6], z["test_labels"][:6]
    write_task(tmp_path / "breastmnist.npz", images, labels)
    (p,) = make_sets("breastmnist", 28, tmp_path, tmp_path / "c", source="generate", corrupt_at="model_size",
                         corruptions=["motion_blur"])
    with np.load(p) as z:
        out, out_labels = z["test_images"], z["test_labels"]
    assert out.shape == (30, 28, 28) and out.dtype == np.uint8
    assert np.array_equal(out_labels.ravel(), np.tile(labels.ravel(), 5))
    sev1, sev5 = (np.abs(out[k * 6:(k + 1) * 6].astype(int) - images).mean() for k in (0, 4))
    assert 0 < sev1 < sev5 < 40  # blurred, more at severity 5, still the same images
