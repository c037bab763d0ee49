"""The pieces every chart shares: the seed-aggregated view with its labels, the colour scale of the training
settings, tooltips, panel headers, the chance line, the panel size and the common styling."""

from __future__ import annotations

import altair as alt
import pandas as pd

from medgrid.data.tasks import chance_level
from medgrid.labels import CHANCE_COLOR, STANDARD_COLOR, family, ramp, setting_label, setting_order
from medgrid.names import DEFAULT_METHOD
from medgrid.report import chart_health as health
from medgrid.report.aggregate import by_seed

CELL_W, CELL_H = 300, 240
LINE_LAYER_STYLE = dict(color="#9a9a9a", strokeWidth=1.2)


SETTING_COLUMNS = ["train_norm", "train_eps", "train_method", "train_method_param"]


def add_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with the tidy table's setting columns) with ``setting`` (its label), ``setting_order`` (a rank:
    standard, then PGD-AT L-inf and L2 by epsilon, then each other method) and ``family`` (the frontier it is on:
    the norm under PGD-AT, else the method and norm)."""
    settings = list(zip(*(frame[c] for c in SETTING_COLUMNS)))
    rank = {k: i for i, k in enumerate(sorted({setting_order(*k) for k in settings}))}
    return frame.assign(setting=[setting_label(*k) for k in settings],
                        setting_order=[rank[setting_order(*k)] for k in settings],
                        family=[family(n, m, p) for n, _, m, p in settings])


def setting_scale(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Colour domain and range of the training settings in ``frame`` (of :func:`add_settings`): standard black;
    PGD-AT L-inf blues and L2 oranges, each other method its own ramp (TRADES purples, FGSM-RS greens); darker
    for larger epsilons."""
    settings = frame[SETTING_COLUMNS + ["setting", "setting_order"]].drop_duplicates("setting")
    settings = settings.sort_values("setting_order")
    ramps = [n if n == "none" or m == DEFAULT_METHOD else m for n, m in zip(settings.train_norm, settings.train_method)]
    domain, colors = [], []
    for key, group in settings.groupby(pd.Series(ramps, index=settings.index), sort=False):
        labels = list(group.setting)
        domain += labels
        colors += [STANDARD_COLOR] * len(labels) if key == "none" else ramp(key, len(labels))
    return domain, colors


# ------------------------------------------------------------------------------------ seed view


def seed_view(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of ``metric`` aggregated over seeds, with labels the charts share.

    Adds ``lo``/``hi`` (the 95% interval, the mean itself with one seed), ``setting``, ``setting_order``,
    ``family`` (:func:`add_settings`), ``panel`` (the task, with its size when the table has several sizes),
    ``chance`` and the training-health columns of :func:`medgrid.report.chart_health.add_health`.
    """
    rows = df[df.metric == metric]
    if rows.empty:
        return pd.DataFrame()
    s = by_seed(rows)
    s["lo"] = s["ci95_t_low"].fillna(s["mean"])
    s["hi"] = s["ci95_t_high"].fillna(s["mean"])
    s = add_settings(s)
    several_sizes = df["size"].nunique() > 1
    s["panel"] = [f"{t} · {z} px" if several_sizes else t for t, z in zip(s.task, s["size"])]
    s["chance"] = s.task.map(chance_level)
    return health.add_health(s, df)


def tooltip(*extra):
    base = [
        alt_tooltip("task", "task"), alt_tooltip("size", "size (px)"), alt_tooltip("arch", "arch"),
        alt_tooltip("setting", "training"), alt_tooltip("train_data", "training data"),
    ]
    return base + list(extra) + [health.tooltip()]


def interval_tips(name, suffix="", label=""):
    """Tooltips of a mean and its 95% interval (columns mean, lo, hi, each + suffix)."""
    return [alt_tooltip(f"mean{suffix}", f"{label}{name}", ".4f"),
            alt_tooltip(f"lo{suffix}", f"{label}95% low", ".4f"),
            alt_tooltip(f"hi{suffix}", f"{label}95% high", ".4f")]


def alt_tooltip(field, title, fmt=None, kind=None):
    kw = {"title": title}
    if fmt:
        kw["format"] = fmt
    return alt.Tooltip(f"{field}:{kind or ('Q' if fmt else 'N')}", **kw)


def arch_encodings(frame: pd.DataFrame):
    """strokeDash by arch when the table has several archs, a solid line otherwise."""
    if frame.arch.nunique() > 1:
        return {"strokeDash": alt.StrokeDash("arch:N", title="architecture")}
    return {}


def header():
    return alt.Header(title=None, labelFontSize=13, labelFontWeight="bold")


def chance_layers(label: bool = True):
    """A dashed rule at chance level (1 / n_classes), with a label at its right end, for faceted layers."""
    valid = "isValid(datum.chance) && isFinite(datum.chance)"
    rule = alt.Chart().mark_rule(strokeDash=[5, 4], color=CHANCE_COLOR).encode(
        y="mean(chance):Q").transform_filter(valid)
    text = alt.Chart().mark_text(align="right", baseline="bottom", dx=-3, dy=-2, color=CHANCE_COLOR,
                                 fontSize=10).encode(
        y="mean(chance):Q", x=alt.value(CELL_W), text=alt.value("chance")).transform_filter(valid)
    return [rule, text] if label else [rule]


# ------------------------------------------------------------------------------------------ charts


def finish(chart):
    """The fonts, grid and legend every chart shares."""
    return chart.configure_axis(labelFontSize=11, titleFontSize=12, grid=True, gridColor="#e6e6e6").configure_legend(
        labelFontSize=11, titleFontSize=12, labelLimit=260).configure_title(
        fontSize=16, subtitleFontSize=12, subtitleColor="#444444", anchor="start").configure_view(stroke="#cccccc")
