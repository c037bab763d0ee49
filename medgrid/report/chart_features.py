"""The charts of Ilyas et al.'s experiment, drawn from the whole tidy table (they need rows of several metrics):

- (d) ``nonrobust_features``: clean accuracy on the original test set of the models trained on the original data,
  D_rand, D_det and D_R, with the 95% interval over all their models and, for D_rand / D_det, whether the mean is
  above chance (the one-sided t-test of :func:`medgrid.report.aggregate.above_chance`); beside the clean bars of
  the standard and the D_R model, their robust accuracy (worst case where evaluated, else PGD, named) at the D_R
  source's norm and epsilon, since D_R's claim is robustness. Of an attack sweep it shows the headline's setting.
- (g) ``nonrobust_sweep``: D_rand / D_det accuracy against the attack's steps (one line per epsilon), and on the
  synthetic tasks the texture alignment of the perturbations (:mod:`medgrid.features.alignment`) beside it.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from medgrid import constructions, epsilon, results
from medgrid.labels import (
    DATA_LABEL,
    DATA_ORDER,
    METRIC_NAME,
    NORM_ORDER,
    OKABE_ITO,
    robust_label,
    setting_label,
)
from medgrid.names import NO_CONSTRUCTION
from medgrid.report import chart_health as health
from medgrid.report import registry
from medgrid.report.chart_parts import (
    CELL_H,
    CELL_W,
    alt_tooltip,
    chance_layers,
    header,
    interval_tips,
    seed_view,
    tooltip,
)
from medgrid.report.headline import ALPHA, headline_construction, p_text

TITLES = {chart.name: chart.title for chart in registry.CHARTS}
PALETTE = {"original": OKABE_ITO[0], "drand": OKABE_ITO[1], "ddet": OKABE_ITO[2], "drobust": OKABE_ITO[3]}
NONROBUST = list(constructions.NONROBUST)
ROBUST_KEY = ["panel", *results.MODEL, "eval_norm", "eval_eps", "metric"]
TEXTURE = ("texture_alignment", "off_texture_share")  # the alignment rows (medgrid.features.alignment)


def _robust_rows(df: pd.DataFrame, s: pd.DataFrame) -> pd.DataFrame:
    """Robust-accuracy rows (seed view) of the standard and the D_R model of each block that made D_R, at the D_R
    source's norm and the epsilon evaluated closest to its training epsilon; worst case where evaluated."""
    made = df[(df.eval_kind == "features") & (df.train_data == "drobust") & (df.train_norm != "none")]
    attacked = s[s.eval_kind.isin(["pgd", "worst"])]
    parts = []
    for _, src in made[results.BLOCK + results.SETTING].drop_duplicates(results.BLOCK).iterrows():
        block = (attacked.task == src.task) & (attacked["size"] == src["size"]) & (attacked.arch == src.arch)
        rows = attacked[block & (attacked.eval_norm == src.train_norm)]
        dr = rows[rows.train_data == "drobust"]
        if dr.empty:
            continue
        eps = min(set(dr.eval_eps), key=lambda e: abs(e - src.train_eps))
        rows = rows[[epsilon.same(e, eps) for e in rows.eval_eps]]
        rows = rows[(rows.train_data == "drobust") | ((rows.train_data == "original") & (rows.train_norm == "none"))]
        parts.append(results.prefer_worst(rows, ROBUST_KEY))
    if not parts:
        return pd.DataFrame(columns=s.columns)
    r = pd.concat(parts, ignore_index=True)
    return r.assign(measure=["robust: " + robust_label(k, n, e) for k, n, e in zip(r.eval_kind, r.eval_norm,
                                                                                  r.eval_eps)])


