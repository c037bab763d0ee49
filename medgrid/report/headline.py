"""The headline table: what the grid found, as a paper prints it.

Per task, image size and architecture, one row per training setting (standard, then each norm by
epsilon) and a few columns: clean balanced accuracy, robust balanced accuracy at one epsilon per attack
norm (the per-sample worst case over PGD, APGD-CE and APGD-T where the cell has it, PGD otherwise),
MedMNIST-C mean balanced accuracy, BE and rBE, and the clean balanced accuracy of the models trained on
D_rand, D_det (on the standard row) and D_R (on its robust source's row). Every number is the mean over
seeds with its t-based 95% interval, as :func:`medgrid.report.aggregate.by_seed` computes them for
``summary_by_seed.parquet``.

:func:`build` turns the tidy results table into the headline's own tidy frame (one row per task x size x
arch x setting x column); :func:`blocks` cuts that into the tables a reader sees, with their headers and
footnotes. Writing them as CSV, LaTeX, HTML and Markdown is :mod:`medgrid.report.headline_write`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medgrid import epsilon, results
from medgrid.data.tasks import chance_level
from medgrid.errors import UserError
from medgrid.labels import DATA_LABEL, NORM_NAME, attack_name, setting_label, setting_order
from medgrid.names import CORRUPTION_MEAN, HEADLINE_COLUMNS, HEALTH_METRIC, OVERFIT_METRIC, WHITE_BOX_KINDS
from medgrid.report.aggregate import by_seed

BLOCK = results.BLOCK
CELL = results.BLOCK + results.SETTING  # one row of a block
SCALE, DIGITS = 100.0, 1  # shown in percent with one decimal (BE and rBE: AlexNet = 100)
ACC = "balanced_acc"
NOT_COMPARABLE = "_not_comparable"  # suffix of BE / rBE measured at a size other than 224 px

# the headline frame's columns, as written to headline.csv
FRAME = ["task", "size", "arch", "setting", "train_norm", "train_eps", "train_method", "train_method_param",
         "column", "train_data", "eval_kind", "eval_norm", "eval_eps", "corruption", "severity", "metric", "mean",
         "low", "high", "n_seeds", "degenerate_seeds", "overfit_seeds", "best", "text"]

# footnote marks
DEGENERATE, PGD_ONLY, NOT_COMPARABLE_MARK, OVERFIT = "†", "‡", "§", "¶"
NOTES = {
    DEGENERATE: "degenerate in at least one seed (predicts one class, or clean balanced accuracy within 2 points "
                "of chance); left out of the bold best values",
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
    if column in ("clean", "drand", "ddet", "drobust"):
        clean = s[data & (s.eval_kind == "clean") & (s.metric == ACC)]
        return _on_source_row(clean, s[data & (s.eval_kind == "features")]) if column == "drobust" else clean
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


def _cell_text(mean: float, low: float, high: float, n_seeds: int) -> str:
    """'84.1 ± 1.2' (mean and the half-width of the 95% interval, in percent), the mean alone with one seed."""
    text = f"{SCALE * mean:.{DIGITS}f}"
    if n_seeds > 1 and np.isfinite(low) and np.isfinite(high):
        text += f" ± {SCALE * (high - low) / 2:.{DIGITS}f}"
    return text


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
    ``n_seeds``, ``degenerate_seeds`` (seeds whose model the health check flagged), ``best`` (bold) and ``text``.

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
    s = by_seed(rows)
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
    frame["setting"] = [setting_label(*k) for k in zip(*(frame[c] for c in results.SETTING))]
    frame["text"] = [_cell_text(*v) for v in zip(frame["mean"], frame.low, frame.high, frame.n_seeds)]
    frame["best"] = _best(frame)
    return _order(frame[FRAME], df)


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


# ------------------------------------------------------------------------------------------ blocks


@dataclass
class Cell:
    text: str
    best: bool = False
    mark: str = ""


@dataclass
class Block:
    """One table as a reader sees it: a title, column headers (title, detail), rows (label, cells), footnotes."""

    task: str
    size: int
    arch: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    rows: list[tuple[str, list[Cell | None]]] = field(default_factory=list)
    breaks: set[int] = field(default_factory=set)  # rows that start another training method's group
    notes: list[tuple[str, str]] = field(default_factory=list)
    seeds: tuple[int, int] = (0, 0)

    @property
    def title(self) -> str:
        return f"{self.task} · {self.size} px · {self.arch}"


def _robust_detail(kinds: set[str], pgd_steps: int | None) -> str:
    """'worst of PGD-20, APGD-CE, APGD-T' when the column has worst-case rows, else 'PGD-20'."""
    if "worst" in kinds:
        return "worst of " + ", ".join(attack_name(k, pgd_steps) for k in WHITE_BOX_KINDS)
    return attack_name("pgd", pgd_steps)


def blocks(frame: pd.DataFrame, *, eps: dict[str, float], pgd_steps: int | None = None,
           columns=HEADLINE_COLUMNS) -> list[Block]:
    """The headline frame as one table per task, size and arch; a column without values there is left out
    (and named in a footnote)."""
    out = []
    for (task, size, arch), b in frame.groupby(BLOCK, sort=False):
        block = Block(task, int(size), arch, seeds=(int(b.n_seeds.min()), int(b.n_seeds.max())))
        present = [c for c in columns if c in set(b.column)]
        marks = set()
        for column in present:
            c = b[b.column == column]
            sp = spec(column, eps)
            detail = sp.detail
            if column.startswith("robust_"):
                detail = _robust_detail(set(c.eval_kind), pgd_steps)
            elif c.metric.str.endswith(NOT_COMPARABLE).any():
                detail, _ = f"{detail} {NOT_COMPARABLE_MARK}", marks.add(NOT_COMPARABLE_MARK)
            block.headers.append((sp.title, detail))
        settings = b[results.SETTING + ["setting"]].drop_duplicates()
        previous = None
        for *setting, label in settings.itertuples(index=False):
            row = b[(b[results.SETTING] == setting).all(axis=1)].set_index("column")
            method = tuple(setting[2:])  # the training method and its parameter
            if previous is not None and method != previous:
                block.breaks.add(len(block.rows))  # the rows of another training method (or beta) start here
            previous = method
            if (row.degenerate_seeds > 0).any():
                label, _ = label + " " + DEGENERATE, marks.add(DEGENERATE)
            if (row.overfit_seeds > 0).any():
                label, _ = label + " " + OVERFIT, marks.add(OVERFIT)
            cells = []
            for column in present:
                if column not in row.index:
                    cells.append(None)
                    continue
                r = row.loc[column]
                fallback = (column.startswith("robust_") and r.eval_kind == "pgd"
                            and "worst" in set(b[b.column == column].eval_kind))
                if fallback:
                    marks.add(PGD_ONLY)
                cells.append(Cell(r.text, bool(r.best), PGD_ONLY if fallback else ""))
            block.rows.append((label, cells))
        block.notes = [(m, NOTES[m]) for m in (DEGENERATE, OVERFIT, NOT_COMPARABLE_MARK) if m in marks]
        if PGD_ONLY in marks:
            block.notes.append((PGD_ONLY, f"{attack_name('pgd', pgd_steps)} only: this model has no APGD "
                                          "evaluation at this ε"))
        missing = [spec(c, eps).title for c in columns if c not in present]
        if missing:
            block.notes.append(("", f"No rows for {', '.join(missing)}: left out."))
        out.append(block)
    return out


def caption(block: Block) -> str:
    """What the numbers of a block are, in one sentence or two."""
    lo, hi = block.seeds
    seeds = f"{lo} seeds" if lo == hi else f"{lo}-{hi} seeds"
    if hi <= 1:
        spread = "one seed: means only"
    else:
        spread = f"mean ± half-width of the t-based 95% interval over {seeds}"
    chance = chance_level(block.task)
    chance = f" Chance level: {SCALE * chance:.{DIGITS}f}%." if np.isfinite(chance) else ""
    errors = any(t in ("BE", "rBE") for t, _ in block.headers)
    errors = "; BE and rBE in % of AlexNet's error (lower is better)" if errors else ""
    return f"Balanced accuracy in % ({spread}){errors}. Bold: the best value of a column.{chance}"
