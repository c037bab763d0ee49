"""The headline frame (:func:`medgrid.report.headline.build`) as tables a reader sees: one :class:`Block` per
task, size and arch, its column headers, rows of :class:`Cell` and footnotes, and its caption; written as
LaTeX, HTML and Markdown by :mod:`medgrid.report.headline_write`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medgrid import constructions, results
from medgrid.data.tasks import chance_level
from medgrid.labels import attack_name
from medgrid.names import HEADLINE_COLUMNS, NO_CONSTRUCTION, ROBUST_KINDS
from medgrid.report.headline import (
    ALPHA,
    BLOCK,
    DEGENERATE,
    DIGITS,
    NOT_COMPARABLE,
    NOT_COMPARABLE_MARK,
    NOTES,
    OVERFIT,
    PGD_ONLY,
    SCALE,
    SUBSET,
    TESTED_COLUMNS,
    spec,
)


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
    seeds: tuple[int, int] = (0, 0)  # fewest and most seeds of the models trained on the task's data
    models: tuple[int, int, int] = (0, 0, 0)  # the D_rand / D_det / D_R columns: fewest and most models, grid seeds

    @property
    def title(self) -> str:
        return f"{self.task} · {self.size} px · {self.arch}"


def _robust_detail(attacks: list[str], pgd_steps: int | None) -> str:
    """'worst of PGD-20, APGD-CE, APGD-T, transfer; adaptive' from the cells' ``attacks`` (the union, in display
    order), else 'PGD-20'."""
    ran = {k for a in attacks for k in a.split(",") if k}
    kinds = [k for k in ROBUST_KINDS if k in ran]
    if kinds == ["pgd"] or not kinds:
        return attack_name("pgd", pgd_steps)
    detail = "worst of " + ", ".join(attack_name(k, pgd_steps) for k in kinds)
    return detail + ("; adaptive" if "adaptive" in ran else "")


def _degenerate_mark(r) -> str:
    return f"{DEGENERATE}{r.degenerate_seeds}/{r.n_seeds}" if r.degenerate_seeds > 0 else ""


def blocks(frame: pd.DataFrame, *, eps: dict[str, float], pgd_steps: int | None = None,
           columns=HEADLINE_COLUMNS) -> list[Block]:
    """The headline frame as one table per task, size and arch; a column without values there is left out
    (and named in a footnote)."""
    out = []
    for (task, size, arch), b in frame.groupby(BLOCK, sort=False):
        own, made = b[b.train_data == "original"], b[b.train_data != "original"]
        block = Block(task, int(size), arch)
        if not own.empty:
            block.seeds = (int(own.n_seeds.min()), int(own.n_seeds.max()))
        if not made.empty:
            block.models = (int(made.n_seeds.min()), int(made.n_seeds.max()), int(made.n_grid_seeds.max()))
        present = [c for c in columns if c in set(b.column)]
        marks, subsets = set(), set()
        for column in present:
            c = b[b.column == column]
            sp = spec(column, eps)
            detail = sp.detail
            if column.startswith("robust_"):
                detail = _robust_detail(list(c.attacks), pgd_steps)
                shown = c[c.clean_same_images.notna()]
                if not shown.empty:
                    n = ", ".join(str(v) for v in sorted(set(shown.n_images)))
                    detail, _ = f"{detail}; {n} images {SUBSET}", subsets.add(n)
            elif c.metric.str.endswith(NOT_COMPARABLE).any():
                detail, _ = f"{detail} {NOT_COMPARABLE_MARK}", marks.add(NOT_COMPARABLE_MARK)
            elif column in TESTED_COLUMNS and (c.construction != NO_CONSTRUCTION).any():
                detail = f"{detail}, {constructions.parse(c.construction.iloc[0]).describe()}"
            block.headers.append((sp.title, detail))
        settings = b[results.SETTING + ["setting"]].drop_duplicates()
        previous = None
        for *setting, label in settings.itertuples(index=False):
            row = b[(b[results.SETTING] == setting).all(axis=1)].set_index("column")
            method = tuple(setting[2:])  # the training method and its parameter
            if previous is not None and method != previous:
                block.breaks.add(len(block.rows))  # the rows of another training method (or beta) start here
            previous = method
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
                mark = (PGD_ONLY if fallback else "") + _degenerate_mark(r)
                marks |= {m for m in (PGD_ONLY, DEGENERATE) if m in mark}
                cells.append(Cell(r.text, bool(r.best), mark))
            block.rows.append((label, cells))
        block.notes = [(m, NOTES[m]) for m in (DEGENERATE, OVERFIT, NOT_COMPARABLE_MARK) if m in marks]
        if PGD_ONLY in marks:
            block.notes.append((PGD_ONLY, (f"{attack_name('pgd', pgd_steps)} only: this model has no strong "
                                           "evaluation at this ε")))
        if subsets:
            block.notes.append((SUBSET, (f"measured on a seeded subset of the test images "
                                         f"({'; '.join(sorted(subsets))} per seed; the clean column uses all of "
                                         "them); in parentheses the clean balanced accuracy of the same images, "
                                         "which the robust value cannot exceed")))
        missing = [spec(c, eps).title for c in columns if c not in present]
        if missing:
            block.notes.append(("", f"No rows for {', '.join(missing)}: left out."))
        out.append(block)
    return out


def _count(lo: int, hi: int, what: str) -> str:
    """'3 models', '2-3 models', '1 grid seed' (``what`` in the plural)."""
    if lo == hi == 1:
        return f"1 {what.removesuffix('s')}"
    return f"{lo} {what}" if lo == hi else f"{lo}-{hi} {what}"


def caption(block: Block) -> str:
    """What the numbers of a block are, in one sentence or two."""
    lo, hi = block.seeds
    if hi <= 1:
        spread = "one seed: means only" if hi else "no grid cells"
    else:
        spread = f"mean ± half-width of the t-based 95% interval over {_count(lo, hi, 'seeds')}"
    chance = chance_level(block.task)
    chance = f" Chance level: {SCALE * chance:.{DIGITS}f}%." if np.isfinite(chance) else ""
    errors = any(t in ("BE", "rBE") for t, _ in block.headers)
    errors = "; BE and rBE in % of AlexNet's error (lower is better)" if errors else ""
    models = ""
    m_lo, m_hi, grid = block.models
    if m_hi:
        over = (f"over {_count(m_lo, m_hi, 'models')} ({_count(grid, grid, 'grid seeds')}, each its own "
                f"dataset)") if m_hi > 1 else "one model: means only"
        models = (f" Models trained on D_rand / D_det / D_R: {over}; above chance: a one-sided t-test over the "
                  f"models at the {ALPHA:.0%} level (AUC chance: 50%).")
    return f"Balanced accuracy in % ({spread}){errors}. Bold: the best value of a column.{chance}{models}"
