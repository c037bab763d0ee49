"""The headline table: what the grid found, as a paper prints it.

Per task, image size and architecture, one row per training setting (standard, then each norm by
epsilon) and a few columns: clean balanced accuracy, robust balanced accuracy at one epsilon per attack
norm (the per-sample worst case over every attack run where the cell has it, PGD otherwise; the header
names the attacks the cells' rows show ran), MedMNIST-C mean balanced accuracy, BE and rBE, and the clean
balanced accuracy of the models trained on D_rand, D_det (on the standard row; beside each its AUC) and D_R
(on its robust source's row). Every number is the mean over seeds with its t-based 95% interval, as
:func:`medgrid.report.aggregate.by_seed` computes them for ``summary_by_seed.parquet``; for the models trained
on D_rand / D_det / D_R the mean is over all their models (grid seeds x model seeds), and the D_rand / D_det
cells say whether it is above chance (a one-sided t-test over the models, its p-value). Of an attack sweep's
D_rand / D_det datasets the headline shows Ilyas et al.'s setting (:data:`medgrid.constructions.ILYAS`) where
the results have it.

Like with like: a robust number measured on a subset of the test images (the strong evaluation's
``samples``) is shown with the clean balanced accuracy of the same images beside it (row ``clean-subset``),
never only next to the clean column of all images. Degenerate seeds (the health check): a cell with some
shows the mean over its healthy seeds and how many were degenerate; headline.csv has both means and
both counts.

:func:`build` turns the tidy results table into the headline's own tidy frame (one row per task x size x
arch x setting x column); :func:`blocks` cuts that into the tables a reader sees, with their headers and
footnotes. Writing them as CSV, LaTeX, HTML and Markdown is :mod:`medgrid.report.headline_write`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medgrid import constructions, epsilon, results
from medgrid.errors import UserError
from medgrid.labels import DATA_LABEL, NORM_NAME, setting_label, setting_order
from medgrid.names import (
    CORRUPTION_MEAN,
    HEADLINE_COLUMNS,
    HEALTH_METRIC,
    NO_CONSTRUCTION,
    OVERFIT_METRIC,
    ROBUST_KINDS,
    WHITE_BOX_KINDS,
)
from medgrid.report.aggregate import GROUP, by_seed

BLOCK = results.BLOCK
CELL = results.BLOCK + results.SETTING  # one row of a block
SCALE, DIGITS = 100.0, 1  # shown in percent with one decimal (BE and rBE: AlexNet = 100)
ACC = "balanced_acc"
NOT_COMPARABLE = "_not_comparable"  # suffix of BE / rBE measured at a size other than 224 px

# the headline frame's columns, as written to headline.csv
FRAME = ["task", "size", "arch", "setting", "train_norm", "train_eps", "train_method", "train_method_param",
         "column", "train_data", "construction", "eval_kind", "eval_norm", "eval_eps", "corruption", "severity",
         "metric", "mean", "low", "high", "n_seeds", "n_grid_seeds", "p_above_chance", "p_above_chance_grid",
         "degenerate_seeds", "overfit_seeds", "mean_healthy", "low_healthy", "high_healthy", "n_healthy", "n_images",
         "clean_same_images", "attacks", "best", "text"]
ALPHA = 0.05  # the level of the above-chance test the D_rand / D_det cells state
TESTED_COLUMNS = ("drand", "drand_auc", "ddet", "ddet_auc")  # cells that say whether they are above chance

# footnote marks
DEGENERATE, PGD_ONLY, NOT_COMPARABLE_MARK, SUBSET, OVERFIT = "†", "‡", "§", "¶", "‖"
NOTES = {
    DEGENERATE: "†k/n: k of the n seeds are degenerate (the model predicts one class, or its clean balanced "
                "accuracy is within 2 points of chance); the value is the mean over the n - k healthy seeds (all "
                "k: the mean over all seeds; headline.csv has both means and both counts). Such cells are left "
                "out of the bold best values",
    OVERFIT: "the catastrophic-overfitting guard of fast adversarial training stopped the run in at least one seed "
             "(PGD accuracy on a fixed training batch fell by more than 0.2 in one epoch); that seed keeps an epoch "
             "before the collapse (Wong et al. 2020)",
    NOT_COMPARABLE_MARK: "images are not 224 px: not comparable to MedMNIST-C's AlexNet baselines (measured at "
                         "224 px)",
}


@dataclass(frozen=True)
class Spec:
    """What one headline column shows: a title, a second header line, the models it reads, better = higher?"""

    title: str
    detail: str
    train_data: str = "original"
    higher_is_better: bool = True


SPECS = {
    "clean": Spec("clean", "bal. acc."),
    "corruption": Spec("MedMNIST-C", "mean bal. acc."),
    "be": Spec("BE", "lower is better", higher_is_better=False),
    "rbe": Spec("rBE", "lower is better", higher_is_better=False),
    **{d: Spec(f"{DATA_LABEL[d]} model", "clean bal. acc.", train_data=d) for d in ("drand", "ddet", "drobust")},
    **{f"{d}_auc": Spec(f"{DATA_LABEL[d]} model", "clean AUC", train_data=d) for d in ("drand", "ddet")},
}


def spec(column: str, eps: dict[str, float] | None = None) -> Spec:
    """The column's Spec; a robust column's title names its norm and epsilon (its detail depends on the block)."""
    if column.startswith("robust_"):
        norm = column.removeprefix("robust_")
        value = (eps or {}).get(norm)
        where = f" {epsilon.text(norm, value)}" if value is not None else ""
        return Spec(f"robust {NORM_NAME[norm]}{where}", "bal. acc.")
    return SPECS[column]


# ------------------------------------------------------------------------------------------ frame


def _select(s: pd.DataFrame, column: str, eps: dict[str, float]) -> pd.DataFrame | None:
    """The by-seed rows of one column, one per cell; None when the table has none of its kind."""
    data = s.train_data == spec(column).train_data
    if column in ("clean", "drand", "ddet", "drobust", "drand_auc", "ddet_auc"):
        clean = s[data & (s.eval_kind == "clean") & (s.metric == ("auc" if column.endswith("_auc") else ACC))]
        if column == "drobust":
            return _on_source_row(clean, s[data & (s.eval_kind == "features")])
        return clean if column == "clean" else clean[clean.construction == headline_construction(clean.construction)]
    if column in ("corruption", "be", "rbe"):
        metrics = [ACC] if column == "corruption" else [column, column + NOT_COMPARABLE]
        return s[data & (s.eval_kind == "corruption") & (s.corruption == CORRUPTION_MEAN) & (s.severity == 0)
                 & s.metric.isin(metrics)]
    norm = column.removeprefix("robust_")
    rows = s[data & s.eval_kind.isin(["worst", "pgd"]) & (s.eval_norm == norm) & (s.metric == ACC)]
    if rows.empty or eps.get(norm) is None:
        return None
    at = rows[[epsilon.same(e, eps[norm]) for e in rows.eval_eps]]
    if at.empty:
        have = ", ".join(epsilon.text(norm, e) for e in sorted(set(rows.eval_eps)))
        raise UserError(f"no {NORM_NAME[norm]} attack rows at ε = {epsilon.text(norm, eps[norm])} in the results "
                        f"(they have {have}); choose one of those with --{norm}-eps")
    # the worst case over PGD and both APGD runs where the cell has it, PGD otherwise
    return results.prefer_worst(at, CELL)


def headline_construction(settings) -> str:
    """The attack setting the headline shows of the D_rand / D_det datasets in ``settings`` (tokens): Ilyas et
    al.'s, else the one not recorded (a single-setting run), else the first in sorted order."""
    have = set(settings)
    for choice in (constructions.ILYAS.token, NO_CONSTRUCTION):
        if choice in have:
            return choice
    return min(have) if have else NO_CONSTRUCTION


