"""The headline table: built from hand-made tidy tables whose answers are known, written as CSV, LaTeX
(compiled with pdflatex when it is installed), HTML and Markdown; intervals are summary_by_seed's."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import headless

from medgrid import cli, results
from medgrid.names import HEADLINE_COLUMNS
from medgrid.report import aggregate, headline, headline_blocks, headline_write

EPS = {"linf": 2 / 255, "l2": 0.5}
SETTINGS = [("none", 0.0), ("linf", 2 / 255), ("linf", 4 / 255), ("l2", 0.5)]
# clean, robust at the headline epsilons, MedMNIST-C mean per setting: the synthetic task's story
CLEAN = {"none": 0.99, "linf-2": 0.90, "linf-4": 0.85, "l2": 0.91}
ROBUST = {"none": 0.05, "linf-2": 0.80, "linf-4": 0.78, "l2": 0.70}
SHIFT = {"none": 0.40, "linf-2": 0.84, "linf-4": 0.80, "l2": 0.83}


def _key(norm, eps):
    return norm if norm in ("none", "l2") else f"linf-{round(eps * 255)}"


def cell(task, norm, eps, seed, data="original", size=28):
    return results.cell_columns({"task": task, "size": size, "arch": "cnn-small", "norm": norm, "eps": eps,
                                 "seed": seed, "train_data": data})


STAGES = ("worst-white-box", "apgd-ce", "apgd-t")


def cell_rows(task, norm, eps, seed, *, noise, worst=(), be=False, size=28, degenerate=None, stages=STAGES,
              images=100, adaptive=False):
    """One cell's rows: clean, PGD at every attack epsilon (worst-case rows and those of ``stages`` at the
    epsilons in ``worst``, on ``images`` test images, with clean-subset rows), MedMNIST-C mean (+ BE / rBE
    when ``be``), and a health row when ``degenerate`` is given."""
    c, k = cell(task, norm, eps, seed, size=size), _key(norm, eps)
    rows = [results.make_row(c, eval_kind="clean", metric=m, value=CLEAN[k] + noise, n=100)
            for m in ("acc", "balanced_acc")]
    for anorm, grid in (("linf", [1 / 255, 2 / 255]), ("l2", [0.25, 0.5])):
        for aeps in grid:
            value = ROBUST[k] + noise + (0.05 if aeps < EPS[anorm] else 0.0)
            rows.append(results.make_row(c, eval_kind="pgd", eval_norm=anorm, eval_eps=aeps, metric="balanced_acc",
                                         value=value, n=100))
            rows.append(results.make_row(c, eval_kind="pgd", eval_norm=anorm, eval_eps=aeps, metric="grad_evals",
                                         value=2000, n=100))
            if (anorm, aeps) in worst:  # the worst case is at most PGD's; the stages that ran have rows
                for kind in stages:
                    rows.append(results.make_row(c, eval_kind=kind, eval_norm=anorm, eval_eps=aeps,
                                                 metric="balanced_acc", value=value - 0.01, n=images))
                rows.append(results.make_row(c, eval_kind="worst", eval_norm=anorm, eval_eps=aeps,
                                             metric="balanced_acc", value=value - 0.02, n=images))
                rows.append(results.make_row(c, eval_kind="apgd-ce", eval_norm=anorm, eval_eps=aeps,
                                             metric="adaptive", value=float(adaptive), n=images))
    if worst:
        rows.append(results.make_row(c, eval_kind="clean-subset", metric="balanced_acc", value=CLEAN[k] + noise + 0.01,
                                     n=images))
    rows.append(results.make_row(c, eval_kind="corruption", corruption="mean", metric="balanced_acc",
                                 value=SHIFT[k] + noise, n=1500))
    if be:
        suffix = "" if size == 224 else "_not_comparable"
        for metric, base in (("be", 1.0), ("rbe", 1.2)):
            rows.append(results.make_row(c, eval_kind="corruption", corruption="mean", metric=metric + suffix,
                                         value=base - SHIFT[k] + noise, n=1500))
    if degenerate is not None:
        rows.append(results.make_row(c, eval_kind="health", metric="degenerate", value=float(degenerate), n=100))
    return rows


def feature_rows(task, seed, noise, *, size=28):
    """The models trained on D_rand and D_det (from the standard model) and on D_R (from linf 4/255), as
    medgrid writes them: the models are standard training (train_norm none); D_R's own rows (eval_kind
    features) carry the robust cell it was made from."""
    rows = []
    for data, value in (("drand", 0.60), ("ddet", 0.30), ("drobust", 0.75)):
        c = cell(task, "none", 0.0, seed, data, size=size)
        rows.append(results.make_row(c, eval_kind="clean", metric="balanced_acc", value=value + noise, n=100))
        if data != "drobust":
            rows.append(results.make_row(c, eval_kind="clean", metric="auc", value=value + 0.2 + noise, n=100))
    c = cell(task, "linf", 4 / 255, seed, "drobust", size=size)
    rows.append(results.make_row(c, eval_kind="features", metric="source_acc", value=0.8, n=4000))
    return rows


def make_results(*, seeds=(0,), tasks=("synthetic",), **kw) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for task in tasks:
        for seed in seeds:
            noise = float(rng.normal(0, 0.01)) if len(seeds) > 1 else 0.0
            for norm, eps in SETTINGS:
                rows += cell_rows(task, norm, eps, seed, noise=noise, **kw)
            rows += feature_rows(task, seed, noise, size=kw.get("size", 28))
    return results.from_rows(rows)


def build(df, **kw):
    frame = headline.build(df, eps=EPS, **kw)
    return frame, headline_blocks.blocks(frame, eps=EPS, pgd_steps=20, **kw)


def by_column(frame, column):
    return frame[frame.column == column].set_index("setting")


# --------------------------------------------------------------------------------------------- frame


def test_rows_columns_and_one_seed_means_only():
    frame, (block,) = build(make_results())
    assert [label for label, _ in block.rows] == ["standard", "L∞ 2/255", "L∞ 4/255", "L2 0.5"]
    titles = [t for t, _ in block.headers]
    # synthetic tasks have no BE / rBE: left out, and said so
    assert titles == ["clean", "robust L∞ 2/255", "robust L2 0.5", "MedMNIST-C", "D_rand model", "D_rand model",
                      "D_det model", "D_det model", "D_R model"]
    assert [d for t, d in block.headers if t == "D_rand model"] == ["clean bal. acc.", "clean AUC"]
    assert any("No rows for BE, rBE" in text for _, text in block.notes)
    clean = by_column(frame, "clean")
    assert clean.loc["standard", "text"] == "99.0" and clean.loc["L∞ 2/255", "text"] == "90.0"
    assert not frame.text.str.contains("±").any() and frame.low.isna().all() and (frame.n_seeds == 1).all()
    # robust column at the headline epsilon, not at the smaller one
    assert by_column(frame, "robust_linf").loc["L∞ 4/255", "mean"] == pytest.approx(0.78)
    assert by_column(frame, "robust_l2").loc["L2 0.5", "eval_eps"] == 0.5
    # D_rand / D_det on the standard row, D_R on its robust source's row
    assert list(by_column(frame, "drand").index) == ["standard"]
    assert list(by_column(frame, "drobust").index) == ["L∞ 4/255"]
    cells = dict(block.rows)
    assert cells["L∞ 4/255"][titles.index("D_R model")].text == "75.0"
    assert cells["L∞ 2/255"][titles.index("D_R model")] is None
    # best values: clean of the standard model, robust and MedMNIST-C of adversarially trained ones
    best = frame[frame.best].set_index("column").setting
    assert best["clean"] == "standard" and best["robust_linf"] == "L∞ 2/255" and best["corruption"] == "L∞ 2/255"
    assert "drand" not in best.index  # a column with one value has no best


def test_d_r_model_without_its_source_rows_stays_where_it_was_trained():
    df = make_results()
    frame, _ = build(df[df.eval_kind != "features"])
    assert list(by_column(frame, "drobust").index) == ["standard"]


def test_columns_follow_the_given_order_and_subset():
    frame, (block,) = build(make_results(), columns=["corruption", "clean"])
    assert [t for t, _ in block.headers] == ["MedMNIST-C", "clean"]
    assert set(frame.column) == {"corruption", "clean"}


def test_worst_case_where_evaluated_else_pgd_and_the_header_says_which():
    # only PGD rows: the header names PGD with its steps
    _, (block,) = build(make_results())
    assert block.headers[1] == ("robust L∞ 2/255", "PGD-20")
    # worst-case rows at the headline epsilon of every cell: used, and the header says so
    frame, (block,) = build(make_results(worst=[("linf", 2 / 255)]))
    robust = by_column(frame, "robust_linf")
    assert set(robust.eval_kind) == {"worst"}
    assert robust.loc["L∞ 2/255", "mean"] == pytest.approx(ROBUST["linf-2"] - 0.02)
    assert block.headers[1] == ("robust L∞ 2/255", "worst of PGD-20, APGD-CE, APGD-T")
    assert block.headers[2] == ("robust L2 0.5", "PGD-20")  # no worst-case rows for L2
    assert not robust.clean_same_images.notna().any()  # the strong evaluation used every test image
    assert not [m for m, _ in block.notes if m == headline.PGD_ONLY]
    # worst-case rows at another epsilon only: PGD at the headline epsilon
    frame, (block,) = build(make_results(worst=[("linf", 1 / 255)]))
    assert set(by_column(frame, "robust_linf").eval_kind) == {"pgd"} and block.headers[1][1] == "PGD-20"


def test_a_column_mixing_worst_case_and_pgd_marks_the_pgd_cells():
    df = make_results(worst=[("linf", 2 / 255)])
    std_worst = (df.train_norm == "none") & (df.eval_kind == "worst")
    frame, (block,) = build(df[~std_worst])
    robust = by_column(frame, "robust_linf")
    assert robust.loc["standard", "eval_kind"] == "pgd" and robust.loc["L2 0.5", "eval_kind"] == "worst"
    cells = dict(block.rows)
    assert cells["standard"][1].mark == headline.PGD_ONLY and cells["L2 0.5"][1].mark == ""
    assert any(m == headline.PGD_ONLY and "PGD-20 only" in text for m, text in block.notes)


def test_degenerate_models_are_marked_and_never_bold():
    df = make_results()
    # a flagged L2 model whose numbers would be the best of their columns
    rows = df.copy()
    l2 = rows.train_norm == "l2"
    rows.loc[l2 & rows.eval_kind.isin(["clean", "pgd"]) & (rows.metric != "grad_evals"), "value"] = 0.9999
    health = [results.make_row(cell("synthetic", n, e, 0), eval_kind="health", metric="degenerate",
                               value=float(n == "l2"), n=100) for n, e in SETTINGS]
    health += [results.make_row(cell("synthetic", "none", 0.0, 0, "drand"), eval_kind="health",
                                metric="degenerate", value=1.0, n=100)]
    frame, (block,) = build(results.from_rows(pd.concat([rows, pd.DataFrame(health)]).to_dict("records")))
    robust = by_column(frame, "robust_linf")
    assert robust.loc["L2 0.5", "mean"] > robust.loc["L∞ 2/255", "mean"]
    assert not robust.loc["L2 0.5", "best"] and robust.loc["L∞ 2/255", "best"]
    assert robust.loc["L2 0.5", "degenerate_seeds"] == 1
    cells = dict(block.rows)
    assert cells["L2 0.5"][1].mark == headline.DEGENERATE + "1/1" and cells["standard"][1].mark == ""
    assert robust.loc["L2 0.5", "text"] == f"{100 * robust.loc['L2 0.5', 'mean']:.1f}"  # all degenerate: all seeds
    assert any(m == headline.DEGENERATE for m, _ in block.notes)
    # the D_rand model's flag is ignored: chance level is its result
    assert by_column(frame, "drand").loc["standard", "degenerate_seeds"] == 0


def test_be_not_comparable_below_224_px_and_lower_is_better():
    frame, (block,) = build(make_results(tasks=("breastmnist",), be=True))
    titles = [t for t, _ in block.headers]
    assert "BE" in titles and "rBE" in titles
    assert block.headers[titles.index("BE")][1].endswith(headline.NOT_COMPARABLE_MARK)
    assert any(m == headline.NOT_COMPARABLE_MARK and "224" in text for m, text in block.notes)
    be = by_column(frame, "be")
    assert be.loc["L∞ 2/255", "best"] and not be.loc["standard", "best"]  # lowest error is best
    assert set(be.metric) == {"be_not_comparable"}
    frame, (block,) = build(make_results(tasks=("breastmnist",), be=True, size=224))
    assert set(by_column(frame, "be").metric) == {"be"}
    assert not any(m == headline.NOT_COMPARABLE_MARK for m, _ in block.notes)
    assert "BE and rBE" in headline_blocks.caption(block) and "Chance level: 50.0%" in headline_blocks.caption(block)


def test_three_seeds_give_the_intervals_of_summary_by_seed(tmp_path, capsys):
    """A tiny grid of three seeds through `medgrid aggregate` and `medgrid table`: every cell of the
    headline is the mean and 95% interval of summary_by_seed.parquet's row."""
    df = make_results(seeds=(0, 1, 2), tasks=("synthetic", "breastmnist"), be=True)
    tables = []
    for (task, norm, eps, seed, data), rows in df.groupby(["task", "train_norm", "train_eps", "seed", "train_data"]):
        path = tmp_path / "cells" / f"{task}-{norm}-{eps:.4f}-{seed}-{data}.parquet"
        results.write_table(rows, path)
        tables.append(path)
    summary = tmp_path / "summary.parquet"
    assert cli.main(["aggregate", "--out", str(summary), *map(str, tables)]) == 0
    assert cli.main(["table", "--summary", str(summary), "--out-dir", str(tmp_path / "tables"),
                     "--pgd-steps", "20"]) == 0
    printed = capsys.readouterr().out
    csv = pd.read_csv(tmp_path / "tables" / "headline.csv", float_precision="round_trip")
    by_seed = pd.read_parquet(tmp_path / "summary_by_seed.parquet")
    # the D_R model (standard training) sits on the row of the robust cell its dataset came from
    drobust = csv.column == "drobust"
    assert set(csv[drobust].setting) == {"L∞ 4/255"}
    csv.loc[drobust, ["train_norm", "train_eps"]] = ["none", 0.0]
    merged = csv.merge(by_seed, on=aggregate.GROUP, how="left", validate="one_to_one", suffixes=("", "_s"))
    assert len(merged) == len(csv) and merged["mean_s"].notna().all()
    np.testing.assert_allclose(merged["mean"], merged["mean_s"])
    np.testing.assert_allclose(merged["low"], merged["ci95_t_low"])
    np.testing.assert_allclose(merged["high"], merged["ci95_t_high"])
    assert (merged.n_seeds == 3).all() and (merged.n_seeds_s == 3).all()
    assert (merged.low < merged["mean"]).all() and (merged["mean"] < merged.high).all()
    # cells show "mean ± half-width" in percent
    expected = [f"{100 * m:.1f} ± {50 * (h - lo):.1f}" for m, lo, h in zip(merged["mean"], merged.low, merged.high)]
    # D_rand / D_det cells (and their AUC) also say whether they are above chance, by the test of summary_by_seed
    tested = merged.column.isin(headline.TESTED_COLUMNS)
    assert tested.sum() == 8 and merged[tested].p_above_chance_s.notna().all()
    expected = [e + (f" · above chance: {'yes' if p < 0.05 else 'no'} ({headline.p_text(p)})" if t else "")
                for e, p, t in zip(expected, merged.p_above_chance_s, tested)]
    assert list(merged.text) == expected
    # both tasks, every column that has rows (synthetic has no BE / rBE), in the Markdown too
    assert set(csv.task) == {"synthetic", "breastmnist"}
    assert set(csv[csv.task == "breastmnist"].column) == set(HEADLINE_COLUMNS)
    assert "**synthetic · 28 px · cnn-small**" in printed and "| L∞ 4/255 |" in printed
    for name in ("headline.tex", "headline.html"):
        assert (tmp_path / "tables" / name).stat().st_size > 1000


