"""Charts, the seed-aggregated HTML table and the saliency figure: build from small hand-made inputs,
export readable images, and the HTML works offline in a real browser."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import headless

from medgrid import epsilon, labels, results
from medgrid.data import npz, synthetic, tasks
from medgrid.errors import UserError
from medgrid.report import chart_features, chart_parts, charts, render

pytest.importorskip("altair")
pytest.importorskip("vl_convert")

SETTINGS = [("none", 0.0), ("linf", 2 / 255), ("linf", 4 / 255), ("l2", 0.5)]
CORRUPTIONS = ("gaussian_blur", "jpeg", "pixelate")


def _cell(task, norm, eps, seed, train_data="original", construction="none", model_seed=0):
    return results.cell_columns({"task": task, "size": 28, "arch": "cnn-small", "norm": norm, "eps": eps,
                                 "seed": seed, "train_data": train_data, "construction": construction,
                                 "model_seed": model_seed})


SWEEP = {"l2-0.5-10x0.1": 0.30, "l2-0.5-100x0.1": 0.45}  # attack setting -> D_rand accuracy of the hand-made table


def _feature_rows(task, seed, rng):
    """Three models per dataset: D_rand / D_det at two attack settings (clean balanced accuracy and AUC; texture
    alignment on the synthetic task), D_R from the linf 4/255 cell (clean and PGD)."""
    rows = []
    for construction, acc in SWEEP.items():
        for data, value in (("drand", acc), ("ddet", acc - 0.2)):
            for model in range(3):
                c = _cell(task, "none", 0.0, seed, data, construction, model)
                rows.append(results.make_row(c, eval_kind="clean", metric="balanced_acc",
                                             value=value + rng.normal(0, 0.02), n=1000))
                rows.append(results.make_row(c, eval_kind="clean", metric="auc", value=0.8 + rng.normal(0, 0.02),
                                             n=1000))
            if task == "synthetic":
                c = _cell(task, "none", 0.0, seed, data, construction)
                for metric, v in (("texture_alignment", acc), ("off_texture_share", 1 - acc)):
                    rows.append(results.make_row(c, eval_kind="features", eval_norm="l2", eval_eps=0.5,
                                                 metric=metric, value=v + rng.normal(0, 0.01), n=3000))
    rows.append(results.make_row(_cell(task, "linf", 4 / 255, seed, "drobust"), eval_kind="features",
                                 metric="source_acc", value=0.8, n=1000))
    for model in range(3):
        c = _cell(task, "none", 0.0, seed, "drobust", model_seed=model)
        rows.append(results.make_row(c, eval_kind="clean", metric="balanced_acc", value=0.8 + rng.normal(0, 0.01),
                                     n=1000))
        rows.append(results.make_row(c, eval_kind="pgd", eval_norm="linf", eval_eps=4 / 255, metric="balanced_acc",
                                     value=0.6 + rng.normal(0, 0.01), n=1000))
    return rows


def make_table(*, shift=True, features=True, seeds=(0, 1, 2), tasks=("synthetic", "breastmnist")):
    """A hand-made summary with the synthetic task's known answers: the standard model is accurate on
    clean images, broken by PGD and by corruptions; robust models trade clean accuracy for both."""
    rng = np.random.default_rng(0)
    rows = []
    for task in tasks:
        for seed in seeds:
            for norm, eps in SETTINGS:
                c = _cell(task, norm, eps, seed)
                strength = 0.0 if norm == "none" else (eps * 255 / 4 if norm == "linf" else eps)
                clean = 0.99 - 0.12 * strength + rng.normal(0, 0.005)
                for metric in ("acc", "balanced_acc"):
                    rows.append(results.make_row(c, eval_kind="clean", metric=metric, value=clean, n=1000))
                for anorm, grid in (("linf", [1 / 255, 2 / 255, 4 / 255, 8 / 255]), ("l2", [0.25, 0.5])):
                    for k, aeps in enumerate(grid):
                        value = max(0.0, clean - (0.9 if norm == "none" else 0.1 * (k + 1) / (1 + strength)))
                        rows.append(results.make_row(c, eval_kind="pgd", eval_norm=anorm, eval_eps=aeps,
                                                     metric="balanced_acc", value=value, n=1000))
                        rows.append(results.make_row(c, eval_kind="pgd", eval_norm=anorm, eval_eps=aeps,
                                                     metric="grad_evals", value=20000, n=1000))
                if shift:
                    per = []
                    for corr in CORRUPTIONS:
                        for sev in range(1, 6):
                            v = (0.3 if norm == "none" else clean - 0.02 * sev) + rng.normal(0, 0.01)
                            per.append(v)
                            rows.append(results.make_row(c, eval_kind="corruption", corruption=corr, severity=sev,
                                                         metric="balanced_acc", value=v, n=1000))
                    rows.append(results.make_row(c, eval_kind="corruption", corruption="mean", severity=0,
                                                 metric="balanced_acc", value=float(np.mean(per)), n=15000))
            if features:
                rows += _feature_rows(task, seed, rng)
    return results.from_rows(rows)


def _png_ok(path):
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = Image.open(io.BytesIO(data)).convert("RGB")
    assert img.width >= 300 and img.height >= 200, f"{path} is only {img.size}"
    rgb = np.asarray(img, dtype=np.int64)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert len(colours) > 20, f"{path} is (nearly) a single colour"
    return rgb.astype(np.float64)


@pytest.fixture(scope="module")
def full_table():
    return make_table()


@pytest.fixture(scope="module")
def full_charts(tmp_path_factory, full_table):
    """Every chart of the full hand-made table, written once: (folder, status)."""
    root = tmp_path_factory.mktemp("charts")
    results.write_table(full_table, root / "summary.parquet")
    status = render.make_charts(root / "summary.parquet", root / "charts")
    return root / "charts", status


def _spec_of(html_path):
    import json

    page = html_path.read_text()
    start = page.index("const spec = ") + len("const spec = ")
    return json.loads(page[start:page.index(";\n", start)].replace("<\\/", "</"))


BUILDERS = {**charts.BUILDERS, **chart_features.BUILDERS}  # every chart drawn from the summary


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_chart_builds_exports_and_carries_coordinates(full_charts, name):
    out, status = full_charts
    assert status[name] == "chart", f"{name} should build from a table that has its rows"
    spec = _spec_of(out / f"{name}.html")
    text = str(spec)
    assert "tooltip" in text and "'title': 'task'" in text and "'title': 'arch'" in text  # cell coordinates
    assert charts.TITLES[name] in text
    arr = _png_ok(out / f"{name}.png")
    assert arr.std() > 10
    svg = (out / f"{name}.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "no rows yet" not in svg
    assert charts.TITLES[name].split(":")[0] in svg


def test_tradeoff_data_puts_standard_right_bottom(full_table):
    s = chart_parts.seed_view(full_table, "balanced_acc")
    spec = charts.tradeoff(s, "balanced_acc").to_dict()
    values = pd.DataFrame(next(iter(spec["datasets"].values())))
    pts = values[(values.role == "point") & (values.task == "synthetic")].set_index("setting")
    assert set(pts.index) == {"standard", "L∞ 2/255", "L∞ 4/255", "L2 0.5"}
    assert pts.loc["standard", "mean_clean"] > pts.loc["L∞ 2/255", "mean_clean"] > pts.loc["L∞ 4/255", "mean_clean"]
    assert pts.loc["standard", "mean_shift"] < pts.loc["L∞ 4/255", "mean_shift"]
    # error bars span the seeds: a t-interval, not a point
    assert (pts.hi_clean > pts.lo_clean).all()
    # each norm family's line starts at the standard model
    lines = values[values.role == "line"]
    assert set(lines[lines.family == "l2"].setting) == {"standard", "L2 0.5"}


def test_heatmap_difference_is_robust_minus_standard(full_table):
    s = chart_parts.seed_view(full_table, "balanced_acc")
    spec = charts.corruption_heatmap(s, "balanced_acc").to_dict()
    values = pd.DataFrame(next(iter(spec["datasets"].values())))
    row = values[(values.task == "synthetic") & (values.setting == "L∞ 2/255") & (values.corruption == "jpeg")
                 & (values.severity == 3)].iloc[0]
    sel = s[(s.task == "synthetic") & (s.corruption == "jpeg") & (s.severity == 3)].set_index("setting")["mean"]
    assert row.diff_pp == pytest.approx(100 * (sel["L∞ 2/255"] - sel["standard"]))
    assert row.diff_pp > 0


def test_epsilon_axes_label_the_grids_epsilons(full_charts):
    """A tick at each epsilon of the grid, labelled in full: the L2 axis once read 0.3 for 0.25."""
    import re

    out, _ = full_charts
    ticks = set(re.findall(r"<text[^>]*>([0-9.]+)</text>", (out / "robust_vs_eps.svg").read_text()))
    assert {"0", "1", "2", "4", "8", "0.25", "0.5"} <= ticks and "0.3" not in ticks
    ticks = set(re.findall(r"<text[^>]*>([0-9.]+)</text>", (out / "by_train_eps.svg").read_text()))
    assert {"0", "2", "4", "0.5"} <= ticks


def test_one_registry_lists_every_chart():
    """The registry names exactly the charts there are builders for, and the training curves (history)."""
    from medgrid.report import chart_training, registry

    summary = [c.name for c in registry.CHARTS if c.source == "summary"]
    assert sorted(summary) == sorted(BUILDERS)
    assert [c.name for c in registry.CHARTS if c.source == "history"] == [chart_training.NAME]
    assert len({c.label for c in registry.CHARTS}) == len(registry.CHARTS)
    for chart in registry.CHARTS:
        assert (Path(__file__).resolve().parents[1] / "workflow" / "rules" / chart.caption).is_file(), chart.caption


def test_missing_rows_give_placeholders_and_exports(tmp_path):
    table = make_table(shift=False, features=False, seeds=(0,), tasks=("synthetic",))
    path = tmp_path / "summary.parquet"
    results.write_table(table, path)
    out = tmp_path / "charts"
    status = render.make_charts(path, out)
    assert status == {"tradeoff": "placeholder", "robust_vs_eps": "chart", "by_train_eps": "chart",
                      "nonrobust_features": "placeholder", "corruption_heatmap": "placeholder",
                      "nonrobust_sweep": "placeholder"}
    for name in BUILDERS:
        for fmt in render.FORMATS:
            assert (out / f"{name}.{fmt}").stat().st_size > 0
    assert "no rows yet" in (out / "tradeoff.svg").read_text()
    assert "no rows yet" not in (out / "robust_vs_eps.svg").read_text()
    _png_ok(out / "robust_vs_eps.png")
    page = (out / "tradeoff.html").read_text()
    assert "<script" in page and "cdn.jsdelivr" not in page and "vega" in page
    table_page = (out / render.TABLE).read_text()
    assert "PGD L∞ 2/255" in table_page and "grad_evals" not in table_page
    assert not list(out.glob(".*tmp"))


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    from medgrid import cli

    assert cli.main(["charts", "--summary", str(tmp_path / "nope.parquet"), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing results table" in err
    empty = tmp_path / "empty.parquet"
    results.write_table(make_table().iloc[:0], empty)
    with pytest.raises(UserError, match="no rows"):
        render.make_charts(empty, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_labels_and_chance():
    assert labels.setting_label("linf", 8 / 255) == "L∞ 8/255"
    assert labels.setting_label("l2", 0.5) == "L2 0.5"
    assert labels.setting_label("none", 0.0) == "standard"
    assert epsilon.text("linf", 0.01) == "0.01"
    assert tasks.chance_level("synthetic") == pytest.approx(0.25)
    assert tasks.chance_level("breastmnist") == pytest.approx(0.5)
    assert np.isnan(tasks.chance_level("not-a-task"))
    assert len(set(labels.ramp("linf", 4))) == 4


# ------------------------------------------------------------------------------------------ saliency


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    import torch

    from medgrid import checkpoint, models

    root = tmp_path_factory.mktemp("saliency")
    arrays = synthetic.generate("synthetic", 28, seed=0, n_train=8, n_val=8, n_test=16)
    npz.write_npz(root / "synthetic.npz", arrays)
    paths = []
    for norm, eps in (("none", 0.0), ("linf", 2 / 255)):
        torch.manual_seed(len(paths))
        model = models.build("cnn-small", 1, 4, 28)
        settings = {"task": "synthetic", "size": 28, "arch": "cnn-small", "norm": norm, "eps": eps, "seed": 0,
                    "train_data": "original", "n_channels": 1, "n_classes": 4}
        paths.append(root / f"{norm}.pt")
        checkpoint.save(paths[-1], model, settings)
    return root, paths


def test_saliency_figure(tiny_checkpoints, tmp_path):
    from medgrid import cli

    root, (std, rob) = tiny_checkpoints
    out = tmp_path / "fig" / "saliency.png"
    assert cli.main(["saliency", "--checkpoint", str(std), "--checkpoint", str(rob), "--data", str(root / "synthetic.npz"),
                     "--out", str(out), "--n", "3", "--attack-steps", "2"]) == 0
    arr = _png_ok(out)
    assert arr.shape[1] > arr.shape[0]  # 3 rows x 5 columns of panels


def test_saliency_picks_one_image_per_class_and_refuses_mixed_tasks(tiny_checkpoints, tmp_path):
    import torch

    from medgrid import checkpoint, models
    from medgrid.report import saliency

    assert saliency.choose_images([2, 2, 0, 1, 0, 1], 4) == [2, 3, 0, 4]
    root, (std, _) = tiny_checkpoints
    other = tmp_path / "other.pt"
    checkpoint.save(other, models.build("cnn-small", 1, 2, 28),
                    {"task": "breastmnist", "size": 28, "arch": "cnn-small", "norm": "none", "eps": 0.0, "seed": 0,
                     "n_channels": 1, "n_classes": 2})
    with pytest.raises(UserError, match="different task"):
        saliency.saliency_figure([std, other], root, tmp_path / "x.png")
    with pytest.raises(UserError, match=r"\.png, \.svg or \.pdf"):
        saliency.saliency_figure([std], root, tmp_path / "x.jpg")
    assert not (tmp_path / "x.png").exists()
    x = torch.rand(2, 1, 28, 28)
    g, pred = saliency.input_gradient(models.build("cnn-small", 1, 4, 28).eval(), x, torch.tensor([0, 1]))
    assert g.shape == x.shape and g.abs().sum() > 0 and pred.shape == (2,)


# ------------------------------------------------------------------------------------------- browser


def test_html_renders_offline_in_headless_chromium(chromium, tmp_path, full_charts):
    from PIL import Image

    out, _ = full_charts
    page = (out / "tradeoff.html").read_text()
    assert 'src="http' not in page and "vegaEmbed" in page  # nothing to fetch: Vega is inlined
    shot = tmp_path / "shot.png"
    proc = headless(chromium, out / "tradeoff.html", tmp_path, f"--screenshot={shot}", "--window-size=1000,800")
    assert shot.exists(), f"chromium made no screenshot: {proc.stderr[-2000:]}"
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)
    # a blank page is one colour and an error message is black text; the rendered chart has coloured
    # points, bars and labels (blues and oranges) besides its dark axes and text
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    assert rgb.std() > 5 and (chroma > 60).sum() > 300, "the chart HTML rendered blank (is Vega inlined?)"


# ------------------------------------------------------------------------------- Ilyas et al.'s charts


def _values(chart) -> pd.DataFrame:
    spec = chart.to_dict()
    return pd.concat([pd.DataFrame(v) for v in spec["datasets"].values()], ignore_index=True)


def test_nonrobust_features_shows_intervals_the_test_and_d_r_robustness(full_table):
    d = _values(chart_features.nonrobust_features(full_table, "balanced_acc"))
    clean = d[d.measure == "clean"]
    # of the sweep, Ilyas' setting only; every bar over all models: 3 grid seeds x 3 models
    assert set(clean[clean.train_data == "drand"].construction) == {"l2-0.5-100x0.1"}
    drand = clean[(clean.train_data == "drand") & (clean.task == "synthetic")].iloc[0]
    assert drand.n_seeds == 9 and drand.n_grid_seeds == 3 and drand.lo < drand["mean"] < drand.hi
    assert drand["mean"] == pytest.approx(0.45, abs=0.03)
    assert (drand.value_text, drand.test_text) == (f"{drand['mean']:.0%}", "above chance · p < 0.001")
    # D_R's robust accuracy beside its clean accuracy, the attack named; the standard model's at the same attack
    robust = d[d.measure != "clean"]
    assert set(robust.train_data) == {"drobust", "original"}
    assert set(robust.measure) == {"robust: PGD L∞ 4/255"}


def test_nonrobust_sweep_plots_each_setting_and_the_texture(full_table):
    chart = chart_features.nonrobust_sweep(full_table, "balanced_acc")
    d = _values(chart)
    acc = d[d.metric == "balanced_acc"]
    assert set(acc.steps) == {10, 100} and set(acc.train_data) == {"drand", "ddet"}
    by = acc[(acc.task == "synthetic") & (acc.train_data == "drand")].set_index("steps")["mean"]
    assert by[100] > by[10]
    texture = d[d.metric == "texture_alignment"]
    assert set(texture.task) == {"synthetic"} and set(texture.steps) == {10, 100}
    assert "perturbations vs the planted textures" in str(chart.to_dict())


def test_nonrobust_sweep_needs_recorded_settings():
    table = make_table(shift=False)
    unrecorded = table.assign(construction="none").drop_duplicates(results.KEY)
    assert chart_features.nonrobust_sweep(unrecorded, "balanced_acc") is None
