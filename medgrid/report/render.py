"""Charts and tables written to files: interactive HTML (Vega inlined, works offline), PNG and SVG.

``medgrid charts --summary results/summary.parquet --out-dir results/charts`` (:func:`make_charts`)
writes, for each chart of :data:`medgrid.report.registry.CHARTS`, ``{name}.html`` (tooltips give the cell
coordinates), ``{name}.png`` and ``{name}.svg``, plus ``table.html`` (the seed-aggregated table for the
report). A chart whose rows are not in the table yet (MedMNIST-C rows come from the shift rules,
D_rand / D_det / D_R rows from the feature rules) is written as a placeholder that says "no rows yet"
and which rows it needs, in all three formats, so the outputs of the workflow's ``charts`` rule never
change and a chart appears as soon as its rows do.
"""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path

import altair as alt
import pandas as pd
import vl_convert as vlc

from medgrid import epsilon, results
from medgrid.atomic import atomic_output
from medgrid.errors import UserError
from medgrid.labels import ATTACK_NAME, DATA_LABEL, NORM_NAME, NORM_ORDER, robust_label, setting_label
from medgrid.names import EVAL_KINDS, NO_CONSTRUCTION, ROBUST_KINDS
from medgrid.report import chart_features, chart_parts, charts, registry
from medgrid.report.aggregate import by_seed
from medgrid.report.audit import write_audit_html

FORMATS, TABLE, AUDIT = registry.FORMATS, registry.TABLE, registry.AUDIT
PNG_SCALE = 2  # PNG pixels per CSS pixel: sharp on slides and high-dpi screens


HTML_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
  body {{ margin: 12px; font-family: sans-serif; }}
  #vis.vega-embed {{ width: 100%; display: flex; }}
  #vis.vega-embed details, #vis.vega-embed details summary {{ position: relative; }}
</style>
<script type="text/javascript">
// vega-embed with Vega and Vega-Lite {vl_version}, inlined by vl-convert so the page works offline
{bundle}
</script>
</head>
<body>
<div id="vis"></div>
<script type="text/javascript">
  const spec = {spec};
  vegaEmbed("#vis", spec, {options}).catch(function (err) {{
    document.getElementById("vis").textContent = "chart failed to render: " + err;
  }});
</script>
</body>
</html>
"""
# the export menu (PNG/SVG) and the spec viewer work offline; the online Vega editor link is left out
EMBED_OPTIONS = {"actions": {"export": True, "source": True, "compiled": False, "editor": False}}


def _vl_version() -> str:
    """vl-convert's name of the Vega-Lite version Altair writes (v6.1.0 -> v6_1)."""
    return "_".join(alt.SCHEMA_VERSION.split(".")[:2])


@functools.lru_cache(maxsize=None)
def _js_bundle(vl_version: str) -> str:
    return vlc.javascript_bundle(vl_version=vl_version)


def _html(spec: dict, title: str) -> str:
    vl_version = _vl_version()
    return HTML_PAGE.format(title=html.escape(title), vl_version=vl_version, bundle=_js_bundle(vl_version),
                            spec=json.dumps(spec).replace("</", "<\\/"), options=json.dumps(EMBED_OPTIONS))


def save(chart, out_dir: Path, name: str, title: str | None = None) -> list[Path]:
    """``{name}.html`` (Vega inlined: works offline), ``.png`` and ``.svg``, each written atomically.

    The chart is validated and converted to a Vega-Lite spec once; vl-convert renders the images.
    """
    out_dir = Path(out_dir)
    with alt.data_transformers.enable("default", max_rows=None):
        spec = chart.to_dict()
    vl_version = _vl_version()
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{name}.{fmt}"
        with atomic_output(path) as tmp:
            if fmt == "html":
                Path(tmp).write_text(_html(spec, title or registry.BY_NAME[name].title), encoding="utf-8")
            elif fmt == "png":
                Path(tmp).write_bytes(vlc.vegalite_to_png(spec, vl_version=vl_version, scale=PNG_SCALE))
            else:
                Path(tmp).write_text(vlc.vegalite_to_svg(spec, vl_version=vl_version), encoding="utf-8")
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------ table


def _evaluation(row) -> str:
    if row.eval_kind in ("clean", "clean-subset"):
        return ATTACK_NAME.get(row.eval_kind, row.eval_kind)
    if row.eval_kind in ROBUST_KINDS + ("worst", "worst-white-box", "pgd-subset"):
        return robust_label(row.eval_kind, row.eval_norm, row.eval_eps)
    if row.eval_kind == "sanity":
        if row.eval_norm == "none":
            return "check"
        return f"check {NORM_NAME[row.eval_norm]} {epsilon.text(row.eval_norm, row.eval_eps)}"
    if row.eval_kind == "health":
        return "training health (test split)"
    if row.eval_kind == "corruption":
        if row.corruption == "mean":
            return "MedMNIST-C mean"
        return f"{row.corruption}, severity {row.severity}" if row.severity else f"{row.corruption}, all severities"
    return row.eval_kind


