"""End to end on the synthetic task: the paper's effects must show (issue acceptance numbers)."""

import pandas as pd
import pytest
import torch

from medgrid import checkpoint, cli
from medgrid.data import prepare, tasks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Prepare synthetic, train standard and linf-2/255 cnn-small, evaluate both at linf 1,2,4/255."""
    root = tmp_path_factory.mktemp("pipeline")
    d = root / "data"
    assert cli.main(["prepare-data", "--task", "synthetic", "--size", "28", "--out", str(d / "synthetic.npz")]) == 0
    common = ["--task", "synthetic", "--size", "28", "--arch", "cnn-small", "--seed", "0", "--data", str(d / "synthetic.npz")]
    assert cli.main(["train", *common, "--norm", "none", "--eps", "0", "--epochs", "20",
                     "--stop-train-acc", "0.995", "--out", str(root / "std.pt")]) == 0
    assert cli.main(["train", *common, "--norm", "linf", "--eps", "2/255", "--epochs", "8",
                     "--attack-steps", "5", "--out", str(root / "adv.pt")]) == 0
    tables = {}
    for name in ("std", "adv"):
        out = root / f"{name}.parquet"
        assert cli.main(["evaluate", "--checkpoint", str(root / f"{name}.pt"), "--data", str(d / "synthetic.npz"),
                         "--attack-norm", "linf", "--attack-eps", "1/255,2/255,4/255,8/255", "--out", str(out)]) == 0
        tables[name] = pd.read_parquet(out)
    return root, tables


def value(df, kind, metric, eps=0.0):
    sel = df[(df.eval_kind == kind) & (df.metric == metric) & ((df.eval_eps - eps).abs() < 1e-9)]
    assert len(sel) == 1
    return float(sel.value.iloc[0])


def test_standard_model_is_accurate_and_brittle(trained):
    _, t = trained
    assert value(t["std"], "clean", "acc") >= 0.95
    assert value(t["std"], "pgd", "acc", 2 / 255) <= 0.35


def test_adversarial_model_is_robust_and_less_accurate(trained):
    _, t = trained
    assert value(t["adv"], "pgd", "acc", 2 / 255) >= 0.6
    assert value(t["adv"], "clean", "acc") < value(t["std"], "clean", "acc")


def test_robust_accuracy_falls_with_epsilon_and_skipping_saves_work(trained):
    _, t = trained
    grid = (1, 2, 4, 8)
    naive = len(grid) * 20 * 1000   # epsilons x steps x samples
    for df in t.values():
        accs = [value(df, "pgd", "acc", e / 255) for e in grid]
        assert accs == sorted(accs, reverse=True) and accs[0] <= value(df, "clean", "acc")
        assert sum(value(df, "pgd", "grad_evals", e / 255) for e in grid) < naive
    # the brittle standard model is broken early: a quarter of the naive work at most
    # (the benchmark goal is 20%, measured by benchmarks/pgd_attack.py)
    assert sum(value(t["std"], "pgd", "grad_evals", e / 255) for e in grid) <= 0.25 * naive


def test_checkpoint_records_its_settings(trained):
    root, _ = trained
    model, settings = checkpoint.load(root / "adv.pt")
    for key in ("task", "size", "arch", "norm", "eps", "seed", "hparams", "data_sha256", "medgrid_version"):
        assert key in settings
    assert settings["norm"] == "linf" and settings["eps"] == pytest.approx(2 / 255)
    assert settings["hparams"]["attack_steps"] == 5


def test_training_is_reproducible_from_seed(tmp_path):
    d = tmp_path / "data"
    prepare.prepare("synthetic", 28, tasks.npz_path(d, "synthetic", 28), data_seed=0)
    outs = []
    for i in range(2):
        out = tmp_path / f"m{i}.pt"
        assert cli.main(["train", "--task", "synthetic", "--size", "28", "--arch", "cnn-small", "--norm", "linf",
                         "--eps", "2/255", "--seed", "3", "--epochs", "1", "--attack-steps", "2",
                         "--data", str(d / "synthetic.npz"), "--out", str(out)]) == 0
        outs.append(torch.load(out, weights_only=True)["state_dict"])
    for k in outs[0]:
        assert torch.equal(outs[0][k], outs[1][k]), k
