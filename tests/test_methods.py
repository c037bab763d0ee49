"""Training methods: TRADES' loss against the reference formula, FGSM-RS against Wong et al.'s step, the
catastrophic-overfitting guard, the method's identity in the codec, the checkpoint and the tables, and every
method through the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from medgrid import checkpoint, cli, labels, models, names, results, train_method
from medgrid.data import loading, npz, synthetic, tasks
from medgrid.errors import UserError
from medgrid.evaluation import health
from medgrid.report import chart_parts, history
from medgrid.training import guard, loop, methods

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches (tests/conftest.py)
SCHEMA = yaml.safe_load((Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _batch(n=16, channels=1, size=28, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, channels, size, size), generator=g)
    y = torch.arange(n) % classes
    return x, y


def _model(seed=0, channels=1, classes=4):
    torch.manual_seed(seed)
    model = models.build("cnn-small", channels, classes, 28)
    model.normalize.fit((torch.rand(64, channels, 28, 28) * 255).to(torch.uint8))
    return model.train()


# ---------------------------------------------------------------------------------------- TRADES


def reference_trades(model, x, y, *, noise, eps, step, steps, beta):
    """TRADES as Zhang et al.'s reference implementation (yaodongyu/TRADES, ``trades_loss``, L-inf) computes it,
    written out independently here (no medgrid attack code, no fused op): start at x + 0.001 * noise; each step
    ascends the summed KL(softmax(f(x)) || softmax(f(x'))) (model in eval mode) by ``step`` * its sign, clips to
    [x - eps, x + eps] and to [0, 1]; then, in train mode, CE(f(x), y) + beta * KL(sum) / batch size."""
    kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x.detach() + 0.001 * noise
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / len(x)) * kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
    return x_adv, loss_natural + beta * loss_robust


@pytest.mark.parametrize("beta", [1.0, 6.0])
def test_trades_loss_equals_the_reference_formula(beta):
    x, y = _batch()
    eps, steps = 8 / 255, 3
    ours = methods.build("trades", "linf", steps=steps, param=beta)
    alpha = ours.alpha(eps)
    assert alpha == pytest.approx(2.5 * eps / steps)  # the same inner budget as PGD-AT
    model = _model()
    x_adv = ours.examples(model, x, y, eps=eps, alpha=alpha, generator=torch.Generator().manual_seed(7))
    assert model.training  # the attack restores train mode
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    ref_adv, ref_loss = reference_trades(model, x, y, noise=noise, eps=eps, step=alpha, steps=steps, beta=beta)
    torch.testing.assert_close(x_adv, ref_adv, atol=1e-6, rtol=0)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > eps / 2  # the inner maximisation moved
    ref_grads = torch.autograd.grad(ref_loss, list(model.parameters()))
    loss, logits = ours.loss(model, x, x_adv, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    # the gradient flows through both predictions, the clean one included, as in the reference
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x_adv))  # the history's accuracy: on the attacked inputs


def test_trades_with_beta_zero_limit_is_clean_cross_entropy_and_l2_stays_in_the_ball():
    x, y = _batch(seed=1)
    model = _model(seed=1)
    tiny = methods.build("trades", "l2", steps=2, param=1e-12)
    x_adv = tiny.examples(model, x, y, eps=0.5, alpha=tiny.alpha(0.5), generator=torch.Generator().manual_seed(0))
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    loss, _ = tiny.loss(model, x, x_adv, y)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------- FGSM-RS


def test_fgsm_rs_is_one_projected_step_of_one_and_a_quarter_eps_from_a_uniform_start():
    x, y = _batch(seed=2)
    model = _model(seed=2)
    eps = 8 / 255
    fast = methods.build("fgsm-rs", "linf", steps=7)  # attack_steps does not apply: one step
    assert fast.steps == 1 and fast.alpha(eps) == pytest.approx(1.25 * eps) and fast.guarded
    x_adv = fast.examples(model, x, y, eps=eps, alpha=fast.alpha(eps), generator=torch.Generator().manual_seed(3))
    # Wong et al. (train_fgsm.py), written out: delta ~ U(-eps, eps) kept in the image box, one signed step of
    # alpha on the cross-entropy, delta clipped to [-eps, eps] and to the box (the attack sees eval mode)
    delta = (torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1) * eps
    start = (x + delta).clamp(0, 1)
    model.eval()
    start.requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(model(start), y, reduction="sum"), start)[0]
    model.train()
    delta = (start.detach() - x + 1.25 * eps * grad.sign()).clamp(-eps, eps)
    torch.testing.assert_close(x_adv, (x + delta).clamp(0, 1), atol=1e-6, rtol=0)
    assert methods.build("fgsm-rs", "linf", steps=1, step_size=0.1).alpha(eps) == 0.1


def test_the_registry_is_the_vocabulary():
    assert tuple(methods.METHODS) == names.TRAIN_METHODS
    assert set(labels.METHOD_NAME) == set(names.TRAIN_METHODS)
    assert all(m in names.TRAIN_METHODS for m in names.METHOD_PARAMS)
    assert names.DEFAULT_METHOD == names.TRAIN_METHODS[0] and methods.METHODS[names.DEFAULT_METHOD] is methods.PGD
    props = SCHEMA["properties"]
    others = [m for m in names.TRAIN_METHODS if m != names.DEFAULT_METHOD]
    assert [k for k in props["train_grid"]["properties"] if k not in names.TRAIN_NORMS] == others
    blocks = props["hparams"]["additionalProperties"]["properties"]
    assert [k for k in blocks if k not in ("standard", "adversarial")] == list(names.TRAIN_METHODS)
    for method, (param, default) in names.METHOD_PARAMS.items():
        assert props["train_grid"]["properties"][method]["properties"][param]["default"] == [default]


# ---------------------------------------------------------------------------------------- codec


def test_the_method_codec():
    assert train_method.segment("pgd") == "" and train_method.flags("pgd") == ""
    assert train_method.segment("trades", 6) == train_method.segment("trades", "6.0") == "trades-beta6/"
    assert train_method.segment("trades") == "trades-beta6/"  # the default beta
    assert train_method.segment("trades", 0.5) == "trades-beta0.5/"
    assert train_method.flags("trades", 1) == "--method trades --beta 1"
    assert train_method.segment("fgsm-rs") == "fgsm-rs/" and train_method.flags("fgsm-rs") == "--method fgsm-rs"
    assert train_method.param("pgd") == 0.0 and train_method.param("trades") == 6.0
    for bad, method in ((0, "trades"), (-1, "trades"), ("x", "trades"), (float("inf"), "trades"), (1, "fgsm-rs")):
        with pytest.raises(UserError):
            train_method.param(method, bad)
    with pytest.raises(UserError, match="unknown training method"):
        train_method.segment("mart")
    assert labels.setting_label("linf", 2 / 255) == "L∞ 2/255"  # PGD-AT's labels as always
    assert labels.setting_label("linf", 8 / 255, "trades", 6.0) == "TRADES β=6 L∞ 8/255"
    assert labels.setting_label("l2", 0.5, "fgsm-rs", 0.0) == "FGSM-RS L2 0.5"
    assert labels.setting_label("none", 0, "pgd", 0.0) == "standard"


# ---------------------------------------------------------------------------------------- tables


def _cell(method="pgd", param=0.0, norm="linf", eps=8 / 255, seed=0):
    return results.cell_columns({"task": "synthetic", "size": 28, "arch": "cnn-small", "norm": norm, "eps": eps,
                                 "seed": seed, "method": method, "method_param": param})


def test_an_older_table_gets_the_default_method():
    rows = [results.make_row(_cell(), eval_kind="clean", metric="acc", value=0.5, n=10)]
    old = pd.DataFrame(rows).drop(columns=["train_method", "train_method_param"])
    table = results.validate(old)
    assert list(table.columns) == results.COLUMNS
    assert (table.train_method == "pgd").all() and (table.train_method_param == 0.0).all()
    # a checkpoint written before methods existed: PGD-AT
    old_settings = {"task": "synthetic", "size": 28, "arch": "cnn-small", "norm": "linf", "eps": 0.1, "seed": 0}
    assert results.cell_columns(old_settings)["train_method"] == "pgd"
    with pytest.raises(UserError, match="unknown values"):
        results.validate(pd.DataFrame(rows).assign(train_method="mart"))
    # two methods at one setting are two measurements, not a duplicate
    both = rows + [results.make_row(_cell("trades", 6.0), eval_kind="clean", metric="acc", value=0.5, n=10)]
    assert len(results.from_rows(both)) == 2
    assert results.SETTING[-2:] == ["train_method", "train_method_param"]


# ---------------------------------------------------------------------------------------- the guard


@pytest.fixture(scope="module")
def synthetic_npz(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    path = tasks.npz_path(root, "synthetic", 28)
    npz.write_npz(path, synthetic.generate("synthetic", 28, seed=0, n_train=400, n_val=100, n_test=100))
    return path


def test_the_guard_measures_a_fixed_batch_with_a_fixed_start(synthetic_npz):
    ds = loading.load("synthetic", 28, synthetic_npz)
    one = guard.OverfitGuard(ds.train, batch_size=64, seed=0, norm="linf", eps=8 / 255)
    two = guard.OverfitGuard(ds.train, batch_size=64, seed=0, norm="linf", eps=8 / 255)
    assert torch.equal(one.x, two.x) and one.y.numel() == 64 and len(set(one.y.tolist())) > 1
    model = _model().eval()
    assert one.accuracy(model) == two.accuracy(model)  # same images, same start
    assert one.describe() == {"images": 64, "steps": 5, "alpha": 2 / 255, "eps": 8 / 255, "norm": "linf",
                              "drop": names.OVERFIT_DROP}
    assert guard.collapsed(0.8, 0.59) and not guard.collapsed(0.8, 0.61) and not guard.collapsed(None, 0.0)


def _train(ds, **hp):
    return loop.train(ds, arch="cnn-small", norm="linf", eps=8 / 255, seed=0, progress=False,
                      hp=loop.HParams(batch_size=100, method="fgsm-rs", **hp))


def test_the_guard_stops_a_collapse_and_keeps_an_epoch_before_it(synthetic_npz, monkeypatch):
    """The loop's response to a collapse, on a scripted guard: PGD accuracy 0.70, 0.75, then 0.30 (a fall of 0.45)."""
    ds = loading.load("synthetic", 28, synthetic_npz)
    script = iter([0.70, 0.75, 0.30, 0.9, 0.9])
    monkeypatch.setattr(guard.OverfitGuard, "accuracy", lambda self, model: next(script))
    _, settings = _train(ds, epochs=5, selection="last")
    assert settings["overfit_epoch"] == 3 and settings["best_epoch"] == 2  # stopped; the epoch before is kept
    assert [h["overfit"] for h in settings["history"]] == [False, False, True]
    assert [h["guard_pgd_acc"] for h in settings["history"]] == [0.70, 0.75, 0.30]
    assert "catastrophic overfitting at epoch 3" in health.overfit_message(settings)
    assert "from 0.750 to 0.300" in health.overfit_message(settings)
    rows = results.from_rows(health.overfit_rows(_cell("fgsm-rs"), settings))
    assert list(rows.metric) == [names.OVERFIT_METRIC] and rows.value.tolist() == [1.0] and rows.n.tolist() == [100]
    frame = history.from_settings(settings)
    assert frame.overfit.tolist() == [False, False, True] and frame.selected.tolist() == [False, True, False]
    # best_val keeps the best epoch among those before the collapse
    script = iter([0.70, 0.75, 0.30])
    _, settings = _train(ds, epochs=5)
    assert settings["overfit_epoch"] == 3 and settings["best_epoch"] in (1, 2)
    # no epoch before it can be kept (the first after a 1-epoch warm-up): the guard does not stop the run
    script = iter([0.90, 0.10, 0.10])
    _, settings = _train(ds, epochs=3, eps_warmup_epochs=1, selection="last")
    assert settings["overfit_epoch"] is None and settings["best_epoch"] == 3


def test_the_guard_leaves_a_normal_run_alone(synthetic_npz):
    """A real FGSM-RS run (1.25 eps at L-inf 8/255): the guard measures every epoch and does not fire."""
    ds = loading.load("synthetic", 28, synthetic_npz)
    _, settings = _train(ds, epochs=3)
    accs = [h["guard_pgd_acc"] for h in settings["history"]]
    assert len(accs) == 3 and all(0.0 <= a <= 1.0 for a in accs)
    assert settings["overfit_epoch"] is None and not any(h["overfit"] for h in settings["history"])
    assert settings["method"] == "fgsm-rs" and settings["guard"]["steps"] == guard.STEPS
    rows = health.overfit_rows(_cell("fgsm-rs"), settings)
    assert [r["value"] for r in rows] == [0.0] and health.overfit_message(settings) is None
    # a method without the guard writes no such row
    assert health.overfit_rows(_cell(), {"guard": None}) == []


# ---------------------------------------------------------------------------------------- the command


@pytest.mark.parametrize("method, flags", [("pgd", []), ("trades", ["--beta", "2"]), ("fgsm-rs", [])])
def test_every_method_trains_and_evaluates_through_the_command(synthetic_npz, tmp_path, method, flags):
    out = tmp_path / "model.pt"
    base = ["--data", str(synthetic_npz), "--threads", "1"]
    assert cli.main(["train", "--task", "synthetic", "--arch", "cnn-small", *base, "--norm", "linf", "--eps", "4/255",
                     "--epochs", "2", "--batch-size", "100", "--method", method, *flags, "--out", str(out)]) == 0
    _, settings = checkpoint.load(out)
    assert settings["method"] == method and settings["hparams"]["method"] == method
    assert settings["method_param"] == (2.0 if method == "trades" else 0.0)
    table_path = tmp_path / "eval.parquet"
    assert cli.main(["evaluate", "--checkpoint", str(out), *base, "--attack-norm", "linf", "--attack-eps", "4/255",
                     "--attack-steps", "2", "--out", str(table_path)]) == 0
    table = results.read_table(table_path)
    assert set(table.train_method) == {method} and set(table.train_method_param) == {settings["method_param"]}
    guarded = table[table.metric == names.OVERFIT_METRIC]
    assert len(guarded) == (1 if method == "fgsm-rs" else 0)


@pytest.mark.parametrize("extra, needle", [
    (["--norm", "none", "--method", "trades"], "adversarial training"),
    (["--norm", "linf", "--eps", "2/255", "--beta", "2"], "not a parameter of --method pgd"),
    (["--norm", "linf", "--eps", "2/255", "--method", "fgsm-rs", "--beta", "2"], "not a parameter"),
    (["--norm", "linf", "--eps", "2/255", "--method", "trades", "--beta", "0"], "> 0"),
    (["--norm", "linf", "--eps", "2/255", "--method", "fgsm-rs", "--attack-steps", "3"], "one step"),
])
def test_method_mistakes_are_one_line(extra, needle, tmp_path, capsys):
    code = cli.main(["train", "--task", "synthetic", "--arch", "cnn-small", "--data", str(tmp_path / "d.npz"),
                     "--out", str(tmp_path / "m.pt"), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("medgrid: error:") and needle in err, err
    assert not (tmp_path / "m.pt").exists()


def test_an_older_history_gets_the_new_columns():
    settings = {"task": "synthetic", "size": 28, "arch": "cnn-small", "norm": "linf", "eps": 0.1, "seed": 0,
                "best_epoch": 1, "history": [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5,
                                              "val_balanced_acc": 0.5}]}
    frame = history.from_settings(settings)
    old = frame.drop(columns=["train_method", "train_method_param", "guard_pgd_acc", "overfit"])
    table = history.validate(old)
    assert table.train_method.tolist() == ["pgd"] and np.isnan(table.guard_pgd_acc).all()
    assert not table.overfit.any()


# ---------------------------------------------------------------------------------------- reports


def method_table(seeds=(0, 1)) -> pd.DataFrame:
    """Clean, PGD, worst-case, MedMNIST-C mean and health rows of standard training, PGD-AT, TRADES (beta 1, 6)
    and FGSM-RS at L-inf 4/255 and 8/255 on one task; FGSM-RS's guard stopped seed 1 at 8/255."""
    rng = np.random.default_rng(0)
    settings = [("none", 0.0, "pgd", 0.0)] + [("linf", k / 255, m, p) for m, p in (("pgd", 0.0), ("trades", 1.0),
                                                                                   ("trades", 6.0), ("fgsm-rs", 0.0))
                                               for k in (4, 8)]
    rows = []
    for seed in seeds:
        for norm, eps, method, param in settings:
            c = _cell(method, param, norm, eps, seed)
            clean = 0.95 - 10 * eps + rng.normal(0, 0.005)
            rows.append(results.make_row(c, eval_kind="clean", metric="balanced_acc", value=clean, n=100))
            for kind in ("pgd", "worst"):
                rows.append(results.make_row(c, eval_kind=kind, eval_norm="linf", eval_eps=4 / 255,
                                             metric="balanced_acc", value=clean / 2, n=100))
            rows.append(results.make_row(c, eval_kind="corruption", corruption="mean", metric="balanced_acc",
                                         value=clean - 0.1, n=100))
            rows.append(results.make_row(c, eval_kind="health", metric="degenerate", value=0.0, n=100))
            if method == "fgsm-rs":
                fired = float(seed == 1 and eps > 5 / 255)
                rows.append(results.make_row(c, eval_kind="health", metric=names.OVERFIT_METRIC, value=fired, n=64))
    return results.from_rows(rows)


def test_the_headline_groups_rows_by_method():
    from medgrid.report import headline, headline_blocks, headline_write

    frame = headline.build(method_table(), eps={"linf": 4 / 255}, columns=("clean", "robust_linf", "corruption"))
    assert set(frame.train_method) == set(names.TRAIN_METHODS) and "overfit_seeds" in frame.columns
    (block,) = headline_blocks.blocks(frame, eps={"linf": 4 / 255}, columns=("clean", "robust_linf", "corruption"))
    assert [label for label, _ in block.rows] == [
        "standard", "L∞ 4/255", "L∞ 8/255", "TRADES β=1 L∞ 4/255", "TRADES β=1 L∞ 8/255", "TRADES β=6 L∞ 4/255",
        "TRADES β=6 L∞ 8/255", "FGSM-RS L∞ 4/255", "FGSM-RS L∞ 8/255 ‖"]
    assert block.breaks == {3, 5, 7}  # a rule before each other method's (and parameter's) rows
    assert any(mark == headline.OVERFIT for mark, _ in block.notes)
    tex = headline_write.to_latex([block])
    assert tex.count(r"\midrule") == 1 + 3 and r"TRADES $\beta$=6" in tex and r"$\|$" in tex
    assert headline_write.to_html([block]).count('<tr class="group">') == 3


def test_the_charts_draw_one_frontier_and_one_ramp_per_method():
    from medgrid.report import charts  # altair: only for this test

    s = chart_parts.seed_view(method_table(), "balanced_acc")
    domain, colors = chart_parts.setting_scale(s)
    assert domain[:3] == ["standard", "L∞ 4/255", "L∞ 8/255"] and domain[-2:] == ["FGSM-RS L∞ 4/255",
                                                                                   "FGSM-RS L∞ 8/255"]
    assert len(set(colors)) == len(colors)  # every setting its own colour
    pgd_blues = labels.ramp("linf", 2)
    assert colors[1:3] == pgd_blues  # PGD-AT's colours as before
    assert colors[3:7] == labels.ramp("trades", 4) and colors[7:] == labels.ramp("fgsm-rs", 2)
    spec = charts.tradeoff(s, "balanced_acc").to_dict()
    data = pd.concat([pd.DataFrame(v) for v in spec["datasets"].values()], ignore_index=True)
    lines = data[data.role == "line"]
    assert set(lines.family) == {"linf", "TRADES β=1 L∞", "TRADES β=6 L∞", "FGSM-RS L∞"}
    for _, line in lines.groupby("family"):  # each frontier starts at the standard model
        assert "standard" in set(line.setting) and len(line) == 3
    by_eps = charts.by_train_eps(s, "balanced_acc").to_dict()
    titles = [c["title"]["text"] for c in by_eps["hconcat"]]
    assert titles == ["L∞ adversarial training", "TRADES β=1 L∞ training", "TRADES β=6 L∞ training",
                      "FGSM-RS L∞ training"]


def test_the_evaluate_command_names_a_stopped_run():
    table = method_table()
    lines = [m for m in health.table_messages(table) if "catastrophic overfitting" in m]
    assert lines == ["catastrophic overfitting: the guard stopped the training of synthetic 28 px cnn-small "
                     "FGSM-RS L∞ 8/255 seed 1; it kept an epoch before the collapse"]
