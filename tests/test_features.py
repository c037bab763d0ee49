"""Ilyas datasets: targets and relabelling, targeted attack success, D_R inversion, npz + table outputs, CLI."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from medgrid import checkpoint, cli, models, results
from medgrid.data import loading, prepare
from medgrid.errors import UserError
from medgrid.features import nonrobust, robust

C = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches (tests/conftest.py)


def random_model(channels=1, seed=0):
    """An untrained cnn-small with fitted normalisation and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = models.build("cnn-small", channels, C, 28)
    with torch.no_grad():
        model.train()(torch.rand(64, channels, 28, 28))
    return model.eval()


def fitted_model(ds, seed=0):
    """cnn-small fitted to the training split (30 full-batch Adam steps): its outputs depend on the input."""
    torch.manual_seed(seed)
    model = models.build("cnn-small", 1, C, 28)
    model.normalize.fit(ds.train.images)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = loading.as_float(ds.train.images), ds.train.labels
    model.train()
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A small synthetic task on disk (96 train images), a model fitted to it, saved as a standard and as
    a 'robust' checkpoint."""
    root = tmp_path_factory.mktemp("features")
    d = root / "data" / "synthetic.npz"  # the task's file
    prepare.prepare("synthetic", 28, d, data_seed=0, n_train=96, n_val=32, n_test=40)
    ds = loading.load("synthetic", 28, d)
    model = fitted_model(ds)
    base = {"task": "synthetic", "size": 28, "arch": "cnn-small", "seed": 0, "train_data": "original",
            "n_channels": 1, "n_classes": C, "data_sha256": ds.sha256}
    checkpoint.save(root / "std.pt", model, {**base, "norm": "none", "eps": 0.0})
    checkpoint.save(root / "rob.pt", model, {**base, "norm": "linf", "eps": 4 / 255})
    return root, d, ds, model


# ------------------------------------------------------------------------------------------ targets


def test_det_targets_are_next_class():
    y = torch.arange(40) % C
    assert torch.equal(nonrobust.targets(y, C, "det"), (y + 1) % C)


def test_rand_targets_all_and_other():
    y = torch.randint(0, C, (8000,), generator=torch.Generator().manual_seed(0))
    t_all = nonrobust.targets(y, C, "rand", rand_targets="all", generator=torch.Generator().manual_seed(1))
    t_oth = nonrobust.targets(y, C, "rand", rand_targets="other", generator=torch.Generator().manual_seed(1))
    assert t_all.min() >= 0 and t_all.max() < C and t_oth.min() >= 0 and t_oth.max() < C
    # all: t independent of y, so t = y for about 1/C of the images and every class is as frequent
    assert abs((t_all == y).float().mean().item() - 1 / C) < 0.03
    assert np.allclose(np.bincount(t_all.numpy(), minlength=C) / len(y), 1 / C, atol=0.03)
    # other: never y, and the C - 1 other classes equally often
    assert not (t_oth == y).any()
    for k in range(C):
        others = t_oth[y == k]
        freq = np.bincount(others.numpy(), minlength=C) / len(others)
        assert freq[k] == 0 and np.allclose(np.delete(freq, k), 1 / (C - 1), atol=0.05)
    again = nonrobust.targets(y, C, "rand", rand_targets="all", generator=torch.Generator().manual_seed(1))
    assert torch.equal(t_all, again)


def test_bad_target_options_raise_user_errors():
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(UserError):
        nonrobust.targets(y, C, "sideways")
    with pytest.raises(UserError):
        nonrobust.targets(y, C, "rand", rand_targets="some")


# ---------------------------------------------------------------------------------- the constructions


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 8 / 255, 1 / 255), ("l2", 1.0, 0.2)])
def test_targeted_attack_moves_predictions_to_targets(task, norm, eps, alpha):
    _, _, ds, model = task
    split = loading.Split(ds.train.images[:48], ds.train.labels[:48])
    images, t, success = nonrobust.nonrobust(model, split, C, mode="det", norm=norm, eps=eps, step_size=alpha,
                                            steps=12, batch_size=20, progress=False)
    assert images.dtype == torch.uint8 and images.shape == split.images.shape
    assert torch.equal(t, (split.labels + 1) % C)
    with torch.no_grad():
        before = (model(loading.as_float(split.images)).argmax(1) == t).float().mean().item()
        after_pred = model(loading.as_float(images)).argmax(1)
    # "rounded": the images the npz holds; "float": the attack's iterates before rounding
    assert torch.equal(success["rounded"], after_pred == t)
    assert success["rounded"].float().mean().item() >= 0.9 > before + 0.3
    assert success["float"].float().mean().item() >= 0.9
    delta = (images.float() - split.images.float()).flatten(1) / 255
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 0.5 / 255 * (1 if norm == "linf" else 28)).all()   # eps ball, up to rounding


def test_inversion_matches_representation_and_stays_in_box():
    torch.manual_seed(0)
    model = random_model(channels=3)
    x = torch.rand(8, 3, 28, 28)
    x0 = torch.rand(8, 3, 28, 28)
    with torch.no_grad():
        goal = model.features(x)
        start = (model.features(x0) - goal).norm(dim=1) / goal.norm(dim=1)
    # a large step drives many pixels against the box: the clamp must hold them in [0, 1]
    x_r, rel = robust.invert(model, x, x0, steps=10, step_size=2.0)
    assert x_r.min() >= 0 and x_r.max() <= 1 and torch.isfinite(x_r).all()
    assert (x_r == 0).any() or (x_r == 1).any()
    x_r, rel = robust.invert(model, x, x0, steps=30, step_size=0.1)
    assert x_r.min() >= 0 and x_r.max() <= 1
    assert rel.mean() < 0.5 * start.mean()
    # from the target itself the distance is 0 and stays finite (no 0/0 in the gradient)
    x_same, rel_same = robust.invert(model, x, x.clone(), steps=2, step_size=0.1)
    assert torch.isfinite(x_same).all() and torch.isfinite(rel_same).all()


def test_robust_dataset_keeps_labels_and_never_starts_from_itself(task):
    _, _, ds, model = task
    split = loading.Split(ds.train.images[:40], ds.train.labels[:40])
    images, labels, stats = robust.robust(model, split, steps=3, step_size=0.1, init="other", seed=1,
                                            batch_size=16, progress=False)
    assert images.dtype == torch.uint8 and images.shape == split.images.shape
    assert torch.equal(labels, split.labels)
    assert not (images == split.images).flatten(1).all(1).any()
    assert 0 <= stats["source_acc"] <= 1 and stats["rep_rel_dist"] >= 0
    noise, _, _ = robust.robust(model, split, steps=2, step_size=0.1, init="noise", seed=1, batch_size=16,
                                  progress=False)
    assert not torch.equal(noise, images)


def test_attack_success_counts_only_images_given_a_new_label():
    settings = {"task": "synthetic", "size": 28, "arch": "cnn-small", "norm": "none", "eps": 0.0, "seed": 2}
    # image 1 kept its own label as target: a "success" that needed no attack, so it does not count
    success = {"rounded": torch.tensor([True, True, False, True, True]),
               "float": torch.tensor([True, True, True, True, True])}
    moved = torch.tensor([True, False, True, True, True])
    df = results.validate(nonrobust.attack_success_table(settings, mode="rand", norm="linf", eps=8 / 255,
                                                        success=success, moved=moved))
    rows = df.set_index("metric")
    assert rows.loc["attack_success", "value"] == 0.75 and rows.loc["attack_success", "n"] == 4
    assert rows.loc["attack_success_before_rounding", "value"] == 1.0
    assert rows.loc["target_is_label", "value"] == pytest.approx(0.2) and rows.loc["target_is_label", "n"] == 5
    row = df.iloc[0]
    assert (row.eval_kind, row.train_data, row.eval_norm) == ("features", "drand", "linf")
    assert row.eval_eps == pytest.approx(8 / 255)
    assert (row.train_norm, row.train_eps, row.seed) == ("none", 0.0, 2)


# ----------------------------------------------------------------------------------------------- CLI


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_nonrobust_npz_loads_trains_and_evaluates_on_original(task, capsys, tmp_path):
    root, d, ds, _ = task
    npz, table = tmp_path / "ddet.npz", tmp_path / "ddet.parquet"
    code, out, err = run(["features", "nonrobust", "--checkpoint", str(root / "std.pt"), "--data", str(d),
                          "--mode", "det", "--norm", "linf", "--eps", "8/255", "--step-size", "0.01",
                          "--steps", "3", "--out", str(npz), "--table", str(table)], capsys)
    assert code == 0, err
    new = loading.load("synthetic", 28, npz)     # the loader's own validation
    assert torch.equal(new.train.labels, (ds.train.labels + 1) % C)
    for split in ("val", "test"):
        assert torch.equal(getattr(new, split).images, getattr(ds, split).images)
        assert torch.equal(getattr(new, split).labels, getattr(ds, split).labels)
    assert ((new.train.images.int() - ds.train.images.int()).abs() <= 8).all()
    assert not torch.equal(new.train.images, ds.train.images)
    tab = results.read_table(table).set_index("metric")
    assert set(tab.index) == {"attack_success", "attack_success_before_rounding", "target_is_label"}
    assert set(tab.train_data) == {"ddet"} and set(tab.eval_norm) == {"linf"}
    assert tab.loc["attack_success", "n"] == len(ds.train) and tab.loc["target_is_label", "value"] == 0
    # train on it, then evaluate on the task's own test split: rows carry train_data
    ckpt, ev = tmp_path / "m.pt", tmp_path / "eval.parquet"
    code, _, err = run(["train", "--task", "synthetic", "--size", "28", "--arch", "cnn-small", "--norm", "none",
                        "--eps", "0", "--seed", "0", "--data", str(npz),
                        "--train-data", "ddet", "--epochs", "1", "--out", str(ckpt)], capsys)
    assert code == 0, err
    code, _, err = run(["evaluate", "--checkpoint", str(ckpt), "--data", str(d), "--attack-norm", "linf",
                        "--attack-eps", "4/255", "--attack-steps", "2", "--out", str(ev)], capsys)
    assert code == 0, err
    tab = results.read_table(ev)
    assert set(tab.train_data) == {"ddet"} and set(tab.n) == {len(ds.test)}


def test_model_on_a_constructed_dataset_is_fresh(task, capsys, tmp_path):
    """Same grid seed as the source cell, yet other initial weights and batch order; kept epoch = last."""
    from medgrid import models, seeding

    root, d, ds, _ = task
    grid_seed = 0  # the source cell's (std.pt's) seed
    source = seeding.training_seeds(grid_seed, "original")
    assert source == {"init": grid_seed, "order": grid_seed, "attack": grid_seed + 1}  # cells as always
    drand = seeding.training_seeds(grid_seed, "drand")
    assert drand["init"] != source["init"] and drand["order"] != source["order"]
    assert drand != seeding.training_seeds(grid_seed, "ddet")
    assert seeding.training_seeds(grid_seed, "drand") == drand  # reproducible

    def initial_weights(init_seed):
        seeding.seed_everything(init_seed)
        return models.build("cnn-small", 1, C, 28).state_dict()

    src_w, new_w = initial_weights(source["init"]), initial_weights(drand["init"])
    assert any(not torch.equal(src_w[k], new_w[k]) for k in src_w if src_w[k].is_floating_point())
    # through the CLI, as the workflow calls it: --seed is the grid seed
    npz, ckpt = tmp_path / "drand.npz", tmp_path / "m.pt"
    assert run(["features", "nonrobust", "--checkpoint", str(root / "std.pt"), "--data", str(d), "--mode", "rand",
                "--steps", "1", "--out", str(npz), "--table", str(tmp_path / "t.parquet")], capsys)[0] == 0
    code, out, err = run(["train", "--task", "synthetic", "--size", "28", "--arch", "cnn-small", "--norm", "none",
                          "--seed", str(grid_seed), "--data", str(npz),
                          "--train-data", "drand", "--epochs", "2", "--out", str(ckpt)], capsys)
    assert code == 0, err
    settings = checkpoint.load(ckpt)[1]
    assert (settings["init_seed"], settings["order_seed"]) == (drand["init"], drand["order"])
    assert settings["seed"] == grid_seed and settings["selection"] == "last" and settings["best_epoch"] == 2
    # selecting on the original validation labels would leak them: refused
    code, _, err = run(["train", "--task", "synthetic", "--size", "28", "--arch", "cnn-small", "--norm", "none",
                        "--data", str(npz), "--train-data", "drand", "--epochs", "1",
                        "--selection", "best_val", "--out", str(tmp_path / "leak.pt")], capsys)
    assert code == 2 and "cannot select its epoch on the validation split" in err
    assert not (tmp_path / "leak.pt").exists()


def test_cli_rand_and_robust(task, capsys, tmp_path):
    root, d, ds, _ = task
    npz = tmp_path / "drand.npz"
    code, _, err = run(["features", "nonrobust", "--checkpoint", str(root / "std.pt"), "--data", str(d),
                        "--mode", "rand", "--rand-targets", "other", "--steps", "2", "--out", str(npz),
                        "--table", str(tmp_path / "drand.parquet")], capsys)
    assert code == 0, err
    new = loading.load("synthetic", 28, npz)
    assert not (new.train.labels == ds.train.labels).any()
    assert results.read_table(tmp_path / "drand.parquet").train_data.iloc[0] == "drand"
    npz = tmp_path / "drobust.npz"
    code, _, err = run(["features", "robust", "--checkpoint", str(root / "rob.pt"), "--data", str(d),
                        "--steps", "3", "--out", str(npz), "--table", str(tmp_path / "drobust.parquet")], capsys)
    assert code == 0, err
    new = loading.load("synthetic", 28, npz)
    assert torch.equal(new.train.labels, ds.train.labels)
    tab = results.read_table(tmp_path / "drobust.parquet")
    assert set(tab.train_data) == {"drobust"} and set(tab.train_norm) == {"linf"}


@pytest.mark.parametrize("argv,needle", [
    (["nonrobust", "--checkpoint", "rob.pt", "--mode", "rand"], "needs a standard"),
    (["robust", "--checkpoint", "std.pt"], "needs an adversarially trained"),
    (["nonrobust", "--checkpoint", "std.pt", "--mode", "det", "--steps", "0"], "--steps"),
    (["nonrobust", "--checkpoint", "std.pt", "--mode", "det", "--eps", "0"], "--eps"),
    (["robust", "--checkpoint", "rob.pt", "--step-size", "-1"], "--step-size"),
    (["nonrobust", "--checkpoint", "missing.pt", "--mode", "det"], "missing checkpoint"),
])
def test_cli_bad_input_gives_one_line(task, capsys, tmp_path, argv, needle):
    root, d, _, _ = task
    argv = [a if not a.endswith(".pt") else str(root / a) for a in argv]
    out = tmp_path / "x.npz"
    code, _, err = run(["features", *argv, "--data", str(d), "--out", str(out),
                        "--table", str(tmp_path / "x.parquet")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medgrid: error:") and needle in lines[0]
    assert not out.exists()


def test_cli_allow_any_source(task, capsys, tmp_path):
    root, d, _, _ = task
    code, _, err = run(["features", "nonrobust", "--checkpoint", str(root / "rob.pt"), "--allow-any-source",
                        "--data", str(d), "--mode", "det", "--steps", "1", "--out", str(tmp_path / "x.npz"),
                        "--table", str(tmp_path / "x.parquet")], capsys)
    assert code == 0, err
    assert pd.read_parquet(tmp_path / "x.parquet").train_norm.iloc[0] == "linf"


# ----------------------------------------------------------------------- texture alignment (ground truth)


def test_alignment_is_one_along_target_minus_source_and_about_zero_for_noise():
    from medgrid.data import synthetic
    from medgrid.features import alignment

    patterns = synthetic.texture_patterns(C, 28, seed=0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, 200)
    t = (y + rng.integers(1, C, 200)) % C
    for channels in (1, 3):
        exact = 3 * (patterns[t] - patterns[y]).astype(np.int16)  # grey levels, as the datasets hold them
        exact = exact if channels == 1 else np.repeat(exact[..., None], 3, axis=-1)
        align, share = alignment.per_image(exact, y, t, patterns)
        np.testing.assert_allclose(align, 1.0)
        np.testing.assert_allclose(share, 0.0, atol=1e-12)
        # the opposite direction (towards the source) is -1
        assert np.allclose(alignment.per_image(-exact, y, t, patterns)[0], -1.0)
        noise = rng.integers(-4, 5, size=exact.shape)
        align, share = alignment.per_image(noise, y, t, patterns)
        pixels = exact[0].size
        assert abs(align.mean()) < 0.01 and align.std() < 3 / np.sqrt(pixels)
        assert share.mean() == pytest.approx(1 - C / pixels, abs=0.01)
    # undefined where the label did not change or the image was not moved
    align, share = alignment.per_image(np.zeros((2, 28, 28)), np.array([0, 1]), np.array([0, 2]), patterns)
    assert np.isnan(align).all() and np.isnan(share).all()


def test_the_data_seeds_textures_are_checked_against_the_images():
    from medgrid.data import synthetic
    from medgrid.features import alignment

    arrays = synthetic.generate("synthetic", 28, seed=0, n_train=200, n_val=4, n_test=4)
    images, labels = arrays["train_images"], arrays["train_labels"]
    assert alignment.pattern_match(images, labels, synthetic.texture_patterns(C, 28, seed=0)) > 0.99
    assert alignment.pattern_match(images, labels, synthetic.texture_patterns(C, 28, seed=5)) < 0.9


def test_cli_alignment_rows_name_the_attack_setting(task, capsys, tmp_path):
    root, d, ds, _ = task
    npz = tmp_path / "ddet.npz"
    assert run(["features", "nonrobust", "--checkpoint", str(root / "std.pt"), "--data", str(d), "--mode", "det",
                "--steps", "5", "--out", str(npz), "--table", str(tmp_path / "made.parquet")], capsys)[0] == 0
    made = results.read_table(tmp_path / "made.parquet")
    assert set(made.construction) == {"l2-0.5-5x0.1"} and set(made.model_seed) == {0}
    out = tmp_path / "align.parquet"
    code, printed, err = run(["features", "alignment", "--features", str(npz), "--name", "ddet", "--checkpoint",
                              str(root / "std.pt"), "--data", str(d), "--data-seed", "0", "--out", str(out)], capsys)
    assert code == 0, err
    tab = results.read_table(out).set_index("metric")
    assert set(tab.index) == {"texture_alignment", "off_texture_share"}
    assert (tab.construction == "l2-0.5-5x0.1").all() and (tab.train_data == "ddet").all()
    assert (tab.eval_norm == "l2").all() and (tab.eval_eps == 0.5).all() and (tab.train_norm == "none").all()
    assert -1 <= tab.loc["texture_alignment", "value"] <= 1 and 0 <= tab.loc["off_texture_share", "value"] <= 1
    assert 0 < tab.loc["texture_alignment", "n"] <= len(ds.train)
    # the textures of another data seed do not match the images: refused, nothing written
    code, _, err = run(["features", "alignment", "--features", str(npz), "--name", "ddet", "--checkpoint",
                        str(root / "std.pt"), "--data", str(d), "--data-seed", "7", "--out",
                        str(tmp_path / "x.parquet")], capsys)
    assert code == 2 and "another seed" in err and not (tmp_path / "x.parquet").exists()
    code, _, err = run(["features", "alignment", "--features", str(npz), "--name", "drand-l2-0.5-10x0.1",
                        "--checkpoint", str(root / "std.pt"), "--data", str(d), "--data-seed", "0", "--out",
                        str(tmp_path / "x.parquet")], capsys)
    assert code == 2 and "was made by l2-0.5-5x0.1" in err


# ------------------------------------------------------------------- several models per constructed dataset


def test_model_seeds_give_independent_models_and_model_0_keeps_its_seeds():
    from medgrid import seeding

    # model 0: the stream the first (and before issue 22 the only) model always drew from
    dataset = int.from_bytes(b"drand", "little")
    first = seeding.numpy_rng(3, seeding.STREAM_INDEPENDENT_MODEL, dataset).integers(0, 2**31, size=3)
    assert seeding.training_seeds(3, "drand") == dict(zip(("init", "order", "attack"), map(int, first)))
    assert seeding.training_seeds(3, "drand", 0) == seeding.training_seeds(3, "drand")
    models = [seeding.training_seeds(3, "drand", k) for k in range(4)]
    assert len({m["init"] for m in models}) == 4 and len({m["order"] for m in models}) == 4
    assert seeding.training_seeds(3, "ddet", 1) != models[1]
    with pytest.raises(ValueError):
        seeding.training_seeds(3, "original", 1)


def test_cli_train_records_construction_and_model_seed(task, capsys, tmp_path):
    from medgrid import seeding

    root, d, ds, _ = task
    npz = tmp_path / "drand.npz"
    assert run(["features", "nonrobust", "--checkpoint", str(root / "std.pt"), "--data", str(d), "--mode", "rand",
                "--steps", "2", "--out", str(npz), "--table", str(tmp_path / "t.parquet")], capsys)[0] == 0
    base = ["train", "--task", "synthetic", "--size", "28", "--arch", "cnn-small", "--norm", "none", "--seed", "0",
            "--data", str(npz), "--epochs", "1"]
    ckpt = tmp_path / "m1.pt"
    code, _, err = run(base + ["--train-data", "drand-l2-0.5-2x0.1", "--model-seed", "1", "--out", str(ckpt)], capsys)
    assert code == 0, err
    settings = checkpoint.read_settings(ckpt)
    assert (settings["train_data"], settings["construction"], settings["model_seed"]) == ("drand", "l2-0.5-2x0.1", 1)
    assert settings["init_seed"] == seeding.training_seeds(0, "drand", 1)["init"]
    ev = tmp_path / "e.parquet"
    assert run(["evaluate", "--checkpoint", str(ckpt), "--data", str(d), "--out", str(ev)], capsys)[0] == 0
    rows = results.read_table(ev)
    assert set(rows.model_seed) == {1} and set(rows.construction) == {"l2-0.5-2x0.1"} and "auc" in set(rows.metric)
    # the plain name reads the setting from the file; a name that contradicts the file is refused
    code, _, err = run(base + ["--train-data", "drand", "--out", str(tmp_path / "m0.pt")], capsys)
    assert code == 0 and checkpoint.read_settings(tmp_path / "m0.pt")["construction"] == "l2-0.5-2x0.1"
    code, _, err = run(base + ["--train-data", "drand-l2-0.5-100x0.1", "--out", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "was made by l2-0.5-2x0.1" in err
    code, _, err = run(base[:-4] + ["--data", str(d), "--model-seed", "1", "--out", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "--model-seed numbers the models trained on a constructed dataset" in err
    code, _, err = run(base + ["--train-data", "drobust-l2-0.5-2x0.1", "--out", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "unknown training data" in err