def _on_source_row(models: pd.DataFrame, made: pd.DataFrame) -> pd.DataFrame:
    """D_R models are standard training (train_norm none); the rows that made their dataset (eval_kind
    features) carry the robust cell it came from. Each model moves to that cell's row where its task, size
    and arch have one such source."""
    sources = made.loc[made.train_norm != "none", CELL].drop_duplicates().drop_duplicates(BLOCK, keep=False)
    if sources.empty:
        return models
    standard = models.train_norm == "none"
    moved = models[standard].drop(columns=results.SETTING).merge(sources, on=BLOCK)
    kept = models[~standard | ~models.set_index(BLOCK).index.isin(sources.set_index(BLOCK).index)]
    return pd.concat([moved, kept], ignore_index=True)[models.columns]


def _cell_text(mean: float, low: float, high: float, n_seeds: int, p: float = float("nan")) -> str:
    """'84.1 ± 1.2' (mean and the half-width of the 95% interval, in percent), the mean alone with one seed;
    with the p-value of the above-chance test: '52.3 ± 4.1 · above chance: yes (p = 0.003)'."""
    text = f"{SCALE * mean:.{DIGITS}f}"
    if n_seeds > 1 and np.isfinite(low) and np.isfinite(high):
        text += f" ± {SCALE * (high - low) / 2:.{DIGITS}f}"
    if np.isfinite(p):
        text += f" · above chance: {'yes' if p < ALPHA else 'no'} ({p_text(p)})"
    return text