def _value_text(mean: float, p: float, train_data: str, flagged: bool) -> tuple[str, str]:
    """(value, test) lines over a bar: ('31%', 'above chance · p = 0.002') for D_rand / D_det with a test,
    ('', '26% · at chance') for a model the health check flagged (one model, no test), ('', '84%') otherwise."""
    value = f"{mean:.0%}"
    if train_data in NONROBUST and np.isfinite(p):
        return value, f"{'above chance' if p < ALPHA else 'not above chance'} · {p_text(p)}"
    return "", value + (" · at chance" if flagged and train_data != "original" else "")


def nonrobust_features(df: pd.DataFrame, metric: str):
    """(d) clean accuracy on the original test set of models trained on original / D_rand / D_det / D_R, and the
    robust accuracy of the standard and D_R models."""
    s = seed_view(df, metric)
    if s.empty:
        return None
    name = METRIC_NAME[metric]
    clean = s[s.eval_kind == "clean"]
    feat = clean[clean.train_data != "original"]
    if feat.empty:
        return None
    nonrobust = feat.train_data.isin(NONROBUST)
    chosen = headline_construction(feat[nonrobust].construction)
    feat = feat[~nonrobust | (feat.construction == chosen)]
    orig = clean[(clean.train_data == "original") & (clean.train_norm == "none") & clean.panel.isin(feat.panel)]
    robust = _robust_rows(df, s)
    d = pd.concat([orig.assign(measure="clean"), feat.assign(measure="clean")] + ([robust] if len(robust) else []),
                  ignore_index=True)
    d["data_label"] = [DATA_LABEL[t] + ("" if n == "none" else f" ({setting_label(n, e, m, p)} training)")
                       for t, n, e, m, p in zip(d.train_data, d.train_norm, d.train_eps, d.train_method,
                                                d.train_method_param)]
    d["data_order"] = d.train_data.map(DATA_ORDER) * 10 + d.train_norm.map(NORM_ORDER)
    p = d.p_above_chance.where(d.measure == "clean") if "p_above_chance" in d else pd.Series(np.nan, index=d.index)
    flagged = d.degenerate.astype("boolean").fillna(False).astype(bool) & (d.measure == "clean")
    lines = [_value_text(v, q, t, f) for v, q, t, f in zip(d["mean"], p, d.train_data, flagged)]
    d["value_text"], d["test_text"] = [a for a, _ in lines], [b for _, b in lines]
    d["data_kind"] = d.train_data.map(DATA_LABEL)
    order = list(d.sort_values("data_order").data_label.drop_duplicates())
    measures = ["clean"] + sorted(set(d.measure) - {"clean"})
    kinds = [k for k in DATA_ORDER if k in set(d.train_data)]
    scale = alt.Scale(domain=[DATA_LABEL[k] for k in kinds], range=[PALETTE[k] for k in kinds])
    color = alt.Color("data_kind:N", title="training data", scale=scale)
    x = alt.X("data_label:N", title="training data", sort=order, axis=alt.Axis(labelAngle=0, labelLimit=160))
    xoff = {"xOffset": alt.XOffset("measure:N", sort=measures)}
    opacity = alt.Opacity("measure:N", title="test", sort=measures,
                          scale=alt.Scale(domain=measures, range=[0.95] + [0.45] * (len(measures) - 1)))
    y = alt.Y("mean:Q", title=f"{name} on the original test set", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format=".0%"))
    tips = tooltip(alt_tooltip("measure", "test"), alt_tooltip("construction", "attack setting"),
                   alt_tooltip("n_seeds", "models", kind="Q"), alt_tooltip("n_grid_seeds", "grid seeds", kind="Q"),
                   *interval_tips(name), alt_tooltip("p_above_chance", "p (above chance, t-test over models)", ".4f"))
    bars = alt.Chart().mark_bar().encode(x=x, y=y, color=color, opacity=opacity, tooltip=tips, **xoff)
    hollow = health.hollow_marks("bar", alt.Stroke("data_kind:N", scale=scale, legend=None), tips,
                                 x=x, y=y, **xoff)
    err = alt.Chart().mark_rule(strokeWidth=1.5, color="#333333").encode(x=x, y="lo:Q", y2="hi:Q", **xoff)
    text = [alt.Chart().mark_text(dy=dy, fontSize=10, baseline="bottom").encode(x=x, y="hi:Q", text=f"{field}:N",
                                                                                 **xoff)
            for field, dy in (("test_text", -3), ("value_text", -16))]
    width = max(CELL_W, 75 * len(order) * len(measures))
    layer = alt.layer(bars, hollow, err, *text, *chance_layers(label=False), data=d).properties(
        width=width, height=CELL_H)
    models = (f"{int(feat.n_seeds.min())}-{int(feat.n_seeds.max())}" if feat.n_seeds.nunique() > 1
              else f"{int(feat.n_seeds.iloc[0])}")
    setting = ("" if chosen == NO_CONSTRUCTION
               else f" D_rand / D_det made by {constructions.parse(chosen).describe()}.")
    return layer.facet(column=alt.Column("panel:N", header=header())).properties(title=alt.Title(
        TITLES["nonrobust_features"],
        subtitle=["Every model is tested on the original (clean) test set. D_rand and D_det relabel images by "
                  "targeted attacks on the standard model,",
                  "so only non-robust features carry their labels: above chance (dashed), these features "
                  "generalise. D_R keeps the robust features only; light bars: robust accuracy (attack named).",
                  f"Bars: mean over {models} models (grid seeds x models per dataset) with the 95% t-interval; "
                  f"above chance: one-sided t-test over the models at the {ALPHA:.0%} level.{setting}",
                  *health.subtitle(d)]))