# ------------------------------------------------------------------------------------------ writers


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("headline")
    df = make_results(seeds=(0, 1, 2), tasks=("synthetic", "breastmnist"), be=True, worst=[("linf", 2 / 255)])
    std_worst = (df.task == "breastmnist") & (df.train_norm == "none") & (df.eval_kind == "worst")
    results.write_table(df[~std_worst], out / "summary.parquet")
    paths = headline_write.make_headline(out / "summary.parquet", out / "tables", eps=EPS, pgd_steps=20)
    return paths


def test_latex_structure(written):
    text = written["tex"].read_text()
    assert text.count(r"\begin{table}") == text.count(r"\end{table}") == 2
    assert text.count(r"\toprule") == text.count(r"\midrule") == text.count(r"\bottomrule") == 2
    assert r"\usepackage{booktabs}" in text and text.rstrip().endswith(r"\end{document}")
    assert text.count("{") - text.count(r"\{") == text.count("}") - text.count(r"\}")
    for tabular in re.findall(r"\\begin\{tabular\}\{l(r+)\}(.*?)\\end\{tabular\}", text, re.S):
        n = len(tabular[0]) + 1
        rows = [line for line in tabular[1].splitlines() if line.endswith(r" \\")]
        assert len(rows) == 2 + 4 and all(r.count("&") == n - 1 for r in rows)  # 2 header lines, 4 settings
    assert r"\textbf{" in text and r"$\pm$" in text and r"$L_\infty$" not in text and r"L$_\infty$" in text
    assert r"$^\ddagger$" in text and r"\S{}" in text and r"$D_\mathrm{rand}$" in text
    assert "±" not in text and "∞" not in text  # no raw unicode for pdflatex


