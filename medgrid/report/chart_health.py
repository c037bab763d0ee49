"""Training health in every chart: degenerate cells (:mod:`medgrid.evaluation.health`) drawn hollow, with a tooltip note.

:func:`add_health` joins onto the seed view (:func:`medgrid.report.chart_parts.seed_view`), per model over seeds,
the columns ``degenerate`` (flagged in at least one seed), ``collapsed`` (flagged and trained on the
original data: a broken model), ``degenerate_seeds`` and ``health_note`` (what the tooltips say). A model
trained on D_rand, D_det or D_R at chance is flagged too, but there chance level is a result: it is
labelled so and not drawn as broken. The chart builders add :func:`hollow_points` (or
:func:`hollow_marks` for bars and heatmap cells) over their marks and :func:`subtitle` to their subtitle,
so a new chart gets the marking by using them.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from medgrid import results
from medgrid.labels import DATA_LABEL
from medgrid.names import DEGENERATE_MARGIN

HEALTH = "health"
MODEL = results.MODEL  # a model, over its seeds
COLUMNS = ["degenerate", "collapsed", "degenerate_seeds", "health_note"]
COLLAPSED = "datum.collapsed"  # Vega expression: the mark belongs to a broken model
HOLLOW_FILL = "white"


def flags(df: pd.DataFrame) -> pd.DataFrame:
    """Per model: degenerate_seeds (seeds flagged) and health_seeds (seeds checked), from the health rows."""
    rows = df[(df.eval_kind == HEALTH) & (df.metric == "degenerate")]
    g = rows.assign(flag=(rows.value >= 0.5).astype(int)).groupby(MODEL, observed=True, sort=False)["flag"]
    return g.agg(degenerate_seeds="sum", health_seeds="count").reset_index()


def note(flagged: int, checked: int, train_data: str) -> str:
    if checked == 0:
        return "not checked (no health rows)"
    if flagged == 0:
        return "healthy: predicts several classes, above chance"
    seeds = f"{flagged} of {checked} seed{'s' if checked > 1 else ''}"
    if train_data != "original":
        return (f"at chance in {seeds}: for a model trained on {DATA_LABEL.get(train_data, train_data)} "
                "a result (its features do not generalise), not a broken model")
    return (f"DEGENERATE in {seeds}: one predicted class or balanced accuracy within "
            f"{100 * DEGENERATE_MARGIN:.0f} points of chance; its robustness is meaningless")


def add_health(s: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The seed view ``s`` with :data:`COLUMNS` joined from the health rows of the tidy table ``df``."""
    if s.empty:
        return s
    f = flags(df)
    out = s.drop(columns=[c for c in COLUMNS + ["health_seeds"] if c in s.columns]).merge(f, on=MODEL, how="left")
    out["degenerate_seeds"] = out.degenerate_seeds.fillna(0).astype(int)
    checked = out.pop("health_seeds").fillna(0).astype(int)
    out["degenerate"] = out.degenerate_seeds > 0
    out["collapsed"] = out.degenerate & (out.train_data == "original").astype(bool)
    out["health_note"] = [note(k, c, t) for k, c, t in zip(out.degenerate_seeds, checked, out.train_data)]
    return out


def tooltip():
    return alt.Tooltip("health_note:N", title="training health")


def hollow_points(x, y, color, tips, *, size: float, **encodings):
    """Hollow markers (white inside the setting's colour) over the points of collapsed models."""
    return alt.Chart().transform_filter(COLLAPSED).mark_point(
        filled=False, fill=HOLLOW_FILL, fillOpacity=1, opacity=1, size=size, strokeWidth=2.2).encode(
        x=x, y=y, color=color, tooltip=tips, **encodings)


def hollow_marks(mark: str, stroke, tips, **encodings):
    """Hollow bars or rects (white fill, outlined in ``stroke``'s encoding) over those of collapsed models."""
    chart = alt.Chart().transform_filter(COLLAPSED)
    style = dict(fill=HOLLOW_FILL, fillOpacity=1, strokeWidth=2.2)
    chart = chart.mark_bar(**style) if mark == "bar" else chart.mark_rect(**style)
    return chart.encode(stroke=stroke, tooltip=tips, **encodings)


def subtitle(d: pd.DataFrame) -> list[str]:
    """A subtitle line explaining the marking, when the chart shows a flagged model."""
    if d.empty or "degenerate" not in d.columns or not d.degenerate.any():
        return []
    lines = []
    if d.collapsed.any():
        lines.append("Hollow: degenerate model (one predicted class or balanced accuracy at chance, "
                     "eval_kind=health): a constant classifier looks robust but has learned nothing.")
    if (d.degenerate & ~d.collapsed).any():
        lines.append("Models trained on D_rand / D_det / D_R at chance are flagged too, but there chance is "
                     "a result, not a broken model (see the tooltip).")
    return lines
