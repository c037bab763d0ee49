"""The training-curve chart: per epoch, train loss, train accuracy and validation balanced accuracy of every
checkpoint (the history table of :mod:`medgrid.report.history`), with the selected epoch marked.

One row of small multiples per task (and size, arch when the grid has several), one column per quantity,
one line per training setting and seed. Seeds whose model the evaluation flagged as degenerate
(:mod:`medgrid.evaluation.health`, joined from the summary) are dashed, their selected epoch hollow.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from medgrid import results
from medgrid.data.tasks import chance_level
from medgrid.labels import DATA_LABEL, DATA_ORDER, OKABE_ITO
from medgrid.names import NO_CONSTRUCTION, OVERFIT_DROP
from medgrid.report import chart_health, chart_parts, registry

NAME = "training_curves"
TITLE = registry.BY_NAME[NAME].title
QUANTITY = {
    "train_loss": "train loss",
    "train_acc": "train accuracy",
    "val_balanced_acc": "validation balanced accuracy",
}
MODEL = results.CELL
DATA_COLORS = {"drand": OKABE_ITO[1], "ddet": OKABE_ITO[2], "drobust": OKABE_ITO[3]}
OVERFIT_COLOR = OKABE_ITO[6]  # vermillion


def _per_seed_health(df: pd.DataFrame | None) -> pd.DataFrame:
    """Per model and seed: degenerate (bool) and its note, from the summary's health rows."""
    cols = MODEL + ["degenerate"]
    if df is None:
        return pd.DataFrame(columns=cols)
    rows = df[(df.eval_kind == chart_health.HEALTH) & (df.metric == "degenerate")]
    return rows.assign(degenerate=rows.value >= 0.5)[cols]


def _frame(history: pd.DataFrame, df: pd.DataFrame | None) -> pd.DataFrame:
    h = history.merge(_per_seed_health(df), on=MODEL, how="left")
    checked = h.degenerate.notna()
    h["degenerate"] = h.degenerate.fillna(False).astype(bool)
    h["collapsed"] = h.degenerate & (h.train_data == "original").astype(bool)
    h["health_note"] = [
        "not checked (no health rows)" if not c else
        chart_health.note(int(d), 1, t) for c, d, t in zip(checked, h.degenerate, h.train_data)]
    h = chart_parts.add_settings(h)
    constructed = h.train_data != "original"  # Ilyas et al.'s datasets: after every setting of the grid
    h["setting"] = h.setting.where(~constructed, [f"{DATA_LABEL[t]} (standard training)" for t in h.train_data])
    h["setting_order"] = h.setting_order.where(~constructed, [10000 + DATA_ORDER[t] for t in h.train_data])
    several = {c: history[c].nunique() > 1 for c in ("size", "arch")}
    h["panel"] = [" · ".join([t] + ([f"{z} px"] if several["size"] else []) + ([a] if several["arch"] else []))
                  for t, z, a in zip(h.task, h["size"], h.arch)]
    long = h.melt(id_vars=[c for c in h.columns if c not in QUANTITY], value_vars=list(QUANTITY),
                  var_name="quantity_key", value_name="value")
    long["quantity"] = long.quantity_key.map(QUANTITY)
    long["chance"] = [chance_level(t) if q == "val_balanced_acc" else float("nan")
                      for t, q in zip(long.task, long.quantity_key)]
    long["line"] = [f"{s} · seed {k}" + (f" · model {m}" if m else "") + ("" if c == NO_CONSTRUCTION else f" · {c}")
                    for s, k, m, c in zip(long.setting, long.seed, long.model_seed, long.construction)]
    return long


def _colors(long: pd.DataFrame):
    original = long[long.train_data == "original"]
    domain, colors = chart_parts.setting_scale(original) if not original.empty else ([], [])
    for kind in DATA_ORDER:
        label = f"{DATA_LABEL[kind]} (standard training)"
        if kind != "original" and label in set(long.setting):
            domain.append(label)
            colors.append(DATA_COLORS[kind])
    return alt.Color("setting:N", title="training", scale=alt.Scale(domain=domain, range=colors))