def test_latex_compiles_with_pdflatex(written, tmp_path):
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex not installed (scripts/setup_env.sh installs texlive-latex-recommended as root)")
    shutil.copy(written["tex"], tmp_path / "headline.tex")
    proc = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "headline.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "headline.pdf").stat().st_size > 1000
    log = (tmp_path / "headline.log").read_text(errors="replace")
    assert "Overfull" not in log and "Missing character" not in log


def test_html_is_one_readable_page(written, chromium, tmp_path):
    from PIL import Image

    page = written["html"].read_text()
    assert page.count("<table") == 2 and "<strong>" in page and "http" not in page
    cells = re.findall(r"<td>(.*?)</td>", page)
    assert any("±" in c for c in cells)
    shot = tmp_path / "shot.png"
    proc = headless(chromium, written["html"], tmp_path, f"--screenshot={shot}", "--window-size=1200,900")
    assert shot.exists(), proc.stderr[-2000:]
    grey = np.asarray(Image.open(shot).convert("L"), dtype=np.int64)
    assert (grey < 100).sum() > 5000, "the headline page rendered (nearly) blank"


def test_markdown_has_one_table_per_block():
    frame, blocks = build(make_results(tasks=("synthetic", "breastmnist")))
    text = headline_write.to_markdown(blocks)
    assert text.count("| training |") == 2
    assert text.count("| standard | **99.0** |") == 2


