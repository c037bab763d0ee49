"""Training health: a deliberately collapsed model is flagged in the table, the logs and the charts, a healthy
one is not; the per-epoch histories reach the training-curve chart; epsilon warm-up ramps and is recorded."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from medgrid import checkpoint, cli, results
from medgrid.data import loading, npz, synthetic, tasks
from medgrid.errors import UserError
from medgrid.evaluation import health
from medgrid.names import DEGENERATE_MARGIN, EVAL_KINDS, HEALTH_METRICS
from medgrid.report import chart_features, chart_parts, chart_training, charts, history
from medgrid.training import loop, methods

N = dict(n_train=400, n_val=100, n_test=100)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches (tests/conftest.py)


def _spec_values(chart) -> pd.DataFrame:
    spec = chart.to_dict()
    frames = [pd.DataFrame(v).dropna(axis=1, how="all") for v in spec["datasets"].values() if v]
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------ the verdict


def test_assess_flags_one_class_and_chance_only():
    labels = np.array([0, 1, 2, 3] * 25)
    one = health.assess(labels, np.zeros(100, int), 4)
    assert one.degenerate and one.predicted_classes == 1 and one.chance_margin == pytest.approx(0.0)
    perfect = health.assess(labels, labels, 4)
    assert not perfect.degenerate and perfect.predicted_classes == 4 and perfect.chance_margin == pytest.approx(0.75)
    # several classes predicted, but balanced accuracy within the margin of chance: flagged too
    rng = np.random.default_rng(0)
    noise = rng.permutation(labels)
    v = health.assess(labels, noise, 4)
    assert v.predicted_classes == 4
    assert v.degenerate == (abs(v.balanced_acc - 0.25) <= DEGENERATE_MARGIN)
    just_above = labels.copy()
    just_above[:60] = (labels[:60] + 1) % 4   # 40% right: 15 points above chance
    assert not health.assess(labels, just_above, 4).degenerate
    rows = health.rows(results.cell_columns({"task": "synthetic", "size": 28, "arch": "cnn-small", "norm": "none",
                                             "eps": 0, "seed": 0}), one, 100)
    table = results.from_rows(rows)
    assert set(table.eval_kind) == {"health"} and "health" in EVAL_KINDS
    assert list(table.metric) == list(HEALTH_METRICS)
    assert dict(zip(table.metric, table.value)) == {"degenerate": 1.0, "predicted_classes": 1.0,
                                                    "chance_margin": 0.0}
    assert (table.eval_norm == "none").all() and (table.eval_eps == 0).all() and (table.n == 100).all()
    assert (table.corruption == "none").all() and (table.severity == 0).all()
    assert "degenerate model" in health.message(one) and health.message(perfect) is None
    assert "a result" in health.message(one, "drand") and "not a broken model" in health.message(one, "drand")


# ---------------------------------------------------------------------------------- collapsed vs healthy


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """The synthetic task (400 training images) and a copy whose training labels are all class 0; a model
    trained on each (standard, 2 epochs) and on the real labels with L-inf 2/255 and a 1-epoch warm-up
    (3 epochs), each evaluated: {name: (checkpoint, table, train stderr, evaluate stderr)}."""
    root = tmp_path_factory.mktemp("health")
    arrays = synthetic.generate("synthetic", 28, seed=0, **N)
    npz.write_npz(root / "synthetic.npz", arrays)
    one = dict(arrays, train_labels=np.zeros_like(arrays["train_labels"]))
    npz.write_npz(root / "one-class.npz", one)
    runs = {"healthy": ("synthetic.npz", ["--norm", "none", "--eps", "0", "--epochs", "2"]),
            "collapsed": ("one-class.npz", ["--norm", "none", "--eps", "0", "--epochs", "2"]),
            "warmup": ("synthetic.npz", ["--norm", "linf", "--eps", "2/255", "--epochs", "3", "--attack-steps", "2",
                                         "--eps-warmup-epochs", "1"])}
    out = {}
    for name, (file, args) in runs.items():
        ckpt, table = root / f"{name}.pt", root / f"{name}.parquet"
        common = ["--data", str(root / file)]
        train_err, eval_err = io.StringIO(), io.StringIO()   # what the commands' logs would hold
        with contextlib.redirect_stderr(train_err):
            assert cli.main(["train", "--task", "synthetic", "--size", "28", "--arch", "cnn-small", "--seed", "0",
                             *common, *args, "--batch-size", "64", "--out", str(ckpt)]) == 0
        with contextlib.redirect_stderr(eval_err):
            assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root / "synthetic.npz"), "--attack-norm", "linf",
                             "--attack-eps", "2/255", "--attack-steps", "2", "--out", str(table)]) == 0
        out[name] = (ckpt, results.read_table(table), train_err.getvalue(), eval_err.getvalue())
    return out


def _health(table) -> dict:
    rows = table[table.eval_kind == "health"]
    return dict(zip(rows.metric, rows.value))


def test_collapsed_model_is_flagged_in_table_and_logs(cells):
    _, table, train_err, eval_err = cells["collapsed"]
    h = _health(table)
    assert h["degenerate"] == 1.0 and h["predicted_classes"] == 1.0
    clean = table[(table.eval_kind == "clean") & (table.metric == "balanced_acc")].value.item()
    assert clean == pytest.approx(0.25) and h["chance_margin"] == pytest.approx(0.0)
    assert (table[table.eval_kind == "health"].n == N["n_test"]).all()
    warn = [line for line in train_err.splitlines() if line.startswith("medgrid: warning:")]
    assert len(warn) == 1 and "degenerate model" in warn[0] and "validation split" in warn[0]
    warn = [line for line in eval_err.splitlines() if line.startswith("medgrid: warning:")]
    # trained on the one-class copy, evaluated on the task's file: said, beside the health warning
    other = [line for line in warn if "differs from the data" in line]
    warn = [line for line in warn if line not in other]
    assert len(other) == 1 and "one-class.npz" not in other[0] and "synthetic.npz" in other[0]
    assert len(warn) == 1 and "predicts 1 of 4 classes on the test split" in warn[0]
    _, settings = checkpoint.load(cells["collapsed"][0])
    assert settings["val_health"]["degenerate"] and settings["val_health"]["predicted_classes"] == 1


def test_healthy_model_is_not_flagged(cells):
    _, table, train_err, eval_err = cells["healthy"]
    h = _health(table)
    assert h["degenerate"] == 0.0 and h["predicted_classes"] >= 2 and h["chance_margin"] > DEGENERATE_MARGIN
    assert "warning" not in train_err and "warning" not in eval_err


def test_charts_mark_the_collapsed_cell_only(cells):
    healthy, collapsed = cells["healthy"][1], cells["collapsed"][1]
    # the collapsed model as an L2 cell and as a model trained on D_rand, beside the healthy standard model
    df = pd.concat([healthy, collapsed.assign(train_norm="l2", train_eps=0.5),
                    collapsed.assign(train_data="drand")], ignore_index=True)
    s = chart_parts.seed_view(results.validate(df), "balanced_acc")
    by = s[s.eval_kind == "clean"].set_index(["train_norm", "train_data"])
    assert not by.loc[("none", "original"), "degenerate"]
    assert by.loc[("l2", "original"), "collapsed"] and "DEGENERATE" in by.loc[("l2", "original"), "health_note"]
    # D_rand at chance: flagged, labelled a result, not drawn as a broken model
    assert by.loc[("none", "drand"), "degenerate"] and not by.loc[("none", "drand"), "collapsed"]
    assert "a result" in by.loc[("none", "drand"), "health_note"]
    chart = charts.robust_vs_eps(s, "balanced_acc")
    spec = str(chart.to_dict())
    assert "datum.collapsed" in spec and "'filled': False" in spec and "training health" in spec
    assert "Hollow: degenerate model" in spec
    values = _spec_values(chart)
    assert set(values[values.collapsed].setting) == {"L2 0.5"}
    assert not values[values.setting == "standard"].collapsed.any()
    bars = _spec_values(chart_features.nonrobust_features(results.validate(df), "balanced_acc"))
    assert bars[bars.train_data == "drand"].test_text.str.contains("at chance").all()
    assert not bars[bars.train_data == "original"].test_text.str.contains("at chance").any()
    # a table without health rows (older runs) marks nothing
    plain = chart_parts.seed_view(results.validate(df[df.eval_kind != "health"]), "balanced_acc")
    assert not plain.degenerate.any() and (plain.health_note == "not checked (no health rows)").all()


# ------------------------------------------------------------------------------------ training curves


def test_history_table_and_training_curves(cells, tmp_path):
    paths = [cells[name][0] for name in ("healthy", "collapsed", "warmup")]
    paths[1] = tmp_path / "collapsed.pt"   # another seed, so that the two standard cells differ
    ckpt_model, settings = checkpoint.load(cells["collapsed"][0])
    checkpoint.save(paths[1], ckpt_model, dict(settings, seed=1))
    assert cli.main(["history", *map(str, paths), "--out", str(tmp_path / "history.parquet")]) == 0
    h = history.read(tmp_path / "history.parquet")
    assert len(h) == 2 + 2 + 3
    for path in paths:
        s = checkpoint.read_settings(path)
        mine = h[(h.seed == s["seed"]) & (h.train_norm == s["norm"])]
        assert list(mine.epoch) == list(range(1, len(s["history"]) + 1))
        assert mine[mine.selected].epoch.tolist() == [s["best_epoch"]]
    with pytest.raises(UserError, match="same cell and epoch twice"):
        history.collect([paths[0], paths[0]], tmp_path / "dup.parquet")
    with pytest.raises(UserError, match="missing checkpoint"):
        history.collect([tmp_path / "nope.pt"], tmp_path / "x.parquet")
    summary = pd.concat([cells["healthy"][1], cells["collapsed"][1].assign(seed=1), cells["warmup"][1]])
    chart = chart_training.training_curves(h, summary)
    values = _spec_values(chart)
    assert set(values.quantity_key) == {"train_loss", "train_acc", "val_balanced_acc"}
    assert set(values[values.collapsed].seed) == {1}
    assert values[values.selected].groupby(["seed", "train_norm"]).epoch.nunique().eq(1).all()
    assert "datum.selected" in str(chart.to_dict())
    assert chart_training.training_curves(h.iloc[:0]) is None


# --------------------------------------------------------------------------------------- eps warm-up


def test_warmup_factor_ramps_per_batch():
    assert [loop.warmup_factor(0, it, 4) for it in range(3)] == [1.0, 1.0, 1.0]
    ramp = [loop.warmup_factor(2, it, 4) for it in range(10)]
    assert ramp == pytest.approx([1 / 8, 2 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 7 / 8, 1.0, 1.0, 1.0])


def _recorded_training(monkeypatch, ds, **hp):
    """Train with every training attack's (eps, alpha) recorded (PGD's and FGSM-RS's perturb, TRADES' perturb_kl;
    the overfitting guard's own PGD is not a training attack)."""
    calls = []
    for name in ("perturb", "perturb_kl"):
        real = getattr(methods, name)

        def recording(*args, _real=real, **kw):
            calls.append((kw["eps"], kw["alpha"]))
            return _real(*args, **kw)

        monkeypatch.setattr(methods, name, recording)
    _, settings = loop.train(ds, arch="cnn-small", norm="linf", eps=4 / 255, seed=0, progress=False,
                              hp=loop.HParams(batch_size=100, attack_steps=1, **hp))
    return calls, settings