def write_table_html(df: pd.DataFrame, path: Path, source: str = "the tidy table") -> Path:
    """The seed-aggregated table (mean, std, 95% interval) as one readable HTML page for the report."""
    rows = df[df.metric != "grad_evals"]
    s = by_seed(rows) if not rows.empty else pd.DataFrame(columns=list(rows.columns) + ["mean"])
    if not s.empty:
        s = s.assign(
            training=[setting_label(*k) for k in zip(*(s[c] for c in results.SETTING))],
            data=[DATA_LABEL[d] + ("" if c == NO_CONSTRUCTION else f" ({c})") for d, c in zip(s.train_data,
                                                                                               s.construction)],
            evaluation=[_evaluation(r) for r in s.itertuples()],
            _o1=s.train_norm.map(NORM_ORDER), _o2=s.eval_kind.map({k: i for i, k in enumerate(EVAL_KINDS)}),
        ).sort_values(["task", "size", "arch", "train_data", "_o1", "train_eps", "_o2", "eval_norm", "eval_eps",
                       "corruption", "severity", "metric"])
        s = s[["task", "size", "arch", "training", "data", "evaluation", "metric", "mean", "std", "ci95_t_low",
               "ci95_t_high", "n_seeds", "n_grid_seeds", "p_above_chance", "n"]]
        s = s.rename(columns={"ci95_t_low": "95% low", "ci95_t_high": "95% high", "n_seeds": "models",
                              "n_grid_seeds": "grid seeds", "p_above_chance": "p (above chance)",
                              "n": "test images (all models)"})
    table = s.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.4f}", border=0, classes="t")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>medgrid: seed-aggregated results</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table.t {{ border-collapse: collapse; font-size: 13px; }}
table.t th {{ background: #f0f0f0; position: sticky; top: 0; text-align: left; padding: 4px 8px; }}
table.t td {{ padding: 3px 8px; border-bottom: 1px solid #e4e4e4; font-variant-numeric: tabular-nums; }}
table.t tr:hover td {{ background: #f7f7ff; }}
</style></head><body>
<h2>Seed-aggregated results</h2>
<p>One row per measurement and training setting: mean over the models (the grid's seeds; for models trained on
D_rand / D_det / D_R, every model of every grid seed's dataset), standard deviation (ddof 1) and the t-based
95% interval of the mean (blank with one model). Clean balanced accuracy and AUC: p of the one-sided t-test that
the mean is above chance (1 / classes; AUC 0.5). Accuracies are fractions of the test set.
Source: {html.escape(str(source))} ({len(df)} rows).</p>
{table}
</body></html>
"""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- driver


def make_charts(summary, out_dir, *, metric: str = "balanced_acc", history=None) -> dict[str, str]:
    """Every chart of :data:`medgrid.report.registry.CHARTS` in every format of :data:`FORMATS`, plus
    ``table.html`` and ``audit.html``. Charts drawn from the per-epoch histories need ``history`` (a table of
    :mod:`medgrid.report.history`); without it they are left out.

    Returns {chart: "chart" | "placeholder"}. UserError for a missing or empty summary.
    """
    if metric not in charts.METRICS:
        raise UserError(f"unknown metric {metric!r}; valid: {', '.join(charts.METRICS)}")
    df = results.read_table(summary)
    if df.empty:
        raise UserError(f"results table {summary} has no rows; run the evaluations first")
    out_dir = Path(out_dir)
    s = chart_parts.seed_view(df, metric)
    builders = {name: functools.partial(build, s, metric) for name, build in charts.BUILDERS.items()}
    builders.update({name: functools.partial(build, df, metric) for name, build in chart_features.BUILDERS.items()})
    if history is not None:
        from medgrid.report import chart_training
        from medgrid.report import history as histories

        builders[chart_training.NAME] = functools.partial(chart_training.training_curves, histories.read(history), df)
    status = {}
    for entry in registry.CHARTS:
        if entry.name not in builders:  # a history chart without --history
            continue
        chart = builders[entry.name]()
        if chart is None:
            chart, status[entry.name] = charts.placeholder(entry.name), "placeholder"
        else:
            status[entry.name] = "chart"
        save(chart_parts.finish(chart), out_dir, entry.name, entry.title)
        print(f"{entry.name}: {'written' if status[entry.name] == 'chart' else 'placeholder (no rows yet)'} -> "
              f"{out_dir}/{entry.name}.{{{','.join(FORMATS)}}}")
    write_table_html(df, out_dir / TABLE, source=str(summary))
    write_audit_html(df, out_dir / AUDIT, source=str(summary))
    print(f"table: {out_dir / TABLE}; evaluation audit: {out_dir / AUDIT}")
    return status