# --------------------------------------------------------------------------------------- bad input


def _one_line_error(capsys, *argv):
    code = cli.main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("medgrid: error:"), err
    return err


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    summary = tmp_path / "summary.parquet"
    results.write_table(make_results(), summary)
    out = tmp_path / "tables"
    base = ["table", "--summary", str(summary), "--out-dir", str(out)]
    assert "1/255, 2/255" in _one_line_error(capsys, *base, "--linf-eps", "4/255")
    assert "unknown headline columns" in _one_line_error(capsys, *base, "--columns", "clean,accuracy")
    assert "twice" in _one_line_error(capsys, *base, "--columns", "clean,clean")
    assert "> 0" in _one_line_error(capsys, *base, "--l2-eps", "0")
    assert "bad epsilon" in _one_line_error(capsys, *base, "--l2-eps", "half")
    assert "--pgd-steps" in _one_line_error(capsys, *base, "--pgd-steps", "0")
    assert "missing results table" in _one_line_error(capsys, "table", "--summary", str(tmp_path / "no.parquet"),
                                                      "--out-dir", str(out))
    assert not out.exists()


def test_the_header_names_what_ran_task_by_task():
    """A two-class task whose cells ran APGD-CE and Square (and the transfer check), adaptively, beside a
    four-class one with APGD-CE and APGD-T: each block's header lists its own attacks."""
    binary = make_results(tasks=("breastmnist",), worst=[("linf", 2 / 255)], adaptive=True,
                          stages=("worst-white-box", "apgd-ce", "square", "transfer"))
    four = make_results(worst=[("linf", 2 / 255)])
    _, blocks = build(pd.concat([four, binary], ignore_index=True))
    details = {b.task: b.headers[1][1] for b in blocks}
    assert details == {"synthetic": "worst of PGD-20, APGD-CE, APGD-T",
                       "breastmnist": "worst of PGD-20, APGD-CE, Square, transfer; adaptive"}
    # a table from before black-box finds entered the worst case (no worst-white-box rows) names the white-box
    # attacks only, although it has square rows (then a check on its own)
    old = make_results(worst=[("linf", 2 / 255)], stages=("apgd-ce", "apgd-t", "square"))
    assert build(old)[1][0].headers[1][1] == "worst of PGD-20, APGD-CE, APGD-T"