def p_text(p: float) -> str:
    """'p = 0.003', 'p < 0.001'."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _order(frame: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Tasks and archs in the order the results list them, sizes ascending, settings standard -> L-inf -> L2 by
    epsilon under PGD-AT, then grouped by each other method (:func:`medgrid.labels.setting_order`), columns in
    HEADLINE_COLUMNS order."""
    rank = {c: {v: i for i, v in enumerate(pd.unique(df[c]))} for c in ("task", "arch")}
    settings = [setting_order(*k) for k in zip(*(frame[c] for c in results.SETTING))]
    setting_rank = {k: i for i, k in enumerate(sorted(set(settings)))}
    keys = dict(_t=frame.task.map(rank["task"]), _a=frame.arch.map(rank["arch"]),
                _s=[setting_rank[k] for k in settings], _c=frame.column.map(HEADLINE_COLUMNS.index))
    return (frame.assign(**keys).sort_values(["_t", "size", "_a", "_s", "_c"])
            .drop(columns=list(keys)).reset_index(drop=True))


def build(df: pd.DataFrame, *, eps: dict[str, float], columns=HEADLINE_COLUMNS) -> pd.DataFrame:
    """The headline frame of a tidy results table (all seeds): one row per task x size x arch x setting x column
    that has a value, with ``mean``, ``low`` / ``high`` (the t-based 95% interval, NaN with one seed),
    ``n_seeds``, ``degenerate_seeds`` (seeds whose model the health check flagged), the same over the healthy
    seeds (``mean_healthy``, ``low_healthy``, ``high_healthy``, ``n_healthy``), ``n_images`` (test images per
    seed), for robust columns ``clean_same_images`` (clean balanced accuracy of those images, over the seeds
    shown) and ``attacks`` (what ran: eval_kinds, and "adaptive"), ``best`` (bold) and ``text``.

    ``eps``: the headline epsilon of each attack norm. Columns without rows (no MedMNIST-C or feature rows yet,
    no BE for synthetic tasks) are left out; a robust column whose norm was attacked, but not at its epsilon, is
    a UserError.
    """
    unknown = [c for c in columns if c not in HEADLINE_COLUMNS]
    if unknown or not columns:
        raise UserError(f"unknown headline columns {unknown}; valid: {', '.join(HEADLINE_COLUMNS)}")
    if df.empty:
        raise UserError("the results table has no rows")
    rows = df[df.metric != "grad_evals"]
    if rows.empty:
        raise UserError("the results table has no rows but attack costs (grad_evals)")
    s, healthy = by_seed(rows), by_seed(rows[~_degenerate_seed(rows)])
    parts = []
    for column in columns:
        picked = _select(s, column, eps)
        if picked is not None and not picked.empty:
            parts.append(picked.assign(column=column))
    if not parts:
        raise UserError(f"the results table has no rows for any headline column ({', '.join(columns)})")
    frame = pd.concat(parts, ignore_index=True).rename(columns={"ci95_t_low": "low", "ci95_t_high": "high"})
    for metric, flag in ((HEALTH_METRIC, "degenerate_seeds"), (OVERFIT_METRIC, "overfit_seeds")):
        health = s[(s.eval_kind == "health") & (s.metric == metric) & (s.train_data == "original")]
        flagged = health.assign(**{flag: (health["mean"] * health.n_seeds).round().astype("int64")})
        frame = frame.merge(flagged[CELL + [flag]], on=CELL, how="left")
    frame["overfit_seeds"] = frame.overfit_seeds.fillna(0).astype("int64")
    # models trained on D_rand / D_det / D_R at chance are a result, not a broken cell: only the original
    # models' health counts
    original = frame.train_data == "original"
    frame["degenerate_seeds"] = frame.degenerate_seeds.where(original, 0).fillna(0).astype("int64")
    frame = _with_healthy(frame, healthy)
    frame["n_images"] = (frame.n / frame.n_seeds).round().astype("int64")
    frame = _with_same_images(frame, s, healthy)
    frame["attacks"] = _attacks(frame, s)
    frame["setting"] = [setting_label(*k) for k in zip(*(frame[c] for c in results.SETTING))]
    frame["text"] = [_shown_text(r, p) for r, p in zip(frame.itertuples(),
                                                       frame.p_above_chance.where(frame.column.isin(TESTED_COLUMNS)))]
    frame["best"] = _best(frame)
    return _order(frame[FRAME], df)


def _degenerate_seed(rows: pd.DataFrame) -> pd.Series:
    """Rows of the (cell, seed)s the health check flagged (models trained on the original data only)."""
    flags = rows[(rows.eval_kind == "health") & (rows.metric == HEALTH_METRIC) & (rows.train_data == "original")
                 & (rows.value >= 0.5)]
    key = results.CELL
    return rows.set_index(key).index.isin(flags.set_index(key).index)