def _column(long, key: str, color, tips, first: bool):
    """One quantity: a row of panels (one per task), lines per setting and seed, the selected epoch marked."""
    d = long[long.quantity_key == key]
    last = int(d.epoch.max())
    step = max(1, -(-last // 10))
    x = alt.X("epoch:Q", title="epoch", scale=alt.Scale(domain=[1, max(last, 2)], nice=False),
              axis=alt.Axis(values=list(range(1, last + 1, step)), format="d"))
    if key == "train_loss":
        y = alt.Y("value:Q", title=QUANTITY[key], scale=alt.Scale(zero=True))
    else:
        y = alt.Y("value:Q", title=QUANTITY[key], scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"))
    dash = alt.condition(chart_health.COLLAPSED, alt.value([5, 3]), alt.value([1, 0]))
    lines = alt.Chart().mark_line(strokeWidth=1.6, opacity=0.85).encode(
        x=x, y=y, color=color, detail="line:N", strokeDash=dash, order="epoch:Q")
    points = alt.Chart().mark_point(size=18, filled=True, opacity=0.7).encode(x=x, y=y, color=color, tooltip=tips)
    selected = alt.Chart().transform_filter("datum.selected").mark_point(
        shape="diamond", size=110, filled=True, opacity=1, stroke="black", strokeWidth=0.8).encode(
        x=x, y=y, color=color, tooltip=tips)
    hollow = chart_health.hollow_points(x, y, color, tips, size=110, shape=alt.value("diamond")).transform_filter(
        "datum.selected")
    # the epoch at which fast adversarial training's guard found catastrophic overfitting (the run stopped there)
    stopped = alt.Chart().transform_filter("datum.overfit").mark_point(
        shape="cross", size=140, filled=True, color=OVERFIT_COLOR, opacity=1).encode(x=x, y=y, tooltip=tips)
    chance = chart_parts.chance_layers(label=False) if key == "val_balanced_acc" else []
    layer = alt.layer(lines, points, selected, hollow, stopped, *chance, data=d).properties(width=260, height=170)
    header = chart_parts.header() if first else alt.Header(title=None, labels=False)
    return layer.facet(row=alt.Row("panel:N", header=header))


def training_curves(history: pd.DataFrame, df: pd.DataFrame | None = None):
    """The chart, or None when ``history`` has no rows. ``df``: the tidy summary, for the health flags."""
    if history is None or history.empty:
        return None
    long = _frame(history, df)
    color = _colors(long)
    tips = [chart_parts.alt_tooltip("task", "task"), chart_parts.alt_tooltip("size", "size (px)"),
            chart_parts.alt_tooltip("arch", "arch"), chart_parts.alt_tooltip("setting", "training"),
            chart_parts.alt_tooltip("seed", "seed", kind="Q"), chart_parts.alt_tooltip("quantity", "quantity"),
            chart_parts.alt_tooltip("epoch", "epoch", kind="Q"), chart_parts.alt_tooltip("value", "value", ".4f"),
            chart_parts.alt_tooltip("epoch_eps", "training ε at the epoch's end", ".4g"),
            chart_parts.alt_tooltip("selected", "selected epoch"),
            chart_parts.alt_tooltip("guard_pgd_acc", "fast AT guard: PGD accuracy on its training batch", ".4f"),
            chart_parts.alt_tooltip("overfit", "catastrophic overfitting (the run stopped here)"),
            chart_health.tooltip()]
    columns = [_column(long, key, color, tips, i == 0) for i, key in enumerate(QUANTITY)]
    notes = ["Diamonds: the selected epoch (best validation balanced accuracy; after the ε warm-up, if any). "
             "Dashed grey: chance."]
    if long.overfit.any():
        notes.append("Vermillion crosses: the epoch at which the catastrophic-overfitting guard of fast adversarial "
                     "training (FGSM-RS) stopped the run (PGD accuracy on a fixed training batch fell by more "
                     f"than {OVERFIT_DROP}); the selected epoch is one before it.")
    if long.collapsed.any():
        notes.append("Dashed lines, hollow diamonds: seeds whose model the evaluation flagged as degenerate "
                     "(one predicted class or balanced accuracy at chance on the test split).")
    return alt.hconcat(*columns).properties(title=alt.Title(
        TITLE, subtitle=["One line per training setting and seed: per epoch, the mean loss and accuracy of that "
                         "epoch's training batches (adversarial examples when adversarially trained) and the "
                         "validation balanced accuracy after it.", *notes]))