def test_robust_numbers_on_a_subset_come_with_the_clean_figure_of_the_same_images():
    frame, (block,) = build(make_results(worst=[("linf", 2 / 255)], images=40))
    robust = by_column(frame, "robust_linf")
    assert (robust.n_images == 40).all() and (by_column(frame, "clean").n_images == 100).all()
    same = robust.loc["L∞ 2/255"]
    assert same.clean_same_images == pytest.approx(CLEAN["linf-2"] + 0.01)
    assert same.text == f"{100 * (ROBUST['linf-2'] - 0.02):.1f} ({100 * (CLEAN['linf-2'] + 0.01):.1f})"
    assert block.headers[1][1].endswith("40 images " + headline.SUBSET)
    assert any(m == headline.SUBSET and "cannot exceed" in t for m, t in block.notes)


def test_cells_with_degenerate_seeds_show_the_healthy_mean_and_the_count():
    df = make_results(seeds=(0, 1, 2))
    bad = (df.train_norm == "l2") & (df.seed == 2) & (df.metric == "balanced_acc")
    df.loc[bad, "value"] = 0.25  # the collapsed seed drags every mean of its cell down
    health = [results.make_row(cell("synthetic", n, e, s), eval_kind="health", metric="degenerate",
                               value=float(n == "l2" and s == 2), n=100) for n, e in SETTINGS for s in (0, 1, 2)]
    df = results.from_rows(pd.concat([df, pd.DataFrame(health)]).to_dict("records"))
    frame, (block,) = build(df)
    clean = by_column(frame, "clean").loc["L2 0.5"]
    kept = df[(df.train_norm == "l2") & (df.seed < 2) & (df.eval_kind == "clean") & (df.metric == "balanced_acc")]
    assert clean.degenerate_seeds == 1 and clean.n_seeds == 3 and clean.n_healthy == 2
    assert clean.mean_healthy == pytest.approx(kept.value.mean()) and clean["mean"] < clean.mean_healthy
    assert clean.text.startswith(f"{100 * kept.value.mean():.1f} ± ")
    cells = dict(block.rows)
    assert cells["L2 0.5"][0].mark == headline.DEGENERATE + "1/3" and cells["standard"][0].mark == ""
    assert any(m == headline.DEGENERATE and "healthy" in t for m, t in block.notes)
    healthy_rows = by_column(frame, "clean").drop("L2 0.5")
    assert (healthy_rows.n_healthy == 3).all() and np.allclose(healthy_rows.mean_healthy, healthy_rows["mean"])