def _with_healthy(frame: pd.DataFrame, healthy: pd.DataFrame) -> pd.DataFrame:
    """``mean_healthy`` ... ``n_healthy``: the same measurement over the healthy seeds only."""
    h = healthy[GROUP + ["mean", "ci95_t_low", "ci95_t_high", "n_seeds"]].rename(
        columns={"mean": "mean_healthy", "ci95_t_low": "low_healthy", "ci95_t_high": "high_healthy",
                 "n_seeds": "n_healthy"})
    out = frame.merge(h, on=GROUP, how="left")
    out["n_healthy"] = out.n_healthy.fillna(0).astype("int64")
    return out


def _with_same_images(frame: pd.DataFrame, s: pd.DataFrame, healthy: pd.DataFrame) -> pd.DataFrame:
    """``clean_same_images``: for a robust cell read from the strong evaluation on other images than the clean
    column's (a subset of the test split), the clean balanced accuracy of those images (row clean-subset; over
    the seeds the cell's value is the mean of); NaN elsewhere."""
    key = CELL + ["train_data", "construction"]
    out = frame.assign(clean_same_images=float("nan"))
    clean = s[(s.eval_kind == "clean") & (s.metric == ACC)]
    clean_images = out[key].merge(clean.assign(_n=clean.n / clean.n_seeds)[key + ["_n"]], on=key, how="left")._n
    for view, shown_healthy in ((s, False), (healthy, True)):
        same = view[(view.eval_kind == "clean-subset") & (view.metric == ACC)][key + ["mean"]]
        values = out[key].merge(same, on=key, how="left")["mean"].to_numpy()
        use = (out.column.str.startswith("robust_") & (out.eval_kind == "worst")
               & (out.n_images != clean_images.round().to_numpy()))
        use &= ((out.degenerate_seeds > 0) & (out.n_healthy > 0)) == shown_healthy
        out.loc[use, "clean_same_images"] = values[use.to_numpy()]
    return out


def _attacks(frame: pd.DataFrame, s: pd.DataFrame) -> list[str]:
    """Per robust cell, the attacks that ran at its epsilon, as the rows show them ("pgd,apgd-ce,...",
    ",adaptive" when the strong evaluation used the adaptive schedule); "" for other columns. A table from
    before every attack entered the worst case (no worst-white-box rows) names its white-box attacks only."""
    at = s[s.eval_kind.isin(ROBUST_KINDS + ("worst-white-box",))]
    out = []
    for r in frame.itertuples():
        if not r.column.startswith("robust_"):
            out.append("")
            continue
        mine = at[(at.task == r.task) & (at["size"] == r.size) & (at.arch == r.arch) & (at.train_norm == r.train_norm)
                  & (at.train_eps == r.train_eps) & (at.train_data == r.train_data) & (at.eval_norm == r.eval_norm)
                  & (at.eval_eps == r.eval_eps)]
        kinds = set(mine.eval_kind)
        allowed = ROBUST_KINDS if "worst-white-box" in kinds else WHITE_BOX_KINDS
        ran = [k for k in allowed if k in kinds] if r.eval_kind == "worst" else ["pgd"]
        adaptive = mine[mine.metric == "adaptive"]["mean"]
        out.append(",".join(ran + (["adaptive"] if r.eval_kind == "worst" and (adaptive > 0).any() else [])))
    return out


def _shown_text(r, p: float = float("nan")) -> str:
    """The cell: the mean (over the healthy seeds where some are degenerate), and the clean balanced accuracy
    of the same images in parentheses where a robust number is on other images than the clean column's; ``p``:
    the above-chance test's p-value where the column states it (D_rand / D_det)."""
    if r.degenerate_seeds > 0 and r.n_healthy > 0:
        text = _cell_text(r.mean_healthy, r.low_healthy, r.high_healthy, r.n_healthy)
    else:
        text = _cell_text(r.mean, r.low, r.high, r.n_seeds, p)
    if np.isfinite(r.clean_same_images):
        text += f" ({SCALE * r.clean_same_images:.{DIGITS}f})"
    return text


def _best(frame: pd.DataFrame) -> pd.Series:
    """Per table and column, the best shown value (ties included) among the cells of non-degenerate models;
    none when those cells show fewer than two different values."""
    shown = (frame["mean"] * SCALE).round(DIGITS)
    best = pd.Series(False, index=frame.index)
    for (*_, column), idx in frame.groupby(BLOCK + ["column"], sort=False).groups.items():
        values = shown[[i for i in idx if frame.at[i, "degenerate_seeds"] == 0]]
        if values.nunique() < 2:  # one value, or all tied: nothing stands out
            continue
        top = values.max() if spec(column).higher_is_better else values.min()
        best[values.index[values == top]] = True
    return best