def _with_setting(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of recorded attack settings, with ``steps``, ``attack_eps`` (its text) and ``data_kind``."""
    rows = rows[rows.construction != NO_CONSTRUCTION]
    attacks = [constructions.parse(c) for c in rows.construction]
    return rows.assign(steps=[a.steps for a in attacks],
                       attack_eps=[f"{a.norm} ε {epsilon.text(a.norm, a.eps)}, step {epsilon.text(a.norm, a.step_size)}"
                                   for a in attacks],
                       data_kind=rows.train_data.map(DATA_LABEL))


def _sweep_panel(d: pd.DataFrame, y_title: str, title: str, chance: bool, tips):
    values = sorted(set(d.steps))
    x = alt.X("steps:Q", title="attack steps", scale=alt.Scale(type="log"),
              axis=alt.Axis(values=values, format="d"))
    y = alt.Y("mean:Q", title=y_title, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"))
    kinds = [DATA_LABEL[k] for k in NONROBUST if DATA_LABEL[k] in set(d.data_kind)]
    color = alt.Color("data_kind:N", title="dataset", scale=alt.Scale(
        domain=kinds, range=[PALETTE[k] for k in NONROBUST if DATA_LABEL[k] in kinds]))
    dash = alt.StrokeDash("attack_eps:N", title="attack")
    base = alt.Chart()
    layers = [base.mark_line(strokeWidth=2).encode(x=x, y=y, color=color, strokeDash=dash,
                                                   detail="metric:N", order="steps:Q"),
              base.mark_rule(strokeWidth=1.5).encode(x=x, y="lo:Q", y2="hi:Q", color=color),
              base.mark_point(filled=True, size=50).encode(x=x, y=y, color=color, tooltip=tips)]
    if chance:
        layers += chance_layers()
    layer = alt.layer(*layers, data=d).properties(width=CELL_W, height=CELL_H)
    return layer.facet(row=alt.Row("panel:N", header=header())).properties(title=alt.Title(title, fontSize=13))


def nonrobust_sweep(df: pd.DataFrame, metric: str):
    """(g) D_rand / D_det models' clean accuracy against the attack's steps and epsilon; the texture alignment of
    the perturbations beside it where the table has it (synthetic tasks)."""
    s = seed_view(df, metric)
    if s.empty:
        return None
    name = METRIC_NAME[metric]
    acc = s[(s.eval_kind == "clean") & s.train_data.isin(NONROBUST)]
    acc = _with_setting(acc)
    if acc.empty:
        return None
    tips = tooltip(alt_tooltip("attack_eps", "attack"), alt_tooltip("steps", "steps", kind="Q"),
                   alt_tooltip("n_seeds", "models", kind="Q"), *interval_tips(name),
                   alt_tooltip("p_above_chance", "p (above chance)", ".4f"))
    panels = [_sweep_panel(acc, f"{name} on the original test set", f"models trained on D_rand / D_det: {name}",
                           True, tips)]
    texture = []
    for key in TEXTURE:
        rows = seed_view(df, key)
        if not rows.empty:
            texture.append(_with_setting(rows[(rows.eval_kind == "features") & rows.train_data.isin(NONROBUST)]))
    texture = [t for t in texture if not t.empty]
    if texture:
        t = pd.concat(texture, ignore_index=True)
        ttips = tooltip(alt_tooltip("metric", "measure"), alt_tooltip("attack_eps", "attack"),
                        alt_tooltip("steps", "steps", kind="Q"), alt_tooltip("n_seeds", "datasets", kind="Q"),
                        *interval_tips("value"))
        panels.append(_texture_panel(t, ttips))
    return alt.hconcat(*panels).resolve_scale(color="shared", strokeDash="independent").properties(title=alt.Title(
        TITLES["nonrobust_sweep"],
        subtitle=[f"Left: {name} on the original test set of the models trained on D_rand / D_det, per attack "
                  "setting (log steps; one line per epsilon). Bars: 95% t-interval over all models.",
                  "Right (synthetic tasks): of each perturbation, the cosine with the target class's texture minus "
                  "the source class's (1: exactly the planted direction; ~0: unrelated)",
                  "and the share of its energy off every planted texture (mean over datasets, 95% interval).",
                  *health.subtitle(acc)]))


def _texture_panel(t: pd.DataFrame, tips):
    """The texture measures against the steps: colour the dataset, dash the measure, one line per epsilon."""
    kinds = [DATA_LABEL[k] for k in NONROBUST if DATA_LABEL[k] in set(t.data_kind)]
    values = sorted(set(t.steps))
    x = alt.X("steps:Q", title="attack steps", scale=alt.Scale(type="log"), axis=alt.Axis(values=values, format="d"))
    y = alt.Y("mean:Q", title="texture measure", scale=alt.Scale(domain=[0, 1]))
    color = alt.Color("data_kind:N", title="dataset", scale=alt.Scale(
        domain=kinds, range=[PALETTE[k] for k in NONROBUST if DATA_LABEL[k] in kinds]))
    names = {"texture_alignment": "alignment with target − source texture", "off_texture_share": "off-texture share"}
    t = t.assign(measure=t.metric.map(names))
    dash = alt.StrokeDash("measure:N", title="measure", scale=alt.Scale(domain=list(names.values()),
                                                                       range=[[1, 0], [4, 3]]))
    base = alt.Chart()
    layer = alt.layer(
        base.mark_line(strokeWidth=2).encode(x=x, y=y, color=color, strokeDash=dash, detail="attack_eps:N",
                                             order="steps:Q"),
        base.mark_rule(strokeWidth=1.5).encode(x=x, y="lo:Q", y2="hi:Q", color=color),
        base.mark_point(filled=True, size=45).encode(x=x, y=y, color=color, tooltip=tips),
        data=t).properties(width=CELL_W, height=CELL_H)
    return layer.facet(row=alt.Row("panel:N", header=header())).properties(
        title=alt.Title("perturbations vs the planted textures", fontSize=13))


BUILDERS = {"nonrobust_features": nonrobust_features, "nonrobust_sweep": nonrobust_sweep}  # (table, metric) -> chart