# ------------------------------------------------------------------------------ models of Ilyas datasets


def sweep_rows(task, *, seeds=(0, 1), models=3):
    """D_rand models of two attack settings (3 models per dataset) beside the grid's standard cell: the
    10-step setting at chance, Ilyas' above it."""
    rng = np.random.default_rng(3)
    rows = []
    for seed in seeds:
        rows += cell_rows(task, "none", 0.0, seed, noise=0.0)
        for setting, acc in (("l2-0.5-10x0.1", 0.25), ("l2-0.5-100x0.1", 0.50)):
            for model in range(models):
                c = {**cell(task, "none", 0.0, seed, "drand"), "construction": setting, "model_seed": model}
                for metric, v in (("balanced_acc", acc), ("auc", 0.85)):
                    rows.append(results.make_row(c, eval_kind="clean", metric=metric,
                                                 value=v + rng.normal(0, 0.02), n=100))
    return results.from_rows(rows)


def test_models_of_a_sweep_ilyas_setting_intervals_over_models_and_the_test():
    frame, (block,) = build(sweep_rows("synthetic"), columns=["clean", "drand", "drand_auc"])
    drand = by_column(frame, "drand").loc["standard"]
    # Ilyas' setting of the sweep, over all 6 models (2 grid seeds x 3), above chance by the t-test
    assert drand.construction == "l2-0.5-100x0.1" and drand.n_seeds == 6 and drand.n_grid_seeds == 2
    assert drand["mean"] == pytest.approx(0.50, abs=0.03) and drand.p_above_chance < 1e-4
    assert drand.text.endswith("above chance: yes (p < 0.001)")
    auc = by_column(frame, "drand_auc").loc["standard"]
    assert auc["mean"] == pytest.approx(0.85, abs=0.03) and "yes" in auc.text
    assert [d for t, d in block.headers if t == "D_rand model"] == ["clean bal. acc., L2 0.5, 100 steps of 0.1",
                                                                     "clean AUC, L2 0.5, 100 steps of 0.1"]
    text = headline_blocks.caption(block)
    assert "over 2 seeds" in text and "over 6 models (2 grid seeds" in text and "one-sided t-test" in text
    # at chance: "no", with its p-value
    at_chance = sweep_rows("synthetic").query("construction != 'l2-0.5-100x0.1'")
    frame, _ = build(at_chance, columns=["drand"])
    cell_text = by_column(frame, "drand").loc["standard", "text"]
    assert "above chance: no (p = " in cell_text


