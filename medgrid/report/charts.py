"""The charts of the results table, as Altair specs: each a query over the tidy table (:mod:`medgrid.results`),
listed with its title and the rows it needs in :mod:`medgrid.report.registry`. The charts of Ilyas et al.'s
experiment, which need rows of several metrics, are :mod:`medgrid.report.chart_features`'s.

Every chart is built from the seed-aggregated view (:func:`seed_view`, with
:func:`medgrid.report.aggregate.by_seed`); error bars are t-based 95% intervals over seeds (none with one
seed). A builder returns None when the table lacks its rows; :func:`placeholder` then says which rows
it needs. Writing them to files (HTML, PNG, SVG) is :mod:`medgrid.report.render`'s job.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from medgrid import results
from medgrid.labels import (
    DIVERGING,
    METRIC_NAME,
    NORM_NAME,
    NORM_ORDER,
    SHIFT_COLOR,
    STANDARD_COLOR,
    eps_axis,
    ramp,
    robust_label,
)
from medgrid.names import CHART_METRICS, CORRUPTION_MEAN, NO_CORRUPTION
from medgrid.report import chart_health as health
from medgrid.report import registry
from medgrid.report.chart_parts import (
    CELL_H,
    CELL_W,
    LINE_LAYER_STYLE,
    alt_tooltip,
    arch_encodings,
    chance_layers,
    header,
    interval_tips,
    setting_scale,
    tooltip,
)

METRICS = {m: METRIC_NAME[m] for m in CHART_METRICS}
TITLES = {chart.name: chart.title for chart in registry.CHARTS}


def tradeoff(s: pd.DataFrame, metric: str):
    """(a) clean vs mean MedMNIST-C accuracy, one point per training setting (original data)."""
    if s.empty:
        return None
    name = METRICS[metric]
    key = ["panel", *results.MODEL, "setting", "setting_order", "family", *health.COLUMNS]
    base = s[s.train_data == "original"]
    cols = key + ["mean", "lo", "hi", "n_seeds"]
    clean = base[base.eval_kind == "clean"][cols]
    shift = base[(base.eval_kind == "corruption") & (base.corruption == "mean") & (base.severity == 0)][cols]
    d = clean.merge(shift, on=key, suffixes=("_clean", "_shift"))
    if d.empty:
        return None
    d = d.assign(role="point")
    lines = []  # one frontier per norm and method: the standard model, then the method's settings by epsilon
    for _, g in d.groupby(["panel", "arch"], sort=False):
        std = g[g.train_norm == "none"]
        robust = g[g.train_norm != "none"].sort_values("setting_order")
        for fam in dict.fromkeys(robust.family):
            lines.append(pd.concat([std, robust[robust.family == fam]]).assign(role="line", family=fam))
    data = pd.concat([d] + lines, ignore_index=True)
    domain, colors = setting_scale(d)
    color = alt.Color("setting:N", title="training", scale=alt.Scale(domain=domain, range=colors),
                      legend=alt.Legend(symbolType="circle"))
    x_title = f"clean {name}"
    y_title = f"MedMNIST-C {name}"
    # whole-percent ticks at least 1% apart (no repeated labels), no "nice" rounding of the domain past 100%
    pct = alt.Axis(format=".0%", tickMinStep=0.01)
    x = alt.X("mean_clean:Q", title=x_title, scale=alt.Scale(zero=False, padding=12, nice=False), axis=pct)
    y = alt.Y("mean_shift:Q", title=y_title, scale=alt.Scale(zero=False, padding=12, nice=False), axis=pct)
    tips = tooltip(alt_tooltip("n_seeds_clean", "seeds", kind="Q"),
                    *interval_tips(name, "_clean", "clean "), *interval_tips(name, "_shift", "MedMNIST-C "))
    points_only = alt.Chart().transform_filter("datum.role == 'point'")
    line = alt.Chart().transform_filter("datum.role == 'line'").mark_line(**LINE_LAYER_STYLE).encode(
        x=x, y=y, detail=["arch:N", "family:N"], order="train_eps:Q")
    xbar = points_only.mark_rule(strokeWidth=1.5).encode(
        x="lo_clean:Q", x2="hi_clean:Q", y="mean_shift:Q", color=color)
    ybar = points_only.mark_rule(strokeWidth=1.5).encode(
        y="lo_shift:Q", y2="hi_shift:Q", x="mean_clean:Q", color=color)
    shape = alt.Shape("arch:N", title="architecture")
    points = points_only.mark_point(size=110, filled=True, opacity=0.95, stroke="white", strokeWidth=0.8).encode(
        x=x, y=y, color=color, shape=shape, tooltip=tips)
    hollow = health.hollow_points(x, y, color, tips, size=110, shape=shape).transform_filter("datum.role == 'point'")
    # labels beside the points: L-inf above-left, L2 below-right, so the two families rarely collide
    label_color = alt.Color("setting:N", scale=alt.Scale(domain=domain, range=colors), legend=None)
    labels = [
        points_only.transform_filter(f"datum.train_norm == '{norm}'").mark_text(
            align=align, dx=dx, dy=dy, fontSize=11).encode(x=x, y=y, text="setting:N", color=label_color)
        for norm, align, dx, dy in (("none", "left", 9, -9), ("linf", "right", -9, -9), ("l2", "left", 9, 13))
    ]
    chart = alt.layer(line, xbar, ybar, points, hollow, *labels, data=data).properties(width=CELL_W, height=CELL_H)
    chart = chart.facet(facet=alt.Facet("panel:N", header=header()), columns=3)
    return chart.resolve_scale(x="independent", y="independent").properties(title=alt.Title(
        TITLES["tradeoff"],
        subtitle=[f"x: clean {name}; y: {name} on MedMNIST-C (mean over corruptions and severities). "
                  "One point per training setting; one line per norm and training method (its frontier), "
                  "from the standard model in order of training ε.",
                  "Robust models sit left and up (less clean accuracy, more under corruption). "
                  "Bars: 95% t-interval over seeds (none with one seed).", *health.subtitle(d)]))


def _eps_x(d: pd.DataFrame, column: str, norm: str, what: str):
    """``d`` with ``x`` (epsilon ``column`` in the axis' unit) and its x encoding: a tick at each epsilon of the
    grid, labelled in full (with a bare "~g" Vega rounds labels to the tick spacing: L2 0.25 read "0.3")."""
    factor, title = eps_axis(norm, what)
    d = d.assign(x=d[column] * factor)
    values = sorted(set(d.x.round(9)))
    return d, alt.X("x:Q", title=title, axis=alt.Axis(values=values, format=".6~g"))


def _line_panels(d, x, y, color, tips, detail, base, title: str, dashed: pd.DataFrame | None = None):
    """Lines in x order, 95% seed-interval rules, points with tooltips and the chance line; one row per panel.
    ``dashed``: rows drawn as thin dashed lines behind (PGD beside the worst case)."""
    main = alt.Chart().transform_filter("datum.layer != 'dashed'")
    line = main.mark_line(strokeWidth=2).encode(
        x=x, y=y, color=color, detail=detail, order="x:Q", **arch_encodings(base))
    bars = main.mark_rule(strokeWidth=1.5).encode(x=x, y="lo:Q", y2="hi:Q", color=color)
    points = main.mark_point(size=45, filled=True, opacity=1).encode(x=x, y=y, color=color, tooltip=tips)
    hollow = health.hollow_points(x, y, color, tips, size=60).transform_filter("datum.layer != 'dashed'")
    layers = [line, bars, points, hollow]
    if dashed is not None and not dashed.empty:
        d = pd.concat([d.assign(layer="main"), dashed.assign(layer="dashed")], ignore_index=True)
        layers.insert(0, alt.Chart().transform_filter("datum.layer == 'dashed'").mark_line(
            strokeWidth=1.2, strokeDash=[4, 3], opacity=0.7).encode(x=x, y=y, color=color, detail=detail,
                                                                  order="x:Q", tooltip=tips))
    layer = alt.layer(*layers, *chance_layers(), data=d).properties(width=CELL_W, height=CELL_H)
    return layer.facet(row=alt.Row("panel:N", header=header())).properties(title=alt.Title(title, fontSize=13))


ROBUST_KEY = ["panel", *results.MODEL, "eval_norm", "eval_eps", "metric"]


def robust_view(rows: pd.DataFrame) -> pd.DataFrame:
    """Robust-accuracy rows of the seed view: the worst case where a cell has it at that epsilon, else PGD
    (:func:`medgrid.results.prefer_worst`), each labelled with its attack (column ``attack``)."""
    r = results.prefer_worst(rows, ROBUST_KEY)
    return r.assign(attack=[robust_label(k, n, e) for k, n, e in zip(r.eval_kind, r.eval_norm, r.eval_eps)])


def robust_vs_eps(s: pd.DataFrame, metric: str):
    """(b) robust accuracy (worst case over every attack run where evaluated, PGD elsewhere; PGD dashed
    beside it) vs attack epsilon, one line per training setting; rows task, columns norm."""
    if s.empty:
        return None
    name = METRICS[metric]
    base = s[s.train_data == "original"]
    attacked = base[base.eval_kind.isin(["pgd", "worst"])]
    if attacked.empty:
        return None
    clean = base[base.eval_kind == "clean"]
    cell = results.BLOCK + results.SETTING
    domain, colors = setting_scale(base)
    color = alt.Color("setting:N", title="training", scale=alt.Scale(domain=domain, range=colors))
    columns = []
    for norm in sorted(attacked.eval_norm.unique(), key=lambda n: NORM_ORDER.get(n, 9)):
        a = attacked[attacked.eval_norm == norm]
        r = robust_view(a)
        c = clean.merge(a[cell].drop_duplicates(), on=cell).assign(eval_norm=norm, eval_eps=0.0,
                                                                    attack="clean (ε = 0)")
        d, x = _eps_x(pd.concat([c, r], ignore_index=True), "eval_eps", norm, "attack")
        dashed = None
        if (r.eval_kind == "worst").any():  # PGD beside the worst case, from the same clean point
            p = a[a.eval_kind == "pgd"]
            dashed = _eps_x(pd.concat([c, p.assign(attack=[robust_label("pgd", norm, e) for e in p.eval_eps])],
                                      ignore_index=True), "eval_eps", norm, "attack")[0]
        y = alt.Y("mean:Q", title=f"{name} under attack", scale=alt.Scale(domain=[0, 1]),
                  axis=alt.Axis(format=".0%"))
        tips = tooltip(alt_tooltip("attack", "evaluation"), alt_tooltip("n_seeds", "seeds", kind="Q"),
                        *interval_tips(name), alt_tooltip("n", "test images (all seeds)", kind="Q"))
        columns.append(_line_panels(d, x, y, color, tips, ["arch:N", "setting:N"], base,
                                    f"{NORM_NAME[norm]} attacks", dashed=dashed))
    return alt.hconcat(*columns).properties(title=alt.Title(
        TITLES["robust_vs_eps"],
        subtitle=[f"{name} on the test set under attack (ε = 0: clean): the per-sample worst case over every attack "
                  "run where evaluated (solid; the headline table names them), PGD alone elsewhere and dashed beside it;",
                  "one line per training setting, models trained on the original data. Grey dashed: chance "
                  "(1 / number of classes). Bars: 95% t-interval over seeds (none with one seed).",
                  *health.subtitle(base)]))


def by_train_eps(s: pd.DataFrame, metric: str):
    """(c) clean, robust (same norm as training; worst case where evaluated, else PGD) and MedMNIST-C accuracy
    vs training epsilon; one column per training norm (and method, where the grid has several)."""
    if s.empty:
        return None
    name = METRICS[metric]
    base = s[s.train_data == "original"]
    clean = base[base.eval_kind == "clean"]
    robust_settings = clean[clean.train_norm != "none"].sort_values("setting_order")
    families = dict(zip(robust_settings.family, robust_settings.train_norm))  # frontier -> its norm, in order
    if clean.empty or not families:
        return None
    columns = []
    for fam, norm in families.items():  # one column per norm under PGD-AT, and per other method and norm
        cells = base[(base.train_norm == "none") | (base.family == fam)]
        trained = NORM_NAME[norm] if fam == norm else fam  # "L∞" (PGD-AT), "TRADES β=6 L∞"
        what = f"{trained} adversarial training" if fam == norm else f"{trained} training"
        parts = [cells[cells.eval_kind == "clean"].assign(series="clean", series_order=0.0)]
        robust = robust_view(cells[cells.eval_kind.isin(["pgd", "worst"]) & (cells.eval_norm == norm)])
        if not robust.empty:
            # one series per attack epsilon, named by the attack most of its cells have
            named = robust.groupby("eval_eps").attack.agg(lambda a: a.mode().iloc[0])
            parts.append(robust.assign(series=robust.eval_eps.map(named), series_order=1.0 + robust.eval_eps))
        shift = cells[(cells.eval_kind == "corruption") & (cells.corruption == "mean") & (cells.severity == 0)]
        if not shift.empty:
            parts.append(shift.assign(series="MedMNIST-C (mean)", series_order=1e6))
        d = pd.concat(parts, ignore_index=True)
        d, x = _eps_x(d, "train_eps", norm, "training")
        series = d[["series", "series_order"]].drop_duplicates().sort_values("series_order")
        attacks = [x for x in series.series if x not in ("clean", "MedMNIST-C (mean)")]
        domain = ["clean"] + attacks + (["MedMNIST-C (mean)"] if not shift.empty else [])
        colors = [STANDARD_COLOR] + ramp("linf", len(attacks)) + ([SHIFT_COLOR] if not shift.empty else [])
        color = alt.Color("series:N", title=f"evaluation ({trained} training)",
                          scale=alt.Scale(domain=domain, range=colors))
        y = alt.Y("mean:Q", title=name, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"))
        tips = tooltip(alt_tooltip("series", "evaluation"), alt_tooltip("n_seeds", "seeds", kind="Q"),
                        *interval_tips(name))
        columns.append(_line_panels(d, x, y, color, tips, ["arch:N", "series:N"], base, what))
    return alt.hconcat(*columns).resolve_scale(color="independent").properties(title=alt.Title(
        TITLES["by_train_eps"],
        subtitle=[f"{name} of models trained at each ε (0: standard training) on clean test images, "
                  "under attack in the training norm (per-sample worst case over every attack run where "
                  "evaluated, else PGD), and on MedMNIST-C.",
                  "Dashed: chance. Bars: 95% t-interval over seeds (none with one seed).", *health.subtitle(base)]))


def corruption_heatmap(s: pd.DataFrame, metric: str):
    """(e) robust minus standard accuracy per corruption (rows) and severity (columns)."""
    if s.empty:
        return None
    name = METRICS[metric]
    c = s[(s.eval_kind == "corruption") & ~s.corruption.isin([CORRUPTION_MEAN, NO_CORRUPTION])
          & (s.train_data == "original")]
    key = ["panel", "task", "size", "arch", "corruption", "severity"]
    std = c[c.train_norm == "none"][key + ["mean", "n_seeds", "collapsed", "health_note"]]
    rob = c[c.train_norm != "none"]
    d = rob.merge(std, on=key, suffixes=("", "_std"))
    if d.empty:
        return None
    d["diff_pp"] = 100.0 * (d["mean"] - d["mean_std"])
    d["severity_label"] = ["all" if v == 0 else str(v) for v in d.severity]
    d["column"] = d.setting if d.arch.nunique() == 1 else d.setting + " · " + d.arch
    d["column_order"] = d.setting_order
    d["diff_text"] = [f"{v:+.0f}" for v in d.diff_pp]
    m = max(1.0, float(d.diff_pp.abs().max()))
    # a cell is hollow when either model of the comparison collapsed
    d["health_note"] = d.health_note.where(~d.collapsed_std | d.collapsed, "standard model " + d.health_note_std)
    d["collapsed"] = d.collapsed | d.collapsed_std
    d["dark"] = (d.diff_pp.abs() > 0.6 * m) & ~d.collapsed
    sev_order = [str(v) for v in sorted(set(d.severity)) if v > 0] + (["all"] if (d.severity == 0).any() else [])
    cols = list(d.sort_values("column_order").column.drop_duplicates())
    x = alt.X("severity_label:O", title="severity", sort=sev_order,
              axis=alt.Axis(labelAngle=0, grid=False, ticks=False, domain=False))
    yy = alt.Y("corruption:N", title=None, sort="ascending", axis=alt.Axis(grid=False, ticks=False, domain=False))
    tips = tooltip(alt_tooltip("corruption", "corruption"), alt_tooltip("severity", "severity", kind="Q"),
                    alt_tooltip("mean", f"{name}, robust", ".4f"), alt_tooltip("mean_std", f"{name}, standard", ".4f"),
                    alt_tooltip("diff_pp", "difference (points)", "+.1f"), alt_tooltip("n_seeds", "seeds", kind="Q"))
    scale = alt.Scale(scheme=DIVERGING, domain=[-m, m], domainMid=0)
    rect = alt.Chart().mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=x, y=yy, tooltip=tips, color=alt.Color("diff_pp:Q", title=["robust − standard", f"({name}, points)"],
                                                 scale=scale))
    hollow = health.hollow_marks("rect", alt.Stroke("diff_pp:Q", scale=scale, legend=None), tips, x=x, y=yy)
    text = alt.Chart().mark_text(fontSize=11).encode(
        x=x, y=yy, text="diff_text:N",
        color=alt.condition("datum.dark", alt.value("white"), alt.value("black")))
    n_corr = d.corruption.nunique()
    layer = alt.layer(rect, hollow, text, data=d).properties(width=42 * len(sev_order), height=24 * n_corr)
    return layer.facet(row=alt.Row("panel:N", header=header()),
                       column=alt.Column("column:N", sort=cols, header=alt.Header(title="robust model",
                                                                                   labelFontSize=12))).properties(
        title=alt.Title(TITLES["corruption_heatmap"],
                        subtitle=[f"{name} of each adversarially trained model minus that of the standard model "
                                  "(same task, size, arch), in percentage points, mean over seeds.",
                                  "Blue: the robust model is better on that corruption; red: worse. "
                                  "Severity 1 is the mildest, 5 the strongest.", *health.subtitle(d)]))


BUILDERS = {
    "tradeoff": tradeoff,
    "robust_vs_eps": robust_vs_eps,
    "by_train_eps": by_train_eps,
    "corruption_heatmap": corruption_heatmap,
}


def placeholder(name: str):
    """A chart that says which rows are missing (the registry's ``needs``), so every output file exists."""
    chart = registry.BY_NAME[name]
    reason, title = chart.needs, chart.title
    lines = pd.DataFrame({"i": [0, 1], "text": ["no rows yet", f"needs {reason}"]})
    return alt.Chart(lines).mark_text(fontSize=13, align="left", x=10).encode(
        y=alt.Y("i:O", axis=None), text="text:N",
        size=alt.condition("datum.i == 0", alt.value(20), alt.value(12)),
        color=alt.value("#444444")).properties(
        width=max(420, 7 * len(reason) + 60), height=80, title=alt.Title(title, subtitle=f"{name}"))