@pytest.mark.parametrize("method, step", [("pgd", 2.5), ("trades", 2.5), ("fgsm-rs", 1.25)])
def test_warmup_ramps_eps_and_step_and_selects_after_it(monkeypatch, tmp_path, method, step):
    npz.write_npz(tmp_path / "synthetic.npz", synthetic.generate("synthetic", 28, seed=0, n_train=300, n_val=50,
                                                                 n_test=10))
    ds = loading.load("synthetic", 28, tasks.npz_path(tmp_path, "synthetic", 28))
    eps, alpha = 4 / 255, step * 4 / 255  # one step: Madry's 2.5 eps / steps; Wong et al.'s 1.25 eps
    # k = 0: every batch at exactly the training epsilon and step, as before warm-up existed
    calls, settings = _recorded_training(monkeypatch, ds, epochs=2, method=method)
    assert settings["method"] == method
    assert calls == [(eps, alpha)] * 6
    assert settings["hparams"]["eps_warmup_epochs"] == 0
    # k = 2 of 3 epochs (3 batches each): a per-batch ramp, then the full epsilon
    calls, settings = _recorded_training(monkeypatch, ds, epochs=3, eps_warmup_epochs=2, method=method)
    factors = [e / eps for e, _ in calls]
    assert factors == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0, 1.0, 1.0, 1.0])
    assert [a / alpha for _, a in calls] == pytest.approx(factors)
    assert settings["hparams"]["eps_warmup_epochs"] == 2
    assert settings["best_epoch"] == 3    # the only epoch trained at the full epsilon from its start
    assert [h["epoch_eps"] for h in settings["history"]] == pytest.approx([eps / 2, eps, eps])
    with pytest.raises(ValueError, match="smaller than epochs"):
        loop.train(ds, arch="cnn-small", norm="linf", eps=eps, seed=0, progress=False,
                    hp=loop.HParams(epochs=2, eps_warmup_epochs=2))


def test_warmup_is_recorded_and_checked_by_the_command(cells, capsys, tmp_path):
    _, settings = checkpoint.load(cells["warmup"][0])
    assert settings["hparams"]["eps_warmup_epochs"] == 1 and settings["best_epoch"] >= 2
    root = cells["warmup"][0].parent
    base = ["train", "--task", "synthetic", "--arch", "cnn-small", "--data", str(root / "synthetic.npz"), "--out",
            str(tmp_path / "m.pt")]
    for extra, needle in ((["--norm", "none", "--eps-warmup-epochs", "1"], "adversarial training"),
                          (["--norm", "l2", "--eps", "0.5", "--epochs", "3", "--eps-warmup-epochs", "3"],
                           "smaller than --epochs"),
                          (["--norm", "l2", "--eps", "0.5", "--eps-warmup-epochs", "-1"], ">= 0")):
        assert cli.main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("medgrid: error:") and needle in err, err
    assert not (tmp_path / "m.pt").exists()