def test_one_sided_test_matches_scipy_and_edge_cases():
    from scipy import stats

    values = [0.31, 0.27, 0.35, 0.29]
    t, p = aggregate.one_sided_p(values, 0.25)
    ref = stats.ttest_1samp(values, 0.25)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue / 2)  # one-sided, t > 0
    assert np.isnan(aggregate.one_sided_p([0.9], 0.25)[1])  # one value: no test
    assert aggregate.one_sided_p([0.3, 0.3], 0.25)[1] == 0.0 and aggregate.one_sided_p([0.2, 0.2], 0.25)[1] == 1.0


def test_by_seed_counts_models_and_tests_per_grid_seed_too():
    s = aggregate.by_seed(sweep_rows("synthetic", seeds=(0, 1, 2)))
    row = s[(s.train_data == "drand") & (s.metric == "balanced_acc") & (s.construction == "l2-0.5-100x0.1")].iloc[0]
    assert row.n_seeds == 9 and row.n_grid_seeds == 3 and row.test_chance == 0.25
    df = sweep_rows("synthetic", seeds=(0, 1, 2))
    means = df[(df.train_data == "drand") & (df.metric == "balanced_acc") & (df.construction == "l2-0.5-100x0.1")]
    grid = means.groupby("seed").value.mean()
    assert row.p_above_chance_grid == pytest.approx(aggregate.one_sided_p(grid, 0.25)[1])
    auc = s[(s.train_data == "drand") & (s.metric == "auc")].iloc[0]
    assert auc.test_chance == 0.5
    assert s[s.eval_kind == "pgd"].p_above_chance.isna().all()
